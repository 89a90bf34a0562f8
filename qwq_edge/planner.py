"""The memory planner: will a model fit, with what context and KV cache?

Before anything is loaded, it adds the weights (the files' size), the KV cache
(layers × KV heads × head size × 2 (K and V) × bytes per element, per token) and an
overhead for compute buffers, and compares them with the memory this machine can
give: on Apple Silicon about 75% of RAM (Metal's working-set limit for the GPU),
elsewhere the memory available now. ``auto`` picks the longest context (up to the
model's own, at most 32768) with an fp16 KV cache, then with an 8-bit one, then
shorter contexts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .engines.registry import spec_for_path
from .errors import InsufficientMemoryError
from .machine import apple_silicon, available_memory, total_memory
from .shape import KV_ELEMENT_BYTES, ModelShape

AUTO_CONTEXT_CAP = 32768
MIN_AUTO_CONTEXT = 2048
OVERHEAD_BYTES = 512 * 2**20
OVERHEAD_FRACTION = 0.03
APPLE_GPU_FRACTION = 0.75
GB = 1e9


@dataclass(frozen=True)
class MemoryPlan:
    context: int
    kv_cache: str
    weights_bytes: int
    kv_bytes: int
    overhead_bytes: int
    budget_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_bytes + self.overhead_bytes

    @property
    def fits(self) -> bool:
        return self.total_bytes <= self.budget_bytes

    def describe(self) -> str:
        return (
            f"{self.total_bytes / GB:.1f} GB = {self.weights_bytes / GB:.1f} GB weights + "
            f"{self.kv_bytes / GB:.1f} GB {self.kv_cache} KV cache for {self.context} tokens + "
            f"{self.overhead_bytes / GB:.1f} GB overhead; {self.budget_bytes / GB:.1f} GB usable"
        )

    def to_dict(self) -> dict:
        return {**asdict(self), "total_bytes": self.total_bytes, "fits": self.fits}


def memory_budget() -> int:
    """What a model may use on this machine."""
    if apple_silicon():
        return int(total_memory() * APPLE_GPU_FRACTION)
    return available_memory()


def plan_for(shape: ModelShape, context: int, kv_cache: str, budget: int) -> MemoryPlan:
    kv = int(shape.kv_bytes_per_token(kv_cache) * context)
    overhead = int(OVERHEAD_BYTES + OVERHEAD_FRACTION * shape.weights_bytes)
    return MemoryPlan(context, kv_cache, shape.weights_bytes, kv, overhead, budget)


def largest_context(shape: ModelShape, kv_cache: str, budget: int) -> int:
    """The longest context (a multiple of 256, up to the model's own) that fits; 0 if none."""
    per_token = shape.kv_bytes_per_token(kv_cache)
    spare = budget - plan_for(shape, 0, kv_cache, budget).total_bytes
    if spare <= 0:
        return 0
    return min(shape.trained_context, int(spare / per_token) // 256 * 256)


def plan_memory(shape: ModelShape, budget: int, context: int | None = None, kv_cache: str | None = None) -> MemoryPlan:
    """The plan to load with; ``None`` means choose. Raises if nothing asked for fits."""
    kv_choices = [kv_cache] if kv_cache else list(KV_ELEMENT_BYTES)
    if context is None:
        longest = min(shape.trained_context, AUTO_CONTEXT_CAP)
        for kv in kv_choices:
            plan = plan_for(shape, longest, kv, budget)
            if plan.fits:
                return plan
        fallback = min(largest_context(shape, kv_choices[-1], budget), longest)
        if fallback >= MIN_AUTO_CONTEXT:
            return plan_for(shape, fallback, kv_choices[-1], budget)
        smallest = plan_for(shape, MIN_AUTO_CONTEXT, kv_choices[-1], budget)
        raise InsufficientMemoryError(f"{shape.name} does not fit in memory: it needs {smallest.describe()}")
    for kv in kv_choices:
        plan = plan_for(shape, context, kv, budget)
        if plan.fits:
            return plan
    raise InsufficientMemoryError(_refusal(shape, plan_for(shape, context, kv_choices[0], budget), budget))


def _refusal(shape: ModelShape, plan: MemoryPlan, budget: int) -> str:
    options = []
    if plan.kv_cache == "f16" and plan_for(shape, plan.context, "q8_0", budget).fits:
        options.append("--kv-cache q8_0")
    best = 0
    for kv in ("f16", "q8_0"):
        fitting = largest_context(shape, kv, budget)
        if best < fitting < plan.context and fitting >= 256:
            options.append(f"--ctx {fitting} with --kv-cache {kv}")
            best = fitting
    hint = f"; it fits with {' or '.join(options)}" if options else "; no context fits this machine's memory"
    return f"{shape.name} needs {plan.describe()}{hint}"


def model_shape(path: str | Path) -> ModelShape:
    """Read a model's shape from its files without loading it (each engine knows its own files)."""
    path = Path(path)
    return spec_for_path(path).shape(path)


def rank_plan(rank_share: ModelShape, ranks: int, machine_bytes: int | None = None) -> dict[str, Any]:
    """Whether ``ranks`` machines hold a model split over them, and with what context.

    ``rank_share`` is one rank's share (``engines.registry.rank_shape``);
    ``machine_bytes`` each machine's memory, of which a Mac lets the GPU use about 75%
    (None: this machine's budget).
    """
    budget = memory_budget() if machine_bytes is None else int(machine_bytes * APPLE_GPU_FRACTION)
    report: dict[str, Any] = {
        "ranks": ranks,
        "budget_per_rank_bytes": budget,
        "weights_per_rank_bytes": rank_share.weights_bytes,
        "kv_bytes_per_token_per_rank": {kv: rank_share.kv_bytes_per_token(kv) for kv in KV_ELEMENT_BYTES},
        "largest_context": {kv: largest_context(rank_share, kv, budget) for kv in KV_ELEMENT_BYTES},
    }
    try:
        plan = plan_memory(rank_share, budget)
    except InsufficientMemoryError as error:
        return {**report, "fits": False, "plan": None, "verdict": str(error)}
    verdict = f"fits with {plan.context} tokens of {plan.kv_cache} KV cache; per rank {plan.describe()}"
    return {**report, "fits": True, "plan": plan.to_dict(), "verdict": verdict}
