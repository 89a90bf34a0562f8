"""How many drafted tokens to verify in the next pass, from what drafting has earned so far.

A pass over ``1 + k`` tokens costs ``pass_cost(1 + k)`` one-token passes (measured per
engine) and yields ``1 + a`` tokens when ``a`` drafts are accepted. With an acceptance
rate ``r`` per drafted token, the expected yield is ``(1 - r**(k + 1)) / (1 - r)``
tokens, so the best ``k`` maximizes yield ÷ cost, and no draft is worth proposing when
even the best ratio is below 1: speculation then stays off, and only probes now and
then (a cheap one-token draft) whether the text has become predictable again.

Rates are kept per *kind* of proposal (for prompt lookup: the length of the matched
suffix), since a long match is far more often right than a one-token one, and they
follow the text quickly (the last few dozen verified tokens count). ``k`` also grows
at most fourfold per pass (a copied passage: 4, 16, 64; on a CPU the passes of the
ramp pay least, so it is kept short) and falls back to twice what the last pass
accepted, so the end of a copied passage costs little.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..engines.base import CPU_PASS_COSTS

MAX_DRAFT = 64
#: Speculate only when the expected gain is at least this much (a margin for the Python work).
MIN_GAIN = 1.05
#: How much of the old evidence a new verified token keeps (about the last 30 count).
DECAY = 0.97
#: While drafting does not pay, a short probe every this many tokens (doubling, up to the last).
PROBE_EVERY = (16, 32, 64, 128, 256)
PROBE_SIZE = 3
FIRST_CAP = 8
#: How much ``k`` may grow after a pass whose drafts all passed.
GROWTH = 4


def interpolate(costs: Sequence[tuple[int, float]], n: int) -> float:
    """The cost of a pass over ``n`` tokens, linear between the measured points (and beyond the last)."""
    sizes = [size for size, _ in costs]
    i = min(max(bisect_left(sizes, n), 1), len(costs) - 1)
    (n0, c0), (n1, c1) = costs[i - 1], costs[i]
    return c0 + (c1 - c0) * (n - n0) / (n1 - n0)


def expected_yield(rate: float, k: int) -> float:
    """Tokens one pass gives when ``k`` drafts are each accepted with probability ``rate``
    (until the first rejection), the target's own next token included."""
    return k + 1.0 if rate >= 1.0 else (1.0 - rate ** (k + 1)) / (1.0 - rate)


@dataclass
class _Evidence:
    """Decayed counts of accepted drafted tokens and of verified ones (accepted or the first rejected);
    an untried kind starts from its prior rate, worth two tokens of evidence."""

    accepted: float
    verified: float = 2.0

    @property
    def rate(self) -> float:
        return self.accepted / self.verified

    def add(self, accepted: int, verified: int) -> None:
        keep = DECAY**verified
        self.accepted = self.accepted * keep + accepted
        self.verified = self.verified * keep + verified


@dataclass
class DraftTuner:
    """Chooses ``k`` per pass from each kind's acceptance rate and the engine's pass costs."""

    costs: Sequence[tuple[int, float]] = CPU_PASS_COSTS
    #: The cost of drafting one token (a draft model's pass) ÷ the target's one-token pass.
    draft_cost: float = 0.0
    max_draft: int = MAX_DRAFT
    #: The rate an untried kind starts from (a proposer's own guess).
    prior: Callable[[int], float] = lambda kind: 0.5
    _kinds: dict[int, _Evidence] = field(default_factory=dict)
    _idle: int = 0
    _probes: int = 0
    _cap: int = FIRST_CAP

    def __post_init__(self) -> None:
        #: ``_cost[k]``: verifying k drafts (a pass over k + 1 tokens, and drafting them).
        self._cost = [interpolate(self.costs, k + 1) + k * self.draft_cost for k in range(self.max_draft + 1)]

    def _evidence(self, kind: int) -> _Evidence:
        evidence = self._kinds.get(kind)
        if evidence is None:
            evidence = self._kinds[kind] = _Evidence(2.0 * self.prior(kind))
        return evidence

    def rate(self, kind: int) -> float:
        return self._evidence(kind).rate

    def best(self, kind: int, available: int) -> int:
        """How many of ``available`` drafted tokens of this kind to verify (0: none).

        Called once per sampled token; counts the tokens spent without drafting, so that
        a probe follows after a while.
        """
        rate, best_k, best_gain = self.rate(kind), 0, MIN_GAIN
        tokens, chance = 1.0, 1.0
        for k in range(1, min(available, self._cap) + 1):
            chance *= rate
            tokens += chance  # expected_yield(rate, k), one term at a time
            if tokens / self._cost[k] > best_gain:
                best_k, best_gain = k, tokens / self._cost[k]
        if best_k or not available:
            return best_k
        self._idle += 1
        if self._idle < PROBE_EVERY[min(self._probes, len(PROBE_EVERY) - 1)]:
            return 0
        self._idle, self._probes = 0, self._probes + 1
        return min(available, PROBE_SIZE)

    def record(self, kind: int, proposed: int, accepted: int) -> None:
        """``accepted`` of ``proposed`` drafts passed; fewer than proposed means one was rejected
        unless the round was cut short (``proposed`` then counts only what was verified)."""
        self._evidence(kind).add(accepted, proposed)
        full = proposed and accepted == proposed
        self._cap = min(self.max_draft, GROWTH * proposed if full else 2 * accepted + 2)
        if full:
            self._probes = 0
