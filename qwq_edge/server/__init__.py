"""The OpenAI-compatible HTTP server and its web chat page (the ``server`` extra)."""

from .app import create_app

__all__ = ["create_app"]
