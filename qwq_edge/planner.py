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

import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from .engines import apple_silicon, model_kind
from .engines.gguf_file import read_gguf_header
from .errors import InsufficientMemoryError
from .model_config import read_model_config

#: Bytes per KV-cache element: fp16, and 8-bit (q8_0: 32 values in 34 bytes; MLX's
#: 8-bit cache with fp16 scale and bias per 64 values: the same 8.5 bits).
KV_ELEMENT_BYTES = {"f16": 2.0, "q8_0": 34 / 32}
AUTO_CONTEXT_CAP = 32768
MIN_AUTO_CONTEXT = 2048
OVERHEAD_BYTES = 512 * 2**20
OVERHEAD_FRACTION = 0.03
APPLE_GPU_FRACTION = 0.75
GB = 1e9


@dataclass(frozen=True)
class ModelShape:
    """What the planner needs to know about a model, read from its files alone."""

    name: str
    layers: int
    kv_heads: int
    head_dim: int
    weights_bytes: int
    trained_context: int

    def kv_bytes_per_token(self, kv_cache: str = "f16") -> float:
        return self.layers * self.kv_heads * self.head_dim * 2 * KV_ELEMENT_BYTES[kv_cache]


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


def _meminfo() -> dict[str, int]:
    values = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        values[key] = int(rest.split()[0]) * 1024
    return values


def total_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def available_memory() -> int:
    """Memory a new model can use now (Linux: MemAvailable; macOS: the whole RAM)."""
    if sys.platform.startswith("linux"):
        return _meminfo()["MemAvailable"]
    return total_memory()


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


def _gguf_shape(path: Path) -> ModelShape:
    header = read_gguf_header(path)
    meta, arch = header.metadata, header.architecture
    heads = int(meta.get(f"{arch}.attention.head_count", 1))
    head_dim = int(meta.get(f"{arch}.attention.key_length", int(meta.get(f"{arch}.embedding_length", 0)) // heads))
    return ModelShape(
        name=header.name,
        layers=int(meta.get(f"{arch}.block_count", 0)),
        kv_heads=int(meta.get(f"{arch}.attention.head_count_kv", heads)),
        head_dim=head_dim,
        weights_bytes=header.file_size,
        trained_context=header.context_length or 4096,
    )


def shape_from_config(name: str, config: dict, weights_bytes: int) -> ModelShape:
    """A model's shape from a Hugging Face / MLX ``config.json``."""
    heads = int(config["num_attention_heads"])
    return ModelShape(
        name=name,
        layers=int(config["num_hidden_layers"]),
        kv_heads=int(config.get("num_key_value_heads", heads)),
        head_dim=int(config.get("head_dim") or int(config["hidden_size"]) // heads),
        weights_bytes=weights_bytes,
        trained_context=int(config.get("max_position_embeddings", 4096)),
    )


def model_shape(path: str | Path) -> ModelShape:
    """Read a model's shape from a GGUF file or an MLX folder without loading it."""
    path = Path(path)
    if model_kind(path) == "gguf":
        return _gguf_shape(path)
    config = read_model_config(path)
    weights = sum(p.stat().st_size for p in path.glob("*.safetensors"))
    return shape_from_config(str(config.get("_name_or_path") or path.name), config, weights)
