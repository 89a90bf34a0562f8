"""A model's shape: what the memory planner needs to know, read from its files alone."""

from __future__ import annotations

from dataclasses import dataclass

#: Bytes per KV-cache element: fp16, and 8-bit (q8_0: 32 values in 34 bytes; MLX's
#: 8-bit cache with fp16 scale and bias per 64 values: the same 8.5 bits).
KV_ELEMENT_BYTES = {"f16": 2.0, "q8_0": 34 / 32}


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


def shape_from_config(name: str, config: dict, weights_bytes: int) -> ModelShape:
    """A model's shape from a Hugging Face / MLX ``config.json``."""
    heads = int(config["num_attention_heads"])
    return ModelShape(
        name=name,
        layers=int(config["num_hidden_layers"]),
        kv_heads=int(config.get("num_key_value_heads") or heads),
        head_dim=int(config.get("head_dim") or int(config["hidden_size"]) // heads),
        weights_bytes=weights_bytes,
        trained_context=int(config.get("max_position_embeddings") or 4096),
    )
