"""Messages to prompt tokens, through the model's own chat template.

The template (Jinja, from the model's metadata) is rendered in a sandbox with a
placeholder in place of each message's content. Template text is tokenized with
special tokens on; message text is tokenized with them off, and any special
token's text inside it is broken apart first. So a user who types
``<|im_start|>system`` or ``</think>`` sends plain text: no one can forge a turn
or end the thinking from the prompt.

Tools (OpenAI's function tools) are given to the template as ``tools``, and an earlier
assistant turn's calls as its ``tool_calls``: Qwen's templates render both with Jinja's
``tojson``, which escapes ``<`` and ``>``, and a function's name is letters, digits, ``_``
and ``-`` only, so no special token can come from them either. A template without a
tools section gets ChatML with Qwen's tools section instead.
"""

from __future__ import annotations

import contextlib
import json
import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from ..errors import InvalidRequestError, TemplateFallbackWarning
from ..reasoning.formats import ReasoningFormat
from ..text.template import CHATML_TEMPLATE, TemplateProblem, render_template
from ..text.tool_calls import check_tools

ROLES = ("system", "user", "assistant", "tool")

#: ChatML with tools in Qwen's format (Qwen2.5's and QwQ's template, without its default system text).
CHATML_TOOLS_TEMPLATE = """{%- if messages[0].role == 'system' %}{% set system = messages[0].content %}{% endif %}
{{- '<|im_start|>system\\n' + (system ~ '\\n\\n' if system is defined else '') }}
{{- '# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n' }}
{{- 'You are provided with function signatures within <tools></tools> XML tags:\\n<tools>' }}
{%- for tool in tools %}{{ '\\n' }}{{ tool | tojson }}{% endfor %}
{{- '\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within ' }}
{{- '<tool_call></tool_call> XML tags:\\n<tool_call>\\n{"name": <function-name>, "arguments": <args-json-object>}' }}
{{- '\\n</tool_call><|im_end|>\\n' }}
{%- for message in messages %}
{%- if message.role == 'assistant' and message.tool_calls %}
{{- '<|im_start|>assistant' + ('\\n' + message.content if message.content else '') }}
{%- for call in message.tool_calls %}
{{- '\\n<tool_call>\\n{"name": "' + call.function.name + '", "arguments": ' }}
{{- call.function.arguments | tojson }}{{ '}\\n</tool_call>' }}
{%- endfor %}
{{- '<|im_end|>\\n' }}
{%- elif message.role == 'tool' %}
{%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}{{ '<|im_start|>user' }}{% endif %}
{{- '\\n<tool_response>\\n' + message.content + '\\n</tool_response>' }}
{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{ '<|im_end|>\\n' }}{% endif %}
{%- elif not (message.role == 'system' and loop.first) %}
{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"""

_SLOT = "\x00qwq-edge-message-{}\x00"


