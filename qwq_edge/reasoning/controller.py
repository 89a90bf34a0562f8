"""The reasoning controller: decides, token by token, what the runtime does.

It is pure Python over token ids and decoded text and never touches an engine.
It acts through three levers:

- *force*: the next tokens are fixed (the wrap-up and end marker at the budget or
  at a second loop; "Wait" below the minimum; the loop nudge);
- *mask*: token ids banned for one step (end-of-generation before any answer;
  off-language tokens under the language guard);
- *rewind*: drop tokens from the KV cache (a multi-token end marker written
  before the minimum is taken back, then "Wait" is forced).

The generation loop asks ``next_action`` before every step, lets ``review`` veto a
sampled token before it is appended, and reports what was appended with
``on_sampled`` / ``on_forced``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import ContextOverflowError, InvalidRequestError
from ..events import AnswerDelta, Event, Intervention, ReasoningCounts, ThinkingDelta
from .formats import ReasoningFormat
from .loop_guard import LoopDetector
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
    """Append these tokens regardless of what the model would choose.

    ``shown`` is the text these tokens add to the output, when it is not simply
    their decoded text (after a rewind, part of them re-creates text already shown).
    """

    tokens: tuple[int, ...]
    kind: str
    shown: str | None = None


@dataclass(frozen=True)
class Rewind:
    """Drop every token from ``position`` on, then apply ``then``: its tokens re-create the
    text that came before the taken-back part (already shown), then continue."""

    position: int
    then: Force


@dataclass(frozen=True)
class Finish:
    """End the generation."""

    reason: str


Action = Sample | Force | Rewind | Finish


@dataclass(frozen=True)
class ThinkingLimits:
    """What the user asked for: budget, minimum, answer bound, thinking on or off, loop guard,
    and a bound on every generated token (``max_tokens``: thinking, forced text and answer)."""

    max_thinking_tokens: int | None = None
    max_answer_tokens: int | None = None
    think: bool = True
    min_thinking_tokens: int = 0
    loop_guard: bool = True
    max_tokens: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_thinking_tokens", "max_answer_tokens", "min_thinking_tokens", "max_tokens"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise InvalidRequestError(f"{name} must be >= 0, got {value}")
        budget = self.max_thinking_tokens
        if budget is not None and self.min_thinking_tokens > budget:
            raise InvalidRequestError(
                f"min_thinking_tokens ({self.min_thinking_tokens}) is above max_thinking_tokens ({budget})"
            )


@dataclass(frozen=True)
class ControlTokens:
    """The format's forced texts, tokenized once for the model in use, and the masks."""

    close: tuple[int, ...]
    skip: tuple[int, ...]
    end_of_generation: frozenset[int]
    wait: tuple[int, ...] = ()
    nudge: tuple[int, ...] = ()
    #: The end marker's id when it is one token (``</think>`` in QwQ-32B's vocabulary).
    close_token: int | None = None
    #: The language guard's banned ids, for the answer and (if asked) the thinking.
    language_ban: frozenset[int] = frozenset()
    language_in_thinking: bool = False


#: What the runtime writes into the thinking, besides the format's own texts.
WAIT_TEXT = "\n\nWait,"
NUDGE_TEXT = "\n\nI keep repeating myself; let me try a different approach.\n\n"


def _no_tokenizer(text: str) -> tuple[int, ...]:
    raise AssertionError("a controller that rewinds needs a tokenize function")  # pragma: no cover


