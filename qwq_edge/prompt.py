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
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property

from .errors import InvalidRequestError, TemplateFallbackWarning
from .reasoning.formats import ReasoningFormat
from .template import TemplateProblem, render_template

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
        check_text(message.content)
        messages.append(message)
    if not messages or messages[-1].role != "user" or not messages[-1].content.strip():
        raise InvalidRequestError("the prompt is empty: the last message must be non-empty user text")
    return messages


def check_text(text: str) -> None:
    """Refuse text that is not valid Unicode: a lone surrogate (how Python keeps a byte
    of a command-line argument that is not UTF-8) cannot be tokenized."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise InvalidRequestError(
            f"the text is not valid UTF-8 (an undecodable byte at character {error.start + 1})"
        ) from None


def _slotted(roles: Sequence[str]) -> list[dict[str, str]]:
    return [{"role": role, "content": _SLOT.format(i)} for i, role in enumerate(roles)]


def _render_slotted(template: str, roles: Sequence[str], special: dict[str, str]) -> str:
    """The template rendered with a placeholder per message; a ``TemplateProblem`` if it fails or
    does not show each message exactly once."""
    rendered = render_template(template, messages=_slotted(roles), add_generation_prompt=True, **special)
    for i in range(len(roles)):
        count = rendered.count(_SLOT.format(i))
        if count != 1:
            raise TemplateProblem(f"it leaves out message {i + 1}" if not count else f"it repeats message {i + 1}")
    return rendered


def template_problem(template: str | None, special: dict[str, str] | None = None) -> str | None:
    """Why a chat template cannot be used (tried on one user message), or ``None``."""
    if not template:
        return None
    try:
        _render_slotted(template, ("user",), special or {"bos_token": "", "eos_token": "<|im_end|>"})
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

    def render_parts(self, messages: Sequence[Message]) -> list[PromptPart]:
        """The rendered prompt as trusted template text and untrusted message text."""
        for message in messages:
            check_text(message.content)
        roles = [m.role for m in messages]
        try:
            rendered = _render_slotted(self.chat_template, roles, self._special)
        except TemplateProblem as problem:
            if self.chat_template == CHATML_TEMPLATE:
                raise
            notice = f"the model's chat template cannot render this conversation ({problem}); using ChatML for it"
            warnings.warn(notice, TemplateFallbackWarning, stacklevel=2)
            rendered = _render_slotted(CHATML_TEMPLATE, roles, self._special)
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
