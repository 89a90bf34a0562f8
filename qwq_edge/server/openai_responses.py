"""OpenAI's Responses API: ``POST /v1/responses`` (stateless). To be built."""

from __future__ import annotations

from .replies import Door

DOOR = Door([])
