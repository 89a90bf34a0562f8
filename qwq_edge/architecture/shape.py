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
    #: Those weights by GGUF type (``(("Q4_K", 52_297_728), ("Q5_0", 251_854_848), ...)``; empty:
    #: not known), for the types llama.cpp's CPU code multiplies a prompt by more slowly than K-quants.
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


def attention_rows(hidden: int, query_width: int, kv_width: int) -> int:
    """The rows a layer's attention computes for a token: query, key, value, and its output."""
    return query_width + 2 * kv_width + hidden


def feed_forward_rows(hidden: int, width: int) -> int:
    """The rows a feed-forward block ``width`` wide computes for a token: gate, up, and down."""
    return 2 * width + hidden


def estimated_output_rows(layers: int, kv_width: int, hidden: int, matmul_parameters: int, vocab: int) -> int:
    """``output_rows`` of a dense model from sizes alone (a catalog entry): the feed-forward width
    is what is left of a layer's weights after attention (taken as ``hidden`` wide), over three
    matrices. 0 when a size is missing; not for a mixture of experts (its parameters are not
    what a token runs through)."""
    if not (layers and hidden and matmul_parameters and vocab):
        return 0
    attention = 2 * hidden * (hidden + kv_width)
    width = max(0, (matmul_parameters // layers - attention) // (3 * hidden))
    return layers * (attention_rows(hidden, hidden, kv_width) + feed_forward_rows(hidden, width)) + vocab


def _config_feed_forward_rows(config: dict, hidden: int) -> int:
    """A layer's feed-forward rows from a config: a mixture of experts runs its router, the experts
    a token is routed to, and any shared expert (a first few dense layers, as DeepSeek's, are not
    told apart)."""
    width = int(config.get("moe_intermediate_size") or config.get("intermediate_size") or 0)
    routed = int(config.get("num_experts_per_tok") or 0)
    if not routed:
        return feed_forward_rows(hidden, width) if width else 0
    router = int(config.get("num_experts") or config.get("num_local_experts") or config.get("n_routed_experts") or 0)
    shared = int(config.get("shared_expert_intermediate_size") or 0)
    shared = shared or int(config.get("n_shared_experts") or 0) * width
    return router + routed * feed_forward_rows(hidden, width) + (feed_forward_rows(hidden, shared) if shared else 0)


def _config_rows(config: dict, heads: int, head_dim: int, kv_heads: int) -> int:
    """``output_rows`` from a config (0 when its sizes are missing)."""
    hidden, vocab = int(config.get("hidden_size") or 0), int(config.get("vocab_size") or 0)
    feed_forward = _config_feed_forward_rows(config, hidden)
    if not (hidden and vocab and feed_forward):
        return 0
    attention = attention_rows(hidden, heads * head_dim, kv_heads * head_dim)
    return int(config["num_hidden_layers"]) * (attention + feed_forward) + vocab


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
