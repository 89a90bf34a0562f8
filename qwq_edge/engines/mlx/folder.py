"""Checks on an MLX model folder, made without MLX: its weights, its quantization, its split over ranks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...architecture.config import read_json_object, read_model_config
from ...architecture.safetensors_header import read_header
from ...errors import DistributedError, ModelFormatError


def check_mlx_folder(path: Path) -> dict[str, Any]:
    """Check an MLX model folder before mlx-lm reads it; return its config."""
    config = read_model_config(path)
    index = path / "model.safetensors.index.json"
    if index.is_file():
        weight_map = read_json_object(index).get("weight_map")
        shards = {str(s) for s in weight_map.values()} if isinstance(weight_map, dict) else set()
        missing = sorted(s for s in shards if not (path / s).is_file())
        if missing:
            raise ModelFormatError(f"{path} is missing {len(missing)} weight shard(s), e.g. {missing[0]}")
    elif not any(path.glob("*.safetensors")):
        raise ModelFormatError(f"{path} has no .safetensors weights")
    quantized = any(name.endswith(".scales") for shard in path.glob("*.safetensors") for name in read_header(shard)[0])
    if quantized and "quantization" not in config:
        raise ModelFormatError(
            f"{path}: the weights are quantized but config.json has no quantization block (bits, group_size)"
        )
    return config


def check_split(config: dict[str, Any], ranks: int, name: str) -> None:
    """mlx-lm's tensor parallelism gives each rank whole attention heads: refuse a split that cannot."""
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads", heads))
    if heads % ranks or kv_heads % ranks:
        fitting = [n for n in range(2, kv_heads + 1) if kv_heads % n == 0 and heads % n == 0]
        raise DistributedError(
            f"{name} cannot be split over {ranks} ranks: each rank needs whole attention heads, and "
            f"{ranks} does not divide its {heads} attention heads and {kv_heads} KV heads "
            f"(it splits over {', '.join(map(str, fitting)) or 'no number of'} ranks)"
        )