@dataclass
class ReasoningController:
    """The decisions of one generation. ``tokenize`` turns text the controller re-creates
    after a rewind into ids (no special tokens); ``counts`` is what it did."""

    fmt: ReasoningFormat
    limits: ThinkingLimits
    tokens: ControlTokens
    tokenize: Callable[[str], tuple[int, ...]] = _no_tokenizer
    counts: ReasoningCounts = field(default_factory=ReasoningCounts)

    def __post_init__(self) -> None:
        thinking = self.fmt.thinks
        self.phase = THINKING if thinking else ANSWER
        self._scanner = MarkerScanner(self.fmt.close_marker) if thinking else None
        self._pending: Action | None = Force(self.tokens.skip, "skip") if thinking and not self.limits.think else None
        if self._pending is not None:
            self.counts.thinking_closed_by = "skipped"
        self._model_stopped = False
        self._started = {THINKING: False, ANSWER: False}
        self._loops = LoopDetector() if self.limits.loop_guard and thinking else None
        self._answer_first = self.tokens.end_of_generation | self.tokens.language_ban
        # Where each sampled thinking token began: (engine position, offset in the raw thinking text).
        self._marks: list[tuple[int, int]] = []
        self._raw = ""
        self.thinking_text: list[str] = []
        self.answer_text: list[str] = []

    def check_room(self, prompt_tokens: int, context_length: int) -> None:
        """Refuse a prompt that leaves no room for the forced close and a short answer,
        so that the guarantees can hold."""
        needed = prompt_tokens + (len(self.tokens.close) + ANSWER_RESERVE if self.fmt.thinks else 1)
        if needed > context_length:
            raise ContextOverflowError(
                f"the prompt is {prompt_tokens} tokens and needs {needed} with room to answer, but the context "
                f"holds {context_length}; shorten it or load the model with a larger context"
            )

    # -- decisions -----------------------------------------------------------------

    def next_action(self, room: int) -> Action:
        """What to do next, given ``room`` free positions left in the context."""
        if self._pending is not None:
            action, self._pending = self._pending, None
            return action
        left = self._tokens_left()
        if self.phase == THINKING:
            return self._next_thinking_action(room, left)
        if self._model_stopped:
            return Finish("budget" if self.counts.thinking_closed_by == "budget" else "stop")
        limit = self.limits.max_answer_tokens
        if room <= 0 or left <= 0 or (limit is not None and self.counts.answer_tokens >= limit):
            return Finish("length")
        return self._sample(self._answer_first if self.counts.answer_tokens == 0 else self.tokens.language_ban)

    def _tokens_left(self) -> int:
        """How many more tokens ``max_tokens`` allows (a large number when it is not set)."""
        if self.limits.max_tokens is None:
            return 1 << 62
        counts = self.counts
        return self.limits.max_tokens - counts.thinking_tokens - counts.answer_tokens - counts.forced_tokens

    def _next_thinking_action(self, room: int, left: int) -> Action:
        if self._model_stopped:
            self._model_stopped = False
            return self._close("eos-close")
        budget = self.limits.max_thinking_tokens
        if budget is not None and self.counts.thinking_tokens >= budget:
            return self._close("budget")
        closing = len(self.tokens.close) + ANSWER_RESERVE
        if room <= closing:
            return self._close("context-close")
        if left <= 0:
            return Finish("length")  # too small a bound to close the thinking and answer
        if len(self.tokens.close) < left <= closing:
            return self._close("max-tokens")
        return self._sample(self.tokens.language_ban if self.tokens.language_in_thinking else frozenset())

    def _sample(self, banned: frozenset[int]) -> Sample:
        if banned and banned is not self.tokens.end_of_generation:
            self.counts.language_masked_steps += 1
        return Sample(banned)

    def _count(self, kind: str) -> None:
        self.counts.interventions[kind] = self.counts.interventions.get(kind, 0) + 1

    def _close(self, kind: str) -> Force:
        self.counts.thinking_closed_by = kind
        self._count(kind)
        return Force(self.tokens.close, kind)

    def _below_minimum(self) -> bool:
        return self.phase == THINKING and self.counts.thinking_tokens < self.limits.min_thinking_tokens

    def _wait(self, keep: tuple[int, ...] = ()) -> Force:
        """Force "Wait", after ``keep`` (tokens re-creating text already shown, after a rewind)."""
        self.counts.wait_extensions += 1
        self._count("wait")
        return Force(keep + self.tokens.wait, "wait", WAIT_TEXT if keep else None)

    # -- observations --------------------------------------------------------------

    def review(self, token: int) -> bool:
        """May the sampled ``token`` be appended? If not, the next action replaces it.

        End-of-generation while thinking closes the thinking (or, below the minimum,
        continues it with "Wait"); a one-token end marker below the minimum does too.
        """
        ends_generation = token in self.tokens.end_of_generation
        if ends_generation and self.phase == ANSWER:
            self._model_stopped = True
            return False
        closes_early = token == self.tokens.close_token and self._below_minimum()
        if not ends_generation and not closes_early:
            return True
        if self._below_minimum():
            self._pending = self._wait()
        else:
            self._model_stopped = True
        return False

    def on_sampled(self, text: str, position: int) -> list[Event]:
        """The model's token at ``position`` was appended; ``text`` is the new text it completed."""
        if self.phase == THINKING:
            self.counts.thinking_tokens += 1
            self._marks.append((position, len(self._raw)))
        else:
            self.counts.answer_tokens += 1
        return self._route(text)

    def on_forced(self, force: Force, text: str) -> list[Event]:
        """The runtime appended ``force.tokens``, whose text is ``text``."""
        self.counts.forced_tokens += len(force.tokens)
        shown = text if force.shown is None else force.shown
        self.counts.forced_text.append(shown)
        events: list[Event] = [] if force.kind == "skip" else [Intervention(force.kind, shown)]
        if force.kind in ("wait", "loop-nudge") and self._loops is not None:
            self._loops.reset()
        return events + self._route(shown, sampled=False)

    def finish(self, tail: str = "") -> list[Event]:
        """Route the detokenizer's last text and release anything held back."""
        events = self._route(tail, sampled=False) if tail else []
        if self._scanner is not None and not self._scanner.found:
            events += self._thinking_events(self._scanner.flush())
        return events

    # -- text routing --------------------------------------------------------------

    def _route(self, text: str, sampled: bool = True) -> list[Event]:
        """Split new text into thinking and answer; only the model's own text is checked
        for an early end marker and for loops, never what the runtime forced."""
        if self.phase == ANSWER:
            return self._answer_events(text)
        assert self._scanner is not None
        offset = len(self._raw) - self._scanner.held
        before, after = self._scanner.feed(text)
        self._raw += text
        if sampled and after is not None and self._below_minimum() and self._marks:
            return self._thinking_events(before) + self._take_back_marker(offset + len(before))
        events = self._thinking_events(before)
        if sampled and self._loops is not None and before and self._loops.feed(before):
            self._on_loop()
        if after is not None:
            self.phase = ANSWER
            if self.counts.thinking_closed_by == "none":
                self.counts.thinking_closed_by = "model"
            events += self._answer_events(after)
        return events

    def _take_back_marker(self, marker_start: int) -> list[Event]:
        """The end marker appeared below the minimum: rewind to the token where it began, then "Wait".

        The tokens from there on stop counting as thinking; the part of that token's
        text before the marker is already shown and is appended again, unshown.
        """
        position, token_start = next((m for m in reversed(self._marks) if m[1] <= marker_start), self._marks[0])
        dropped = sum(1 for m in self._marks if m[0] >= position)
        self.counts.thinking_tokens -= dropped
        del self._marks[len(self._marks) - dropped :]
        keep = self._raw[token_start:marker_start]
        self._raw = self._raw[:marker_start]
        self._scanner = MarkerScanner(self.fmt.close_marker)
        self._pending = Rewind(position, self._wait(self.tokenize(keep) if keep else ()))
        return []

    def _on_loop(self) -> None:
        """First a nudge away from the loop; the second time, close the thinking (above the minimum)."""
        self.counts.loop_interventions += 1
        if self.counts.loop_interventions == 1 or self._below_minimum():
            self._count("loop-nudge")
            self._pending = Force(self.tokens.nudge, "loop-nudge")
        else:
            self._pending = self._close("loop-close")

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
        return [ThinkingDelta(text, self.counts.thinking_tokens)]

    def _answer_events(self, text: str) -> list[Event]:
        text = self._strip_leading_space(ANSWER, text)
        if not text:
            return []
        self.answer_text.append(text)
        return [AnswerDelta(text)]
