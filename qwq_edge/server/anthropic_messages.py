"""Anthropic's Messages API: ``POST /v1/messages`` and ``POST /v1/messages/count_tokens``.

``thinking: {type: "enabled", budget_tokens: N}`` is the thinking budget (closed gracefully
at N, then the answer), ``{type: "disabled"}`` answers without thinking. The reply's content
is a ``thinking`` block, then ``text`` and ``tool_use`` blocks; a thinking block sent back in
a later turn's history is dropped from the prompt (the model card's rule), so its
``signature`` only has to come back unchanged. qwq-edge's own options (``min_thinking_tokens``,
``language``, ``loop_guard``, …) are extension fields of the request.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any, Literal

from pydantic import Field, create_model
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..events import AnswerDelta, Done, Event, GenerationResult, GenerationStats, ThinkingDelta
from ..runtime.stream import Stream
from ..text.tool_calls import ToolCall, ToolCallScanner
from .doors import read_request
from .errors import APIError, bad_request
from .limits import check_chat
from .mapping import extension, options_from_request
from .models import Loaded
from .replies import Door, Encoder, sse
from .schemas import Body, KeepAlive, option_fields
from .service import Service

#: What a thinking block's signature says: any text the client returns unchanged will do.
SIGNATURE = "qwq-edge"
#: qwq-edge's finish reasons as Anthropic's stop reasons (a tool call is ``tool_use``).
STOP_REASONS = {"stop": "end_turn", "cancelled": "end_turn", "budget": "end_turn", "length": "max_tokens"}
#: Anthropic's error types by status.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
}


class Block(Body):
    """A content block; which fields count depends on its ``type``."""

    type: str
    text: str | None = None
    thinking: str | None = None
    signature: str | None = None
    data: str | None = None
    id: str | None = None
    name: str | None = None
    input: dict[str, Any] | None = None
    tool_use_id: str | None = None
    content: str | list[Block] | None = None
    is_error: bool | None = None


Block.model_rebuild()


class Message(Body):
    role: Literal["user", "assistant"]
    content: str | list[Block]


class Thinking(Body):
    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: int | None = Field(None, ge=0)


class Tool(Body):
    name: str
    description: str | None = None
    input_schema: dict[str, Any]


class ToolChoice(Body):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class _MessagesBase(Body):
    model: str
    keep_alive: KeepAlive = None
    messages: list[Message] = Field(min_length=1)
    max_tokens: int = Field(ge=1)
    system: str | list[Block] | None = None
    stop_sequences: list[str] | None = None
    stream: bool = False
    metadata: dict[str, Any] | None = None
    thinking: Thinking | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None


#: The request: Anthropic's fields, and qwq-edge's options as extensions (``temperature``,
#: ``top_p`` and ``top_k`` are both).
MessagesRequest = create_model(
    "MessagesRequest", __base__=_MessagesBase, **option_fields("max_tokens", "think", "tools", "tool_choice")
)


class _CountBase(Body):
    model: str
    keep_alive: KeepAlive = None
    messages: list[Message] = Field(min_length=1)
    system: str | list[Block] | None = None
    thinking: Thinking | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None


CountRequest = create_model("CountRequest", __base__=_CountBase)


def error_body(error: APIError) -> dict[str, Any]:
    """Anthropic's error shape."""
    kind = ERROR_TYPES.get(error.status, "api_error" if error.status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": error.message}}


# -- request → prompt and options ------------------------------------------------------


def messages_of(body: Any) -> list[dict[str, Any]]:
    """The chat as ``{"role", "content"}`` messages: the system prompt first, tool results as
    ``tool`` messages, an assistant's ``tool_use`` blocks as its ``tool_calls``, thinking dropped."""
    messages = [{"role": "system", "content": _text(body.system, "system")}] if body.system else []
    for index, message in enumerate(body.messages):
        where = f"messages.{index}.content"
        blocks = [Block(type="text", text=message.content)] if isinstance(message.content, str) else message.content
        if message.role == "user":
            messages += _user_turn(blocks, where)
        else:
            messages.append(_assistant_turn(blocks, where))
    return messages


def _user_turn(blocks: list[Block], where: str) -> list[dict[str, Any]]:
    results = [b for b in blocks if b.type == "tool_result"]
    _only(blocks, ("text", "tool_result"), where)
    turn = [{"role": "tool", "content": _result_text(b, where)} for b in results]
    text = "".join(b.text or "" for b in blocks if b.type == "text")
    return turn + ([{"role": "user", "content": text}] if text or not results else [])


def _assistant_turn(blocks: list[Block], where: str) -> dict[str, Any]:
    _only(blocks, ("text", "thinking", "redacted_thinking", "tool_use"), where)
    turn: dict[str, Any] = {"role": "assistant", "content": "".join(b.text or "" for b in blocks if b.type == "text")}
    calls = [b for b in blocks if b.type == "tool_use"]
    if calls:
        turn["tool_calls"] = [
            ToolCall(b.name or "", json.dumps(b.input or {}), **({"id": b.id} if b.id else {})).to_openai()
            for b in calls
        ]
    return turn


def _only(blocks: list[Block], kinds: tuple[str, ...], where: str) -> None:
    for block in blocks:
        if block.type not in kinds:
            raise bad_request(f"{where}: {block.type!r} blocks are not supported here ({', '.join(kinds)} are)", where)


def _result_text(block: Block, where: str) -> str:
    text = _text(block.content, where) if block.content is not None else ""
    return f"Error: {text}" if block.is_error else text


def _text(content: str | list[Block] | None, where: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    _only(content, ("text",), where)
    return "".join(b.text or "" for b in content)


def tools_of(body: Any) -> dict[str, Any]:
    """Anthropic's tools and tool choice as OpenAI's (the options' form)."""
    if not body.tools or (body.tool_choice is not None and body.tool_choice.type == "none"):
        return {}
    tools = [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description or "", "parameters": t.input_schema},
        }
        for t in body.tools
    ]
    choice = body.tool_choice
    if choice is None or choice.type == "auto":
        return {"tools": tools, "tool_choice": "auto"}
    if choice.type == "any":
        return {"tools": tools, "tool_choice": "required"}
    if not choice.name:
        raise bad_request("tool_choice.name: a tool choice of type 'tool' names the tool", "tool_choice.name")
    return {"tools": tools, "tool_choice": {"type": "function", "function": {"name": choice.name}}}


