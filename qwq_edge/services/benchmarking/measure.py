"""Timing one generation, through qwq-edge or a raw engine, from the call to its last token."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from itertools import cycle, islice
from time import perf_counter
from typing import Any

from ...errors import InvalidRequestError
from ...events import Done, GenerationStats, ThinkingDelta
from ...reasoning.formats import ReasoningFormat
from ...runtime.model import Model
from ...runtime.options import GenerationOptions
from ...runtime.prompt import Message
from ...sampling import SamplingParams
from .raw import RawRunner

#: Filler that pads the prompt to the size asked for; the task at the end keeps the model writing.
FILLER = (
    "The river runs past the old stone bridge where the morning market opens and the bakers "
    "sell fresh bread to the people of the town before the sun climbs over the hills"
)
TASK = "Ignore the text above. Count from 1 to 1000, one number per line, with no other text."


@dataclass(frozen=True)
class RunTiming:
    """One generation: ``time_to_first_token`` from the call (prompt processing included),
    decode speed between the first and the last generated token."""

    prompt_tokens: int
    generated_tokens: int
    time_to_first_token: float
    decode_tokens_per_s: float
    #: Prompt tokens found in the KV cache instead of evaluated: 0 when every run starts cold.
    cached_prompt_tokens: int = 0
    #: Where they came from: ``sequence``, ``memory`` or ``disk`` ("" when none).
    cached_prompt_from: str = ""

    @property
    def prefill_tokens_per_s(self) -> float:
        return self.prompt_tokens / self.time_to_first_token if self.time_to_first_token > 0 else 0.0


def timing(
    prompt_tokens: int, start: float, marks: list[tuple[int, float]], cached: int = 0, cached_from: str = ""
) -> RunTiming:
    """A ``RunTiming`` from ``(tokens so far, time)`` marks taken as tokens arrived."""
    if not marks:
        return RunTiming(prompt_tokens, 0, 0.0, 0.0, cached, cached_from)
    (first_count, first_time), (last_count, last_time) = marks[0], marks[-1]
    decode = (last_count - first_count) / (last_time - first_time) if last_time > first_time else 0.0
    return RunTiming(prompt_tokens, last_count, first_time - start, decode, cached, cached_from)


def bench_prompt(model: Model, fmt: ReasoningFormat, target: int) -> tuple[str, list[int]]:
    """A user message whose whole prompt (system prompt and template included) is as close
    to ``target`` tokens as whole filler words allow, and that prompt's tokens."""

    def build(words: int) -> tuple[str, list[int]]:
        text = " ".join(islice(cycle(FILLER.split()), words)) + "\n\n" + TASK
        return text, model.prompts.build(model.prompt_messages([Message("user", text)]), fmt)

    words, candidate = 0, build(0)
    if len(candidate[1]) > target:
        raise InvalidRequestError(
            f"the shortest benchmark prompt for this model is {len(candidate[1])} tokens (system prompt and "
            f"template included); ask for at least that many, not {target}"
        )
    best = candidate
    for _ in range(8):  # each word is about one token: a few corrections land on the target
        if len(candidate[1]) == target:
            break
        words = max(0, words + target - len(candidate[1]))
        candidate = build(words)
        if abs(len(candidate[1]) - target) < abs(len(best[1]) - target):
            best = candidate
    return best


def control_options(controls: bool, n: int) -> dict[str, Any]:
    """Every reasoning control on (a budget above ``n``, the loop guard, the language guard
    in the thinking), or all of them off."""
    if controls:
        return {"max_thinking_tokens": n + 1, "loop_guard": True, "language": "en", "language_in_thinking": True}
    return {"max_thinking_tokens": None, "loop_guard": False, "language": "off"}


def time_qwq(model: Model, text: str, n: int, options: GenerationOptions, controls: bool) -> RunTiming:
    """qwq-edge, from a cold cache, stopped after ``n`` thinking tokens.

    Only thinking tokens are timed (the events carry their count); a run that leaves the
    thinking early (an intervention, an answer) is stopped there.
    """
    model.engine.rewind(0)  # every run reads the whole prompt, like the raw engine's
    marks: list[tuple[int, float]] = []
    stats = GenerationStats()
    start = perf_counter()
    for event in model.stream(text, options, **control_options(controls, n)):
        if isinstance(event, ThinkingDelta):
            marks.append((event.thinking_tokens, perf_counter()))
            if event.thinking_tokens >= n:
                model.cancel()
        elif isinstance(event, Done):
            stats = event.result.stats
        else:
            model.cancel()
    return timing(stats.prompt_tokens, start, marks, stats.cached_prompt_tokens, stats.cached_prompt_from)


def time_raw(raw: RawRunner, prompt_tokens: list[int], n: int, params: SamplingParams, seed: int) -> RunTiming:
    """The raw engine on the same prompt tokens, one mark per streamed token."""
    start = perf_counter()
    return timing(len(prompt_tokens), start, _marks(raw.stream(prompt_tokens, n, params, seed)))


def _marks(chunks: Iterable[Any]) -> list[tuple[int, float]]:
    return [(count, perf_counter()) for count, _ in enumerate(chunks, start=1)]
