"""Choosing what fits: every catalog download planned for this machine, in a stated order.

The order (the *ranking*): the default model first, in its default quantization and
then in smaller ones (largest first); then the other reasoning models, largest first,
each in its quantizations, largest first; then the catalog's other models. A download
*fits* when the memory planner gives it at least ``MIN_FIT_CONTEXT`` tokens of context
(with an fp16 KV cache, else an 8-bit one). The first run, with no ``--model``, takes
the first reasoning model in that order that fits and thinks at or above a floor (by
default a medium thought within five minutes; see ``catalog/speed.py``), one already on
disk first; when none that fits is that fast, the fastest that fits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import InsufficientMemoryError
from ..system.machine import apple_silicon
from .entries import CatalogEntry, CatalogError, Source, default_entry, load_catalog
from .planner import (
    GB,
    MIN_FIT_CONTEXT,
    MemoryPlan,
    fitting_plan,
    memory_budget,
    plan_for,
    total_memory,
    wired_limit_hint,
)
from .speed import (
    MachineSpeed,
    Prediction,
    describe_floor,
    fast_enough,
    machine_speed,
    medium_thought,
    predict,
)
from .store import preferred_format

#: The engine a download of each format runs on.
FORMAT_ENGINES = {"gguf": "llama.cpp", "mlx": "mlx"}
VERDICTS = {"f16": "fits", "q8_0": "fits with 8-bit KV", None: "does not fit"}


@dataclass(frozen=True)
class Candidate:
    """One catalog download and its plan on this machine (``plan`` is ``None`` if it does not fit)."""

    entry: CatalogEntry
    source: Source
    plan: MemoryPlan | None
    #: What it needs at the least context that counts (``MIN_FIT_CONTEXT`` tokens, 8-bit KV cache).
    needed: MemoryPlan
    #: How fast it would think here (``None``: not known on this machine's GPU).
    speed: Prediction | None = None

    @property
    def spec(self) -> str:
        return f"{self.entry.name}:{self.source.quant}"

    @property
    def verdict(self) -> str:
        return VERDICTS[self.plan.kv_cache if self.plan else None]

    @property
    def reasoning(self) -> bool:
        return self.entry.reasoning_format != "none"

    def details(self) -> str:
        """``(13.7 GB from REPO; 9472 tokens, q8_0 KV cache)``."""
        where = f"{self.source.size_bytes / GB:.1f} GB from {self.source.repo}"
        if self.plan is None:
            return f"({where}; needs {self.needed.total_bytes / GB:.1f} GB)"
        speed = f"; ~{self.speed.decode_tokens_per_s:.1f} tokens/s" if self.speed else ""
        return f"({where}; {self.plan.context} tokens, {self.plan.kv_cache} KV cache{speed})"

    def describe(self) -> str:
        """The download, its plan and, when known, its speed in words."""
        where = f"{self.source.size_bytes / GB:.1f} GB from {self.source.repo}"
        plan = f"{self.plan.context} tokens, {self.plan.kv_cache} KV cache" if self.plan else "does not fit"
        speed = f"; {self.speed.describe()}" if self.speed else ""
        return f"{self.spec} ({where}; {plan}{speed})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "name": self.entry.name,
            "display_name": self.entry.display_name,
            "format": self.source.format,
            "quant": self.source.quant,
            "repo": self.source.repo,
            "size_bytes": self.source.size_bytes,
            "converted": self.source.convert,
            "reasoning": self.reasoning,
            "quality": self.source.quality,
            "verdict": self.verdict,
            "plan": self.plan.to_dict() if self.plan else None,
            "needed_bytes": self.needed.total_bytes,
            **(self.speed.to_dict() if self.speed else {"predicted_decode_tokens_per_s": None}),
        }


def _entry_sources(entry: CatalogEntry, format: str) -> list[Source]:
    """An entry's downloads for ``format``: its first (default) one, then the rest, largest first."""
    sources = [s for s in entry.sources if s.format == format]
    if not sources:
        try:
            return [entry.source(format)]  # a checkpoint to convert
        except CatalogError:
            return []
    return sources[:1] + sorted(sources[1:], key=lambda s: -s.size_bytes)


def ranked_sources(format: str) -> list[tuple[CatalogEntry, Source]]:
    """Every catalog download for ``format``, in the ranking's order."""
    default = default_entry()
    others = sorted(
        (e for e in load_catalog() if e is not default),
        key=lambda e: (e.reasoning_format == "none", -e.parameters),
    )
    return [(entry, source) for entry in (default, *others) for source in _entry_sources(entry, format)]


