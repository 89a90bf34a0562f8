"""Ollama's API: ``/api/chat``, ``/api/generate``, ``/api/tags``, … To be built."""

from __future__ import annotations

from typing import Any

from .errors import APIError
from .replies import Door


def error_body(error: APIError) -> dict[str, Any]:
    """Ollama's error shape: ``{"error": message}``."""
    return {"error": error.message}


DOOR = Door([], "/api/", error_body)
