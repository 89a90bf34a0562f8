"""Ollama's API: ``/api/chat``, ``/api/generate``, ``/api/tags``, ``/api/show``, ``/api/ps``,
``/api/version`` and ``/api/pull``, so that Ollama's clients talk to a qwq-edge server.

A generation streams as Ollama's newline-delimited JSON unless ``stream`` is false (Ollama's
default is a stream). ``think`` is qwq-edge's thinking switch (``true``, ``false``) or an effort
preset (``"low"``, ``"medium"``, ``"high"``); the thinking comes back in ``message.thinking``
(``thinking`` on ``/api/generate``), the answer in ``message.content``. Ollama's ``options``
map onto ``GenerationOptions`` by their meaning (``num_predict`` is ``max_tokens``,
``repeat_penalty`` is ``repetition_penalty``), qwq-edge's own options are ``options`` keys by
their names (``min_thinking_tokens``, ``language``, ``loop_guard``, …), and Ollama's load-time
options (``num_gpu``, ``num_thread``, …) are ignored: the model was loaded when the server
started. ``/api/pull`` runs ``qwq-edge pull`` (in a thread) and streams Ollama's progress.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timezone
from functools import lru_cache
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, create_model
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..catalog import store
from ..catalog.entries import CatalogError, Source, find
from ..engines.adapter import ModelFacts
from ..engines.registry import spec_for_path
from ..errors import InsufficientMemoryError, QwqEdgeError
from ..events import AnswerDelta, Done, Event, GenerationResult, GenerationStats, ThinkingDelta
from ..reasoning.effort import EFFORTS
from ..runtime.options import GenerationOptions
from ..runtime.stream import Stream
from ..sampling import TokenLogprob
from ..text.tool_calls import ToolCall, ToolCallScanner
from .doors import read_request, service_of
from .errors import APIError, bad_request
from .limits import check_chat
from .mapping import EFFORT_ALIASES, check_schemas, extension, options_from_request
from .models import Loaded, keep_alive_seconds
from .replies import Door, Encoder, ndjson
from .schemas import Body, KeepAlive, option_fields
from .service import Service

NDJSON = "application/x-ndjson"
#: ``think`` as a level: Ollama's ``low``, ``medium``, ``high``, and qwq-edge's other presets.
THINK_LEVELS = tuple(level for level in (*EFFORTS, *EFFORT_ALIASES) if level is not None)
#: When a loaded model's place ends (``/api/ps``): never, while the server runs.
FOREVER = "9999-12-31T23:59:59Z"
#: How often a pull's progress is reported, in seconds.
PROGRESS_SECONDS = 0.5
#: qwq-edge's options that are Ollama fields of their own (``num_predict``, ``think``,
#: ``format``, ``tools``, ``logprobs``), so no ``options`` key.
NOT_IN_OPTIONS = ("max_tokens", "think", "effort", "tools", "response_format", "top_logprobs")


def error_body(error: APIError) -> dict[str, Any]:
    """Ollama's error shape: ``{"error": message}``."""
    return {"error": error.message}


# -- requests ------------------------------------------------------------------------------


class Function(Body):
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class ToolCallIn(Body):
    """A call of an earlier assistant turn: Ollama sends its arguments as an object."""

    function: Function


class Message(Body):
    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = None
    thinking: str | None = None
    images: list[str] | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_name: str | None = None


class _OllamaOptions(Body):
    """Ollama's own option names (the rest of ``options`` are qwq-edge's, by their names)."""

    num_predict: int | None = None
    num_ctx: int | None = Field(None, ge=1)
    repeat_penalty: float | None = Field(None, gt=0)
    stop: str | list[str] | None = None


Options = create_model("Options", __base__=_OllamaOptions, **option_fields(*NOT_IN_OPTIONS))


class _Generation(Body):
    model: str
    stream: bool = True
    think: bool | str | None = None
    format: str | dict[str, Any] | None = None
    keep_alive: KeepAlive = None
    logprobs: bool | None = None
    top_logprobs: int | None = None


class _ChatBase(_Generation):
    messages: list[Message] = Field(default_factory=list)
    tools: list[dict[str, Any]] | None = None


