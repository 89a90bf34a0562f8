"""OpenAI's Responses API: ``POST /v1/responses``, stateless.

Nothing is stored: a request carries its whole conversation in ``input`` (messages,
earlier ``function_call`` items and their ``function_call_output``), so
``previous_response_id``, ``conversation`` and stored ``prompt`` templates are refused.
``reasoning.effort`` picks an effort preset (``none``: no thinking; ``xhigh``: ``max``);
the thinking is the ``reasoning`` item's ``content`` (``reasoning_text``); the runtime
writes no separate summary, so ``summary`` stays empty. ``text.format`` is the structured
answer and function ``tools`` are offered as on chat completions. qwq-edge's own options
(``min_thinking_tokens``, ``language``, ``loop_guard``, …) are extension fields of the request.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import Field, create_model
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..events import AnswerDelta, Done, Event, GenerationResult, GenerationStats, ThinkingDelta
from ..runtime.options import GenerationOptions
from ..sampling import TokenLogprob
from ..text.tool_calls import ToolCall, ToolCallScanner
from .doors import read_request
from .errors import bad_request
from .limits import check_chat
from .mapping import check_schemas, extension, options_from_request, usage
from .replies import Door, Encoder, sse
from .schemas import Body, KeepAlive, option_fields

#: OpenAI's reasoning efforts (``none`` and ``xhigh`` through ``mapping.EFFORT_ALIASES``).
EFFORTS = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]
#: The ``include`` value that asks for the answer's log-probabilities.
LOGPROBS = "message.output_text.logprobs"
#: Per streamed item kind: its id prefix, its content part's type, its text events' prefix.
KINDS = {
    "reasoning": ("rs", "reasoning_text", "response.reasoning_text"),
    "message": ("msg", "output_text", "response.output_text"),
}


class Part(Body):
    """A content part (``input_text``, ``output_text``; others are refused)."""

    type: str
    text: str | None = None


class Item(Body):
    """An input item; which fields count depends on its ``type`` (a message when absent)."""

    type: str = "message"
    role: Literal["user", "system", "developer", "assistant"] | None = None
    content: str | list[Part] | None = None
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | list[Part] | None = None


class Reasoning(Body):
    effort: EFFORTS | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None


class Format(Body):
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class TextConfig(Body):
    format: Format | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class Tool(Body):
    type: str
    name: str | None = None
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class NamedChoice(Body):
    type: str
    name: str | None = None


class _ResponsesBase(Body):
    model: str | None = None
    keep_alive: KeepAlive = None
    input: str | list[Item]
    instructions: str | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    reasoning: Reasoning | None = None
    text: TextConfig | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["auto", "none", "required"] | NamedChoice | None = None
    include: list[str] | None = None
    stream: bool = False
    store: bool | None = None
    metadata: dict[str, str] | None = None
    parallel_tool_calls: bool | None = None
    background: bool | None = None
    previous_response_id: str | None = None
    conversation: Any = None
    prompt: Any = None


#: The request: OpenAI's fields, and qwq-edge's options as extensions (``temperature``, ``top_p``
#: and ``top_logprobs`` are both; the options Responses' own fields carry are left out).
ResponsesRequest = create_model(
    "ResponsesRequest",
    __base__=_ResponsesBase,
    **option_fields("max_tokens", "effort", "tools", "tool_choice", "response_format"),
)


# -- request → prompt and options ------------------------------------------------------


def refuse_state(body: Any) -> None:
    """A 400 for what needs a stored response, conversation or prompt, or a background run."""
    stored = {
        "previous_response_id": body.previous_response_id,
        "conversation": body.conversation,
        "prompt": body.prompt,
    }
    for name, value in stored.items():
        if value is not None:
            message = f"{name}: this server is stateless and stores nothing; send the whole conversation in input"
            raise bad_request(message, name, "unsupported_parameter")
    if body.background:
        raise bad_request("background: responses are not run in the background here", "background", "unsupported_value")


def messages_of(body: Any) -> list[dict[str, Any]]:
    """The conversation as ``{"role", "content"}`` messages: ``instructions`` first, ``developer``
    as ``system``, a ``function_call`` in the assistant turn before it (or one of its own), a
    ``function_call_output`` as a ``tool`` message, ``reasoning`` items dropped (thinking is
    not carried into later turns)."""
    messages = [{"role": "system", "content": body.instructions}] if body.instructions else []
    items = [Item(role="user", content=body.input)] if isinstance(body.input, str) else body.input
    if not items:
        raise bad_request("input: give at least one item", "input")
    for index, item in enumerate(items):
        where = f"input.{index}"
        if item.type == "message":
            messages.append(_message(item, where))
        elif item.type == "function_call":
            _add_call(messages, item, where)
        elif item.type == "function_call_output":
            messages.append({"role": "tool", "content": _text(item.output, f"{where}.output")})
        elif item.type != "reasoning":
            kinds = "message, function_call, function_call_output and reasoning are"
            raise bad_request(f"{where}: {item.type!r} items are not supported ({kinds})", f"{where}.type")
    return messages


def _message(item: Item, where: str) -> dict[str, Any]:
    if item.role is None or item.content is None:
        raise bad_request(f"{where}: a message needs a role and content", where)
    role = "system" if item.role == "developer" else item.role
    return {"role": role, "content": _text(item.content, f"{where}.content")}


def _add_call(messages: list[dict[str, Any]], item: Item, where: str) -> None:
    if not item.name or not item.call_id or item.arguments is None:
        raise bad_request(f"{where}: a function_call needs call_id, name and arguments", where)
    if not messages or messages[-1]["role"] != "assistant":
        messages.append({"role": "assistant", "content": ""})
    call = ToolCall(item.name, item.arguments, item.call_id).to_openai()
    messages[-1].setdefault("tool_calls", []).append(call)


def _text(content: str | list[Part] | None, where: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    for part in content:
        if part.type not in ("input_text", "output_text"):
            why = "the runtime reads text (input_text and output_text are)"
            raise bad_request(f"{where}: {part.type!r} parts are not supported: {why}", where, "unsupported_value")
    return "".join(part.text or "" for part in content)


def tools_of(body: Any) -> dict[str, Any]:
    """Function tools and the tool choice as the options take them (OpenAI's chat form)."""
    tools = []
    for index, tool in enumerate(body.tools or []):
        if tool.type != "function":
            why = f"{tool.type!r} tools are not supported: this server runs no tools, function tools are offered"
            raise bad_request(f"tools.{index}: {why}", f"tools.{index}.type", "unsupported_value")
        if not tool.name:
            raise bad_request(f"tools.{index}.name: a function tool needs a name", f"tools.{index}.name")
        function = {"name": tool.name, "description": tool.description, "parameters": tool.parameters}
        tools.append({"type": "function", "function": {k: v for k, v in function.items() if v is not None}})
    choice = body.tool_choice
    if isinstance(choice, NamedChoice):
        if choice.type != "function" or not choice.name:
            message = 'tool_choice: auto, none, required or {"type": "function", "name": …}'
            raise bad_request(message, "tool_choice", "unsupported_value")
        choice = {"type": "function", "function": {"name": choice.name}}
    return {"tools": tools or None, "tool_choice": choice}


def format_of(body: Any) -> dict[str, Any] | None:
    """``text.format`` as chat completions' ``response_format`` (None: free text)."""
    fmt = body.text.format if body.text is not None else None
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return {"type": "json_object"}
    if fmt.schema_ is None:
        raise bad_request("text.format.schema: a json_schema format needs its schema", "text.format.schema")
    spec = {"name": fmt.name or "answer", "schema": fmt.schema_, "strict": fmt.strict}
    return {"type": "json_schema", "json_schema": {k: v for k, v in spec.items() if v is not None}}


def options_of(body: Any, defaults: GenerationOptions) -> GenerationOptions:
    """The request's options: Responses' own fields mapped, qwq-edge's extension fields as they are."""
    top = body.top_logprobs if body.top_logprobs is not None else (0 if LOGPROBS in (body.include or ()) else None)
    given = {
        "max_tokens": body.max_output_tokens,
        "effort": body.reasoning.effort if body.reasoning is not None else None,
        "response_format": format_of(body),
        "top_logprobs": top,
        **tools_of(body),
    }
    return options_from_request(body, defaults, {k: v for k, v in given.items() if v is not None})


# -- the reply ---------------------------------------------------------------------------


def response_usage(stats: GenerationStats) -> dict[str, Any]:
    """Responses' usage: chat completions' numbers (``mapping.usage``) under Responses' names."""
    chat = usage(stats)
    return {
        "input_tokens": chat["prompt_tokens"],
        "input_tokens_details": {"cached_tokens": chat["prompt_tokens_details"]["cached_tokens"]},
        "output_tokens": chat["completion_tokens"],
        "output_tokens_details": chat["completion_tokens_details"],
        "total_tokens": chat["total_tokens"],
    }


def incomplete(stats: GenerationStats) -> bool:
    """A token bound (``max_output_tokens``, ``max_answer_tokens``, the context) ended the reply."""
    return stats.finish_reason == "length"


def text_item(kind: str, id: str, text: str | None, status: str, logprobs: list[Any] | None = None) -> dict[str, Any]:
    """A ``reasoning`` or ``message`` item (``text`` None: no content part yet)."""
    content = [] if text is None else [_part(kind, text, logprobs)]
    if kind == "reasoning":
        return {"id": id, "type": "reasoning", "summary": [], "content": content, "status": status}
    return {"id": id, "type": "message", "role": "assistant", "status": status, "content": content}


def _part(kind: str, text: str, logprobs: list[Any] | None) -> dict[str, Any]:
    if kind == "reasoning":
        return {"type": "reasoning_text", "text": text}
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": logprobs or []}


def call_item(call: ToolCall) -> dict[str, Any]:
    """A ``function_call`` item: ``call_id`` is what its ``function_call_output`` names."""
    return {
        "id": f"fc_{call.id.removeprefix('call_')}",
        "type": "function_call",
        "call_id": call.id,
        "name": call.name,
        "arguments": call.arguments,
        "status": "completed",
    }


def settings(body: Any) -> dict[str, Any]:
    """The request's settings as a response echoes them (OpenAI's defaults where it gave none)."""
    choice = body.tool_choice
    return {
        "instructions": body.instructions,
        "max_output_tokens": body.max_output_tokens,
        "metadata": body.metadata or {},
        "parallel_tool_calls": body.parallel_tool_calls is not False,
        "reasoning": body.reasoning.model_dump() if body.reasoning else {"effort": None, "summary": None},
        "temperature": body.temperature,
        "top_p": body.top_p,
        "top_logprobs": body.top_logprobs,
        "text": body.text.model_dump(by_alias=True, exclude_none=True) if body.text else {"format": {"type": "text"}},
        "tool_choice": choice.model_dump(exclude_none=True) if isinstance(choice, NamedChoice) else choice or "auto",
        "tools": [tool.model_dump(exclude_none=True) for tool in body.tools or []],
    }


def _new_id(kind: str) -> str:
    return f"{KINDS[kind][0]}_{uuid.uuid4().hex}"


def _logprobs(entries: tuple[TokenLogprob, ...]) -> list[dict[str, Any]]:
    return [entry.to_openai() for entry in entries]


class ResponsesReply(Encoder):
    """A response, or Responses' event stream: ``response.created`` and ``response.in_progress``;
    per output item ``output_item.added``, ``content_part.added``, its deltas, the ``.done``
    events and ``output_item.done``; then ``response.completed`` (or ``response.incomplete``)
    with the whole response. Every event has a ``sequence_number``."""

    def __init__(self, model: str, body: Any, options: GenerationOptions) -> None:
        super().__init__(f"resp_{uuid.uuid4().hex}", body.stream)
        self.model = model
        self.body = body
        self.created = int(time.time())
        self.scanner = ToolCallScanner() if options.offered_tools() else None
        self.sequence = 0
        self.output: list[dict[str, Any]] = []  # the items streamed so far
        self.open: dict[str, Any] | None = None  # the item being streamed: kind, id, text, logprobs
        self.pending: list[dict[str, Any]] = []  # answer log-probabilities not sent yet
        self.blank = ""  # with tools: blank answer text held back

    # -- the stream

    def _event(self, kind: str, **fields: Any) -> str:
        data = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return sse(data, kind)

    def opening(self) -> list[str]:
        begun = self._response("in_progress", [])
        return [self._event("response.created", response=begun), self._event("response.in_progress", response=begun)]

    def frames(self, event: Event) -> list[str]:
        if isinstance(event, ThinkingDelta) and event.text:
            return self._delta("reasoning", event.text)
        if isinstance(event, AnswerDelta) and event.text:
            self.pending += _logprobs(event.logprobs)
            return self._answer(event.text)
        if isinstance(event, Done):
            held = self.scanner.flush() if self.scanner is not None else ""
            frames = self._answer_text(held) if held else []
            result = event.result
            frames += self._close("incomplete" if incomplete(result.stats) else "completed")
            whole = self._whole(result, self.output)
            kind = "response.completed" if whole["status"] == "completed" else "response.incomplete"
            return [*frames, self._event(kind, response=whole)]
        return []

    def _answer(self, text: str) -> list[str]:
        if self.scanner is None:
            return self._delta("message", text)
        frames: list[str] = []
        for item in self.scanner.feed(text):
            frames += self._call(item) if isinstance(item, ToolCall) else self._answer_text(item)
        return frames

    def _answer_text(self, text: str) -> list[str]:
        """Text around tool calls, as ``split_tool_calls`` gives it: the blanks at its ends (and
        between calls) held back until more text follows."""
        text = self.blank + text
        if self.open is None or self.open["kind"] != "message":
            text = text.lstrip()
        body = text.rstrip()
        self.blank = text[len(body) :]
        return self._delta("message", body) if body else []

    def _delta(self, kind: str, text: str) -> list[str]:
        """A delta of the item of ``kind`` being streamed, opening it (and closing another) first."""
        frames = [] if self.open is not None and self.open["kind"] == kind else [*self._close(), *self._open(kind)]
        item = self.open
        assert item is not None
        item["text"] += text
        where = {"item_id": item["id"], "output_index": len(self.output), "content_index": 0}
        extra: dict[str, Any] = {}
        if kind == "message":
            extra["logprobs"], self.pending = self.pending, []
            item["logprobs"] += extra["logprobs"]
        return [*frames, self._event(f"{KINDS[kind][2]}.delta", **where, delta=text, **extra)]

    def _open(self, kind: str) -> list[str]:
        self.open = {"kind": kind, "id": _new_id(kind), "text": "", "logprobs": []}
        index, id = len(self.output), self.open["id"]
        where = {"item_id": id, "output_index": index, "content_index": 0}
        return [
            self._event(
                "response.output_item.added", output_index=index, item=text_item(kind, id, None, "in_progress")
            ),
            self._event("response.content_part.added", **where, part=_part(kind, "", None)),
        ]

    def _close(self, status: str = "completed") -> list[str]:
        if self.open is None:
            return []
        kind, id, text, logprobs = self.open["kind"], self.open["id"], self.open["text"], self.open["logprobs"]
        self.open = None
        item = text_item(kind, id, text, status, logprobs)
        where = {"item_id": id, "output_index": len(self.output), "content_index": 0}
        extra = {"logprobs": logprobs} if kind == "message" else {}
        frames = [
            self._event(f"{KINDS[kind][2]}.done", **where, text=text, **extra),
            self._event("response.content_part.done", **where, part=item["content"][0]),
            self._event("response.output_item.done", output_index=len(self.output), item=item),
        ]
        self.output.append(item)
        return frames

    def _call(self, call: ToolCall) -> list[str]:
        frames = self._close()
        self.pending, self.blank = [], ""  # the call's tokens, the blank before it
        item, index = call_item(call), len(self.output)
        where = {"item_id": item["id"], "output_index": index}
        self.output.append(item)
        return [
            *frames,
            self._event(
                "response.output_item.added",
                output_index=index,
                item={**item, "arguments": "", "status": "in_progress"},
            ),
            self._event("response.function_call_arguments.delta", **where, delta=call.arguments),
            self._event("response.function_call_arguments.done", **where, arguments=call.arguments),
            self._event("response.output_item.done", output_index=index, item=item),
        ]

    # -- the whole response

    def whole(self, result: GenerationResult) -> dict[str, Any]:
        output = [text_item("reasoning", _new_id("reasoning"), result.thinking, "completed")] if result.thinking else []
        text, calls = result.tool_calls() if self.scanner is not None else (result.answer, [])
        if text:
            answer = [entry for entry in result.logprobs if not entry.thinking]
            output.append(text_item("message", _new_id("message"), text, "completed", _logprobs(tuple(answer))))
        output += [call_item(call) for call in calls]
        if incomplete(result.stats) and output and output[-1]["type"] != "function_call":
            output[-1]["status"] = "incomplete"
        return self._whole(result, output)

    def _whole(self, result: GenerationResult, output: list[dict[str, Any]]) -> dict[str, Any]:
        stats = result.stats
        done = self._response("incomplete" if incomplete(stats) else "completed", output)
        done["incomplete_details"] = {"reason": "max_output_tokens"} if incomplete(stats) else None
        return {**done, "usage": response_usage(stats), "qwq_edge": extension(stats)}

    def _response(self, status: str, output: list[dict[str, Any]]) -> dict[str, Any]:
        """The response object, with the request's settings echoed as OpenAI's clients read them."""
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created,
            "status": status,
            "background": False,
            "error": None,
            "incomplete_details": None,
            "model": self.model,
            "output": output,
            "previous_response_id": None,
            "store": False,
            "truncation": "disabled",
            "usage": None,
            **settings(self.body),
        }

    def failure(self, message: str, kind: str, code: str | None) -> str:
        return self._event("error", code=code, message=message, param=None)


# -- the endpoint ------------------------------------------------------------------------


async def create_response(request: Request) -> Response:
    service, body = await read_request(request, ResponsesRequest)
    refuse_state(body)
    messages = messages_of(body)
    async with service.use(body.model, body.keep_alive) as served:
        options = options_of(body, served.defaults)
        check_schemas(options)
        check_chat(messages, options.tools, service.limits)
        reply = ResponsesReply(served.name, body, options)
        return await service.respond(request, served, lambda: served.model.stream(messages, options), reply)


DOOR = Door([Route("/v1/responses", create_response, methods=["POST"])])
