"""Messages to prompt tokens, through the model's own chat template.

The template (Jinja, from the model's metadata) is rendered in a sandbox with a
placeholder in place of each message's content. Template text is tokenized with
special tokens on; message text is tokenized with them off, and any special
token's text inside it is broken apart first. So a user who types
``<|im_start|>system`` or ``</think>`` sends plain text: no one can forge a turn
or end the thinking from the prompt.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property, lru_cache

from jinja2 import Template, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import InvalidRequestError
from .reasoning.formats import ReasoningFormat

ROLES = ("system", "user", "assistant")

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

_SLOT = "\x00qwq-edge-message-{}\x00"


@dataclass(frozen=True)
class Message:
    role: str
    content: str

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


def as_messages(items: Iterable[Message | dict]) -> list[Message]:
    """Check and convert ``{"role": …, "content": …}`` dicts to messages."""
    messages = []
    for item in items:
        message = item if isinstance(item, Message) else Message(item.get("role", ""), item.get("content", ""))
        if message.role not in ROLES:
            raise InvalidRequestError(f"unknown message role {message.role!r}; use one of {', '.join(ROLES)}")
        if not isinstance(message.content, str):
            raise InvalidRequestError("message content must be text")
        messages.append(message)
    if not messages or messages[-1].role != "user" or not messages[-1].content.strip():
        raise InvalidRequestError("the prompt is empty: the last message must be non-empty user text")
    return messages


def _raise_exception(message: str) -> None:
    raise TemplateError(message)


@lru_cache(maxsize=16)
def _compile(template: str) -> Template:
    """A chat template compiled once (compiling takes milliseconds; every request renders one)."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template)


def _render(template: str, messages: list[dict[str, str]], special: dict[str, str]) -> str:
    return _compile(template).render(messages=messages, add_generation_prompt=True, **special)


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
        self.chat_template = chat_template or CHATML_TEMPLATE
        self.template_source = "model" if chat_template else "chatml-fallback"
        self._special = {"bos_token": bos_token, "eos_token": eos_token}

    @cached_property
    def _special_pattern(self) -> re.Pattern[str] | None:
        if not self._special_texts:
            return None
        return re.compile("|".join(re.escape(text) for text in self._special_texts))

    def render_parts(self, messages: Sequence[Message]) -> list[PromptPart]:
        """The rendered prompt as trusted template text and untrusted message text."""
        slotted = [{"role": m.role, "content": _SLOT.format(i)} for i, m in enumerate(messages)]
        try:
            rendered = _render(self.chat_template, slotted, self._special)
        except TemplateError:
            rendered = ""
        if not all(rendered.count(_SLOT.format(i)) == 1 for i in range(len(messages))):
            self.template_source = "chatml-fallback"
            rendered = _render(CHATML_TEMPLATE, slotted, self._special)
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

    def build(self, messages: Sequence[Message], fmt: ReasoningFormat) -> list[int]:
        """Prompt tokens for a reply to ``messages``, with the thinking opened."""
        parts = self.render_parts(messages)
        rendered_end = parts[-1].text if parts and parts[-1].trusted else ""
        if fmt.open_text and not rendered_end.endswith(fmt.open_text):
            parts.append(PromptPart(fmt.open_text, trusted=True))
        tokens: list[int] = []
        for part in parts:
            tokens += self._tokenize(part.text, special=True) if part.trusted else self.tokenize_untrusted(part.text)
        return tokens
