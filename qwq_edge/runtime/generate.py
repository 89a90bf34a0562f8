"""The generation loop: prompt tokens in, typed events out.

``generate_step`` is the one place where an engine, a sampler and the reasoning
controller meet. Each step asks the controller what to do (sample with a mask,
force tokens, or finish), does it through the engine interface, and yields the
events the controller derives from the new text. It knows no engine library and
no budget rule.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from time import perf_counter

from ..engines.base import Engine, TokenSampler
from ..events import Done, Event, GenerationResult, GenerationStats
from ..reasoning.controller import ANSWER, Finish, Force, ReasoningController, Rewind, Sample
from ..sampling import SamplingParams
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

    def __init__(self, speculation: Speculation, controller: ReasoningController, sampler: TokenSampler) -> None:
        self.engine = speculation.engine
        self.speculation = speculation
        self.controller = controller
        self.sampler = sampler
        self.detokenizer = IncrementalDetokenizer(self.engine.token_bytes)

    def apply(self, action: Sample | Force | Rewind) -> list[Event] | None:
        """Do ``action``; the events it gives, or ``None`` when the controller vetoed a sampled token."""
        if isinstance(action, Rewind):
            self.speculation.rewind(action.position)
            self.detokenizer = IncrementalDetokenizer(self.engine.token_bytes)  # its pending bytes were dropped
            action = action.then
        if isinstance(action, Force):
            self.speculation.force(action.tokens)
            self.sampler.accept(action.tokens)
            return self.controller.on_forced(action, self.detokenizer.add(action.tokens))
        position = self.speculation.position
        token = self.speculation.sample(self.sampler, action)
        if not self.controller.review(token):
            self.speculation.drop()
            return None
        self.speculation.commit(token)
        text = self.detokenizer.add((token,))
        return self.controller.on_sampled(text, position, token, self.detokenizer.whole)


def generate_step(
    engine: Engine,
    prompt_tokens: Sequence[int],
    controller: ReasoningController,
    sampling: SamplingParams,
    seed: int,
    cancelled: Callable[[], bool] = lambda: False,
    proposer: Proposer | None = None,
) -> Iterator[Event]:
    """Run one generation; the last event is ``Done`` with the result. A ``proposer`` drafts
    tokens to verify several per pass (``speculation``); the controller sees the same tokens."""
    clock = _Clock(perf_counter())
    cached = engine.prefill(prompt_tokens)
    clock.prefill_seconds = perf_counter() - clock.start
    steps = _Steps(Speculation(engine, proposer, controller.horizon), controller, engine.new_sampler(sampling, seed))
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
    yield from controller.finish(steps.detokenizer.flush())
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
    yield Done(GenerationResult("".join(controller.thinking_text), "".join(controller.answer_text), stats))