def thinking_of(body: Any) -> dict[str, Any]:
    """``thinking`` as options: enabled with a budget is the thinking budget, disabled is no thinking."""
    if body.thinking is None:
        return {}
    if body.thinking.type == "disabled":
        return {"think": False}
    if body.thinking.type == "enabled" and body.thinking.budget_tokens is None:
        raise bad_request("thinking.budget_tokens: required when thinking is enabled", "thinking.budget_tokens")
    budget = {"max_thinking_tokens": body.thinking.budget_tokens} if body.thinking.budget_tokens is not None else {}
    return {"think": True, **budget}


# -- the reply ---------------------------------------------------------------------------


def usage(stats: GenerationStats) -> dict[str, Any]:
    return {
        "input_tokens": stats.prompt_tokens,
        "output_tokens": stats.generated_tokens,
        "cache_read_input_tokens": stats.cached_prompt_tokens,
        "cache_creation_input_tokens": 0,
    }


def stop_reason(stats: GenerationStats, called: bool) -> dict[str, Any]:
    if stats.stop_string:
        return {"stop_reason": "stop_sequence", "stop_sequence": stats.stop_string}
    reason = STOP_REASONS.get(stats.finish_reason, "end_turn")
    return {"stop_reason": "tool_use" if called and reason == "end_turn" else reason, "stop_sequence": None}


def _tool_use(call: ToolCall) -> dict[str, Any]:
    try:
        arguments = json.loads(call.arguments)
    except ValueError:
        arguments = {}
    return {"type": "tool_use", "id": f"toolu_{call.id.removeprefix('call_')}", "name": call.name, "input": arguments}


