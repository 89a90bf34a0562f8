"""What a generation request goes through: key, body, model name, options, queue, reply.

``Service`` holds the models (``models.ModelHost``) and the server's settings; every door's
endpoints take their model with ``use`` and answer through ``respond`` with an ``Encoder``
(``replies.py``) that gives the reply its protocol's shape. An error after a stream has
begun (the server shutting down) is that protocol's error frame.
"""

from __future__ import annotations

import asyncio
import hmac
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from ..errors import QwqEdgeError
from ..events import Done, Event, GenerationResult, each_generation
from ..runtime.model import Model
from ..runtime.stream import Stream
from ..text.stops import stop_at
from .errors import APIError
from .limits import Limits
from .metrics import Metrics
from .models import Loaded, ModelHost, keep_alive_seconds
from .replies import Encoder

T = TypeVar("T")

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
#: The header that names a reply's id (its chunks' ``id``), for ``POST /v1/requests/{id}/answer``.
REQUEST_ID = "X-Request-Id"


@dataclass
class Service:
    """The served models (``models``) and the server's settings."""

    models: ModelHost
    api_key: str | None = None
    limits: Limits = field(default_factory=Limits)
    #: What ``/metrics`` shows; ``metrics_public``: shown without the API key.
    metrics: Metrics = field(kw_only=True)
    metrics_public: bool = field(default=False, kw_only=True)
    loop: asyncio.AbstractEventLoop | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.metrics.watch(self._gauges)

    def _gauges(self) -> dict[str, dict[str, float]]:
        """The metrics read when scraped, by loaded model: its queue, memory and prompt cache."""
        gauges = {}
        for name, loaded in list(self.models.loaded.items()):
            cache = loaded.model.prompt_cache
            gauges[name] = {
                "requests_waiting": loaded.runner.waiting,
                "generations_running": loaded.runner.running,
                "model_loaded": 1,
                "model_memory_bytes": loaded.memory_bytes,
                "prompt_cache_bytes": cache.bytes if cache else 0,
            }
        return gauges

    def check_key(self, request: Request) -> None:
        """401 unless the request carries the key (when one is set) as ``Authorization: Bearer KEY``
        or, as Anthropic's clients send it, ``x-api-key: KEY``; compared in constant time."""
        if self.api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        given = token.strip() if scheme.lower() == "bearer" else request.headers.get("x-api-key", "")
        if not hmac.compare_digest(given.encode(), self.api_key.encode()):
            message = "a valid API key is required (Authorization: Bearer KEY, or x-api-key: KEY)"
            raise APIError(401, message, code="invalid_api_key")

    @asynccontextmanager
    async def use(self, name: str | None, keep_alive: str | float | None = None) -> AsyncIterator[Loaded]:
        """The model a request names, loaded and held (it cannot unload) until the block ends;
        ``respond`` holds it on while its generation runs. ``keep_alive``: how long it stays
        loaded once idle, from this request on (Ollama's field; None: as it was)."""
        seconds = keep_alive_seconds(keep_alive) if keep_alive is not None else None
        loaded = await self.models.get(name)
        with self.models.held(loaded):
            if keep_alive is not None:
                loaded.keep_alive = seconds
            yield loaded

    def begin_shutdown(self, after: float = 0.0) -> None:
        """End every waiting and running request, ``after`` seconds from now (safe from a signal
        handler or another thread); each ends with its protocol's error frame or status."""
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.loop.call_later, after, self._end_requests)

    def _end_requests(self) -> None:
        for loaded in list(self.models.loaded.values()):
            loaded.runner.shutdown()

    async def respond(self, request: Request, served: Loaded, build: Callable[[], Stream], reply: Encoder) -> Response:
        """Take a place in ``served``'s queue (or 429), build the prompt in its ``prompts`` pool,
        then generate and answer in ``reply``'s protocol: a stream of frames, or one JSON body."""
        admission = served.runner.admit(reply.places)
        request.state.model = served.name
        try:
            work = asyncio.get_running_loop().run_in_executor(served.prompts, build)
            events = await _until_disconnect(work, request)
        except BaseException:
            admission.release()
            raise
        if events is None:
            admission.release()
            return gone(request)  # left while its prompt waited or was built
        served.live[reply.id] = events
        self.models.hold(served)

        def released() -> None:
            served.live.pop(reply.id, None)
            self.models.release(served)

        admission.on_release = released
        run = served.runner.events(admission, lambda: stop_at(events, reply.stops, events.cancel), events.cancel)
        weakref.finalize(run, admission.release)  # a stream whose body never starts still gives its place back
        if reply.stream:
            started = await _until_disconnect(_started(run), request)
            if started is None:
                return gone(request)  # gone while waiting or prefilling
            headers = SSE_HEADERS | {REQUEST_ID: reply.id}
            return StreamingResponse(_frames(started, request, reply), media_type=reply.media_type, headers=headers)
        result = await _until_disconnect(_result(run), request)
        if result is None:
            return gone(request)
        keep_stats(request, result)
        return JSONResponse(reply.whole(result), headers={REQUEST_ID: reply.id})

    def answer_now(self, request_id: str) -> dict[str, Any]:
        """Close the thinking of the generation ``request_id`` (404 if none is under way)."""
        live = (loaded.live.get(request_id) for loaded in list(self.models.loaded.values()))
        stream = next((stream for stream in live if stream is not None), None)
        if stream is None:
            message = f"no generation {request_id!r} is under way on this server"
            raise APIError(404, message, param="id", code="request_not_found")
        answering = stream.answer_now()
        said = "the thinking closes at its next sentence end" if answering else "the thinking is already over"
        return {"id": request_id, "object": "qwq_edge.answer_now", "answering": answering, "message": said}


