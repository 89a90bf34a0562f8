"""The ASGI app: OpenAI's endpoints, ``/health``, and the web chat page at ``/``.

``create_app(model)`` is the whole server for embedding in another program (run
it with any ASGI server); ``qwq-edge serve`` runs it with uvicorn.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..errors import ContextOverflowError, InvalidRequestError, QwqEdgeError
from ..reasoning.formats import NONE
from ..runtime.model import Model
from ..runtime.notices import THINKING_CONTROLS, requested_format, thinking_controls_ignored
from ..runtime.options import GenerationOptions
from ..runtime.stream import Stream
from ..text.tool_calls import ToolCallScanner
from .anthropic_messages import DOOR as ANTHROPIC_MESSAGES
from .choices import OpenAIChoices, several
from .doors import read_request, service_of
from .errors import APIError
from .guard import Hosts, RequestGuard
from .limits import ClientGone, Limits, check_prompt, prompt_chars_for
from .logs import RequestLog
from .mapping import (
    OpenAIReply,
    Reply,
    check_schemas,
    completion_prompt,
    messages_from_request,
    options_from_request,
    stop_strings,
)
from .metrics import CONTENT_TYPE_LATEST, Metrics
from .models import ModelHost
from .ollama_api import DOOR as OLLAMA
from .openai_responses import DOOR as OPENAI_RESPONSES
from .queue import Runner
from .schemas import ChatCompletionRequest, CompletionRequest, GenerationFields
from .service import REQUEST_ID, Service, default_model_id, gone

STATIC = Path(__file__).parent / "static"


def create_app(
    served: Model | ModelHost,
    *,
    defaults: GenerationOptions | None = None,
    model_id: str | None = None,
    api_key: str | None = None,
    max_queue: int = 8,
    cors_origins: Sequence[str] = (),
    host: str = "127.0.0.1",
    allowed_hosts: Sequence[str] = (),
    limits: Limits | None = None,
    metrics_public: bool = False,
) -> Starlette:
    """The server for a ``Model`` (served as ``model_id`` with ``defaults``, the options a
    request's fields change, as long as the server runs) or for the models a ``ModelHost``
    loads on demand. ``api_key``: required on ``/v1/*`` when set; ``max_queue``: requests that
    may wait while one runs (more get 429); ``cors_origins``: web origins allowed to call it;
    ``host``: the address it is bound to, which (with ``localhost``, loopback addresses and
    ``allowed_hosts``) a request's ``Host`` must name; ``limits``: what a request may hold
    (default: ``Limits`` with 8 prompt characters per token of the model's context);
    ``metrics_public``: ``/metrics`` without the key."""
    metrics = Metrics(ROUTES)
    models = served if isinstance(served, ModelHost) else ModelHost(dict, {}, lambda model: GenerationOptions())
    models.runner_for = runner_maker(max_queue, metrics)
    models.on_change = lambda name, change: metrics.model_changes.labels(name, change).inc()
    if isinstance(served, Model):
        limits = limits or Limits(max_prompt_chars=prompt_chars_for(served.info.context_length))
        models.adopt(model_id or default_model_id(served), served, defaults or GenerationOptions(), None)
    service = Service(models, api_key, limits or Limits(), metrics=metrics, metrics_public=metrics_public)
    guard = Middleware(RequestGuard, hosts=Hosts(host, allowed_hosts), origins=cors_origins, respond=error_response)
    middleware = [Middleware(RequestLog, metrics=metrics), guard]
    if cors_origins:
        allowed = {
            "allow_methods": ["GET", "POST", "OPTIONS"],
            "allow_headers": ["Authorization", "Content-Type", "x-api-key", "anthropic-version"],
            "expose_headers": [REQUEST_ID],
        }
        middleware.append(Middleware(CORSMiddleware, allow_origins=list(cors_origins), **allowed))
    app = Starlette(
        routes=ROUTES,
        middleware=middleware,
        exception_handlers={
            APIError: _http_error,
            HTTPException: _http_error,
            QwqEdgeError: _library_error,
            ClientGone: _client_gone,
            Exception: _internal_error,
        },
        lifespan=_lifespan,
    )
    app.state.service = service
    app.state.started = int(time.time())
    return app


def runner_maker(max_queue: int, metrics: Metrics) -> Callable[[str, Model], Runner]:
    """Each loaded model's queue: ``max_queue`` may wait besides the generations it runs at once."""
    return lambda name, model: Runner(max_queue, model.parallel, metrics.queue_wait.labels(name).observe)


@asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    service: Service = app.state.service
    service.loop = asyncio.get_running_loop()
    reaper = asyncio.create_task(service.models.reap())
    yield
    reaper.cancel()
    for loaded in list(service.models.loaded.values()):
        loaded.runner.shutdown()
        loaded.prompts.shutdown(wait=False, cancel_futures=True)


# -- endpoints ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Kind:
    """What differs between the two generation endpoints."""

    name: str  # "chat" or "completion"
    schema: type[GenerationFields]
    prompt: Callable[[Any], Any]  # body → messages or raw prompt
    start: Callable[[Model, Any, GenerationOptions], Stream]
    tokens: Callable[[Model, Any, GenerationOptions], list[int]]


CHAT = _Kind(
    "chat",
    ChatCompletionRequest,
    messages_from_request,
    lambda model, messages, options: model.stream(messages, options),
    lambda model, messages, options: model.prompt_tokens(messages, options),
)
COMPLETION = _Kind(
    "completion",
    CompletionRequest,
    completion_prompt,
    lambda model, prompt, options: model.complete(prompt, options),
    lambda model, prompt, options: model.raw_prompt_tokens(prompt),
)


async def _generate(request: Request, kind: _Kind) -> Response:
    """Key, body (its limits checked as it is read and parsed), model (loaded if it is not),
    options; then a place in the queue, where the prompt is built (a 400 if it cannot fit) and generated."""
    service, body = await read_request(request, kind.schema)
    check_prompt(body, service.limits)
    async with service.use(body.model, body.keep_alive) as served:
        options = options_from_request(body, served.defaults)
        check_schemas(options)
        prompt = kind.prompt(body)
        reply = Reply(served.name, kind.name, tool_calls=_tool_calls(options))
        reply.warnings = _ignored_controls(served.model, body, kind)
        reply.stats = body.return_stats
        replies = [reply, *(replace(reply, tool_calls=_tool_calls(options)) for _ in range(body.n - 1))]
        encoder = OpenAIReply(reply, body) if body.n == 1 else OpenAIChoices(replies, body)

        def build() -> Stream:
            """The prompt's tokens and the generation's controller (tokenizing: in the model's pool)."""
            if body.n == 1:
                events = kind.start(served.model, prompt, options)
            else:
                events = several(served.model, prompt, options, body.n, stop_strings(body))
            if body.return_token_ids:
                reply.prompt_token_ids = kind.tokens(served.model, prompt, options)
            return events

        return await service.respond(request, served, build, encoder)


def _tool_calls(options: GenerationOptions) -> ToolCallScanner | None:
    """A choice's scanner for its answer's tool calls, when tools are offered."""
    return ToolCallScanner() if options.offered_tools() else None


def _ignored_controls(model: Model, body: Any, kind: _Kind) -> list[str]:
    """The notice for thinking controls a request gives a model that does not think (the request's
    own fields only: a server-wide ``--budget`` does not warn on every request)."""
    given = {name: getattr(body, name) for name in (*THINKING_CONTROLS, "reasoning_format")}
    asked = GenerationOptions(**{name: value for name, value in given.items() if value is not None})
    fmt = requested_format(model.reasoning_format if kind is CHAT else NONE, asked)
    notice = thinking_controls_ignored(fmt, asked, {"effort": "reasoning_effort"})
    return [notice] if notice else []


async def chat_completions(request: Request) -> Response:
    return await _generate(request, CHAT)


async def completions(request: Request) -> Response:
    return await _generate(request, COMPLETION)


def _model_card(request: Request, name: str) -> dict[str, object]:
    """A model as ``/v1/models`` lists it: OpenAI's fields, and whether (and how) it is loaded."""
    loaded = service_of(request).models.loaded.get(name)
    details: dict[str, object] = {"loaded": loaded is not None}
    if loaded is not None:
        details |= {"format": loaded.model.reasoning_format.name, **loaded.status()}
    card = {"id": name, "object": "model", "created": request.app.state.started, "owned_by": "qwq-edge"}
    return card | {"qwq_edge": details}


async def list_models(request: Request) -> Response:
    service = service_of(request)
    service.check_key(request)
    return JSONResponse({"object": "list", "data": [_model_card(request, name) for name in service.models.names()]})


async def get_model(request: Request) -> Response:
    service = service_of(request)
    service.check_key(request)
    return JSONResponse(_model_card(request, service.models.resolve(request.path_params["name"])))


async def unload_model(request: Request) -> Response:
    """Unload a model now (``qwq-edge stop``), or once the requests using it end."""
    service = service_of(request)
    service.check_key(request)
    name = service.models.resolve(request.path_params["name"])
    loaded = service.models.loaded.get(name)
    busy = loaded is not None and loaded.holds > 0
    unloaded = await service.models.unload(name)
    message = "not loaded" if not unloaded else "unloads once its requests end" if busy else "unloaded"
    return JSONResponse({"id": name, "object": "qwq_edge.unload", "loaded": busy, "message": message})


async def health(request: Request) -> Response:
    """Whether the server runs, what it is doing, and the thinking defaults a request that gives none gets
    (the web page shows them; no key needed, as they say nothing a request could not find out)."""
    service = service_of(request)
    models = service.models
    runners = [loaded.runner for loaded in models.loaded.values()]
    default = models.loaded.get(models.default or "")
    options = default.defaults if default else models.defaults_for(None)
    defaults = {"max_thinking_tokens": options.max_thinking_tokens, "effort": options.effort}
    busy, waiting = any(runner.busy for runner in runners), sum(runner.waiting for runner in runners)
    body = {"status": "ok", "model": models.default, "loaded": list(models.loaded), "busy": busy, "waiting": waiting}
    return JSONResponse({**body, "defaults": defaults})


async def answer_now(request: Request) -> Response:
    """Close a running generation's thinking (its id: the ``X-Request-Id`` header, the chunks' ``id``)."""
    service = service_of(request)
    service.check_key(request)
    return JSONResponse(service.answer_now(request.path_params["id"]))


async def metrics(request: Request) -> Response:
    """Prometheus's text format; behind the API key unless the server was started with ``--metrics-public``."""
    service = service_of(request)
    if not service.metrics_public:
        service.check_key(request)
    return Response(service.metrics.text(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def index(request: Request) -> Response:
    return FileResponse(STATIC / "index.html")


#: The other protocols' doors, each a module of its own.
DOORS = (ANTHROPIC_MESSAGES, OPENAI_RESPONSES, OLLAMA)
ROUTES = [
    Route("/", index),
    Route("/health", health),
    Route("/metrics", metrics),
    Route("/v1/models", list_models),
    Route("/v1/models/{name:path}/unload", unload_model, methods=["POST"]),
    Route("/v1/models/{name:path}", get_model),
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/completions", completions, methods=["POST"]),
    Route("/v1/requests/{id}/answer", answer_now, methods=["POST"]),
    *(route for door in DOORS for route in door.routes),
    Mount("/static", StaticFiles(directory=STATIC), name="static"),
]
#: Doors whose clients read another error shape than OpenAI's, by path prefix.
ERROR_SHAPES = [(door.prefix, door.error_body) for door in DOORS if door.error_body is not None]


# -- errors ---------------------------------------------------------------------------


def error_response(path: str, error: APIError) -> JSONResponse:
    """``error`` in the shape its door's clients read (OpenAI's unless the path is another door's)."""
    shape = next((shape for prefix, shape in ERROR_SHAPES if path.startswith(prefix)), APIError.body)
    return JSONResponse(shape(error), status_code=error.status, headers=error.headers)


async def _http_error(request: Request, error: Exception) -> Response:
    if isinstance(error, HTTPException):
        code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}.get(error.status_code)
        error = APIError(error.status_code, str(error.detail), code=code)
    assert isinstance(error, APIError)
    return error_response(request.url.path, error)


async def _library_error(request: Request, error: Exception) -> Response:
    if isinstance(error, InvalidRequestError):
        code = "context_length_exceeded" if isinstance(error, ContextOverflowError) else "invalid_value"
        return error_response(request.url.path, APIError(400, str(error), code=code))
    return error_response(request.url.path, APIError(500, str(error), kind="server_error"))


async def _client_gone(request: Request, error: Exception) -> Response:
    """The client left while sending its body."""
    return gone(request)


async def _internal_error(request: Request, error: Exception) -> Response:
    message = f"internal error: {type(error).__name__}"
    return error_response(request.url.path, APIError(500, message, kind="server_error", code="internal_error"))
