"""One log line per request: method, path, status, prompt/thinking/answer tokens, seconds;
and the request counted in the metrics.

An ASGI middleware (not Starlette's ``BaseHTTPMiddleware``, which buffers
streams): it sees the status as it is sent and writes the line when the response
is over, streamed or not. Handlers leave the generation's stats in
``request.state.stats`` and its model's name in ``request.state.model``.
"""

from __future__ import annotations

import logging
from time import perf_counter
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..events import GenerationStats
from .metrics import Metrics

logger = logging.getLogger("qwq_edge.server")


class RequestLog:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = perf_counter()
        status = 0
        state: dict[str, Any] = scope.setdefault("state", {})

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            status, stats = status or 500, state.get("stats")
            line = log_line(scope["method"], scope["path"], status, stats, perf_counter() - began)
            logger.info(line + (" (client disconnected)" if state.get("disconnected") else ""))
            self.metrics.observe_request(scope, status, stats, state.get("model", ""))


def log_line(method: str, path: str, status: int, stats: GenerationStats | None, seconds: float) -> str:
    """``POST /v1/chat/completions 200 prompt=31 thinking=64 answer=12 stop 1.92s``."""
    parts = [method, path, str(status)]
    if stats is not None:
        parts += [
            f"prompt={stats.prompt_tokens}",
            f"thinking={stats.thinking_tokens}",
            f"answer={stats.answer_tokens}",
            stats.finish_reason,
        ]
    parts.append(f"{seconds:.2f}s")
    return " ".join(parts)
