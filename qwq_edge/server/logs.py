"""One log line per request: method, path, status, prompt/thinking/answer tokens, seconds;
and the request counted in the metrics.

An ASGI middleware (not Starlette's ``BaseHTTPMiddleware``, which buffers
streams): it sees the status as it is sent and writes the line when the response
is over, streamed or not. Handlers leave the generation's stats in
``request.state.stats`` (one per choice) and its model's name in ``request.state.model``.
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
            status, stats = status or 500, state.get("stats", [])
            line = log_line(scope["method"], scope["path"], status, stats, perf_counter() - began)
            logger.info(line + (" (client disconnected)" if state.get("disconnected") else ""))
            self.metrics.observe_request(scope, status, stats, state.get("model", ""))


def log_line(method: str, path: str, status: int, stats: list[GenerationStats], seconds: float) -> str:
    """``POST /v1/chat/completions 200 prompt=31 thinking=64 answer=12 stop 1.92s`` (with ``n``
    choices: their thinking and answer tokens together, and ``choices=n``)."""
    parts = [method, path, str(status)]
    if stats:
        parts += [
            f"prompt={stats[0].prompt_tokens}",
            f"thinking={sum(one.thinking_tokens for one in stats)}",
            f"answer={sum(one.answer_tokens for one in stats)}",
            stats[0].finish_reason,
            *([f"choices={len(stats)}"] if len(stats) > 1 else []),
        ]
    parts.append(f"{seconds:.2f}s")
    return " ".join(parts)