class _GenerateBase(_Generation):
    prompt: str = ""
    system: str | None = None
    raw: bool = False
    suffix: str | None = None
    images: list[str] | None = None
    template: str | None = None
    context: list[int] | None = None


ChatRequest = create_model("ChatRequest", __base__=_ChatBase, options=(Options | None, None))
GenerateRequest = create_model("GenerateRequest", __base__=_GenerateBase, options=(Options | None, None))


class ModelRequest(Body):
    """``/api/show`` and ``/api/pull``: ``model`` (``name`` in Ollama's older clients)."""

    model: str = Field(validation_alias=AliasChoices("model", "name"))
    verbose: bool = False
    insecure: bool = False
    stream: bool = True


# -- request → prompt and options -------------------------------------------------------


def messages_of(body: Any) -> list[dict[str, Any]]:
    """The chat as ``{"role", "content"}`` messages: an assistant's calls as its ``tool_calls``,
    a tool's result as a ``tool`` message; earlier thinking (and ``tool_name``) dropped."""
    messages = []
    for index, message in enumerate(body.messages):
        refuse_images(message.images, f"messages.{index}.images")
        item: dict[str, Any] = {"role": message.role, "content": message.content or ""}
        if message.tool_calls:
            item["tool_calls"] = [
                {"type": "function", "function": {"name": call.function.name, "arguments": call.function.arguments}}
                for call in message.tool_calls
            ]
        messages.append(item)
    return messages


def refuse_images(images: list[str] | None, where: str) -> None:
    if images:
        raise bad_request(f"{where}: images are not supported (this server runs text models)", where)


def generate_prompt(body: Any) -> list[dict[str, Any]] | str:
    """``/api/generate``'s prompt: raw text with ``raw``, else one user message (after ``system``)."""
    refuse_images(body.images, "images")
    if body.suffix:
        raise bad_request("suffix: fill-in-the-middle is not supported", "suffix")
    if body.raw:
        return body.prompt
    system = [{"role": "system", "content": body.system}] if body.system else []
    return [*system, {"role": "user", "content": body.prompt}]


def think_of(think: bool | str | None) -> dict[str, Any]:
    """``think``: a switch, or a level (an effort preset, thinking on)."""
    if think is None or isinstance(think, bool):
        return {} if think is None else {"think": think}
    if think not in THINK_LEVELS:
        raise bad_request(f"think must be true, false or one of {', '.join(THINK_LEVELS)}; got {think!r}", "think")
    return {"think": True, "effort": think}


def format_of(format: str | dict[str, Any] | None) -> dict[str, Any]:
    """``format``: ``"json"`` is any JSON object, a JSON schema is that schema (unknown keywords ignored)."""
    if format is None or format == "":
        return {}
    if format == "json":
        return {"response_format": {"type": "json_object"}}
    if isinstance(format, str):
        raise bad_request(f'format must be "json" or a JSON schema; got {format!r}', "format")
    schema = {"name": "format", "schema": format, "strict": False}
    return {"response_format": {"type": "json_schema", "json_schema": schema}}


def logprobs_of(body: Any) -> dict[str, Any]:
    """``logprobs`` asks for every generated token's log-probability, ``top_logprobs`` for the most likely tokens'."""
    if body.top_logprobs is not None and not body.logprobs:
        raise bad_request("top_logprobs needs logprobs: true", "top_logprobs")
    return {"top_logprobs": body.top_logprobs or 0} if body.logprobs else {}


def check_context(num_ctx: int | None, context_length: int) -> None:
    """``num_ctx`` is set when the model loads: up to the loaded model's it is ignored, more is a 400."""
    if num_ctx is not None and num_ctx > context_length:
        message = f"options.num_ctx: {num_ctx} is more than this server's context ({context_length} tokens)"
        raise bad_request(message + "; it is set when the server starts (serve --ctx)", "options.num_ctx")


