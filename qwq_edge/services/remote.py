"""A model that a running ``qwq-edge serve`` holds, used as if it were loaded here.

``run`` and ``chat`` go through a running server when there is one, so the model stays loaded
(and its prompt cache warm) between commands. ``RemoteModel.stream`` posts a streamed chat
completion with the options as the request's fields and turns the chunks back into the
runtime's events: thinking and answer deltas, the runtime's interventions, and ``Done`` with
the generation's whole stats (asked for with ``return_stats``). ``cancel`` closes the
connection (the server cancels a generation whose client left); ``answer_now`` posts to
``/v1/requests/{id}/answer``. The standard library's HTTP client: nothing more to install.
"""

from __future__ import annotations

import http.client
import json
import socket
import urllib.parse
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, fields
from typing import Any

from ..errors import InvalidRequestError, QwqEdgeError
from ..events import AnswerDelta, Done, Event, GenerationResult, GenerationStats, Intervention, ThinkingDelta
from ..reasoning.formats import FORMATS, ReasoningFormat
from ..runtime.options import DECLARED, GenerationOptions
from ..runtime.prompt import as_messages
from ..runtime.stream import Stream

#: Where ``qwq-edge serve`` listens unless told otherwise.
DEFAULT_SERVER = "http://127.0.0.1:8000"
#: How long to wait for a server that may not be there (the default address, asked in passing).
PROBE_SECONDS = 0.5


class ServerError(QwqEdgeError):
    """The server refused a request or is not there."""


@dataclass(frozen=True)
class RemoteInfo:
    """What a chat and the terminal show of a model a server holds (as ``EngineInfo`` does;
    ``device`` also names the server)."""

    model_name: str
    model_path: str
    engine: str
    device: str
    context_length: int