class MessagesReply(Encoder):
    """A message, or Anthropic's event stream: ``message_start``, a ``ping``, one
    ``content_block_start``/``delta``/``stop`` run per block (thinking, text, each tool use),
    ``message_delta`` (stop reason, usage), ``message_stop``."""

    def __init__(self, model: str, body: Any) -> None:
        super().__init__(f"msg_{uuid.uuid4().hex}", body.stream, body.stop_sequences)
        self.model = model
        self.input_tokens = 0
        self.scanner = ToolCallScanner() if body.tools else None
        self.index = -1
        self.open: str | None = None  # the kind of the block being streamed
        self.called = False

    def _message(self) -> dict[str, Any]:
        return {"id": self.id, "type": "message", "role": "assistant", "model": self.model}

    def opening(self) -> list[str]:
        start = {
            **self._message(),
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": self.input_tokens, "output_tokens": 0},
        }
        return [sse({"type": "message_start", "message": start}, "message_start"), sse({"type": "ping"}, "ping")]

    def frames(self, event: Event) -> list[str]:
        if isinstance(event, ThinkingDelta) and event.text:
            return self._block(
                "thinking", {"thinking": "", "signature": ""}, {"type": "thinking_delta", "thinking": event.text}
            )
        if isinstance(event, AnswerDelta) and event.text:
            return self._answer(event.text)
        if isinstance(event, Done):
            held = self.scanner.flush() if self.scanner is not None else ""
            frames = self._text(held) if held else []
            stats = event.result.stats
            delta = {"type": "message_delta", "delta": stop_reason(stats, self.called), "usage": usage(stats)}
            return [*frames, *self._close(), sse(delta, "message_delta"), sse({"type": "message_stop"}, "message_stop")]
        return []

    def _answer(self, text: str) -> list[str]:
        if self.scanner is None:
            return self._text(text)
        frames: list[str] = []
        for item in self.scanner.feed(text):
            if isinstance(item, ToolCall):
                self.called = True
                block = _tool_use(item)
                frames += self._close()
                json_delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
                frames += self._block("tool_use", {**block, "input": {}}, json_delta)
                frames += self._close()
            elif item:
                frames += self._text(item)
        return frames

    def _text(self, text: str) -> list[str]:
        return self._block("text", {"text": ""}, {"type": "text_delta", "text": text})

    def _block(self, kind: str, start: dict[str, Any], delta: dict[str, Any]) -> list[str]:
        """A delta for the block of ``kind`` being streamed, opening it (and closing another) first."""
        frames: list[str] = []
        if self.open != kind or kind == "tool_use":
            frames += self._close()
            self.index += 1
            self.open = kind
            block = {"type": "content_block_start", "index": self.index, "content_block": {"type": kind, **start}}
            frames.append(sse(block, "content_block_start"))
        frames.append(sse({"type": "content_block_delta", "index": self.index, "delta": delta}, "content_block_delta"))
        return frames

    def _close(self) -> list[str]:
        if self.open is None:
            return []
        frames = []
        if self.open == "thinking":
            signature = {"type": "signature_delta", "signature": SIGNATURE}
            frames.append(
                sse({"type": "content_block_delta", "index": self.index, "delta": signature}, "content_block_delta")
            )
        self.open = None
        return [*frames, sse({"type": "content_block_stop", "index": self.index}, "content_block_stop")]

    def whole(self, result: GenerationResult) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        if result.thinking:
            content.append({"type": "thinking", "thinking": result.thinking, "signature": SIGNATURE})
        text, calls = result.tool_calls() if self.scanner is not None else (result.answer, [])
        if text or not calls:
            content.append({"type": "text", "text": text})
        content += [_tool_use(call) for call in calls]
        return {
            **self._message(),
            "content": content,
            **stop_reason(result.stats, bool(calls)),
            "usage": usage(result.stats),
            "qwq_edge": extension(result.stats),
        }

    def failure(self, message: str, kind: str, code: str | None) -> str:
        return sse({"type": "error", "error": {"type": "overloaded_error", "message": message}}, "error")


# -- endpoints ---------------------------------------------------------------------------


def _prompt(service: Service, served: Loaded, body: Any) -> tuple[list[dict[str, Any]], Any]:
    """The chat and the options of a Messages or count_tokens body, for the model ``served``."""
    messages = messages_of(body)
    given = {**thinking_of(body), **tools_of(body)}
    if "max_tokens" in type(body).model_fields:
        given["max_tokens"] = body.max_tokens
    options = options_from_request(body, served.defaults, given)
    check_chat(messages, given.get("tools"), service.limits)
    return messages, options


async def create_message(request: Request) -> Response:
    service, body = await read_request(request, MessagesRequest)
    async with service.use(body.model, body.keep_alive) as served:
        messages, options = _prompt(service, served, body)
        reply = MessagesReply(served.name, body)

        def build() -> Stream:
            reply.input_tokens = len(served.model.prompt_tokens(messages, options))
            return served.model.stream(messages, options)

        return await service.respond(request, served, build, reply)


async def count_tokens(request: Request) -> Response:
    """The prompt's tokens as the model's template and tokenizer make them."""
    service, body = await read_request(request, CountRequest)
    async with service.use(body.model, body.keep_alive) as served:
        messages, options = _prompt(service, served, body)
        tokens = await asyncio.get_running_loop().run_in_executor(
            served.prompts, lambda: served.model.prompt_tokens(messages, options)
        )
    return JSONResponse({"input_tokens": len(tokens)})


ROUTES = [
    Route("/v1/messages", create_message, methods=["POST"]),
    Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
]
DOOR = Door(ROUTES, "/v1/messages", error_body)
