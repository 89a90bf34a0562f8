"""The generation loop: prompt tokens in, typed events out.

``generate_step`` is the one place where an engine, a sampler and the reasoning
controller meet. Each step asks the controller what to do (sample with a mask,
force tokens, or finish), does it through the engine interface, and yields the
events the controller derives from the new text. It knows no engine library and
no budget rule.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from time import perf_counter

from ..engines.base import Engine, TokenSampler
from ..events import AnswerDelta, Done, Event, GenerationResult, GenerationStats, ThinkingDelta
from ..reasoning.controller import ANSWER, Finish, Force, ReasoningController, Rewind, Sample
from ..sampling import SamplingParams, TokenLogprob, log_softmax_at, most_likely
from ..speculation.proposers import Proposer
from ..speculation.verifier import Speculation
from ..text.detokenize import IncrementalDetokenizer


@dataclass
class _Clock:
    """The loop's timings: start, prefill, first token, end of thinking."""

    start: float
    prefill_seconds: float = 0.0
    first_token_at: float = 0.0
    thinking_ended_at: float = 0.0

    def token(self, left_thinking: bool) -> None:
        now = perf_counter()
        self.first_token_at = self.first_token_at or now
        if left_thinking:
            self.thinking_ended_at = now

    def timings(self, thinking_open: bool) -> dict[str, float]:
        end = perf_counter()
        first = self.first_token_at or end
        decode = end - first
        return {
            "time_to_first_token": first - self.start,
            "prefill_seconds": self.prefill_seconds,
            "decode_seconds": decode,
            "thinking_seconds": decode if thinking_open else max(0.0, self.thinking_ended_at - first),
            "total_seconds": end - self.start,
        }


class _Steps:
    """Carries out the controller's actions on the engine, with one sampler and detokenizer."""

    def __init__(
        self,
        speculation: Speculation,
        controller: ReasoningController,
        sampler: TokenSampler,
        top_logprobs: int | None = None,
    ) -> None:
        self.engine = speculation.engine
        self.speculation = speculation
        self.controller = controller
        self.sampler = sampler
        self.detokenizer = IncrementalDetokenizer(self.engine.token_bytes)
        #: With log-probabilities asked for (``top_logprobs`` most likely tokens each): every sampled
        #: token's, and those whose text has not come out yet (by cache position).
        self.top_logprobs = top_logprobs
        self.logprobs: list[TokenLogprob] = []
        self.pending: list[tuple[int, TokenLogprob]] = []

    def apply(self, action: Sample | Force | Rewind) -> list[Event] | None:
        """Do ``action``; the events it gives, or ``None`` when the controller vetoed a sampled token."""
        if isinstance(action, Rewind):
            self.speculation.rewind(action.position)
            self.detokenizer = IncrementalDetokenizer(self.engine.token_bytes)  # its pending bytes were dropped
            self.pending = [(at, entry) for at, entry in self.pending if at < action.position]
            action = action.then
        if isinstance(action, Force):
            self.speculation.force(action.tokens)
            self.sampler.accept(action.tokens)
            return self.controller.on_forced(action, self.detokenizer.add(action.tokens))
        position = self.speculation.position
        token = self.speculation.sample(self.sampler, action)
        entry = self._logprob(token) if self.top_logprobs is not None else None
        if not self.controller.review(token):
            self.speculation.drop()
            return None
        self.speculation.commit(token)
        text = self.detokenizer.add((token,))
        events = self.controller.on_sampled(text, position, token, self.detokenizer.whole)
        if entry is not None:
            self.pending.append((position, entry))
        return self.with_logprobs(events)

    def _logprob(self, token: int) -> TokenLogprob:
        """``token``'s log-probability and the most likely tokens', from the row it was drawn from."""
        row = self.sampler.masked_row()
        ids = most_likely(row, self.top_logprobs or 0)
        chosen, *values = log_softmax_at(row, [token, *ids])
        top = tuple(TokenLogprob(i, self.engine.token_bytes(i), value) for i, value in zip(ids, values, strict=True))
        return TokenLogprob(token, self.engine.token_bytes(token), chosen, top, self.controller.phase != ANSWER)

    def with_logprobs(self, events: list[Event]) -> list[Event]:
        """``events`` with the pending log-probabilities on the first delta of the model's text
        (a token's text may wait for the bytes of the next)."""
        if not self.pending:
            return events
        for index, event in enumerate(events):
            if isinstance(event, (ThinkingDelta, AnswerDelta)) and event.text and not getattr(event, "forced", ""):
                entries = tuple(entry for _, entry in self.pending)
                self.logprobs.extend(entries)
                self.pending = []
                events[index] = replace(event, logprobs=entries)
                break
        return events


def generate_step(
    engine: Engine,
    prompt_tokens: Sequence[int],
    controller: ReasoningController,
    sampling: SamplingParams,
    seed: int,
    cancelled: Callable[[], bool] = lambda: False,
    proposer: Proposer | None = None,
    top_logprobs: int | None = None,
    prefilled: Callable[[], None] = lambda: None,
) -> Iterator[Event]:
    """Run one generation; the last event is ``Done`` with the result. A ``proposer`` drafts
    tokens to verify several per pass (``speculation``); the controller sees the same tokens.
    ``top_logprobs``: give each sampled token's log-probability and that many most likely
    tokens' (``None``: none). ``prefilled()`` is called once the prompt is evaluated."""
    clock = _Clock(perf_counter())
    cached = engine.prefill(prompt_tokens)
    prefilled()
    clock.prefill_seconds = perf_counter() - clock.start
    speculation = Speculation(engine, proposer, controller.horizon)
    steps = _Steps(speculation, controller, engine.new_sampler(sampling, seed), top_logprobs)
    finish_reason = "cancelled"
    while not cancelled():
        action = controller.next_action(engine.info.context_length - steps.speculation.position)
        if isinstance(action, Finish):
            finish_reason = action.reason
            break
        was_thinking = controller.phase != ANSWER
        events = steps.apply(action)
        if events is None:
            continue
        clock.token(was_thinking and controller.phase == ANSWER)
        yield from events
    steps.speculation.drop()  # the cache holds what the controller saw, for the next request
    yield from steps.with_logprobs(list(controller.finish(steps.detokenizer.flush())))
    steps.logprobs.extend(entry for _, entry in steps.pending)
    stats = GenerationStats(
        **vars(controller.counts),
        **vars(steps.speculation.counts),
        prompt_tokens=len(prompt_tokens),
        cached_prompt_tokens=cached,
        cached_prompt_from=getattr(engine, "cached_from", "sequence") if cached else "",
        finish_reason=finish_reason,
        seed=seed,
        **clock.timings(controller.phase != ANSWER),
    )
    thinking, answer = "".join(controller.thinking_text), "".join(controller.answer_text)
    yield Done(GenerationResult(thinking, answer, stats, tuple(steps.logprobs)))