class Server:
    """A running qwq-edge server at ``url`` (``api_key``: its key, if it has one)."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 600) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidRequestError(f"--server: {url!r} is not an http:// or https:// address")
        self.url, self.parts, self.api_key, self.timeout = url.rstrip("/"), parts, api_key, timeout

    def connection(self, timeout: float | None = None) -> http.client.HTTPConnection:
        kind = http.client.HTTPSConnection if self.parts.scheme == "https" else http.client.HTTPConnection
        return kind(self.parts.hostname, self.parts.port, timeout=timeout or self.timeout)

    def request(self, method: str, path: str, body: Any = None, timeout: float | None = None) -> Any:
        """One request and its JSON reply; ``ServerError`` (one line) when refused or unreachable."""
        connection = self.connection(timeout)
        try:
            response = self.send(connection, method, path, body)
            return json.loads(response.read() or b"null")
        finally:
            connection.close()

    def send(self, connection: http.client.HTTPConnection, method: str, path: str, body: Any) -> Any:
        """Send a request on ``connection``; its response, once it said 2xx."""
        headers = {"Content-Type": "application/json"} | (
            {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        )
        data = json.dumps(body).encode() if body is not None else None
        try:
            connection.request(method, self.parts.path.rstrip("/") + path, data, headers)
            response = connection.getresponse()
        except OSError as error:
            raise ServerError(f"no qwq-edge server answers at {self.url} ({error})") from None
        if response.status >= 400:
            raise ServerError(f"{self.url}: {_error_message(response.read(), response.status)}")
        return response

    def answers(self) -> bool:
        """Whether a qwq-edge server answers here now (a quick ``/health``)."""
        try:
            return self.request("GET", "/health", timeout=PROBE_SECONDS).get("status") == "ok"
        except (ServerError, ValueError, AttributeError, OSError):
            return False


def _error_message(raw: bytes, status: int) -> str:
    try:
        error = json.loads(raw)["error"]
        return str(error["message"] if isinstance(error, dict) else error)
    except (ValueError, KeyError, TypeError):
        return f"HTTP {status}"


def request_fields(options: GenerationOptions) -> dict[str, Any]:
    """The chat-completion fields that carry ``options`` where they differ from the defaults
    (the server's own defaults apply to the rest), under each option's first HTTP name."""
    defaults, body = GenerationOptions(), {}
    for name, declared in DECLARED.items():
        value = getattr(options, name)
        if declared.http is not None and value != getattr(defaults, name):
            body[(declared.http or (name,))[0]] = value
    if options.top_logprobs:
        body["logprobs"] = True
    return body


class RemoteModel:
    """The model ``name`` (``None``: the server's default) on ``server``: loaded there now if it is not."""

    def __init__(self, server: Server, name: str | None = None) -> None:
        self.server = server
        self.server.request("POST", "/api/generate", {"model": name or "", "prompt": "", "stream": False})
        card = self.server.request("GET", "/v1/models/" + urllib.parse.quote(name or "", safe=""))
        details = card["qwq_edge"]
        self.name = card["id"]
        self.info = RemoteInfo(
            details["model_name"],
            details["path"],
            details["engine"],
            f"{details['device']} at {server.url}",
            details["context_length"],
        )
        self.reasoning_format: ReasoningFormat = FORMATS[details["format"]]
        self._streams: list[Stream] = []

    def stream(self, prompt: Any, options: GenerationOptions | None = None, **overrides: Any) -> Stream:
        """One generation on the server, as ``Model.stream`` gives it."""
        options = (options or GenerationOptions()).replace(**overrides)
        items = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        messages = [message.to_dict() for message in as_messages(items)]
        if options.system is not None and not any(m["role"] == "system" for m in messages):
            messages = [{"role": "system", "content": options.system}, *messages]
        body = {
            "model": self.name,
            "messages": messages,
            "stream": True,
            "return_stats": True,
            **request_fields(options),
        }
        call = _RemoteCall(self.server, body)
        stream = Stream(call.events(), call.cancel, call.answer_now)
        self._streams = [stream]
        return stream

    def cancel(self) -> None:
        """Stop the generation under way (as ``Model.cancel``)."""
        for stream in self._streams:
            stream.cancel()

    def close(self) -> None:
        """Nothing to free here: the server keeps the model for its keep-alive."""


class _RemoteCall:
    """One streamed chat completion: its events, and how to cancel it or answer now."""

    def __init__(self, server: Server, body: dict[str, Any]) -> None:
        self.server, self.body = server, body
        self.connection = server.connection()
        self.request_id: str | None = None
        self.cancelled = self.done = False
        self.thinking: list[str] = []
        self.answer: list[str] = []

    def events(self) -> Iterator[Event]:
        try:
            response = self.server.send(self.connection, "POST", "/v1/chat/completions", self.body)
            self.request_id = response.getheader("X-Request-Id")
            for data in _sse_data(response):
                yield from self._events_of(json.loads(data))
                if self.cancelled:
                    break
            if self.cancelled:
                yield Done(self._result(GenerationStats(finish_reason="cancelled")))
            elif not self.done:
                raise ServerError(f"{self.server.url} closed the reply before its end")
        finally:
            self.connection.close()

    def _events_of(self, chunk: dict[str, Any]) -> Iterator[Event]:
        if "error" in chunk:
            error = chunk["error"]
            raise ServerError(str(error.get("message", error) if isinstance(error, dict) else error))
        for choice in chunk.get("choices", []):
            delta, extra = choice.get("delta") or {}, choice.get("qwq_edge") or {}
            thought = delta.get("reasoning_content")
            if thought:
                self.thinking.append(thought)
                yield ThinkingDelta(thought, extra.get("thinking_tokens", 0), extra.get("forced", ""))
            if delta.get("content"):
                self.answer.append(delta["content"])
                yield AnswerDelta(delta["content"])
            if "intervention" in extra:
                yield Intervention(**extra["intervention"])
            if "stats" in extra:
                known = {f.name for f in fields(GenerationStats)}
                self.done = True
                yield Done(self._result(GenerationStats(**{k: v for k, v in extra["stats"].items() if k in known})))

    def _result(self, stats: GenerationStats) -> GenerationResult:
        return GenerationResult("".join(self.thinking), "".join(self.answer), stats)

    def cancel(self) -> None:
        """End the stream: the server sees its client leave and cancels the generation."""
        self.cancelled = True
        sock = self.connection.sock
        if sock is not None:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def answer_now(self) -> bool:
        """Ask the server to close this generation's thinking; ``False`` when it is already over."""
        if self.request_id is None:
            return False
        try:
            reply = self.server.request("POST", f"/v1/requests/{self.request_id}/answer", timeout=10)
        except ServerError:
            return False
        return bool(reply.get("answering"))


def _sse_data(response: Any) -> Iterator[str]:
    """The ``data:`` payloads of a server-sent event stream, until ``[DONE]`` or the end."""
    while True:
        try:
            line = response.readline()
        except OSError:
            return
        if not line:
            return
        text = line.decode("utf-8").strip()
        if text.startswith("data:"):
            data = text[5:].strip()
            if data == "[DONE]":
                return
            yield data
