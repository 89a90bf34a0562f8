"""One reply in one protocol's shape: the frames of a stream, or one JSON body.

Every door (OpenAI's chat completions and completions, Anthropic's Messages, OpenAI's
Responses, Ollama's API) turns its request into ``GenerationOptions`` and a prompt in a
module of its own, and gives the service an ``Encoder`` for the reply: the service
queues, generates, streams and counts the same way for all of them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.routing import BaseRoute

from ..events import Event, GenerationResult
from .errors import APIError


@dataclass(frozen=True)
class Door:
    """One protocol's endpoints; ``error_body``: its error shape for paths under ``prefix``
    (None: OpenAI's)."""

    routes: Sequence[BaseRoute]
    prefix: str = ""
    error_body: Callable[[APIError], dict[str, Any]] | None = None


def sse(data: dict[str, Any] | str, event: str | None = None) -> str:
    """One Server-Sent Event (``event:`` only where the protocol names its events)."""
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return (f"event: {event}\n" if event else "") + f"data: {text}\n\n"


def ndjson(data: dict[str, Any]) -> str:
    """One line of newline-delimited JSON (Ollama's streams)."""
    return json.dumps(data, ensure_ascii=False) + "\n"


class Encoder:
    """What a reply looks like in one protocol. ``id`` names the reply (the ``X-Request-Id``
    header, for ``POST /v1/requests/{id}/answer``); ``stream``: frames rather than one body;
    ``stops``: the request's stop strings (the answer ends before the first)."""

    media_type = "text/event-stream"
    #: How many generations the reply runs at once (its places in the queue: ``n`` choices).
    places = 1

    def __init__(self, id: str, stream: bool, stops: list[str] | None = None) -> None:
        self.id = id
        self.stream = stream
        self.stops = stops or []

    def opening(self) -> Iterable[str]:
        """Frames sent before the first event (they leave with the first token)."""
        return ()

    def frames(self, event: Event) -> Iterable[str]:
        """Frames for one event; the ``Done`` event comes here too."""
        raise NotImplementedError

    def closing(self, result: GenerationResult) -> Iterable[str]:
        """Frames after the ``Done`` event."""
        return ()

    def whole(self, result: GenerationResult) -> dict[str, Any]:
        """The reply as one JSON body (a request that does not stream)."""
        raise NotImplementedError

    def failure(self, message: str, kind: str, code: str | None) -> str:
        """The frame that ends a stream when the server fails after it began (shutting down)."""
        raise NotImplementedError