def renamed_options(options: Any) -> dict[str, Any]:
    """Ollama's option names as qwq-edge's: ``num_predict`` (-1 or -2: no limit of the request's own)
    is ``max_tokens``, ``repeat_penalty`` is ``repetition_penalty``."""
    given: dict[str, Any] = {}
    predict = options.num_predict
    if predict is not None and (predict == 0 or predict < -2):
        raise bad_request("options.num_predict: -1 (no limit), -2 or a number of tokens", "options.num_predict")
    if predict is not None and predict > 0:
        given["max_tokens"] = predict
    if options.repeat_penalty is not None:
        given["repetition_penalty"] = options.repeat_penalty
    return given


def options_of(body: Any, served: Loaded) -> GenerationOptions:
    """The request's options: Ollama's ``options`` by their meaning, qwq-edge's by their names,
    then ``think``, ``format``, the tools and the log-probabilities."""
    options = body.options or Options()
    check_context(options.num_ctx, served.model.info.context_length)
    given = {
        **renamed_options(options),
        **think_of(body.think),
        **format_of(body.format),
        **logprobs_of(body),
    }
    if getattr(body, "tools", None):
        given["tools"] = body.tools
    result = options_from_request(options, served.defaults, given)
    check_schemas(result)
    return result


def stops_of(body: Any) -> list[str]:
    stop = body.options.stop if body.options is not None else None
    return [stop] if isinstance(stop, str) else list(stop or [])


# -- the reply ----------------------------------------------------------------------------


def rfc3339(moment: datetime) -> str:
    """A UTC time as Ollama writes its times (``created_at``, ``modified_at``)."""
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def now() -> str:
    return rfc3339(datetime.now(timezone.utc))


def _ns(seconds: float) -> int:
    return round(seconds * 1e9)


def ending(stats: GenerationStats) -> dict[str, Any]:
    """The last object's fields: why it ended, the counts and timings (in nanoseconds), qwq-edge's account."""
    return {
        "done": True,
        "done_reason": "length" if stats.finish_reason == "length" else "stop",
        "total_duration": _ns(stats.total_seconds),
        "load_duration": 0,
        "prompt_eval_count": stats.prompt_tokens,
        "prompt_eval_duration": _ns(stats.prefill_seconds),
        "eval_count": stats.generated_tokens,
        "eval_duration": _ns(stats.decode_seconds),
        "qwq_edge": extension(stats),
    }


def tool_call(call: ToolCall, index: int) -> dict[str, Any]:
    """A call as Ollama gives it: the arguments as an object."""
    try:
        arguments = json.loads(call.arguments)
    except ValueError:
        arguments = {}
    return {"id": call.id, "function": {"index": index, "name": call.name, "arguments": arguments}}


class OllamaReply(Encoder):
    """Ollama's objects, one per line while streaming (``done: false``, then one ``done: true``
    with the counts), or the whole reply as one: a chat's ``message`` (``content``,
    ``thinking``, ``tool_calls``), or ``/api/generate``'s ``response`` and ``thinking``."""

    media_type = NDJSON

    def __init__(self, model: str, body: Any, chat: bool, tools: bool) -> None:
        super().__init__(f"ollama-{uuid.uuid4().hex}", body.stream, stops_of(body))
        self.model = model
        self.chat = chat
        self.scanner = ToolCallScanner() if tools else None
        self.calls_sent = 0

    def _object(
        self,
        content: str = "",
        thinking: str = "",
        calls: Sequence[ToolCall] = (),
        logprobs: Sequence[TokenLogprob] = (),
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "created_at": now()}
        text = {"content" if self.chat else "response": content, **({"thinking": thinking} if thinking else {})}
        if calls:
            text["tool_calls"] = [tool_call(call, self.calls_sent + i) for i, call in enumerate(calls)]
            self.calls_sent += len(calls)
        body.update({"message": {"role": "assistant", **text}} if self.chat else text)
        if logprobs:
            body["logprobs"] = [entry.to_openai() for entry in logprobs]
        return body

    def frames(self, event: Event) -> list[str]:
        if isinstance(event, ThinkingDelta) and event.text:
            chunk = {**self._object(thinking=event.text, logprobs=event.logprobs), "done": False}
            return [ndjson({**chunk, "qwq_edge": {"forced": event.forced}} if event.forced else chunk)]
        if isinstance(event, AnswerDelta) and event.text:
            return self._answer(event)
        if isinstance(event, Done):
            held = self.scanner.flush() if self.scanner is not None else ""
            return [ndjson({**self._object(held), **ending(event.result.stats)})]
        return []

    def _answer(self, event: AnswerDelta) -> list[str]:
        """Answer text; with tools offered, each finished ``<tool_call>`` block as ``tool_calls``."""
        items = self.scanner.feed(event.text) if self.scanner is not None else [event.text]
        text = "".join(item for item in items if isinstance(item, str))
        calls = [item for item in items if isinstance(item, ToolCall)]
        if not text and not calls:
            return []
        return [ndjson({**self._object(text, calls=calls, logprobs=event.logprobs), "done": False})]

    def whole(self, result: GenerationResult) -> dict[str, Any]:
        content, calls = result.tool_calls() if self.scanner is not None else (result.answer, [])
        return {**self._object(content, result.thinking, calls, result.logprobs), **ending(result.stats)}

    def failure(self, message: str, kind: str, code: str | None) -> str:
        return ndjson({"error": message})


