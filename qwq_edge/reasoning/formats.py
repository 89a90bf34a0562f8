"""Reasoning formats as data: how a model opens and closes its thinking.

A format says what the runtime appends to open the thinking, which text in the
model's output ends it, and what the runtime forces when it must end it itself
(a short wrap-up sentence, then the end marker). Adding a model family means
adding a row here, not an ``if`` in the generation loop.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace

from ..errors import InvalidRequestError
from .texts import texts_for


@dataclass(frozen=True)
class ReasoningFormat:
    """How one family of models writes its thinking.

    ``open_text``: appended after the chat template's generation prompt to start the
    thinking (unless the template already ends with it). ``close_marker``: the text
    in the output that ends the thinking; the answer is what follows it.
    ``closing``: what the runtime forces after its wrap-up sentence when it ends the
    thinking itself; it contains the close marker. ``skip_text``: what the runtime
    forces to answer without thinking at all (also a forced close with nothing to
    wrap up). ``switch``: the chat template's variable that turns the thinking on and
    off (Qwen3's ``enable_thinking``), for a model that thinks or not on request: with
    the thinking off, the template closes it in the prompt with its own empty block
    (``open_text`` + ``skip_text`` when the template has no such form), the reply starts
    with the answer, and ``/think`` or ``/no_think`` in a message switches it per turn.
    """

    name: str
    open_text: str = ""
    close_marker: str = ""
    closing: str = ""
    skip_text: str = ""
    switch: str = ""

    @property
    def thinks(self) -> bool:
        return bool(self.close_marker)

    @property
    def open_marker(self) -> str:
        """The text that opens a thinking block (a second one, in an answer, counts against the budget)."""
        return self.open_text.strip()

    def forced_close(self, wrap_up: str) -> str:
        """The text forced to end a thinking: the wrap-up sentence (in the answer's language), then the closing."""
        return f"\n\n{wrap_up}{self.closing}"

    @property
    def forced_close_text(self) -> str:
        """The forced close with the English wrap-up."""
        return self.forced_close(texts_for("en").wrap_up)


THINK = ReasoningFormat(
    name="think",
    open_text="<think>\n",
    close_marker="</think>",
    closing="\n</think>\n\n",
    skip_text="\n</think>\n\n",
)

QWQ_PREVIEW = ReasoningFormat(
    name="qwq-preview",
    close_marker="**Final Answer**",
    closing="\n\n**Final Answer**\n\n",
    skip_text="**Final Answer**\n\n",
)

#: Qwen3's hybrid thinking: ``think``'s blocks, switched off by the template's ``enable_thinking``.
HYBRID = replace(THINK, name="hybrid", switch="enable_thinking")

NONE = ReasoningFormat(name="none")

FORMATS: dict[str, ReasoningFormat] = {fmt.name: fmt for fmt in (THINK, HYBRID, QWQ_PREVIEW, NONE)}
FORMAT_CHOICES = ("auto", *FORMATS)
#: Qwen3's soft switches: the last one written in the user's and system messages wins.
_SOFT_SWITCH = re.compile(r"(?<![\w/])/(no_)?think\b")


def detect_format(chat_template: str | None, model_name: str) -> ReasoningFormat:
    """Guess a model's reasoning format from its chat template and name."""
    template = chat_template or ""
    name = model_name.lower()
    if HYBRID.switch in template and "<think>" in template:
        return HYBRID
    if "<think>" in template or "</think>" in template:
        return THINK
    if ("qwq" in name and "preview" in name) or "You should think step-by-step" in template:
        return QWQ_PREVIEW
    if "qwq" in name or "deepseek-r1" in name or "r1-distill" in name:
        return THINK
    return NONE


def resolve_format(requested: str | ReasoningFormat, chat_template: str | None, model_name: str) -> ReasoningFormat:
    """Turn ``auto``, a format name or a ``ReasoningFormat`` into a format."""
    if isinstance(requested, ReasoningFormat):
        return requested
    if requested == "auto":
        return detect_format(chat_template, model_name)
    if requested not in FORMATS:
        raise InvalidRequestError(f"unknown reasoning format {requested!r}; choose one of {', '.join(FORMAT_CHOICES)}")
    return FORMATS[requested]


def soft_switch(texts: Iterable[str]) -> bool | None:
    """The thinking the last ``/think`` or ``/no_think`` in ``texts`` (the user's and system
    messages, in order) asks for: ``True``, ``False``, or ``None`` when there is none."""
    last = None
    for text in texts:
        for match in _SOFT_SWITCH.finditer(text):
            last = match.group(1) is None
    return last
