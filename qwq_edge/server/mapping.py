"""Requests to ``GenerationOptions`` and messages; events and results to OpenAI's JSON.

The server holds no generation logic: ``options_from_request`` is the one place a
request body becomes options, and ``chat_chunk`` / ``completion_chunk`` the one
place an event becomes a streamed chunk.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from ..events import AnswerDelta, Done, Event, GenerationResult, GenerationStats, Intervention, ThinkingDelta
from ..runtime.options import DECLARED, GenerationOptions
from ..sampling import TokenLogprob
from ..text.tool_calls import ToolCall, ToolCallScanner
from .errors import bad_request, error_body
from .replies import Encoder, sse
from .schemas import ChatCompletionRequest, ChatMessage, CompletionRequest, GenerationFields

#: The options a request carries (``server/schemas.py`` builds its fields from their declarations).
REQUEST_OPTIONS = tuple(name for name, declared in DECLARED.items() if declared.http is not None)

#: OpenAI's finish reasons for qwq-edge's (its own stays in the ``qwq_edge`` field).
FINISH_REASONS = {"stop": "stop", "budget": "stop", "length": "length", "cancelled": "stop"}

_THINKING_BLOCK = re.compile(r"^\s*<think>.*?</think>\s*", re.DOTALL)


def options_from_request(
    request: Any, defaults: GenerationOptions, given: dict[str, Any] | None = None
) -> GenerationOptions:
    """The options for one request: the server's ``defaults`` with the request's fields.

    ``request`` is any door's parsed body: the option fields it has (by their names) count.
    ``given``: what the door's own fields say, by option name (Anthropic's thinking budget,
    Ollama's ``options``); it wins over a field of the same name.
    ``max_completion_tokens`` (else ``max_tokens``) bounds thinking plus answer;
    ``reasoning_effort`` picks an effort preset and, unless the request also gives
    numbers, replaces the server's default budget and minimum;
    ``chat_template_kwargs.enable_thinking`` is ``think`` (an explicit ``think`` wins);
    ``draft`` is ``ngram``, ``off`` or ``model`` (the server's ``--draft`` model).
    """
    given = given or {}
    changes: dict[str, Any] = {name: getattr(request, name, None) for name in REQUEST_OPTIONS}
    changes.update(given)
    changes.update(EFFORT_ALIASES.get(changes["effort"], {}))
    named = set(getattr(request, "model_fields_set", ())) | set(given)
    if changes["effort"] is not None:
        for name in ("max_thinking_tokens", "min_thinking_tokens"):
            if name not in named:
                changes[name] = _CLEARED
    template_kwargs = getattr(request, "chat_template_kwargs", None)
    if changes["think"] is None and template_kwargs is not None:
        changes["think"] = template_kwargs.enable_thinking
    changes["top_logprobs"] = _top_logprobs(request, changes["top_logprobs"])
    changes["draft"] = _draft(changes["draft"], defaults.draft)
    if changes["seed"] is not None:
        changes["seed"] = engine_seed(changes["seed"])
    kept = {name: (None if value is _CLEARED else value) for name, value in changes.items() if value is not None}
    return defaults.replace(**kept)


def _top_logprobs(request: Any, top: int | None) -> int | None:
    """OpenAI's pair: ``logprobs: true`` asks for log-probabilities, ``top_logprobs`` for the most
    likely tokens' too (and needs ``logprobs``)."""
    if "logprobs" not in getattr(type(request), "model_fields", {}):
        return top
    if top is not None and request.logprobs is not True:
        raise bad_request("top_logprobs needs logprobs: true", "top_logprobs")
    return 0 if request.logprobs is True and top is None else top


def engine_seed(seed: int) -> int:
    """A request's seed (any 64-bit integer, as OpenAI takes) as the engines' (an unsigned one):
    a negative seed is the unsigned number with the same bits."""
    return seed % 2**64


def check_schemas(options: GenerationOptions) -> None:
    """Every offered tool's parameters compile (a 400 if not), whether or not a call is forced:
    the options compile only the schemas the answer must follow."""
    if options.tools:
        options.replace(tool_choice="required")  # its grammar holds every tool's parameters


#: What a request's ``draft`` may name: a path is never taken from a request, since the
#: server would open any file a client names; ``model`` is the one ``serve --draft`` gave.
REQUEST_DRAFTS = ("ngram", "off", "model")


def _draft(requested: str | None, default: str) -> str | None:
    if requested is None or requested in ("ngram", "off"):
        return requested
    if requested != "model":
        raise bad_request(f"draft must be one of {', '.join(REQUEST_DRAFTS)}; got {requested!r}", "draft")
    if default in ("ngram", "off"):
        raise bad_request("this server has no draft model (start it with serve --draft MODEL)", "draft")
    return default


#: OpenAI's reasoning efforts that are no preset of their own: ``none`` thinks not, ``xhigh`` is ``max``.
EFFORT_ALIASES: dict[str | None, dict[str, Any]] = {
    "none": {"effort": None, "think": False},
    "xhigh": {"effort": "max"},
}

_CLEARED = object()  # "set this option back to None", as opposed to "not given"


def stop_strings(request: GenerationFields) -> list[str]:
    stop = request.stop
    return [stop] if isinstance(stop, str) else list(stop or [])


def messages_from_request(request: ChatCompletionRequest) -> list[dict[str, Any]]:
    """The messages as ``{"role", "content"}`` (and an assistant's ``tool_calls``): text parts
    joined, ``developer`` as ``system``, and an earlier answer's ``<think>…</think>`` dropped
    (thinking is not carried into later turns)."""
    messages = []
    for index, message in enumerate(request.messages):
        content = _text(message, index)
        if message.role == "assistant":
            content = _THINKING_BLOCK.sub("", content, count=1)
        item: dict[str, Any] = {"role": "system" if message.role == "developer" else message.role, "content": content}
        if message.tool_calls:
            item["tool_calls"] = [call.model_dump() for call in message.tool_calls]
        messages.append(item)
    return messages


def _text(message: ChatMessage, index: int) -> str:
    if message.content is None or isinstance(message.content, str):
        return message.content or ""
    if any(part.type != "text" or part.text is None for part in message.content):
        raise bad_request("only text content parts are supported", param=f"messages.{index}.content")
    return "".join(part.text or "" for part in message.content)


def completion_prompt(request: CompletionRequest) -> str | list[int]:
    """The raw prompt: text, or token ids (a list of one text is that text)."""
    prompt = request.prompt
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
        if len(prompt) != 1:
            raise bad_request("only one prompt per request is supported", param="prompt")
        return prompt[0]
    return prompt


# -- responses ------------------------------------------------------------------------


@dataclass
class Reply:
    """What every chunk and response of one request shares."""

    model: str
    kind: str  # "chat" or "completion"
    id: str = field(default="")
    created: int = field(default_factory=lambda: int(time.time()))
    prompt_token_ids: list[int] | None = None
    #: Set when tools are offered: the answer's ``<tool_call>`` blocks become ``tool_calls``.
    tool_calls: ToolCallScanner | None = None
    calls_sent: int = 0
    #: Notices for the client (a thinking control on a model that does not think), in the last choice's ``qwq_edge``.
    warnings: list[str] = field(default_factory=list)
    #: The request's ``return_stats``: every count and timing of the generation in the last ``qwq_edge``.
    stats: bool = False

    def __post_init__(self) -> None:
        self.id = self.id or f"{'chatcmpl' if self.kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex}"

    def envelope(self, chunk: bool) -> dict[str, Any]:
        suffix = ".chunk" if chunk and self.kind == "chat" else ""
        obj = ("chat.completion" if self.kind == "chat" else "text_completion") + suffix
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}


