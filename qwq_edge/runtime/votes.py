"""Votes over several thoughts (self-consistency): the majority of their final answers.

Each thought's final answer is the eval's (``text.answers``: the last ``\\boxed{}``, else the
last number, in the answer, else in the thinking); answers that ``answers_match`` count as
one. The most frequent answer wins; a tie goes to the answer of the best thought among the
tied: one that ended by itself and gives its answer in its answer (not only in its thinking)
first, then the highest mean log-probability per sampled token. That ranking also picks the
thought whose text is returned. A thought with no answer to extract counts for nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from time import perf_counter
from typing import Any

from ..events import ChoiceEvent, Choices, Done, Event, GenerationResult, each_generation
from ..text.answers import answers_match, extract_answer


def final_answer(result: GenerationResult) -> str | None:
    """The answer a thought gives: extracted from its answer, else from its thinking."""
    return extract_answer(result.answer) or extract_answer(result.thinking)


def mean_logprob(result: GenerationResult) -> float:
    """The mean log-probability of its sampled tokens (``-inf`` without any)."""
    values = [entry.logprob for entry in result.logprobs]
    return sum(values) / len(values) if values else -math.inf


@dataclass(frozen=True)
class VoteResult(Choices):
    """The chosen thought's thinking, answer and stats, with the vote: each thought's
    extracted ``answers``, the ``tally`` (an answer as first given → its votes), the ``majority``
    (``None`` when no thought gave an answer), whether a ``tie`` was broken, the wall ``seconds``."""

    answers: tuple[str | None, ...] = ()
    tally: tuple[tuple[str, int], ...] = ()
    majority: str | None = None
    tie: bool = False
    seconds: float = 0.0
    #: Whether the caller asked for log-probabilities (else they served the tie-break only, and
    #: ``to_dict`` leaves them out).
    logprobs_asked: bool = True

    def to_dict(self) -> dict[str, Any]:
        return _without_logprobs(super().to_dict(), not self.logprobs_asked) | {
            "votes": {
                "count": len(self.results),
                "majority": self.majority,
                "tally": dict(self.tally),
                "chosen": self.chosen,
                "tie": self.tie,
                "seconds": round(self.seconds, 3),
                "thoughts": [
                    {
                        "extracted": answer,
                        "mean_logprob": _rounded(mean_logprob(result)),
                        **_without_logprobs(result.to_dict(), not self.logprobs_asked),
                    }
                    for answer, result in zip(self.answers, self.results, strict=True)
                ],
            }
        }


def count_votes(
    results: tuple[GenerationResult, ...] | list[GenerationResult], seconds: float = 0.0, logprobs_asked: bool = True
) -> VoteResult:
    """The vote over ``results`` (at least one)."""
    answers = tuple(final_answer(result) for result in results)
    groups: list[list[int]] = []  # indices of the thoughts that gave the same answer
    for index, answer in enumerate(answers):
        if answer is None:
            continue
        same = next((group for group in groups if answers_match(answer, answers[group[0]] or "")), None)
        if same is None:
            groups.append([index])
        else:
            same.append(index)
    most = max((len(group) for group in groups), default=0)
    leading = [group for group in groups if len(group) == most]
    candidates = [index for group in leading for index in group] or list(range(len(results)))
    chosen = max(candidates, key=lambda index: _rank(results[index], index))
    return replace(
        VoteResult.of(results, chosen),
        answers=answers,
        tally=tuple((answers[group[0]] or "", len(group)) for group in groups),
        majority=next((answers[group[0]] for group in leading if chosen in group), None),
        tie=len(leading) > 1,
        seconds=seconds,
        logprobs_asked=logprobs_asked,
    )


def counted(
    events: Iterator[Event | ChoiceEvent], started: float, logprobs_asked: bool
) -> Iterator[Event | ChoiceEvent]:
    """A fan-out's events (``runtime.fanout``) with its last ``Done`` carrying the vote (``started``:
    when the thoughts began, by ``perf_counter``)."""
    for event in events:
        if isinstance(event, Done):
            event = Done(count_votes(each_generation(event.result), perf_counter() - started, logprobs_asked))
        yield event


def _without_logprobs(record: dict[str, Any], drop: bool) -> dict[str, Any]:
    return {key: value for key, value in record.items() if key != "logprobs"} if drop else record


def _rank(result: GenerationResult, index: int) -> tuple[bool, bool, float, int]:
    """The ranking of thoughts: one whose answer gives an answer and that ended by itself before
    one cut short, then the highest mean log-probability, then the first."""
    finished = result.stats.finish_reason in ("stop", "budget")
    return extract_answer(result.answer) is not None, finished, mean_logprob(result), -index


def _rounded(value: float) -> float | None:
    return round(value, 4) if math.isfinite(value) else None
