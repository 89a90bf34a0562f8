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
    #: Those weights by GGUF type (``("Q5_0", 251_920_384), ...``; empty: not known), for
    #: the types llama.cpp's CPU code multiplies a prompt by more slowly than K-quants.
    matmul_types: tuple[tuple[str, int], ...] = ()
    #: The rows that decoding a token computes: every weight matrix's outputs, the output
    #: layer's vocabulary included (0: unknown). On a CPU each row costs time of its own
    #: (its sum, its scales), which is why small models decode below their bandwidth.
    output_rows: int = 0

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


def layer_rows(hidden: int, query_width: int, kv_width: int, ffn_width: int) -> int:
    """The rows one transformer layer computes for a token: query, key, value and attention
    output, then gate, up and down (``ffn_width``: the feed-forward width a token runs through)."""
    return query_width + 2 * kv_width + hidden + 2 * ffn_width + hidden


def estimated_output_rows(layers: int, kv_width: int, hidden: int, matmul_parameters: int, vocab: int) -> int:
    """``output_rows`` from sizes alone (a catalog entry): the feed-forward width is what is
    left of a layer's weights after attention (taken as ``hidden`` wide), over three matrices."""
    if not (layers and hidden and matmul_parameters and vocab):
        return 0
    attention = 2 * hidden * (hidden + kv_width)
    ffn_width = max(0, (matmul_parameters // layers - attention) // (3 * hidden))
    return layers * layer_rows(hidden, hidden, kv_width, ffn_width) + vocab


def _config_rows(config: dict, heads: int, head_dim: int, kv_heads: int) -> int:
    """``output_rows`` from a config: a mixture of experts runs its experts per token (and a shared one)."""
    hidden, vocab = int(config.get("hidden_size") or 0), int(config.get("vocab_size") or 0)
    ffn_width = int(config.get("intermediate_size") or 0)
    if config.get("num_experts_per_tok") and config.get("moe_intermediate_size"):
        experts = int(config["num_experts_per_tok"]) * int(config["moe_intermediate_size"])
        ffn_width = experts + int(config.get("shared_expert_intermediate_size") or 0)
    if not (hidden and vocab and ffn_width):
        return 0
    rows = layer_rows(hidden, heads * head_dim, kv_heads * head_dim, ffn_width)
    return int(config["num_hidden_layers"]) * rows + vocab


def shape_from_config(name: str, config: dict, weights_bytes: int) -> ModelShape:
    """A model's shape from a Hugging Face / MLX ``config.json``."""
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or int(config["hidden_size"]) // heads)
    return ModelShape(
        name=name,
        layers=int(config["num_hidden_layers"]),
        kv_heads=kv_heads,
        head_dim=head_dim,
        weights_bytes=weights_bytes,
        trained_context=int(config.get("max_position_embeddings") or 4096),
        output_rows=_config_rows(config, heads, head_dim, kv_heads),
    )