def usage(stats: GenerationStats) -> dict[str, Any]:
    """OpenAI's usage: every generated token counts; the reasoning tokens are the thinking's and
    what the runtime forced into it (a close, "Wait", a nudge: every forced text but the empty
    thinking of a request that does not think), so that the rest is the answer's."""
    completion = stats.generated_tokens
    forced = stats.forced_tokens if stats.thinking_closed_by != "skipped" else 0
    return {
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": stats.prompt_tokens + completion,
        "prompt_tokens_details": {"cached_tokens": stats.cached_prompt_tokens, "cached_from": stats.cached_prompt_from},
        "completion_tokens_details": {"reasoning_tokens": stats.thinking_tokens + forced},
    }


def extension(stats: GenerationStats) -> dict[str, Any]:
    """qwq-edge's own account of how the generation ended (the ``qwq_edge`` field)."""
    return {
        "finish_reason": stats.finish_reason,
        "thinking_closed_by": stats.thinking_closed_by,
        "budget_cut": stats.budget_cut,
        "thinking_tokens": stats.thinking_tokens,
        "answer_tokens": stats.answer_tokens,
        "forced_tokens": stats.forced_tokens,
        "interventions": stats.interventions,
        "forced_spans": stats.forced_spans,
        "cached_prompt_tokens": stats.cached_prompt_tokens,
        "cached_prompt_from": stats.cached_prompt_from,
        **(_speculation(stats) if stats.draft != "off" else {}),
    }


