"""The MLX adapter's spec: model folders, read here without MLX; run by ``engine``.

mlx and mlx-lm are imported only when a model is opened, a baseline is run or
logits are asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ...architecture.config import read_json_object, read_model_config
from ...architecture.qwen import folder_config
from ...architecture.shape import ModelShape, embedding_split, shape_from_config
from ...errors import CheckpointError
from ...system.machine import apple_silicon, metal_available
from ..adapter import AutoChoice, EngineOptions, EngineSpec, ModelFacts, RawRunner
from ..base import Engine
from .folder import check_split


def _shape(path: Path) -> ModelShape:
    config = read_model_config(path)
    weights = sum(p.stat().st_size for p in path.glob("*.safetensors"))
    shape = shape_from_config(str(config.get("_name_or_path") or path.name), config, weights)
    try:
        qwen2 = folder_config(config, str(path))
    except CheckpointError:
        return shape  # not a Qwen2 config: the speed model reads every weight
    sizes = (qwen2.parameter_count, qwen2.vocab_size, qwen2.hidden_size, qwen2.tie_word_embeddings)
    return replace(shape, **embedding_split(weights, *sizes))


def _quantization(config: dict[str, Any]) -> str:
    block = config.get("quantization")
    if not block:
        return str(config.get("torch_dtype", "unquantized"))
    if not isinstance(block, dict) or "bits" not in block:
        return "unknown (config.json's quantization block has no bits)"
    widths = {entry.get("bits") for entry in block.values() if isinstance(entry, dict)} | {block["bits"]}
    return f"{'/'.join(sorted(map(str, widths)))}-bit, group {block.get('group_size', '?')}"


def _facts(path: Path) -> ModelFacts:
    config = read_model_config(path)
    tokenizer_config = path / "tokenizer_config.json"
    template = read_json_object(tokenizer_config).get("chat_template") if tokenizer_config.is_file() else None
    # Quantized weights hide the parameter count; the config gives it.
    return ModelFacts(
        format="mlx",
        architecture=config.get("model_type"),
        parameters=folder_config(config, str(path)).parameter_count,
        quantization=_quantization(config),
        chat_template=template if isinstance(template, str) else None,
        files={p.name: p.stat().st_size for p in sorted(path.iterdir()) if p.is_file()},
    )


def _auto() -> AutoChoice:
    if apple_silicon() and metal_available():
        return AutoChoice(True, "an MLX folder on Apple Silicon with Metal")
    return AutoChoice(
        False,
        "an MLX folder, and MLX has no GPU on this machine (its CPU backend is slow): "
        "pass --engine mlx to run it anyway, or run a GGUF of the model",
    )


def _rank_shape(path: Path, ranks: int) -> ModelShape:
    """One rank's part: attention and MLP weights and the KV cache ÷ ranks; mlx-lm keeps the
    embeddings and the output head whole on every rank."""
    config, shape = read_model_config(path), _shape(path)
    check_split(config, ranks, shape.name)
    qwen = folder_config(config, str(path))
    whole = qwen.vocab_size * qwen.hidden_size * (1 if qwen.tie_word_embeddings else 2)
    replicated = int(shape.weights_bytes * whole / qwen.parameter_count)
    per_rank = replicated + (shape.weights_bytes - replicated) // ranks
    return replace(shape, kv_heads=shape.kv_heads // ranks, weights_bytes=per_rank)


def _open(path: Path, options: EngineOptions) -> Engine:
    if options.distributed:
        from .distributed import open_distributed

        return open_distributed(path, options)
    settings = {"context_length": options.context_length, "kv_cache": options.kv_cache}
    if options.parallel > 1:
        from .pool import MlxPool

        return MlxPool(path, parallel=options.parallel, **settings)  # type: ignore[return-value]
    from .engine import MlxEngine

    return MlxEngine(path, **settings)


def _raw(engine: Engine) -> RawRunner:
    from .baseline import RawMlx

    return RawMlx(engine.info.model_path)


def _logits(path: Path, sequences: Sequence[Sequence[int]]) -> list[np.ndarray]:
    from .baseline import mlx_logits

    return mlx_logits(path, sequences)


SPEC = EngineSpec(
    name="mlx",
    format="mlx",
    describes="an MLX folder",
    claims=Path.is_dir,
    shape=_shape,
    facts=_facts,
    auto=_auto,
    open=_open,
    mismatch="MLX runs model folders; {path} is {kind}: convert it first with qwq-edge convert {path} --to mlx",
    # On Apple Silicon with Metal both engines run; MLX is the faster there.
    preference=1,
    libraries=("mlx", "mlx_lm"),
    install_hint="it is an optional extra; add it with pip install 'qwq-edge[mlx]'",
    batches=True,
    # mlx-lm's batch cache has no quantized form.
    batch_kv_cache="f16",
    raw=_raw,
    logits=_logits,
    shard=_rank_shape,
)
