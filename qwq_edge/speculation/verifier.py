"""Speculative decoding inside the generation loop, invisible to the reasoning controller.

When the loop keeps a sampled token, the proposer may draft the next ``k``; the token
and its drafts go through the engine in one pass that keeps every position's logits.
The loop then goes on exactly as without speculation, one token per step: the
controller decides (mask, force, rewind, finish), the target model's token for the
next position is sampled from that position's logits with that step's mask, and the
controller reviews it. A sampled token equal to the draft is already in the cache; the
first that differs (or any other action) drops the drafts still unverified. So the
controller sees the very token stream it would see without speculation, and the
sampler makes the same draws in the same order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..engines.base import CPU_PASS_COSTS, Engine, TokenSampler
from ..events import SpeculationCounts
from ..reasoning.controller import Sample
from .proposers import Proposer
from .tuner import DraftTuner


class Speculation:
    """The engine as the loop sees it: the committed tokens, with drafts ahead of them."""

    def __init__(
        self, engine: Engine, proposer: Proposer | None = None, horizon: Callable[[], int] = lambda: 1 << 62
    ) -> None:
        self.engine = engine
        self.proposer = proposer
        #: How many tokens the controller may still sample, the one being committed included.
        self._horizon = horizon
        costs = getattr(engine, "pass_costs", CPU_PASS_COSTS)
        self.tuner = DraftTuner(costs, proposer.draft_cost if proposer else 0.0)
        if proposer is not None:
            self.tuner.prior = proposer.prior
        self.counts = SpeculationCounts(draft=proposer.name if proposer else "off")
        self._drafts: list[int] = []
        #: The draft's distribution of each drafted token (None: deterministic drafts).
        self._distributions: Sequence[np.ndarray] | None = None
        self._verified = 0
        self._kind = 0

    @property
    def position(self) -> int:
        """Tokens the controller has seen (the cache also holds the unverified drafts)."""
        return self.engine.position - len(self._drafts) + self._verified

    def sample(self, sampler: TokenSampler, action: Sample) -> int:
        """The target's token for the next position, from that position's logits with ``action``'s
        masks: a drawn draft passes the rejection rule or is replaced by a draw from the residual."""
        at = self.position if self._drafts else None
        if self._distributions is not None and self._verified < len(self._drafts):
            p = sampler.probabilities(action.banned, at, action.banned_mask)
            if p is not None:
                i = self._verified
                return rejection_step(p, self._distributions[i], self._drafts[i], sampler.rng)
        return sampler.sample(action.banned, at, action.banned_mask)

    def commit(self, token: int) -> None:
        """Keep a sampled token the controller let through: a draft is already in the cache;
        any other token is fed, with the drafts proposed to follow it."""
        if self._verified < len(self._drafts):
            if token == self._drafts[self._verified]:
                self._verified += 1
                self.counts.draft_accepted += 1
                self._keep((token,))
                if self._verified == len(self._drafts):
                    self._end_round(rejected=False)
                return
            self.drop(rejected=True)
        self._keep((token,))
        drafts = self._propose()
        self.counts.decode_passes += 1
        if drafts:
            self.engine.feed_all((token, *drafts))
        else:
            self.engine.feed((token,))

    def force(self, tokens: Sequence[int]) -> None:
        self.drop()
        self._keep(tokens)
        self.counts.decode_passes += 1
        self.engine.feed(tokens)

    def rewind(self, position: int) -> None:
        self.drop()
        self.engine.rewind(position)
        if self.proposer is not None:
            self.proposer.truncate(position)

    def drop(self, rejected: bool = False) -> None:
        """Take the unverified drafts out of the cache: the controller did something else
        (forced, rewound, vetoed, finished), or the target chose another token (``rejected``)."""
        if self._verified < len(self._drafts):
            self.engine.rewind(self.position)
            self._end_round(rejected)

    def _end_round(self, rejected: bool) -> None:
        self.tuner.record(self._kind, self._verified + int(rejected), self._verified)
        self._drafts, self._verified = [], 0

    def _keep(self, tokens: Sequence[int]) -> None:
        if self.proposer is not None:
            self.proposer.extend(tokens)

    def _propose(self) -> list[int]:
        if self.proposer is None:
            return []
        kind, available = self.proposer.available()
        room = min(self.engine.info.context_length - self.engine.position, self._horizon()) - 1
        k = self.tuner.best(kind, min(available, room)) if available else 0
        if k <= 0:
            return []
        self._drafts, self._kind = self.proposer.propose(k), kind
        self._distributions = self.proposer.distributions()
        self.counts.draft_proposed += len(self._drafts)
        return self._drafts


def rejection_step(p: np.ndarray, q: np.ndarray, draft: int, rng: np.random.Generator) -> int:
    """Speculative sampling's rule: keep ``draft`` (drawn from ``q``) with probability
    min(1, p/q), else draw from max(0, p - q) renormalized; the result is distributed as ``p``."""
    if rng.random() * q[draft] < p[draft]:
        return draft
    residual = np.maximum(p - q, 0.0)
    total = residual.sum()
    if total <= 0.0:  # p == q up to rounding: a rejection has probability 0, fall back to p
        residual, total = p, p.sum()
    return int(rng.choice(len(p), p=residual / total))
