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
    #: The input token-embedding table's bytes when it is not also the output layer: decoding
    #: reads one row of it per token, not the table (0: tied, or unknown).
    embedding_bytes: int = 0
    #: The weights each prompt token is multiplied by: all but the embedding and output
    #: tables (0: unknown). Prompt processing is bound by this compute.
    matmul_parameters: int = 0

    def kv_bytes_per_token(self, kv_cache: str = "f16") -> float:
        return self.layers * self.kv_heads * self.head_dim * 2 * KV_ELEMENT_BYTES[kv_cache]

    @property
    def decode_bytes(self) -> int:
        """Weights read to decode one token: all of them but an untied embedding table."""
        return self.weights_bytes - self.embedding_bytes


def embedding_split(weights_bytes: int, parameters: int, vocab: int, hidden: int, tied: bool) -> dict[str, int]:
    """``embedding_bytes`` and ``matmul_parameters`` from a model's sizes: the vocabulary × hidden
    tables (one if tied, two if not) are left out of the compute, and an untied input table
    out of the bytes decoding reads (its share of ``weights_bytes`` taken at the average bits
    per weight)."""
    table = vocab * hidden
    untied = 0 if tied else table
    embedding_bytes = int(weights_bytes * untied / parameters) if parameters else 0
    return {"embedding_bytes": embedding_bytes, "matmul_parameters": max(0, parameters - table - untied)}


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
