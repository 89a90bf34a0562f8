"""Show a stream of events in the terminal.

The thinking is set apart (dim, under a "Thinking…" header, closed by a line
"thought for N tokens, X s"), or replaced by a spinner with a running token count.
The answer is written as plain text so that it can be piped.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable
from time import perf_counter
from typing import TextIO

from rich.console import Console
from rich.status import Status

from ..events import AnswerDelta, Done, Event, GenerationResult, Intervention, ThinkingDelta
from ..reasoning.formats import ReasoningFormat
from ..runtime.notices import requested_format, thinking_controls_ignored
from ..runtime.options import GenerationOptions

INTERVENTION_LABELS = {
    "budget": "thinking budget reached: closing the thinking",
    "eos-close": "the model stopped while thinking: closing the thinking so it answers",
    "context-close": "the context is almost full: closing the thinking",
    "wait": "below the minimum thinking: continuing with Wait",
    "loop-nudge": "the thinking repeats itself: nudging it",
    "loop-close": "the thinking still loops: closing it",
    "answer-now": "answering now: closing the thinking",
}
#: What the terminal says once Ctrl-C asked for the answer while the model thinks.
ANSWERING_NOW = "answer now: the thinking closes at its next sentence end (Ctrl-C again stops)"
SUMMARY_SENTENCES = 2
#: How the runtime's own words in the thinking (wrap-up, "Wait,", nudge) are shown.
FORCED_STYLE = "italic yellow"
#: The thinking controls by the flags that set them, for the notice that a model does not think.
THINKING_FLAGS = {
    "max_thinking_tokens": "--budget",
    "min_thinking_tokens": "--min-thinking-tokens",
    "effort": "--effort",
    "language_in_thinking": "--language-in-thinking",
}


def thinking_flags_notice(model_format: ReasoningFormat, options: GenerationOptions, command: str) -> str | None:
    """The notice that the model ignores the thinking flags given (``command``: "run it", "start the chat")."""
    fmt = requested_format(model_format, options)
    return thinking_controls_ignored(fmt, options, THINKING_FLAGS, f"{command} with --reasoning-format think")


def last_sentences(text: str, count: int = SUMMARY_SENTENCES) -> str:
    """The thinking's last ``count`` sentences: where it ended up."""
    sentences = [s.strip() for s in re.split(r"(?<=[.!?。！？])\s+|\n+", text) if s.strip()]
    return " ".join(sentences[-count:])


class EventRenderer:
    """Renders one generation; ``thinking`` is the console for the thinking.

    ``display`` is ``show`` (stream it), ``hide`` (a spinner) or ``summary`` (a
    spinner, then the thinking's last sentences).
    """

    def __init__(self, thinking: Console, *, display: str = "show", answer: TextIO | None = None) -> None:
        self.console = thinking
        self.display = display
        self.show_thinking = display == "show"
        self.answer = answer or sys.stdout
        self._thinking_parts: list[str] = []
        self._thinking_started: float | None = None
        self._thinking_tokens = 0
        self._thinking_open = False
        self._answer_started = False
        self._status: Status | None = None
        self._after_label = False

    def render(self, events: Iterable[Event], answering: Callable[[], bool] = lambda: False) -> GenerationResult | None:
        """Consume ``events``; return the result, or ``None`` if the stream broke off.
        ``answering``: whether the answer was asked for now (said once, while thinking)."""
        told = False
        try:
            for event in events:
                if not told and self._thinking_open and answering():
                    told = True
                    self._tell(ANSWERING_NOW)
                if isinstance(event, ThinkingDelta):
                    self._thinking(event)
                elif isinstance(event, Intervention):
                    self._intervention(event)
                elif isinstance(event, AnswerDelta):
                    self._answer(event.text)
                elif isinstance(event, Done):
                    self._done(event.result)
                    return event.result
            return None
        finally:
            self._stop_spinner()

    def _thinking(self, event: ThinkingDelta) -> None:
        self._thinking_tokens = event.thinking_tokens
        self._thinking_parts.append(event.text)
        if not self._thinking_open:
            self._thinking_open = True
            self._thinking_started = perf_counter()
            if self.show_thinking:
                self.console.print("Thinking…", style="bold dim")
            else:
                self._status = self.console.status("Thinking… 0 tokens")
                self._status.start()
        if self.show_thinking:
            text = event.text.lstrip("\n") if self._after_label else event.text
            self._after_label = self._after_label and not text
            style = FORCED_STYLE if event.forced else "dim"  # the runtime's words, not the model's
            self.console.print(text, style=style, end="", markup=False, highlight=False, soft_wrap=True)
        elif self._status is not None:
            self._status.update(f"Thinking… {event.thinking_tokens} tokens")

    def _intervention(self, event: Intervention) -> None:
        if self.show_thinking:
            label = INTERVENTION_LABELS.get(event.kind, event.kind)
            label = f"{label} ({event.detail})" if event.detail else label
            self.console.print(f"\n[{label}]", style="yellow", markup=False, highlight=False)
            self._after_label = True

    def _tell(self, notice: str) -> None:
        """A line of the runtime's between the thinking's text, or the spinner's text."""
        if self._status is not None:
            self._status.update(notice)
        else:
            self.console.print(f"\n[{notice}]", style="yellow", markup=False, highlight=False)
            self._after_label = True

    def _close_thinking(self) -> None:
        if not self._thinking_open:
            return
        self._thinking_open = False
        self._stop_spinner()
        seconds = perf_counter() - (self._thinking_started or perf_counter())
        prefix = "\n" if self.show_thinking else ""
        self.console.print(
            f"{prefix}── thought for {self._thinking_tokens} tokens, {seconds:.1f} s ──", style="dim", highlight=False
        )
        if self.display == "summary":
            summary = last_sentences("".join(self._thinking_parts))
            self.console.print(f"… {summary}", style="dim italic", markup=False, highlight=False, soft_wrap=True)

    def _answer(self, text: str) -> None:
        self._close_thinking()
        self._answer_started = True
        self.answer.write(text)
        self.answer.flush()

    def _done(self, result: GenerationResult) -> None:
        self._close_thinking()
        if self._answer_started:
            self.answer.write("\n")
            self.answer.flush()
        reason = result.stats.finish_reason
        if reason in ("length", "cancelled"):
            self.console.print(f"[stopped: {reason}]", style="yellow", markup=False, highlight=False)

    def _stop_spinner(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None
