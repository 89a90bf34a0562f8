"""Hugging Face Qwen2 / Qwen3 / Qwen3 MoE checkpoint → MLX model folder (mlx-lm's format), tensor by tensor.

Each weight (a MoE layer's experts stacked per projection into mlx-lm's ``switch_mlp``) is
quantized on its own with ``mx.quantize`` (a MoE router at 8 bits, as mlx-lm's own
``quant_predicate`` for qwen3_moe asks) and written into
safetensors shards of bounded size, with the ``quantization`` block that
``mlx_lm.load`` reads (per-layer entries for mixed recipes). The mixed recipes
are mlx-lm's own (``mixed_quant_predicate_builder``), asked about module paths
taken from the checkpoint, so the whole model is never built in memory.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from ..errors import ConversionError
from .checkpoint import TOKENIZER_FILES, Checkpoint
from .layout import Planned, tensor_plan
from .names import ROUTER
from .output import Progress

MLX_RECIPES = ("mixed_2_6", "mixed_3_4", "mixed_3_6", "mixed_4_6")
#: Arrays waiting to be saved are capped at this size: memory stays flat in model size.
SHARD_BYTES = 512 << 20


class _ModuleIndex:
    """What mlx-lm's recipe builder reads of a model: its module paths and layer count."""

    def __init__(self, checkpoint: Checkpoint) -> None:
        names = [mlx_name(planned.name) for planned in tensor_plan(checkpoint)]
        self._paths = [name.rsplit(".", 1)[0] for name in names if name.endswith(".weight")]
        self.layers = range(checkpoint.config.num_hidden_layers)

    def named_modules(self) -> list[tuple[str, None]]:
        return [(path, None) for path in self._paths]


def _quantization_rule(checkpoint: Checkpoint, bits: int, group_size: int, recipe: str | None):
    """``rule(module_path, shape) -> {"group_size", "bits", "mode"} | None``."""
    recipe_predicate = None
    if recipe is not None:
        from mlx_lm.convert import mixed_quant_predicate_builder

        recipe_predicate = mixed_quant_predicate_builder(recipe, _ModuleIndex(checkpoint), group_size)

    def rule(module: str, shape: tuple[int, ...]) -> dict[str, Any] | None:
        if len(shape) < 2 or shape[-1] % group_size:
            return None
        if module.endswith(ROUTER.removesuffix(".weight")):
            return {"group_size": group_size, "bits": 8, "mode": "affine"}
        if recipe_predicate is not None:
            return dict(recipe_predicate(module, None))
        return {"group_size": group_size, "bits": bits, "mode": "affine"}

    return rule


def write_mlx(
    checkpoint: Checkpoint,
    folder: Path,
    *,
    bits: int,
    group_size: int,
    recipe: str | None,
    progress: Progress,
) -> None:
    """Write an MLX model of ``checkpoint`` into ``folder``; ``bits=16`` keeps full precision."""
    import mlx.core as mx

    if recipe is not None and recipe not in MLX_RECIPES:
        raise ConversionError(f"unknown MLX recipe {recipe}; choose one of {', '.join(MLX_RECIPES)}")
    dtype = {"bfloat16": mx.bfloat16, "float16": mx.float16, "float32": mx.float32}.get(
        checkpoint.config.torch_dtype, mx.float16
    )
    quantize = bits < 16 or recipe is not None
    rule = _quantization_rule(checkpoint, bits, group_size, recipe)
    folder.mkdir(parents=True, exist_ok=True)
    shards = _ShardWriter(mx, folder)
    per_layer: dict[str, Any] = {}
    total, done = sum(checkpoint.nbytes(n) for n in checkpoint.names), 0
    for planned in tensor_plan(checkpoint):
        name = mlx_name(planned.name)
        weight = _planned_mlx(mx, checkpoint, planned)
        module = name.rsplit(".", 1)[0]
        params = rule(module, planned.shape) if quantize and name.endswith(".weight") else None
        if params is None:
            arrays = {name: weight.astype(dtype)}
        else:
            packed, scales, biases = mx.quantize(weight, group_size=params["group_size"], bits=params["bits"])
            arrays = {name: packed, f"{module}.scales": scales.astype(dtype), f"{module}.biases": biases.astype(dtype)}
            per_layer[module] = params
        mx.eval(*arrays.values())
        shards.add(arrays)
        done += sum(checkpoint.nbytes(source) for source in planned.sources)
        progress("quantizing MLX" if quantize else "converting", done, total)
    shards.flush()
    _write_config(checkpoint, folder, quantize, bits, group_size, per_layer)
    _write_index_and_tokenizer(checkpoint, folder, shards.weight_map)


def _write_index_and_tokenizer(checkpoint: Checkpoint, folder: Path, weight_map: dict[str, str]) -> None:
    """The shard index, and the tokenizer files copied from the checkpoint."""
    index = {"metadata": {}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    for file_name in TOKENIZER_FILES:
        if (checkpoint.folder / file_name).is_file():
            shutil.copy2(checkpoint.folder / file_name, folder / file_name)


def mlx_name(name: str) -> str:
    """The name mlx-lm gives a tensor: stacked experts live in ``switch_mlp``."""
    return name.replace(".mlp.experts.", ".mlp.switch_mlp.")


def _planned_mlx(mx: Any, checkpoint: Checkpoint, planned: Planned) -> Any:
    if not planned.stacked:
        return _as_mlx(mx, checkpoint, planned.sources[0])
    return mx.stack([_as_mlx(mx, checkpoint, source) for source in planned.sources])


def _as_mlx(mx: Any, checkpoint: Checkpoint, name: str) -> Any:
    """The tensor as an MLX array in its stored dtype (bfloat16 bits reinterpreted, no float32 copy)."""
    raw = checkpoint.raw(name)
    array = mx.array(raw)
    return array.view(mx.bfloat16) if checkpoint.dtype(name) == "BF16" else array


class _ShardWriter:
    """Collects arrays and saves them as ``model-NNNNN.safetensors`` shards of bounded size."""

    def __init__(self, mx: Any, folder: Path) -> None:
        self._mx, self._folder = mx, folder
        self._pending: dict[str, Any] = {}
        self.weight_map: dict[str, str] = {}
        self._count = 0

    def add(self, arrays: dict[str, Any]) -> None:
        self._pending.update(arrays)
        if sum(a.nbytes for a in self._pending.values()) >= SHARD_BYTES:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        self._count += 1
        file_name = f"model-{self._count:05d}.safetensors"
        self._mx.save_safetensors(str(self._folder / file_name), self._pending, metadata={"format": "mlx"})
        self.weight_map.update(dict.fromkeys(self._pending, file_name))
        self._pending = {}


def _write_config(
    checkpoint: Checkpoint, folder: Path, quantize: bool, bits: int, group_size: int, per_layer: dict[str, Any]
) -> None:
    config = dict(checkpoint.config.raw)
    if quantize:
        block = {"group_size": group_size, "bits": bits, "mode": "affine", **per_layer}
        config["quantization"] = block
        config["quantization_config"] = block
    (folder / "config.json").write_text(json.dumps(config, indent=2))
