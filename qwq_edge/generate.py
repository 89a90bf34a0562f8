"""The generation loop: prompt tokens in, typed events out.

``generate_step`` is the one place where an engine, a sampler and the reasoning
controller meet. Each step asks the controller what to do (sample with a mask,
force tokens, or finish), does it through the engine interface, and yields the
events the controller derives from the new text. It knows no engine library and
no budget rule.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from time import perf_counter

from .detokenize import IncrementalDetokenizer
from .engines.base import Engine
from .events import Done, Event, GenerationResult
from .reasoning.controller import ANSWER, Finish, Force, ReasoningController, Rewind
from .sampling import SamplingParams


def generate_step(
    engine: Engine,
    prompt_tokens: Sequence[int],
    controller: ReasoningController,
    sampling: SamplingParams,
    seed: int,
    cancelled: Callable[[], bool] = lambda: False,
) -> Iterator[Event]:
    """Run one generation; the last event is ``Done`` with the result."""
    stats = controller.stats
    stats.prompt_tokens = len(prompt_tokens)
    start = perf_counter()
    stats.cached_prompt_tokens = engine.prefill(prompt_tokens)
    stats.prefill_seconds = perf_counter() - start
    sampler = engine.new_sampler(sampling, seed)
    detokenizer = IncrementalDetokenizer(engine.token_bytes)
    context_length = engine.info.context_length
    first_token_at = 0.0
    while True:
        if cancelled():
            stats.finish_reason = "cancelled"
            break
        action = controller.next_action(context_length - engine.position)
        if isinstance(action, Finish):
            stats.finish_reason = action.reason
            break
        was_thinking = controller.phase != ANSWER
        if isinstance(action, Rewind):
            engine.rewind(action.position)
            detokenizer = IncrementalDetokenizer(engine.token_bytes)  # pending bytes were dropped
            keep = tuple(engine.tokenize(action.keep, special=False)) if action.keep else ()
            detokenizer.add(keep)
            action = replace(action.then, tokens=keep + action.then.tokens, shown=detokenizer.add(action.then.tokens))
        if isinstance(action, Force):
            engine.feed(action.tokens)
            sampler.accept(action.tokens)
            events = controller.on_forced(action, detokenizer.add(action.tokens) if action.shown is None else "")
        else:
            token = sampler.sample(action.banned)
            if not controller.review(token):
                continue
            position = engine.position
            engine.feed((token,))
            events = controller.on_sampled(detokenizer.add((token,)), position)
        now = perf_counter()
        first_token_at = first_token_at or now
        if was_thinking and controller.phase == ANSWER:
            stats.thinking_seconds = now - first_token_at
        yield from events
    yield from controller.finish(detokenizer.flush())
    end = perf_counter()
    stats.time_to_first_token = (first_token_at or end) - start
    stats.decode_seconds = end - (first_token_at or end)
    stats.total_seconds = end - start
    if controller.phase != ANSWER:
        stats.thinking_seconds = stats.decode_seconds
    yield Done(GenerationResult("".join(controller.thinking_text), "".join(controller.answer_text), stats))
