"""The reasoning controller: decides, token by token, what the runtime does.

It is pure Python over token ids and decoded text and never touches an engine.
It acts through two levers only:

- *force*: the next tokens are fixed (the wrap-up and end-of-thinking marker when
  the budget is spent, or when the model tries to stop while still thinking);
- *mask*: token ids banned for one step (end-of-generation before any answer).

The generation loop asks ``next_action`` before every step and reports back what
was produced with ``on_sampled`` / ``on_forced`` / ``on_end_of_generation``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import InvalidRequestError
from ..events import AnswerDelta, Event, GenerationStats, Intervention, ThinkingDelta
from .formats import ReasoningFormat
from .markers import MarkerScanner

THINKING = "thinking"
ANSWER = "answer"

#: Tokens kept free at the end of the context for the answer after a forced close.
ANSWER_RESERVE = 16


@dataclass(frozen=True)
class Sample:
    """Let the model choose the next token, with ``banned`` ids masked out."""

    banned: frozenset[int] = frozenset()


@dataclass(frozen=True)
class Force:
    """Append these tokens regardless of what the model would choose."""

    tokens: tuple[int, ...]
    kind: str


@dataclass(frozen=True)
class Finish:
    """End the generation."""

    reason: str


Action = Sample | Force | Finish


@dataclass(frozen=True)
class ThinkingLimits:
    """What the user asked for: a thinking budget, an answer bound, thinking on or off."""

    max_thinking_tokens: int | None = None
    max_answer_tokens: int | None = None
    think: bool = True

    def __post_init__(self) -> None:
        for name in ("max_thinking_tokens", "max_answer_tokens"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise InvalidRequestError(f"{name} must be >= 0, got {value}")


@dataclass(frozen=True)
class ControlTokens:
    """The format's forced texts, tokenized once for the model in use."""

    close: tuple[int, ...]
    skip: tuple[int, ...]
    end_of_generation: frozenset[int]


@dataclass
class ReasoningController:
    fmt: ReasoningFormat
    limits: ThinkingLimits
    tokens: ControlTokens
    stats: GenerationStats = field(default_factory=GenerationStats)

    def __post_init__(self) -> None:
        thinking = self.fmt.thinks
        self.phase = THINKING if thinking else ANSWER
        self._scanner = MarkerScanner(self.fmt.close_marker) if thinking else None
        self._skip_pending = thinking and not self.limits.think
        self._model_stopped = False
        self._started = {THINKING: False, ANSWER: False}
        self.thinking_text: list[str] = []
        self.answer_text: list[str] = []

    # -- decisions -----------------------------------------------------------------

    def next_action(self, room: int) -> Action:
        """What to do next, given ``room`` free positions left in the context."""
        if self.phase == THINKING:
            return self._next_thinking_action(room)
        if self._model_stopped:
            return Finish("budget" if self.stats.thinking_closed_by == "budget" else "stop")
        limit = self.limits.max_answer_tokens
        if room <= 0 or (limit is not None and self.stats.answer_tokens >= limit):
            return Finish("length")
        if self.stats.answer_tokens == 0:
            # An answer is always produced: no end-of-generation as its first token.
            return Sample(self.tokens.end_of_generation)
        return Sample()

    def _next_thinking_action(self, room: int) -> Action:
        if self._skip_pending:
            self._skip_pending = False
            self.stats.thinking_closed_by = "skipped"
            return Force(self.tokens.skip, "skip")
        if self._model_stopped:
            self._model_stopped = False
            return self._close("eos-close")
        budget = self.limits.max_thinking_tokens
        if budget is not None and self.stats.thinking_tokens >= budget:
            return self._close("budget")
        if room <= len(self.tokens.close) + ANSWER_RESERVE:
            return self._close("context-close")
        return Sample()

    def _close(self, kind: str) -> Force:
        self.stats.thinking_closed_by = kind
        self.stats.interventions[kind] = self.stats.interventions.get(kind, 0) + 1
        return Force(self.tokens.close, kind)

    # -- observations --------------------------------------------------------------

    def on_sampled(self, text: str) -> list[Event]:
        """The model produced one token whose new text is ``text``."""
        if self.phase == THINKING:
            self.stats.thinking_tokens += 1
        else:
            self.stats.answer_tokens += 1
        return self._route(text)

    def on_forced(self, force: Force, text: str) -> list[Event]:
        """The runtime appended ``force.tokens``, whose text is ``text``."""
        self.stats.forced_tokens += len(force.tokens)
        self.stats.forced_text.append(text)
        events: list[Event] = [] if force.kind == "skip" else [Intervention(force.kind, text)]
        return events + self._route(text)

    def on_end_of_generation(self) -> None:
        """The model chose an end-of-generation token (it is not appended)."""
        self._model_stopped = True

    def finish(self, tail: str = "") -> list[Event]:
        """Route the detokenizer's last text and release anything held back."""
        events = self._route(tail) if tail else []
        if self._scanner is not None and not self._scanner.found:
            events += self._thinking_events(self._scanner.flush())
        return events

    # -- text routing --------------------------------------------------------------

    def _route(self, text: str) -> list[Event]:
        if self.phase == ANSWER:
            return self._answer_events(text)
        assert self._scanner is not None
        before, after = self._scanner.feed(text)
        events = self._thinking_events(before)
        if after is not None:
            self.phase = ANSWER
            if self.stats.thinking_closed_by == "none":
                self.stats.thinking_closed_by = "model"
            events += self._answer_events(after)
        return events

    def _strip_leading_space(self, phase: str, text: str) -> str:
        """Thinking and answer both start at their first visible character."""
        if not self._started[phase]:
            text = text.lstrip()
            self._started[phase] = bool(text)
        return text

    def _thinking_events(self, text: str) -> list[Event]:
        text = self._strip_leading_space(THINKING, text)
        if not text:
            return []
        self.thinking_text.append(text)
        return [ThinkingDelta(text, self.stats.thinking_tokens)]

    def _answer_events(self, text: str) -> list[Event]:
        text = self._strip_leading_space(ANSWER, text)
        if not text:
            return []
        self.answer_text.append(text)
        return [AnswerDelta(text)]