def candidate(entry: CatalogEntry, source: Source, budget: int, machine: MachineSpeed | None = None) -> Candidate:
    """A download's plan under ``budget`` and its speed on ``machine`` (with the KV cache it would run with)."""
    shape = entry.shape(source)
    least = min(MIN_FIT_CONTEXT, shape.trained_context)
    plan, needed = fitting_plan(shape, budget), plan_for(shape, least, "q8_0", budget)
    kv = (plan or needed).kv_cache
    speed = predict(shape, kv, machine, medium_thought(entry.effort)) if machine else None
    return Candidate(entry, source, plan, needed, speed)


def plan_catalog(
    budget: int | None = None, format: str | None = None, machine: MachineSpeed | None = None
) -> list[Candidate]:
    """Every catalog download with its plan (``budget``: this machine's, or ``QWQ_EDGE_MEMORY_BUDGET``)
    and its speed (``machine``: this one's, for the engine of ``format``)."""
    budget = memory_budget() if budget is None else budget
    format = format or preferred_format()
    machine = machine or machine_speed(FORMAT_ENGINES.get(format, "llama.cpp"))
    return [candidate(entry, source, budget, machine) for entry, source in ranked_sources(format)]


def fitting(candidates: list[Candidate]) -> list[Candidate]:
    """The reasoning models among ``candidates`` that fit, best first."""
    return [c for c in candidates if c.reasoning and c.plan is not None]


def choose(candidates: list[Candidate], pulled: set[str] = frozenset(), floor: float | None = None) -> Candidate:
    """The first run's choice among the reasoning downloads that fit: of those that think at or above
    ``floor`` (tokens/s; ``None``: a medium thought within five minutes), one already on disk
    (``pulled``: specs), else the best; when none is that fast, the fastest."""
    best = fitting(candidates)
    if not best:
        smallest = min((c for c in candidates if c.reasoning), key=lambda c: c.needed.total_bytes)
        raise InsufficientMemoryError(
            f"no reasoning model of the catalog fits this machine's memory with {MIN_FIT_CONTEXT} tokens of context: "
            f"the smallest, {smallest.spec}, needs {smallest.needed.describe()}"
        )
    quick = [c for c in best if fast_enough(c.speed, floor)]
    if not quick:
        return max(best, key=lambda c: c.speed.decode_tokens_per_s if c.speed else 0.0)
    return next((c for c in quick if c.spec in pulled), quick[0])


def why(choice: Candidate, candidates: list[Candidate], floor: float | None = None) -> str | None:
    """One line saying why the first run chose ``choice`` over the default download (``None`` if it is
    the default), with how fast ``choice`` thinks here."""
    default = candidates[0]
    if choice is default:
        return None
    reason = f"{choice.spec} is already on disk"
    if default.plan is None:
        reason = (
            f"{default.spec} needs {default.needed.total_bytes / GB:.1f} GB with {default.needed.context} tokens; "
            f"{default.needed.budget_bytes / GB:.1f} GB usable here"
        )
    elif default.speed and not fast_enough(default.speed, floor):
        reason = f"{default.spec} would think here at {default.speed.describe()}"
    if choice.speed and not fast_enough(choice.speed, floor):
        floor_words = describe_floor(choice.speed, floor)
        return f"{reason}; nothing that fits thinks at {floor_words}: chose the fastest, {choice.describe()}"
    slower = [c for c in fitting(candidates) if c.speed and not fast_enough(c.speed, floor)]
    if slower and choice.speed:
        reason += f"; {len(slower)} that fit think slower than {describe_floor(choice.speed, floor)}"
    return f"{reason}: chose {choice.describe()}"


def mac_hint(needed: MemoryPlan) -> str | None:
    """On this Mac, the command that would let ``needed`` fit by raising the GPU's wired limit."""
    return wired_limit_hint(needed.total_bytes, needed.budget_bytes, total_memory(), apple_silicon())


def alternatives(candidates: list[Candidate], command: str, most: int = 3) -> str:
    """What fits instead, best first, as commands: ``qwq-edge chat --model NAME:QUANT (…)``."""
    best = fitting(candidates)[:most]
    if not best:
        return "nothing in the catalog fits this machine's memory"
    return "what fits here, best first: " + "; ".join(f"`{command} {c.spec}` {c.details()}" for c in best)