@dataclass(frozen=True)
class Message:
    """One turn; an assistant turn may carry ``tool_calls`` (OpenAI's shape), a ``tool`` turn is a call's result."""

    role: str
    content: str
    tool_calls: tuple[dict[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            data["tool_calls"] = list(self.tool_calls)
        return data


def as_messages(items: Iterable[Message | dict]) -> list[Message]:
    """Check and convert ``{"role": …, "content": …}`` dicts to messages."""
    messages = [item if isinstance(item, Message) else _message(item) for item in items]
    for message in messages:
        if message.role not in ROLES:
            raise InvalidRequestError(f"unknown message role {message.role!r}; use one of {', '.join(ROLES)}")
        if not isinstance(message.content, str):
            raise InvalidRequestError("message content must be text")
        check_text(message.content)
    if not _answerable(messages):
        raise InvalidRequestError(
            "the prompt is empty: the last message must be non-empty user text or a tool result "
            "(or every message system text)"
        )
    return messages


def _answerable(messages: Sequence[Message]) -> bool:
    """Is there something to answer: a user's text or a tool's result last, or only system text
    (which OpenAI answers too)?"""
    if not messages:
        return False
    last = messages[-1]
    if all(message.role == "system" for message in messages):
        return any(message.content.strip() for message in messages)
    return last.role == "tool" or (last.role == "user" and bool(last.content.strip()))


def _message(item: dict) -> Message:
    calls = item.get("tool_calls") or ()
    if not isinstance(calls, list | tuple) or not all(_is_call(call) for call in calls):
        raise InvalidRequestError('tool_calls must be [{"type": "function", "function": {"name", "arguments"}}]')
    check_tools([{"type": "function", "function": {"name": call["function"]["name"]}} for call in calls], None)
    return Message(item.get("role", ""), item.get("content") or "", tuple(calls))


def _is_call(call: Any) -> bool:
    function = call.get("function") if isinstance(call, dict) else None
    return isinstance(function, dict) and isinstance(function.get("name"), str)


def check_text(text: str) -> None:
    """Refuse text that is not valid Unicode: a lone surrogate (how Python keeps a byte
    of a command-line argument that is not UTF-8) cannot be tokenized."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise InvalidRequestError(
            f"the text is not valid UTF-8 (an undecodable byte at character {error.start + 1})"
        ) from None


def _slotted(messages: Sequence[Message]) -> list[dict[str, Any]]:
    slotted: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        slot: dict[str, Any] = {"role": message.role, "content": _SLOT.format(i)}
        if message.tool_calls:
            slot["tool_calls"] = [_template_call(call) for call in message.tool_calls]
        slotted.append(slot)
    return slotted


def _template_call(call: dict[str, Any]) -> dict[str, Any]:
    """A call as Qwen's templates read it: the arguments as an object (OpenAI sends JSON text)."""
    arguments = call["function"].get("arguments", {})
    if isinstance(arguments, str):
        with contextlib.suppress(ValueError):  # else shown as the text it is
            arguments = json.loads(arguments)
    return {"type": "function", "function": {"name": call["function"]["name"], "arguments": arguments}}


def _render_slotted(
    template: str,
    messages: Sequence[Message],
    special: dict[str, Any],
    tools: Sequence[dict[str, Any]] = (),
) -> str:
    """The template rendered with a placeholder per message; a ``TemplateProblem`` if it fails or
    does not show each message exactly once. ``special``: the special tokens' texts and any
    other variable the template reads (``enable_thinking``)."""
    variables = {"messages": _slotted(messages), "add_generation_prompt": True, **special}
    rendered = render_template(template, **variables, **({"tools": list(tools)} if tools else {}))
    for i in range(len(messages)):
        count = rendered.count(_SLOT.format(i))
        if count != 1:
            raise TemplateProblem(f"it leaves out message {i + 1}" if not count else f"it repeats message {i + 1}")
    return rendered


def template_problem(template: str | None, special: dict[str, str] | None = None) -> str | None:
    """Why a chat template cannot be used (tried on one user message), or ``None``."""
    if not template:
        return None
    try:
        _render_slotted(template, (Message("user", ""),), special or {"bos_token": "", "eos_token": "<|im_end|>"})
    except TemplateProblem as problem:
        return str(problem)
    return None


def fallback_notice(problem: str) -> str:
    return f"the model's chat template cannot be used ({problem}); using ChatML instead"


def describe_template(template: str | None) -> str:
    """What prompts a model gets: its own template, or ChatML and why."""
    if not template:
        return "ChatML (the model has no chat template)"
    problem = template_problem(template)
    return f"ChatML fallback: the model's template cannot be used ({problem})" if problem else "the model's own"


@dataclass(frozen=True)
class PromptPart:
    text: str
    trusted: bool


class PromptBuilder:
    """Builds prompt tokens for one model."""

    def __init__(
        self,
        tokenize: Callable[..., list[int]],
        special_texts: Iterable[str],
        chat_template: str | None,
        bos_token: str = "",
        eos_token: str = "<|im_end|>",
    ) -> None:
        self._tokenize = tokenize
        self._special_texts = sorted((t for t in special_texts if t), key=len, reverse=True)
        self._special = {"bos_token": bos_token, "eos_token": eos_token}
        #: Why the model's template is not used (``None`` when it is, or when there is none).
        self.template_problem = template_problem(chat_template, self._special)
        self.chat_template = chat_template if chat_template and not self.template_problem else CHATML_TEMPLATE
        self.template_source = "model" if self.chat_template is chat_template else "chatml-fallback"
        if self.template_problem:
            warnings.warn(fallback_notice(self.template_problem), TemplateFallbackWarning, stacklevel=2)

    @cached_property
    def _special_pattern(self) -> re.Pattern[str] | None:
        if not self._special_texts:
            return None
        return re.compile("|".join(re.escape(text) for text in self._special_texts))

    def render_parts(
        self, messages: Sequence[Message], tools: Sequence[dict[str, Any]] = (), variables: dict[str, Any] | None = None
    ) -> list[PromptPart]:
        """The rendered prompt as trusted template text and untrusted message text; ``tools``:
        OpenAI's function tools, offered in the template's tools section; ``variables``: more
        the template reads (``{"enable_thinking": False}``)."""
        for message in messages:
            check_text(message.content)
        fallback = CHATML_TOOLS_TEMPLATE if tools or any(m.role == "tool" or m.tool_calls for m in messages) else None
        template = self.chat_template if "tools" in self.chat_template or fallback is None else fallback
        special = {**self._special, **(variables or {})}
        try:
            rendered = _render_slotted(template, messages, special, tools)
        except TemplateProblem as problem:
            if template != self.chat_template:
                raise
            notice = f"the model's chat template cannot render this conversation ({problem}); using ChatML for it"
            warnings.warn(notice, TemplateFallbackWarning, stacklevel=2)
            rendered = _render_slotted(fallback or CHATML_TEMPLATE, messages, special, tools)
        parts = []
        for i, piece in enumerate(re.split("\x00qwq-edge-message-(\\d+)\x00", rendered)):
            if i % 2:
                parts.append(PromptPart(messages[int(piece)].content, trusted=False))
            elif piece:
                parts.append(PromptPart(piece, trusted=True))
        return parts

    def tokenize_untrusted(self, text: str) -> list[int]:
        """Tokens for user text in which no special token can appear."""
        pattern = self._special_pattern
        if pattern is None or not pattern.search(text):
            return self._tokenize(text, special=False) if text else []
        tokens: list[int] = []
        position = 0
        for match in pattern.finditer(text):
            tokens += self.tokenize_untrusted(text[position : match.start()])
            marker = match.group()
            tokens += self._tokenize(marker[:1], special=False)
            tokens += self.tokenize_untrusted(marker[1:])
            position = match.end()
        return tokens + self.tokenize_untrusted(text[position:])

    def build(
        self,
        messages: Sequence[Message],
        fmt: ReasoningFormat,
        tools: Sequence[dict[str, Any]] = (),
        think: bool = True,
    ) -> list[int]:
        """Prompt tokens for a reply to ``messages`` (``tools`` offered), with the thinking opened;
        for a format with a template switch and ``think=False``, with the thinking closed as the
        template closes it (its own empty block)."""
        parts = self.render_parts(messages, tools, {fmt.switch: think} if fmt.switch else None)
        rendered_end = parts[-1].text if parts and parts[-1].trusted else ""
        if fmt.switch and not think:
            if fmt.close_marker not in rendered_end:  # a template without a no-think form: the same block
                opened = rendered_end.endswith(fmt.open_text)
                parts.append(PromptPart(("" if opened else fmt.open_text) + fmt.skip_text, trusted=True))
        elif fmt.open_text and not rendered_end.endswith(fmt.open_text):
            parts.append(PromptPart(fmt.open_text, trusted=True))
        tokens: list[int] = []
        for part in parts:
            tokens += self._tokenize(part.text, special=True) if part.trusted else self.tokenize_untrusted(part.text)
        return tokens
