"""Sampler settings shared by every engine."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InvalidRequestError


@dataclass(frozen=True)
class SamplingParams:
    """How the next token is drawn.

    ``temperature == 0`` means greedy decoding. ``seed=None`` draws a fresh seed per
    generation; a fixed seed makes a generation reproducible on the same engine.
    """

    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int = 20
    min_p: float = 0.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    penalty_window: int = 64
    seed: int | None = None

    def __post_init__(self) -> None:
        checks = (
            (self.temperature >= 0, "temperature must be >= 0"),
            (0 < self.top_p <= 1, "top_p must be in (0, 1]"),
            (self.top_k >= 0, "top_k must be >= 0 (0 disables it)"),
            (0 <= self.min_p < 1, "min_p must be in [0, 1)"),
            (-2 <= self.presence_penalty <= 2, "presence_penalty must be in [-2, 2]"),
            (-2 <= self.frequency_penalty <= 2, "frequency_penalty must be in [-2, 2]"),
            (self.repetition_penalty > 0, "repetition_penalty must be > 0"),
            (self.penalty_window >= 0, "penalty_window must be >= 0"),
        )
        for ok, message in checks:
            if not ok:
                raise InvalidRequestError(message)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def penalized(self) -> bool:
        """Whether the repetition, presence or frequency penalty changes any logit."""
        changes = self.repetition_penalty != 1.0 or self.presence_penalty != 0.0 or self.frequency_penalty != 0.0
        return bool(self.penalty_window) and changes

    def replace(self, **overrides: Any) -> SamplingParams:
        """A copy with the given fields changed; ``None`` values are ignored."""
        changes = {key: value for key, value in overrides.items() if value is not None}
        return dataclasses.replace(self, **changes)


def penalized_argmax(row: np.ndarray, recent: Iterable[int], params: SamplingParams) -> int:
    """The greedy token once the ``recent`` tokens are penalized as llama.cpp's penalties sampler
    does it (a positive logit divided by the repetition penalty, a negative one multiplied, the
    presence penalty subtracted, and the frequency penalty once per occurrence); ``row`` is left
    as it was."""
    ids, counts = np.unique(np.fromiter(recent, dtype=np.int64), return_counts=True)
    kept = row[ids]
    penalty = params.repetition_penalty
    repeated = np.where(kept <= 0, kept * penalty, kept / penalty)
    row[ids] = repeated - params.presence_penalty - counts * params.frequency_penalty
    try:
        return int(np.argmax(row))
    finally:
        row[ids] = kept


def chain_probabilities(logits: np.ndarray, params: SamplingParams) -> np.ndarray:
    """The distribution a non-greedy ``params`` draws from, in llama.cpp's chain order
    (top-k, top-p, min-p, then temperature), as float64 probabilities over the vocabulary.

    Speculation's rejection rule weighs a sampled draft by this, so it must be the very
    distribution the sampler would draw from (``-inf`` logits, a mask, stay at 0)."""
    kept = np.argpartition(logits, -params.top_k)[-params.top_k :] if 0 < params.top_k < len(logits) else None
    kept = np.arange(len(logits)) if kept is None else kept
    kept = kept[np.argsort(logits[kept])[::-1]]
    values = logits[kept].astype(np.float64)
    kept, values = kept[np.isfinite(values)], values[np.isfinite(values)]
    if params.top_p < 1.0:
        weights = np.exp(values - values[0])
        cumulative = np.cumsum(weights / weights.sum())
        end = int(np.searchsorted(cumulative, params.top_p)) + 1
        kept, values = kept[:end], values[:end]
    if params.min_p > 0:
        keep = values >= values[0] + np.log(params.min_p)
        kept, values = kept[keep], values[keep]
    weights = np.exp((values - values[0]) / params.temperature)
    probabilities = np.zeros(len(logits))
    probabilities[kept] = weights / weights.sum()
    return probabilities


#: The most ``top_logprobs`` a request may ask for (OpenAI's bound).
MAX_TOP_LOGPROBS = 20


@dataclass(frozen=True)
class TokenLogprob:
    """One token's natural-log probability under the logits it was drawn from, the runtime's
    masks applied (a banned id has none) but before temperature, truncation and penalties,
    as OpenAI reports them; ``top``: the most likely tokens there, most likely first;
    ``thinking``: drawn in the thinking."""

    token: int
    bytes: bytes
    logprob: float
    top: tuple[TokenLogprob, ...] = ()
    thinking: bool = False

    def to_openai(self) -> dict[str, Any]:
        """OpenAI's shape: ``token`` (the text), ``logprob``, ``bytes``, ``top_logprobs``."""
        return {**self._entry(), "top_logprobs": [candidate._entry() for candidate in self.top]}

    def _entry(self) -> dict[str, Any]:
        return {"token": self.bytes.decode("utf-8", "replace"), "logprob": self.logprob, "bytes": list(self.bytes)}


def log_softmax_at(row: np.ndarray, ids: Iterable[int]) -> list[float]:
    """The log-softmax of ``row`` (``-inf`` where masked) at ``ids``, in float64."""
    row = np.asarray(row, dtype=np.float64)
    peak = row[np.isfinite(row)].max()
    total = peak + np.log(np.exp(row - peak).sum())
    return [float(row[i] - total) for i in ids]


def most_likely(row: np.ndarray, count: int) -> list[int]:
    """The ``count`` ids of the largest logits, largest first (masked ids never)."""
    row = np.asarray(row)
    count = min(count, int(np.isfinite(row).sum()))
    if count <= 0:
        return []
    ids = np.argpartition(row, -count)[-count:]
    return [int(i) for i in ids[np.argsort(-row[ids], kind="stable")]]