def _speculation(stats: GenerationStats) -> dict[str, Any]:
    data = stats.to_dict()
    names = ("draft", "draft_proposed", "draft_accepted", "draft_acceptance_rate", "tokens_per_pass")
    return {name: data[name] for name in names}


def _choice_end(stats: GenerationStats, reply: Reply, called: bool = False) -> dict[str, Any]:
    """How a choice ended; ``called``: the answer is tool calls (OpenAI's ``tool_calls`` reason)."""
    reason = FINISH_REASONS.get(stats.finish_reason, "stop")
    extra = extension(stats) | ({"warnings": reply.warnings} if reply.warnings else {})
    if reply.stats:
        extra["stats"] = stats.to_dict()
    return {"finish_reason": "tool_calls" if called and reason == "stop" else reason, "qwq_edge": extra}


def _answer_delta(text: str, reply: Reply) -> dict[str, Any]:
    """The delta for answer text: with tools offered, finished ``<tool_call>`` blocks become
    ``tool_calls`` (each whole, with its index) and a block still open is held back."""
    if reply.tool_calls is None:
        return {"content": text} if text else {}
    delta: dict[str, Any] = {}
    for item in reply.tool_calls.feed(text):
        if isinstance(item, ToolCall):
            delta.setdefault("tool_calls", []).append({"index": reply.calls_sent, **item.to_openai()})
            reply.calls_sent += 1
        else:
            delta["content"] = delta.get("content", "") + item
    return delta


def chat_chunk(event: Event, reply: Reply) -> dict[str, Any] | None:
    """The streamed chunk for one event (``None``: nothing to send)."""
    logprobs = None
    if isinstance(event, ThinkingDelta):
        if not event.text:
            return None
        delta = {"reasoning_content": event.text, "reasoning": event.text}
        extra = {"thinking_tokens": event.thinking_tokens} | ({"forced": event.forced} if event.forced else {})
        if event.logprobs:
            extra["logprobs"] = [entry.to_openai() for entry in event.logprobs]
    elif isinstance(event, AnswerDelta):
        delta, extra = _answer_delta(event.text, reply), None
        if not delta:
            return None
        logprobs = _logprobs(event.logprobs)
    elif isinstance(event, Intervention):
        delta, extra = {}, {"intervention": {"kind": event.kind, "text": event.text, "detail": event.detail}}
    else:
        held = reply.tool_calls.flush() if reply.tool_calls is not None else ""
        end = _choice_end(event.result.stats, reply, reply.calls_sent > 0)
        delta = {"content": held} if held else {}
        return {**reply.envelope(True), "choices": [{"index": 0, "delta": delta, "logprobs": None, **end}]}
    choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": None}
    if extra:
        choice["qwq_edge"] = extra
    return {**reply.envelope(True), "choices": [choice]}


def _logprobs(entries: tuple[TokenLogprob, ...]) -> dict[str, Any] | None:
    """OpenAI's ``logprobs`` of a choice or chunk: ``{"content": [...]}``, or None without any."""
    return {"content": [entry.to_openai() for entry in entries]} if entries else None


