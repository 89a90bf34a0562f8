"""The reasoning controller: decides, token by token, what the runtime does.

It is pure Python over token ids and decoded text and never touches an engine.
It acts through three levers:

- *force*: the next tokens are fixed (the wrap-up and end marker at the budget or
  at a second loop; "Wait" below the minimum; the loop nudge);
- *mask*: token ids banned for one step (end-of-generation before any answer;
  off-language tokens under the language guard, spared inside code; after a loop
  nudge, the tokens that would repeat the loop's n-grams);
- *rewind*: drop tokens from the KV cache (a multi-token end marker written
  before the minimum is taken back, then "Wait" is forced; at the budget, the
  tokens after the last sentence end are taken back before the close).

The generation loop asks ``next_action`` before every step, lets ``review`` veto a
sampled token before it is appended, and reports what was appended with
``on_sampled`` / ``on_forced``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from ..errors import ContextOverflowError, InvalidRequestError
from ..events import AnswerDelta, Event, Intervention, ReasoningCounts, ThinkingDelta
from .block import ThinkingBlock
from .cut import word_char
from .formats import ReasoningFormat
from .grammar import AnswerGrammar
from .loop_guard import LoopDetector
from .loop_steer import LoopSteer, starts_sentence
from .markers import MarkerScanner
from .spans import SpanScanner
from .texts import texts_for

THINKING = "thinking"
ANSWER = "answer"

#: Tokens kept free at the end of the context for the answer after a forced close.
ANSWER_RESERVE = 16
#: The kinds of a forced close of the thinking (``thinking_closed_by``).
CLOSES = frozenset({"budget", "eos-close", "context-close", "max-tokens", "loop-close", "answer-now"})
#: After "answer now", how many more thinking tokens may pass waiting for a sentence end
#: before the close comes at the next word end.
ANSWER_NOW_REACH = 48
#: A sentence or line the model's text ends with (decided without the next token: "3." in
#: "pi is 3.14" and "2." starting a list item are not sentence ends).
_ENDS_SENTENCE = re.compile(r"(?:[^\d\s][.!?…]|[。！？])[\"'”’)\]*]*\s*$|\n\s*$")


@dataclass(frozen=True)
class Sample:
    """Let the model choose the next token, with ``banned`` ids masked out, and, when a grammar
    constrains the answer, every id where ``banned_mask`` (a boolean row over the vocabulary) is true."""

    banned: frozenset[int] = frozenset()
    banned_mask: np.ndarray | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Force:
    """Append these tokens regardless of what the model would choose.

    ``shown`` is the text these tokens add to the output, when it is not simply
    their decoded text (after a rewind, part of them re-creates text already shown);
    ``detail`` says more about the intervention (where a budget cut fell).
    """

    tokens: tuple[int, ...]
    kind: str
    shown: str | None = None
    detail: str = ""


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


#: What the runtime writes into the thinking in English (``texts`` has every language).
WAIT_TEXT = texts_for("en").wait


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
    #: The language guard's banned ids, for the answer and (if asked) the thinking: in
    #: prose, and inside code, math and URLs (where Latin is allowed).
    language_ban: frozenset[int] = frozenset()
    language_in_thinking: bool = False
    code_ban: frozenset[int] = frozenset()
    #: The wait text as shown (the language's), for a "Wait" that follows a rewind.
    wait_text: str = WAIT_TEXT


def _no_tokenizer(text: str) -> tuple[int, ...]:
    raise AssertionError("a controller that rewinds needs a tokenize function")  # pragma: no cover


_NONE: frozenset[int] = frozenset()


@dataclass
class ReasoningController:
    """The decisions of one generation. ``tokenize`` turns text the controller re-creates
    after a rewind into ids (no special tokens); ``counts`` is what it did."""

    fmt: ReasoningFormat
    limits: ThinkingLimits
    tokens: ControlTokens
    tokenize: Callable[[str], tuple[int, ...]] = _no_tokenizer
    counts: ReasoningCounts = field(default_factory=ReasoningCounts)
    grammar: AnswerGrammar | None = None

    def __post_init__(self) -> None:
        thinking = self.fmt.thinks
        # a format with a template switch has its thinking closed in the prompt when it is off
        closed_in_prompt = thinking and not self.limits.think and bool(self.fmt.switch)
        self.phase = THINKING if thinking and not closed_in_prompt else ANSWER
        self._block = self._new_block() if thinking else None
        reopens = thinking and self.fmt.open_marker and self.grammar is None  # a grammar's text is never thinking
        self._opener = MarkerScanner(self.fmt.open_marker) if reopens else None
        skips = thinking and not self.limits.think and not closed_in_prompt
        self._pending: Action | None = Force(self.tokens.skip, "skip") if skips else None
        if thinking and not self.limits.think:
            self.counts.thinking_closed_by = "skipped"
        self._model_stopped = False
        self._whole = True
        self._started = {THINKING: False, ANSWER: False}
        self._loops = LoopDetector() if self.limits.loop_guard and thinking else None
        self._steer = LoopSteer() if self._loops is not None else None
        #: The model's own thinking text (what a forced "Wait" must have added to), and its
        #: count of pieces at the last forced "Wait" (None: none yet).
        self._model_thinking: list[str] = []
        self._at_wait: int | None = None
        #: The minimum forces no more "Wait": the thinking looped after one, or brought nothing new.
        self._minimum_ended = False
        self._spans = SpanScanner()
        self._joined: dict[tuple[frozenset[int], frozenset[int]], frozenset[int]] = {}
        self.thinking_text: list[str] = []
        self.answer_text: list[str] = []
        #: The kind of the forced text being routed now ("" while the text is the model's).
        self._forcing = ""
        self._thinking_chars = 0
        #: The thinking tokens when "answer now" was asked (None: not asked); set from any thread.
        self._answer_now_at: int | None = None

    def answer_now(self) -> bool:
        """Close the thinking at the next sentence end (within ``ANSWER_NOW_REACH`` tokens, else
        at a word end) with the wrap-up, and let the answer follow, whatever minimum was asked.
        Safe from any thread; ``False`` (and nothing changes) once the thinking is over."""
        if self.phase != THINKING:
            return False
        if self._answer_now_at is None:
            self._answer_now_at = self.counts.thinking_tokens
            self._minimum_ended = True
        return True

    def check_room(self, prompt_tokens: int, context_length: int) -> None:
        """Refuse a prompt that leaves no room for the forced close and a short answer,
        so that the guarantees can hold."""
        needed = prompt_tokens + (self._closing() if self.fmt.thinks else 1)
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
            return self._within_max_tokens(action)
        left = self._tokens_left()
        if self.phase == THINKING:
            return self._within_max_tokens(self._next_thinking_action(room, left))
        if self._model_stopped or (self.grammar is not None and self.grammar.ended):
            return Finish("budget" if self.counts.thinking_closed_by == "budget" else "stop")
        limit = self.limits.max_answer_tokens
        if room <= 0 or left <= 0 or (limit is not None and self.counts.answer_tokens >= limit):
            return Finish("length")
        first = self.tokens.end_of_generation if self.counts.answer_tokens == 0 else _NONE
        banned = self._join(first, self._language_ban())
        return Sample(banned, self.grammar.banned_mask()) if self.grammar is not None else Sample(banned)

    def horizon(self) -> int:
        """At most how many tokens the model may still be sampled for in this phase: tokens
        drafted past it would be dropped, so speculation drafts no further."""
        thinking = self.phase == THINKING
        limit = self.limits.max_thinking_tokens if thinking else self.limits.max_answer_tokens
        left = self._tokens_left()
        if limit is None:
            return left
        return min(left, limit - (self.counts.thinking_tokens if thinking else self.counts.answer_tokens))

    def _tokens_left(self) -> int:
        """How many more tokens ``max_tokens`` allows (a large number when it is not set)."""
        if self.limits.max_tokens is None:
            return 1 << 62
        counts = self.counts
        return self.limits.max_tokens - counts.thinking_tokens - counts.answer_tokens - counts.forced_tokens

    def _within_max_tokens(self, action: Action) -> Action:
        """``action``, unless the text it forces would pass ``max_tokens``. A close then forces
        the end marker alone (a loop nudge gives way to a close), and where even that does not
        fit the generation ends (``length``). Counted after the decision: a budget cut's rewind
        gives tokens back."""
        force = action.then if isinstance(action, Rewind) else action
        left = self._tokens_left()
        if not isinstance(force, Force) or len(force.tokens) <= left:
            return action
        closes = force.tokens in (self.tokens.close, self.tokens.skip) and force.kind != "skip"
        if not closes and (isinstance(action, Rewind) or force.kind != "loop-nudge"):
            return Finish("length")  # the skip at the start, or a "Wait" re-creating taken-back text
        if not closes:
            force = self._close("max-tokens")
        for tokens in (self.tokens.close, self.tokens.skip):
            if len(tokens) <= left:
                fitted = replace(force, tokens=tokens)
                return Rewind(action.position, fitted) if isinstance(action, Rewind) else fitted
        return Finish("length")

    def _next_thinking_action(self, room: int, left: int) -> Action:
        if self._model_stopped:
            self._model_stopped = False
            return self._close("eos-close")
        budget = self.limits.max_thinking_tokens
        if budget is not None and self.counts.thinking_tokens >= budget:
            return self._budget_close()
        closing = self._closing()
        if room <= closing:
            return self._close("context-close")
        if left <= 0:
            return Finish("length")  # too small a bound to close the thinking and answer
        if len(self.tokens.close) < left <= closing:
            return self._close("max-tokens")
        if self._answer_now_at is not None and self._may_answer_now():
            return self._close("answer-now", bare=self._block is not None and not self._block.sampled)
        language = self._language_ban() if self.tokens.language_in_thinking else _NONE
        steer = _NONE
        if self._steer is not None and self._steer.left and self._block is not None:
            steer = self._steer.banned(starts_sentence(self._block.raw))
            self.counts.loop_masked_steps += bool(steer)
        return Sample(self._join(language, steer))

    def _language_ban(self) -> frozenset[int]:
        """The language guard's mask for the next token: Latin is spared inside code, math and URLs."""
        ban = self.tokens.code_ban if self._spans.in_code else self.tokens.language_ban
        self.counts.language_masked_steps += bool(self.tokens.language_ban)
        return ban

    def _join(self, a: frozenset[int], b: frozenset[int]) -> frozenset[int]:
        """``a | b``, the same object for the same pair (engines cache a mask per set)."""
        if not a or not b:
            return a or b
        joined = self._joined.get((a, b))
        if joined is None:
            joined = self._joined[(a, b)] = a | b
        return joined

    def _count(self, kind: str) -> None:
        self.counts.interventions[kind] = self.counts.interventions.get(kind, 0) + 1

    def _close(self, kind: str, detail: str = "", bare: bool = False) -> Force:
        """Force the end of the thinking: the wrap-up and end marker, or (``bare``) the end marker alone."""
        return Force(self.tokens.skip if bare else self.tokens.close, kind, detail=detail)

    def _budget_close(self) -> Force | Rewind:
        """The budget is spent: close at the last sentence end in its last 10%, else at a word end."""
        assert self._block is not None
        cut = self._block.cut(self._whole)
        dropped = self.counts.thinking_tokens - cut.mark.count if cut.mark is not None else 0
        self.counts.thinking_tokens -= dropped
        self.counts.budget_cut, self.counts.budget_cut_tokens = cut.kind, dropped
        force = self._close("budget", cut.describe(dropped), bare=not self._block.sampled)
        return Rewind(cut.mark.position, force) if cut.mark is not None else force

    def _may_answer_now(self) -> bool:
        """Does the thinking end at a sentence (or line) now, or at a word once past the reach?
        The close is forced after it, so nothing shown is taken back."""
        assert self._block is not None and self._answer_now_at is not None
        text = self._block.raw
        if not text.strip() or _ENDS_SENTENCE.search(text[-64:]):
            return True
        waited = self.counts.thinking_tokens - self._answer_now_at
        at_word = not word_char(text[-1]) or waited >= 2 * ANSWER_NOW_REACH
        return waited >= ANSWER_NOW_REACH and self._whole and at_word

    def _below_minimum(self) -> bool:
        """Is the thinking short of its minimum? Not once ``max_tokens`` leaves only room to close
        (the runtime closes it itself then), so that "Wait" never pushes past that bound."""
        short = self.counts.thinking_tokens < self.limits.min_thinking_tokens and not self._minimum_ended
        return self.phase == THINKING and short and self._tokens_left() > self._closing()

    def _wait_earned(self) -> bool:
        """May the minimum force another "Wait"? The first, always; a later one only when the
        thinking since the last wrote something it had not written before. Otherwise the
        minimum ends here: a "Wait" answered with the same thought again would only loop."""
        at = self._at_wait
        if at is None or _is_new("".join(self._model_thinking[at:]), "".join(self._model_thinking[:at])):
            return True
        self._minimum_ended = True
        return False

    def _closing(self) -> int:
        """The tokens a forced close and a short answer need."""
        return len(self.tokens.close) + ANSWER_RESERVE

    def _wait(self, keep: tuple[int, ...] = ()) -> Force:
        """Force "Wait", after ``keep`` (tokens re-creating text already shown, after a rewind)."""
        return Force(keep + self.tokens.wait, "wait", self.tokens.wait_text if keep else None)

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
        if self._below_minimum() and self._wait_earned():
            self._pending = self._wait()
            return False
        if closes_early:
            return True  # the minimum ended: the model's own end marker stands
        self._model_stopped = True
        return False

    def on_sampled(self, text: str, position: int, token: int | None = None, whole: bool = True) -> list[Event]:
        """The model's ``token`` at ``position`` was appended; ``text`` is the new text it completed,
        ``whole``: no UTF-8 character is left incomplete after it."""
        if self.phase == THINKING:
            assert self._block is not None
            self._block.add_token(position, self.counts.thinking_tokens, self._whole)
            self.counts.thinking_tokens += 1
            if self._steer is not None:
                self._steer.record(() if token is None else (token,), starts_sentence(self._block.raw))
                self._steer.sampled()
        else:
            self.counts.answer_tokens += 1
            if self.grammar is not None and token is not None:
                self.grammar.take(token)
        self._whole = whole
        return self._route(text)

    def on_forced(self, force: Force, text: str) -> list[Event]:
        """The runtime appended ``force.tokens``, whose text is ``text``; what it did is counted
        here, when it is done (``max_tokens`` may have changed a decision)."""
        self.counts.forced_tokens += len(force.tokens)
        if force.kind in CLOSES:
            self.counts.thinking_closed_by = force.kind
        if force.kind != "skip":
            self._count(force.kind)
        self.counts.wait_extensions += force.kind == "wait"
        shown = text if force.shown is None else force.shown
        self.counts.forced_text.append(shown)
        self._whole = True
        events = self._release_all() if self.phase == THINKING else []
        if force.kind != "skip":
            events.append(Intervention(force.kind, shown, force.detail))
        self._forcing = force.kind
        if force.kind == "loop-nudge" and self._loops is not None:
            self._loops.reset()
        if force.kind == "wait":
            self._waited()
        if self._steer is not None and self.phase == THINKING:
            self._steer.record(force.tokens)
        events += self._route(shown, sampled=False)
        self._forcing = ""
        if self.phase == THINKING and self._block is not None:
            self._block.fence()
        return events

    def finish(self, tail: str = "") -> list[Event]:
        """Route the detokenizer's last text and release anything held back."""
        if self.phase == ANSWER:
            held = self._opener.flush() if self._opener is not None else ""
            return self._answer_events(held + tail)
        assert self._block is not None
        events = self._route(tail, sampled=False) if tail else []
        self._block.scanner.flush()
        return events + self._thinking_events(self._block.release(len(self._block.raw)))

    # -- text routing --------------------------------------------------------------

    def _route(self, text: str, sampled: bool = True) -> list[Event]:
        """Split new text into thinking and answer; only the model's own text is checked
        for an early end marker and for loops, never what the runtime forced."""
        if self.phase == ANSWER:
            return self._route_answer(text, sampled)
        assert self._block is not None
        before, marker_at = self._block.feed(text)
        if self.tokens.language_in_thinking:
            self._spans.feed(before)
        if sampled and marker_at is not None and self._below_minimum() and self._block.sampled and self._wait_earned():
            return self._thinking_events(self._block.release(marker_at)) + self._take_back_marker(marker_at)
        if sampled and before:
            self._model_thinking.append(before)
        if sampled and self._loops is not None and before and self._loops.feed(before):
            self._on_loop()
        if marker_at is None:
            return self._release_safe() if sampled else self._release_all()
        events = self._thinking_events(self._block.release(marker_at))
        # With a grammar, the answer starts at its first masked token: text that shared the marker's token goes.
        after = self._block.raw[marker_at + len(self._block.marker) :] if self.grammar is None else ""
        self.phase = ANSWER
        self._spans = SpanScanner()
        if self.counts.thinking_closed_by == "none":
            self.counts.thinking_closed_by = "model"
        return events + self._route_answer(after, sampled)

    def _route_answer(self, text: str, sampled: bool) -> list[Event]:
        """Answer text; a second thinking block opened in the answer goes back to thinking
        (its tokens count against the same budget)."""
        if self._opener is None or not sampled:
            return self._answer_events(text)
        before, after = self._opener.feed(text)
        events = self._answer_events(before)
        if after is None:
            return events
        self._opener = MarkerScanner(self.fmt.open_marker)
        self.phase = THINKING
        self._block = self._new_block()
        return events + self._route(after, sampled)

    def _new_block(self) -> ThinkingBlock:
        return ThinkingBlock(self.fmt.close_marker, self.limits.max_thinking_tokens, self.limits.min_thinking_tokens)

    def _release_safe(self) -> list[Event]:
        assert self._block is not None
        return self._thinking_events(self._block.release_safe(self.counts.thinking_tokens))

    def _release_all(self) -> list[Event]:
        assert self._block is not None
        return self._thinking_events(self._block.release(self._block.visible()))

    def _take_back_marker(self, marker_start: int) -> list[Event]:
        """The end marker appeared below the minimum: rewind to the token where it began, then "Wait".

        The tokens from there on stop counting as thinking; the part of that token's
        text before the marker is already shown and is appended again, unshown.
        """
        assert self._block is not None
        mark = self._block.first_mark_before(marker_start)
        keep = self._block.raw[mark.offset : marker_start]
        self.counts.thinking_tokens = mark.count
        self._block.take_back(mark, marker_start)
        self._pending = Rewind(mark.position, self._wait(self.tokenize(keep) if keep else ()))
        return []

    def _waited(self) -> None:
        """A forced "Wait" ends the sentence before it; the detector keeps what came before (a
        thought repeated after the Wait is a loop), and where the model's thinking stands is kept."""
        if self._loops is not None and self._loops.end_sentence():
            self._on_loop()
        self._at_wait = len(self._model_thinking)  # pieces, joined only when a Wait is weighed

    def _on_loop(self) -> None:
        """First a nudge away from the loop (and its n-grams masked for a stretch); the second
        time, close the thinking (above the minimum). A loop after a forced "Wait" ends the
        minimum, so that the second one closes; before any, the minimum keeps nudging."""
        self.counts.loop_interventions += 1
        if self._at_wait is not None:
            self._minimum_ended = True
        if self.counts.loop_interventions == 1 or self._below_minimum():
            self._pending = Force(self.tokens.nudge, "loop-nudge")
            if self._steer is not None:
                self._steer.arm(self.tokens.nudge)
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
        start, self._thinking_chars = self._thinking_chars, self._thinking_chars + len(text)
        if self._forcing:
            self.counts.forced_spans.append({"kind": self._forcing, "start": start, "end": self._thinking_chars})
        return [ThinkingDelta(text, self.counts.thinking_tokens, self._forcing)]

    def _answer_events(self, text: str) -> list[Event]:
        self._spans.feed(text)
        text = self._strip_leading_space(ANSWER, text)
        if not text:
            return []
        self.answer_text.append(text)
        return [AnswerDelta(text)]


def _is_new(text: str, before: str) -> bool:
    """Does ``text`` say something ``before`` did not (case and spacing aside)?"""
    words = " ".join(text.lower().split())
    return bool(words) and words not in " ".join(before.lower().split())
