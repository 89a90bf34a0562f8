"""The Qwen2 architecture as numbers: its config and the tensors a checkpoint of it holds.

Shared by the converters, the numpy reference and ``info`` (which counts a model
folder's parameters from its config, since quantized weights hide the count).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import CheckpointError

SUPPORTED_ARCHITECTURES = {"Qwen2ForCausalLM": "qwen2"}


@dataclass(frozen=True)
class Qwen2Config:
    """The numbers of a Qwen2 model that converters and the reference need."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    rms_norm_eps: float
    rope_theta: float
    max_position_embeddings: int
    tie_word_embeddings: bool
    torch_dtype: str
    rope_scaling: dict[str, Any] | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def parameter_count(self) -> int:
        return sum(int(np.prod(shape)) for shape in tensor_shapes(self).values())

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str) -> Qwen2Config:
        architectures = data.get("architectures") or [data.get("model_type", "unknown")]
        if architectures[0] not in SUPPORTED_ARCHITECTURES:
            supported = ", ".join(SUPPORTED_ARCHITECTURES)
            raise CheckpointError(
                f"{source}: architecture {architectures[0]} is not supported; supported: {supported} "
                "(QwQ-32B, QwQ-32B-Preview, DeepSeek-R1-Distill-Qwen, Qwen2.5)"
            )
        try:
            return cls(
                vocab_size=int(data["vocab_size"]),
                hidden_size=int(data["hidden_size"]),
                intermediate_size=int(data["intermediate_size"]),
                num_hidden_layers=int(data["num_hidden_layers"]),
                num_attention_heads=int(data["num_attention_heads"]),
                num_key_value_heads=int(data.get("num_key_value_heads", data["num_attention_heads"])),
                rms_norm_eps=float(data.get("rms_norm_eps", 1e-6)),
                rope_theta=float(data.get("rope_theta", 10000.0)),
                max_position_embeddings=int(data.get("max_position_embeddings", 32768)),
                tie_word_embeddings=bool(data.get("tie_word_embeddings", False)),
                torch_dtype=str(data.get("torch_dtype") or data.get("dtype") or "bfloat16"),
                rope_scaling=data.get("rope_scaling"),
                raw=data,
            )
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(f"{source}: config.json lacks a usable {error}") from None


def tensor_names(config: Qwen2Config) -> list[str]:
    """Every tensor a Qwen2 checkpoint holds, in file order."""
    names = ["model.embed_tokens.weight"]
    for i in range(config.num_hidden_layers):
        prefix = f"model.layers.{i}."
        names += [prefix + "input_layernorm.weight"]
        for proj in ("q_proj", "k_proj", "v_proj"):
            names += [f"{prefix}self_attn.{proj}.weight", f"{prefix}self_attn.{proj}.bias"]
        names += [prefix + "self_attn.o_proj.weight", prefix + "post_attention_layernorm.weight"]
        names += [f"{prefix}mlp.{proj}.weight" for proj in ("gate_proj", "up_proj", "down_proj")]
    names.append("model.norm.weight")
    if not config.tie_word_embeddings:
        names.append("lm_head.weight")
    return names


def tensor_shapes(config: Qwen2Config) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor a Qwen2 checkpoint holds, in file order."""
    hidden, kv = config.hidden_size, config.num_key_value_heads * config.head_dim
    per_layer = {
        "input_layernorm.weight": (hidden,),
        "self_attn.q_proj.weight": (hidden, hidden),
        "self_attn.q_proj.bias": (hidden,),
        "self_attn.k_proj.weight": (kv, hidden),
        "self_attn.k_proj.bias": (kv,),
        "self_attn.v_proj.weight": (kv, hidden),
        "self_attn.v_proj.bias": (kv,),
        "self_attn.o_proj.weight": (hidden, hidden),
        "post_attention_layernorm.weight": (hidden,),
        "mlp.gate_proj.weight": (config.intermediate_size, hidden),
        "mlp.up_proj.weight": (config.intermediate_size, hidden),
        "mlp.down_proj.weight": (hidden, config.intermediate_size),
    }
    whole_model = {
        "model.embed_tokens.weight": (config.vocab_size, hidden),
        "model.norm.weight": (hidden,),
        "lm_head.weight": (config.vocab_size, hidden),
    }
    return {name: whole_model.get(name) or per_layer[name.split(".", 3)[3]] for name in tensor_names(config)}