# -- the served model ---------------------------------------------------------------------


@lru_cache(maxsize=4)
def _catalog_name(model_path: str) -> str | None:
    """The ``NAME:QUANT`` that ``qwq-edge list`` shows for the model at ``model_path``, if it was pulled."""
    target = Path(model_path).resolve()
    return next((f"{p.name}:{p.quant}" for p in store.installed() if Path(p.path).resolve() == target), None)


def resolve(service: Service, name: str) -> str:
    """The served model ``name`` names (``:latest`` or not), or a 404 in Ollama's words."""
    try:
        return service.models.resolve(name)
    except APIError:
        try:
            return service.models.resolve(name.removesuffix(":latest"))
        except APIError:
            raise APIError(404, f"model '{name}' not found", param="model", code="model_not_found") from None


def listed_name(name: str, path: Path) -> str:
    """The name Ollama's clients see: a pulled model's ``NAME:QUANT`` when the server calls it by
    its file's name (no ``--model-id``), else the server's."""
    pulled = _catalog_name(str(path))
    return pulled if pulled and name == (path.stem if path.suffix == ".gguf" else path.name) else name


@lru_cache(maxsize=4)
def _facts(model_path: str) -> tuple[ModelFacts, int]:
    """What the model's files say (format, parameters, quantization) and when they changed (ns)."""
    path = Path(model_path)
    return spec_for_path(path).facts(path), path.stat().st_mtime_ns


def _parameter_size(parameters: int) -> str:
    return f"{parameters / 1e9:.1f}B" if parameters >= 1e9 else f"{parameters / 1e6:.0f}M"


async def model_card(name: str, path: Path) -> dict[str, Any]:
    """A servable model as ``/api/tags`` lists it. ``digest`` is a SHA-256 of its path, size and
    modification time (not of its bytes: hashing gigabytes on a listing would stall it)."""
    facts, mtime_ns = await asyncio.to_thread(_facts, str(path))
    size = sum(facts.files.values())
    name = listed_name(name, path)
    return {
        "name": name,
        "model": name,
        "modified_at": rfc3339(datetime.fromtimestamp(mtime_ns / 1e9, timezone.utc)),
        "size": size,
        "digest": hashlib.sha256(f"{path}\0{size}\0{mtime_ns}".encode()).hexdigest(),
        "details": {
            "parent_model": "",
            "format": facts.format,
            "family": facts.architecture,
            "families": [facts.architecture],
            "parameter_size": _parameter_size(facts.parameters),
            "quantization_level": facts.quantization.upper(),
        },
    }


def _servable(service: Service) -> dict[str, Path]:
    """Every model ``/api/tags`` lists (once each), by name: the loaded ones and those that can be loaded."""
    models = service.models
    loaded = {name: Path(m.model.info.model_path) for name, m in models.loaded.items()}
    paths = {**models.paths(), **loaded}
    return {name: paths[name] for name in models.names()}