def default_model_id(model: Model) -> str:
    """The name ``/v1/models`` lists when none is given: the model file's or folder's name."""
    path = Path(model.info.model_path)
    return path.stem if path.suffix == ".gguf" else path.name


def keep_stats(request: Request, result: GenerationResult) -> None:
    """The generation's stats for the log line and the metrics: one per choice."""
    request.state.stats = [one.stats for one in each_generation(result)]


def gone(request: Request) -> Response:
    """The client is gone: nobody reads this; the log says 499, as nginx does."""
    request.state.disconnected = True
    return Response(status_code=499)


async def _frames(run: AsyncGenerator[Event, None], request: Request, reply: Encoder) -> AsyncIterator[str]:
    result = None
    try:
        for frame in reply.opening():
            yield frame
        async with aclosing(run):
            async for event in run:
                if isinstance(event, Done):
                    result = event.result
                    keep_stats(request, result)
                for frame in reply.frames(event):
                    yield frame
        for frame in reply.closing(result) if result is not None else ():
            yield frame
    except APIError as error:
        yield reply.failure(error.message, error.kind, error.code)
    except QwqEdgeError as error:
        yield reply.failure(str(error), "server_error", None)
    except (asyncio.CancelledError, GeneratorExit):
        request.state.disconnected = True
        raise


async def _started(run: AsyncGenerator[Event, None]) -> AsyncGenerator[Event, None]:
    """``run`` once its first event is there: the stream's headers, first chunks and first
    token then leave together, so the client does not wake (and take a core from the
    engine's threads) while the prompt is prefilled, and an error before the first token
    is still an HTTP status."""
    try:
        first = await anext(run)
    except BaseException:
        await run.aclose()
        raise

    async def chained() -> AsyncGenerator[Event, None]:
        async with aclosing(run):
            yield first
            async for event in run:
                yield event

    return chained()


async def _result(run: AsyncGenerator[Event, None]) -> GenerationResult:
    async with aclosing(run):
        async for event in run:
            if isinstance(event, Done):
                return event.result
    raise APIError(500, "the generation ended without a result", kind="server_error")  # pragma: no cover


async def _until_disconnect(work: Awaitable[T], request: Request) -> T | None:
    """``work``'s result, or ``None`` (and ``work`` cancelled) if the client disconnects first."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        raise
    finally:
        watch.cancel()
    if task in done:
        return task.result()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return None


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass
