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

import math
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..architecture.shape import KV_ELEMENT_BYTES, ModelShape
from ..engines.registry import spec_for_path
from ..errors import InsufficientMemoryError, InvalidRequestError
from ..system.machine import apple_silicon, available_memory, total_memory, wired_limit_mb

AUTO_CONTEXT_CAP = 32768
MIN_AUTO_CONTEXT = 2048
OVERHEAD_BYTES = 512 * 2**20
OVERHEAD_FRACTION = 0.03
APPLE_GPU_FRACTION = 0.75
GB = 1e9
MiB = 2**20
GiB = 2**30
#: Below this context a model does not count as fitting when qwq-edge chooses one for you.
MIN_FIT_CONTEXT = 8192
#: What ``QWQ_EDGE_MEMORY_BUDGET`` may say: bytes, or a number with one of these units.
BUDGET_ENV = "QWQ_EDGE_MEMORY_BUDGET"
SIZE_UNITS = {"": 1, "b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12, "kib": 2**10, "mib": MiB, "gib": GiB}
SIZE_UNITS |= {"k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
#: What raising the GPU's wired limit on a Mac must leave to macOS and the other apps:
#: the larger of 3 GiB and an eighth of the RAM.
MAC_RESERVE_BYTES = 3 * GiB
MAC_RESERVE_FRACTION = 1 / 8


@dataclass(frozen=True)
class MemoryPlan:
    context: int
    kv_cache: str
    weights_bytes: int
    kv_bytes: int
    overhead_bytes: int
    budget_bytes: int
    #: Sequences the KV cache holds at once, each ``context`` tokens long (``--parallel``).
    parallel: int = 1
    #: What the prompt cache may hold in memory besides (``--cache-ram``; 0: none).
    prompt_cache_bytes: int = 0

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_bytes + self.overhead_bytes

    @property
    def fits(self) -> bool:
        return self.total_bytes <= self.budget_bytes

    def describe(self) -> str:
        return (
            f"{self.total_bytes / GB:.1f} GB = {self.weights_bytes / GB:.1f} GB weights + "
            f"{self.kv_bytes / GB:.1f} GB {self.kv_cache} KV cache for {self._tokens()} tokens + "
            f"{self.overhead_bytes / GB:.1f} GB overhead; {self.budget_bytes / GB:.1f} GB usable"
            + (f"; prompt cache up to {self.prompt_cache_bytes / GB:.1f} GB" if self.prompt_cache_bytes else "")
        )

    def _tokens(self) -> str:
        return f"{self.parallel} × {self.context}" if self.parallel > 1 else str(self.context)

    def to_dict(self) -> dict:
        return {**asdict(self), "total_bytes": self.total_bytes, "fits": self.fits}


def parse_size(text: str, what: str = BUDGET_ENV) -> int:
    """``17179869184``, ``16GB``, ``16 GiB``, ``12.5G``: a size in bytes (GB = 10^9, GiB = 2^30)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    unit = match[2].lower() if match else ""
    if match is None or unit not in SIZE_UNITS or float(match[1]) * SIZE_UNITS[unit] < 1:
        raise InvalidRequestError(f"{what} must be a size in bytes or with a unit such as 16GB, not {text!r}")
    return int(float(match[1]) * SIZE_UNITS[unit])


def apple_gpu_budget(ram: int, wired_mb: int = 0) -> int:
    """What the GPU of an Apple Silicon Mac may use: the raised wired limit if one is set, else 75% of RAM."""
    return wired_mb * MiB if wired_mb > 0 else int(ram * APPLE_GPU_FRACTION)


def memory_budget(reserved: int = 0) -> int:
    """What a model may use on this machine (``QWQ_EDGE_MEMORY_BUDGET`` overrides it) besides
    ``reserved`` bytes that models loaded in this process already hold. Fixed budgets (the
    override, the GPU's share of a Mac's RAM) lose ``reserved``; the memory Linux reports
    available already went down by what the loaded models took."""
    override = os.environ.get(BUDGET_ENV)
    if override is not None:
        return max(0, parse_size(override) - reserved)
    if apple_silicon():
        return max(0, apple_gpu_budget(total_memory(), wired_limit_mb()) - reserved)
    return available_memory()


def max_wired_bytes(ram: int) -> int:
    """The most the GPU's wired limit should be raised to: RAM less what macOS and the other apps need."""
    return ram - max(MAC_RESERVE_BYTES, int(ram * MAC_RESERVE_FRACTION))


def wired_limit_hint(needed: int, budget: int, ram: int, is_apple_silicon: bool) -> str | None:
    """On an Apple Silicon Mac, when ``needed`` misses ``budget`` by less than raising the GPU's
    wired limit would give: the command that raises it, and its risk. ``None`` otherwise."""
    ceiling = max_wired_bytes(ram)
    if not is_apple_silicon or needed <= budget or needed > ceiling:
        return None
    limit_mb = min(math.ceil(needed / MiB / 256) * 256, ceiling // MiB)
    left = (ram - limit_mb * MiB) / GB
    command = f"sudo sysctl iogpu.wired_limit_mb={limit_mb}"
    return (
        f"it would fit if the GPU could use {limit_mb * MiB / GB:.1f} GB: `{command}` raises macOS's limit "
        f"(75% of RAM by default) until the next restart; the risk: macOS and every other app then share "
        f"{left:.1f} GB, so the Mac may swap or freeze while the model runs "
        f"(`sudo sysctl iogpu.wired_limit_mb=0` restores the default)"
    )


def plan_for(shape: ModelShape, context: int, kv_cache: str, budget: int, parallel: int = 1) -> MemoryPlan:
    kv = int(shape.kv_bytes_per_token(kv_cache) * context * parallel)
    overhead = int(OVERHEAD_BYTES + OVERHEAD_FRACTION * shape.weights_bytes)
    return MemoryPlan(context, kv_cache, shape.weights_bytes, kv, overhead, budget, parallel)


def largest_context(shape: ModelShape, kv_cache: str, budget: int, parallel: int = 1) -> int:
    """The longest context per sequence (a multiple of 256, up to the model's own) that fits
    ``parallel`` sequences; 0 if none."""
    per_token = shape.kv_bytes_per_token(kv_cache) * parallel
    spare = budget - plan_for(shape, 0, kv_cache, budget).total_bytes
    if spare <= 0:
        return 0
    return min(shape.trained_context, int(spare / per_token) // 256 * 256)


def plan_memory(
    shape: ModelShape, budget: int, context: int | None = None, kv_cache: str | None = None, parallel: int = 1
) -> MemoryPlan:
    """The plan to load with; ``None`` means choose. ``context`` is per sequence, and the KV
    cache holds ``parallel`` of them. Raises if nothing asked for fits."""
    kv_choices = [kv_cache] if kv_cache else list(KV_ELEMENT_BYTES)
    if context is None:
        longest = min(shape.trained_context, AUTO_CONTEXT_CAP)
        for kv in kv_choices:
            plan = plan_for(shape, longest, kv, budget, parallel)
            if plan.fits:
                return plan
        fallback = min(largest_context(shape, kv_choices[-1], budget, parallel), longest)
        if fallback >= MIN_AUTO_CONTEXT:
            return plan_for(shape, fallback, kv_choices[-1], budget, parallel)
        smallest = plan_for(shape, MIN_AUTO_CONTEXT, kv_choices[-1], budget, parallel)
        hint = _fewer_sequences(shape, MIN_AUTO_CONTEXT, kv_choices[-1], budget, parallel)
        raise InsufficientMemoryError(f"{shape.name} does not fit in memory: it needs {smallest.describe()}{hint}")
    for kv in kv_choices:
        plan = plan_for(shape, context, kv, budget, parallel)
        if plan.fits:
            return plan
    raise InsufficientMemoryError(_refusal(shape, plan_for(shape, context, kv_choices[0], budget, parallel), budget))


def _fewer_sequences(shape: ModelShape, context: int, kv_cache: str, budget: int, parallel: int) -> str:
    """``; it fits with --parallel K`` for the most sequences below ``parallel`` that fit, if any."""
    fitting = [n for n in range(parallel - 1, 0, -1) if plan_for(shape, context, kv_cache, budget, n).fits]
    return f"; it fits with --parallel {fitting[0]}" if fitting else ""


def fitting_plan(shape: ModelShape, budget: int) -> MemoryPlan | None:
    """The plan ``auto`` would load with, if it gives at least ``MIN_FIT_CONTEXT`` tokens
    (or the model's whole context, when that is shorter); ``None`` if it does not."""
    try:
        plan = plan_memory(shape, budget)
    except InsufficientMemoryError:
        return None
    return plan if plan.context >= min(MIN_FIT_CONTEXT, shape.trained_context) else None


def _refusal(shape: ModelShape, plan: MemoryPlan, budget: int) -> str:
    """What did not fit, and the options that would: 8-bit KV, a shorter context per sequence, fewer sequences."""
    options = []
    if plan.kv_cache == "f16" and plan_for(shape, plan.context, "q8_0", budget, plan.parallel).fits:
        options.append("--kv-cache q8_0")
    best = 0
    for kv in ("f16", "q8_0"):
        fitting = largest_context(shape, kv, budget, plan.parallel)
        if best < fitting < plan.context and fitting >= 256:
            options.append(f"--ctx {fitting} with --kv-cache {kv}")
            best = fitting
    fewer = _fewer_sequences(shape, plan.context, plan.kv_cache, budget, plan.parallel)
    if fewer:
        options.append(fewer.removeprefix("; it fits with "))
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