def chat_first_chunk(reply: Reply) -> dict[str, Any]:
    """The chunk that opens a streamed chat reply (the role, as OpenAI sends it)."""
    delta = {"role": "assistant", "content": ""}
    chunk = {**reply.envelope(True), "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}]}
    if reply.prompt_token_ids is not None:
        chunk["prompt_token_ids"] = reply.prompt_token_ids
    return chunk


def completion_chunk(event: Event, reply: Reply) -> dict[str, Any] | None:
    """The streamed chunk for one event of a raw completion (thinking and answer are one text)."""
    if isinstance(event, Done):
        choice = {"index": 0, "text": "", "logprobs": None, **_choice_end(event.result.stats, reply)}
    elif isinstance(event, (ThinkingDelta, AnswerDelta)) and event.text:
        choice = {"index": 0, "text": event.text, "logprobs": None, "finish_reason": None}
    else:
        return None
    return {**reply.envelope(True), "choices": [choice]}


def usage_chunk(result: GenerationResult, reply: Reply) -> dict[str, Any]:
    """The last chunk when ``stream_options.include_usage`` is set: no choices, the usage."""
    return {**reply.envelope(True), "choices": [], "usage": usage(result.stats)}


def chat_response(result: GenerationResult, reply: Reply) -> dict[str, Any]:
    """A whole chat reply: the answer in ``content``, the thinking in ``reasoning_content`` and ``reasoning``."""
    thinking = result.thinking or None
    content, calls = result.tool_calls() if reply.tool_calls is not None else (result.answer, [])
    message: dict[str, Any] = {"role": "assistant", "content": content or None if calls else content}
    message.update(reasoning_content=thinking, reasoning=thinking)
    if calls:
        message["tool_calls"] = [call.to_openai() for call in calls]
    answer = _logprobs(tuple(entry for entry in result.logprobs if not entry.thinking))
    choice = {"index": 0, "message": message, "logprobs": answer, **_choice_end(result.stats, reply, bool(calls))}
    thinking = [entry.to_openai() for entry in result.logprobs if entry.thinking]
    if thinking:
        choice["qwq_edge"]["thinking_logprobs"] = thinking
    return _with_ids({**reply.envelope(False), "choices": [choice], "usage": usage(result.stats)}, reply)


def completion_response(result: GenerationResult, reply: Reply) -> dict[str, Any]:
    text = result.thinking + result.answer
    choice = {"index": 0, "text": text, "logprobs": None, **_choice_end(result.stats, reply)}
    return _with_ids({**reply.envelope(False), "choices": [choice], "usage": usage(result.stats)}, reply)


class OpenAIReply(Encoder):
    """A chat completion or a completion: chunks as ``data:`` events ending with ``[DONE]``
    (and a usage chunk before it when ``stream_options.include_usage``), or one body."""

    def __init__(self, reply: Reply, request: GenerationFields) -> None:
        super().__init__(reply.id, request.stream, stop_strings(request))
        self.reply = reply
        self.include_usage = request.stream_options is not None and request.stream_options.include_usage

    def opening(self) -> list[str]:
        return [sse(chat_first_chunk(self.reply))] if self.reply.kind == "chat" else []

    def frames(self, event: Event) -> list[str]:
        chunk = (chat_chunk if self.reply.kind == "chat" else completion_chunk)(event, self.reply)
        return [sse(chunk)] if chunk is not None else []

    def closing(self, result: GenerationResult) -> list[str]:
        return [*([sse(usage_chunk(result, self.reply))] if self.include_usage else []), sse("[DONE]")]

    def whole(self, result: GenerationResult) -> dict[str, Any]:
        return (chat_response if self.reply.kind == "chat" else completion_response)(result, self.reply)

    def failure(self, message: str, kind: str, code: str | None) -> str:
        return sse(error_body(message, kind, None, code))


def _with_ids(body: dict[str, Any], reply: Reply) -> dict[str, Any]:
    if reply.prompt_token_ids is not None:
        body["prompt_token_ids"] = reply.prompt_token_ids
    return body