def _number(text: str) -> Any:
    """A metadata value as a number where it is one (Ollama's ``model_info`` has numbers)."""
    for kind in (int, float):
        try:
            value = kind(text)
        except (TypeError, ValueError):
            continue
        return value if math.isfinite(value) else text
    return text


def model_info(served: Loaded, parameters: int) -> dict[str, Any]:
    info = served.model.info
    metadata = {key: _number(value) for key, value in info.metadata.items() if key != "tokenizer.chat_template"}
    return {
        **metadata,
        "general.architecture": info.architecture,
        "general.parameter_count": parameters,
        f"{info.architecture}.context_length": info.trained_context_length,
    }


def parameters_text(served: Loaded) -> str:
    """The sampling defaults a request that gives none gets, as a Modelfile's ``PARAMETER`` lines."""
    sampling = served.defaults.sampling(served.model.sampling)
    values = {
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "top_k": sampling.top_k,
        "min_p": sampling.min_p,
        "repeat_penalty": sampling.repetition_penalty,
        "presence_penalty": sampling.presence_penalty,
        "frequency_penalty": sampling.frequency_penalty,
        "num_ctx": served.model.info.context_length,
        **({"num_predict": served.defaults.max_tokens} if served.defaults.max_tokens else {}),
    }
    return "\n".join(f"{name:<20}{value}" for name, value in values.items())


# -- endpoints ---------------------------------------------------------------------------


def _loaded(model: str, body: Any, chat: bool) -> Response:
    """Ollama's answer to a request with nothing to answer: the model is loaded (or, with
    ``keep_alive`` 0, unloaded: Ollama's way to unload one)."""
    text = {"message": {"role": "assistant", "content": ""}} if chat else {"response": ""}
    done = "unload" if body.keep_alive is not None and keep_alive_seconds(body.keep_alive) == 0 else "load"
    reply = {"model": model, "created_at": now(), **text, "done": True, "done_reason": done}
    return Response(ndjson(reply), media_type=NDJSON) if body.stream else JSONResponse(reply)


async def _answer(request: Request, schema: type[Any], chat: bool) -> Response:
    service, body = await read_request(request, schema)
    model = resolve(service, body.model)
    prompt = messages_of(body) if chat else generate_prompt(body)
    async with service.use(model, body.keep_alive) as served:
        if not (body.messages if chat else body.prompt):
            return _loaded(body.model, body, chat)
        options = options_of(body, served)
        raw = isinstance(prompt, str)
        check_chat([{"role": "user", "content": prompt}] if raw else prompt, options.tools, service.limits)

        def start() -> Stream:
            return served.model.complete(prompt, options) if raw else served.model.stream(prompt, options)

        reply = OllamaReply(body.model, body, chat, tools=bool(options.offered_tools()))
        return await service.respond(request, served, start, reply)


async def chat(request: Request) -> Response:
    return await _answer(request, ChatRequest, chat=True)


async def generate(request: Request) -> Response:
    return await _answer(request, GenerateRequest, chat=False)


async def tags(request: Request) -> Response:
    """Every model this server can serve, loaded or not."""
    service = service_of(request)
    service.check_key(request)
    return JSONResponse({"models": [await model_card(name, path) for name, path in _servable(service).items()]})


async def show(request: Request) -> Response:
    """A model's template, parameters and facts (it is loaded to read them, as a request would)."""
    service, body = await read_request(request, ModelRequest)
    async with service.use(resolve(service, body.model)) as served:
        info = served.model.info
        card = await model_card(served.name, Path(info.model_path))
        facts, _ = _facts(info.model_path)
        thinks = served.model.reasoning_format.thinks
        pulled = _catalog_name(info.model_path)
        entry = find(pulled.split(":")[0]) if pulled else None
        return JSONResponse(
            {
                "license": entry.license if entry else "",
                "modelfile": f"# qwq-edge serves this model\nFROM {info.model_path}\n",
                "parameters": parameters_text(served),
                "template": info.chat_template or "",
                "details": card["details"],
                "model_info": model_info(served, facts.parameters),
                "capabilities": ["completion", *(["thinking"] if thinks else []), "tools"],
                "modified_at": card["modified_at"],
                "qwq_edge": {
                    "engine": info.engine,
                    "device": info.device,
                    "context_length": info.context_length,
                    "reasoning_format": served.model.reasoning_format.name,
                },
            }
        )


