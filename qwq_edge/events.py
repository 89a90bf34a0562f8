"""Typed events a generation yields, and the result they add up to.

``Model.stream`` yields these; ``Model.generate`` is the same stream collected
into a ``GenerationResult``. Nothing here knows about engines or terminals.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from .sampling import TokenLogprob
from .text.tool_calls import ToolCall, split_tool_calls

# Why a generation ended (``GenerationStats.finish_reason``):
# ``stop``: the model ended its answer; ``budget``: it did, after the runtime cut its
# thinking at the budget; ``length``: ``max_answer_tokens`` or the context ran out;
# ``cancelled``: the caller cancelled it.


@dataclass(frozen=True)
class ThinkingDelta:
    """New text of the thinking; ``thinking_tokens`` counts the tokens so far. ``forced``
    names the runtime's text (``wait``, ``loop-nudge``, or a close's wrap-up: ``budget``, …;
    the ``Intervention`` event's kind) and is empty for the model's own."""

    text: str
    thinking_tokens: int = 0
    forced: str = ""
    #: With ``logprobs`` asked for: the sampled tokens that made this text (forced ones have none).
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class AnswerDelta:
    """New text of the answer; ``logprobs`` as in ``ThinkingDelta``."""

    text: str
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class Intervention:
    """The runtime steered the model.

    ``kind`` is one of ``budget`` (thinking reached its budget and was closed),
    ``eos-close`` (the model tried to stop while thinking; the runtime closed the
    thinking so that an answer follows), ``context-close`` (the context was about to
    run out during thinking), ``max-tokens`` (``max_tokens`` was about to run out during
    thinking), ``wait``, ``loop-nudge``, ``loop-close``. ``text`` is what the runtime forced
    into the output; ``detail`` says more where there is more to say (for ``budget``: where
    the cut fell and how many tokens it took back).
    """

    kind: str
    text: str
    detail: str = ""


@dataclass
class ReasoningCounts:
    """What the reasoning controller did in one generation: tokens by phase, what it forced."""

    thinking_tokens: int = 0
    answer_tokens: int = 0
    forced_tokens: int = 0
    forced_text: list[str] = field(default_factory=list)
    interventions: dict[str, int] = field(default_factory=dict)
    wait_extensions: int = 0
    loop_interventions: int = 0
    #: Steps at which the loop breaker masked the loop's n-grams after a nudge.
    loop_masked_steps: int = 0
    language_masked_steps: int = 0
    thinking_closed_by: str = "none"
    #: Where the budget cut the thinking: ``paragraph``, ``line``, ``sentence``, ``word``,
    #: ``token``, or ``none`` (no budget cut); and how many thinking tokens it took back.
    budget_cut: str = "none"
    budget_cut_tokens: int = 0
    #: Where the runtime's texts are in the thinking: ``{"kind", "start", "end"}``, character
    #: offsets into ``GenerationResult.thinking`` (the thinking stays the exact text generated).
    forced_spans: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class SpeculationCounts:
    """What speculative decoding did: ``draft`` is what proposed (``off``, ``ngram`` or a
    draft model's name); ``draft_proposed`` and ``draft_accepted`` count drafted tokens;
    ``decode_passes`` counts the forward passes after the prompt."""

    draft: str = "off"
    draft_proposed: int = 0
    draft_accepted: int = 0
    decode_passes: int = 0


@dataclass
class GenerationStats(ReasoningCounts):
    """Counts and timings of one generation (all times in seconds): the controller's
    counts, and what the generation loop measured."""

    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    #: Where the cached prompt tokens came from: the ``sequence`` itself, the prompt cache's ``memory`` or
    #: ``disk``, or a ``copy`` of another sequence's (several generations of one prompt).
    cached_prompt_from: str = ""
    finish_reason: str = "stop"
    #: The stop string that ended the answer ("" when none did).
    stop_string: str = ""
    seed: int | None = None
    time_to_first_token: float = 0.0
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    thinking_seconds: float = 0.0
    total_seconds: float = 0.0
    draft: str = "off"
    draft_proposed: int = 0
    draft_accepted: int = 0
    decode_passes: int = 0

    @property
    def generated_tokens(self) -> int:
        """Every token after the prompt, forced ones included."""
        return self.thinking_tokens + self.answer_tokens + self.forced_tokens

    @property
    def prefill_tokens_per_s(self) -> float:
        evaluated = self.prompt_tokens - self.cached_prompt_tokens
        return evaluated / self.prefill_seconds if self.prefill_seconds > 0 else 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        """Sampled tokens per second after the first token (forced tokens go in one batch)."""
        decoded = self.thinking_tokens + self.answer_tokens - 1
        return decoded / self.decode_seconds if self.decode_seconds > 0 and decoded > 0 else 0.0

    @property
    def draft_acceptance_rate(self) -> float:
        """Accepted ÷ proposed drafted tokens."""
        return self.draft_accepted / self.draft_proposed if self.draft_proposed else 0.0

    @property
    def tokens_per_pass(self) -> float:
        """Generated tokens per forward pass after the prompt (above 1 when drafts were accepted)."""
        return self.generated_tokens / self.decode_passes if self.decode_passes else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["generated_tokens"] = self.generated_tokens
        data["draft_acceptance_rate"] = round(self.draft_acceptance_rate, 4)
        data["tokens_per_pass"] = round(self.tokens_per_pass, 3)
        data["prefill_tokens_per_s"] = round(self.prefill_tokens_per_s, 2)
        data["decode_tokens_per_s"] = round(self.decode_tokens_per_s, 2)
        return data


@dataclass(frozen=True)
class GenerationResult:
    """Everything one generation produced; ``logprobs``: every sampled token's, with ``logprobs`` asked for."""

    thinking: str
    answer: str
    stats: GenerationStats
    logprobs: tuple[TokenLogprob, ...] = ()

    def tool_calls(self) -> tuple[str, list[ToolCall]]:
        """The answer's text outside its ``<tool_call>`` blocks, and the calls they hold."""
        return split_tool_calls(self.answer)

    def to_dict(self) -> dict[str, Any]:
        stats = self.stats.to_dict()
        return {
            "thinking": self.thinking,
            "answer": self.answer,
            "finish_reason": stats.pop("finish_reason"),
            **stats,
            **(
                {"logprobs": [entry.to_openai() | {"thinking": entry.thinking} for entry in self.logprobs]}
                if self.logprobs
                else {}
            ),
        }


@dataclass(frozen=True)
class Done:
    """The last event of every stream."""

    result: GenerationResult


Event = ThinkingDelta | AnswerDelta | Intervention | Done


@dataclass(frozen=True)
class ChoiceEvent:
    """One event of one of several generations of one prompt (``Model.streams``, ``n``, votes)."""

    index: int
    event: Event


@dataclass(frozen=True)
class Choices(GenerationResult):
    """Several generations of one prompt: the thinking, answer, stats and log-probabilities are
    ``chosen``'s (the first, unless a vote chose), ``results`` every one's, in order."""

    results: tuple[GenerationResult, ...] = ()
    chosen: int = 0

    @classmethod
    def of(cls, results: Iterable[GenerationResult], chosen: int = 0) -> Choices:
        results = tuple(results)
        first = results[chosen]
        return cls(first.thinking, first.answer, first.stats, first.logprobs, results, chosen)


def each_generation(result: GenerationResult) -> tuple[GenerationResult, ...]:
    """The generations a result stands for: every one of ``Choices``, else the result itself."""
    return result.results if isinstance(result, Choices) else (result,)


def collect(events: Iterable[Event]) -> GenerationResult:
    """Run a stream to its end and return the result its ``Done`` event carries."""
    for event in events:
        if isinstance(event, Done):
            return event.result
    raise AssertionError("a generation always ends with Done")  # pragma: no cover
