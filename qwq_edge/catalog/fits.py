"""Choosing what fits: every catalog download planned for this machine, in a stated order.

The order (the *ranking*): the default model first, in its default quantization and
then in smaller ones (largest first); then the other reasoning models, largest first,
each in its quantizations, largest first; then the catalog's other models. A download
*fits* when the memory planner gives it at least ``MIN_FIT_CONTEXT`` tokens of context
(with an fp16 KV cache, else an 8-bit one). The first run, with no ``--model``, takes
the first reasoning model in that order that fits (one already on disk first).
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
from .store import preferred_format

VERDICTS = {"f16": "fits", "q8_0": "fits with 8-bit KV", None: "does not fit"}


@dataclass(frozen=True)
class Candidate:
    """One catalog download and its plan on this machine (``plan`` is ``None`` if it does not fit)."""

    entry: CatalogEntry
    source: Source
    plan: MemoryPlan | None
    #: What it needs at the least context that counts (``MIN_FIT_CONTEXT`` tokens, 8-bit KV cache).
    needed: MemoryPlan

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
        return f"({where}; {self.plan.context} tokens, {self.plan.kv_cache} KV cache)"

    def describe(self) -> str:
        return f"{self.spec} {self.details()}"

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


def candidate(entry: CatalogEntry, source: Source, budget: int) -> Candidate:
    shape = entry.shape(source)
    least = min(MIN_FIT_CONTEXT, shape.trained_context)
    return Candidate(entry, source, fitting_plan(shape, budget), plan_for(shape, least, "q8_0", budget))


def plan_catalog(budget: int | None = None, format: str | None = None) -> list[Candidate]:
    """Every catalog download with its plan (``budget``: this machine's, or ``QWQ_EDGE_MEMORY_BUDGET``)."""
    budget = memory_budget() if budget is None else budget
    return [candidate(entry, source, budget) for entry, source in ranked_sources(format or preferred_format())]


def fitting(candidates: list[Candidate]) -> list[Candidate]:
    """The reasoning models among ``candidates`` that fit, best first."""
    return [c for c in candidates if c.reasoning and c.plan is not None]


def choose(candidates: list[Candidate], pulled: set[str] = frozenset()) -> Candidate:
    """The first run's choice: the best fitting download already on disk (``pulled``: specs), else the best."""
    best = fitting(candidates)
    if not best:
        smallest = min((c for c in candidates if c.reasoning), key=lambda c: c.needed.total_bytes)
        raise InsufficientMemoryError(
            f"no reasoning model of the catalog fits this machine's memory with {MIN_FIT_CONTEXT} tokens of context: "
            f"the smallest, {smallest.spec}, needs {smallest.needed.describe()}"
        )
    return next((c for c in best if c.spec in pulled), best[0])


def why(choice: Candidate, candidates: list[Candidate]) -> str | None:
    """One line saying why the first run chose ``choice`` over the default download (``None`` if it is the default)."""
    default = candidates[0]
    if choice is default:
        return None
    missed = f"{default.spec} needs {default.needed.total_bytes / GB:.1f} GB with {default.needed.context} tokens"
    if default.plan is not None:
        missed = f"{choice.spec} is already on disk"
    return f"{missed}; {default.needed.budget_bytes / GB:.1f} GB usable here: chose {choice.describe()}"


def mac_hint(needed: MemoryPlan) -> str | None:
    """On this Mac, the command that would let ``needed`` fit by raising the GPU's wired limit."""
    return wired_limit_hint(needed.total_bytes, needed.budget_bytes, total_memory(), apple_silicon())


def alternatives(candidates: list[Candidate], command: str, most: int = 3) -> str:
    """What fits instead, best first, as commands: ``qwq-edge chat --model NAME:QUANT (…)``."""
    best = fitting(candidates)[:most]
    if not best:
        return "nothing in the catalog fits this machine's memory"
    return "what fits here, best first: " + "; ".join(f"`{command} {c.spec}` {c.details()}" for c in best)