async def ps(request: Request) -> Response:
    """The loaded models: their memory (the plan's weights, KV cache, overhead and prompt cache),
    all of it on the GPU when the engine offloads to one, their context and when they unload."""
    service = service_of(request)
    service.check_key(request)
    models = []
    for loaded in list(service.models.loaded.values()):
        info, status = loaded.model.info, loaded.status()
        card = await model_card(loaded.name, Path(info.model_path))
        size = loaded.memory_bytes or card["size"]
        expires = status["expires_at"]
        models.append(
            {
                **{key: card[key] for key in ("name", "model", "digest", "details")},
                "size": size,
                "size_vram": 0 if info.device.startswith("cpu") else size,
                "expires_at": FOREVER if expires is None else rfc3339(datetime.fromtimestamp(expires, timezone.utc)),
                "context_length": info.context_length,
            }
        )
    return JSONResponse({"models": models})


async def version(request: Request) -> Response:
    """qwq-edge's version (no key needed, as for ``/health``)."""
    return JSONResponse({"version": package_version("qwq-edge")})


def pull_source(spec: str) -> Source:
    """The catalog download ``spec`` names, checked to fit here: a 404 or a 400 before any stream."""
    try:
        entry, source = store.choose_source(spec)
        store.check_pull(entry, source)
    except CatalogError as error:
        raise APIError(404, str(error), param="model", code="model_not_found") from None
    except InsufficientMemoryError as error:
        raise bad_request(str(error), "model") from None
    return source


def _bytes_in(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file()) if folder.is_dir() else 0


def _blobs(repo: str) -> Path:
    """Where huggingface-hub writes ``repo``'s files while it downloads them."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE) / ("models--" + repo.replace("/", "--")) / "blobs"


async def pull_progress(spec: str, source: Source) -> AsyncIterator[str]:
    """Ollama's progress lines for ``qwq-edge pull SPEC`` running in a thread: the bytes the
    repository's cache folder gained so far (huggingface-hub verifies each file's checksum)."""
    yield ndjson({"status": "pulling manifest"})
    file = source.repo if source.patterns else source.files[0]
    layer = {
        "status": f"pulling {file}",
        "digest": "sha256:" + hashlib.sha256(f"{source.repo}/{file}".encode()).hexdigest(),
        "total": source.size_bytes,
    }
    blobs = _blobs(source.repo)
    start = _bytes_in(blobs)
    task = asyncio.ensure_future(asyncio.to_thread(store.pull, spec))
    while not task.done():
        yield ndjson({**layer, "completed": max(0, min(source.size_bytes, _bytes_in(blobs) - start))})
        await asyncio.wait({task}, timeout=PROGRESS_SECONDS)
    try:
        task.result()
    except QwqEdgeError as error:
        yield ndjson({"error": str(error)})
        return
    yield ndjson({**layer, "completed": source.size_bytes})
    for status in ("verifying sha256 digest", "writing manifest", "success"):
        yield ndjson({"status": status})


async def pull(request: Request) -> Response:
    """``qwq-edge pull``: the model is then on disk, for ``qwq-edge serve -m NAME:QUANT``."""
    _, body = await read_request(request, ModelRequest)
    spec = body.model.removesuffix(":latest")
    source = pull_source(spec)
    if body.stream:
        return StreamingResponse(pull_progress(spec, source), media_type=NDJSON)
    await asyncio.to_thread(store.pull, spec)
    return JSONResponse({"status": "success"})


ROUTES = [
    Route("/api/chat", chat, methods=["POST"]),
    Route("/api/generate", generate, methods=["POST"]),
    Route("/api/tags", tags),
    Route("/api/show", show, methods=["POST"]),
    Route("/api/ps", ps),
    Route("/api/version", version),
    Route("/api/pull", pull, methods=["POST"]),
]
DOOR = Door(ROUTES, "/api/", error_body)
