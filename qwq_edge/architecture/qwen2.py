"""The Qwen2 architecture as numbers: its config and the tensors a checkpoint of it holds.

Shared by the converters, the numpy reference and ``info`` (which counts a model
folder's parameters from its config, since quantized weights hide the count).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import CheckpointError
from .config import REQUIRED, config_number

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
        _check_architecture(data, source)

        def number(key: str, default: Any = REQUIRED, kind: type = int) -> Any:
            return config_number(data, key, source, default=default, kind=kind, error=CheckpointError)

        heads = number("num_attention_heads")
        return cls(
            vocab_size=number("vocab_size"),
            hidden_size=number("hidden_size"),
            intermediate_size=number("intermediate_size"),
            num_hidden_layers=number("num_hidden_layers"),
            num_attention_heads=heads,
            num_key_value_heads=number("num_key_value_heads", heads),
            rms_norm_eps=number("rms_norm_eps", 1e-6, float),
            rope_theta=number("rope_theta", 10000.0, float),
            max_position_embeddings=number("max_position_embeddings", 32768),
            tie_word_embeddings=bool(data.get("tie_word_embeddings", False)),
            torch_dtype=str(data.get("torch_dtype") or data.get("dtype") or "bfloat16"),
            rope_scaling=data.get("rope_scaling") if isinstance(data.get("rope_scaling"), dict) else None,
            raw=data,
        )


def _check_architecture(data: dict[str, Any], source: str) -> None:
    """Accept a Qwen2 checkpoint, named by ``architectures`` or, without it, by ``model_type``."""
    supported = (
        f"supported: {', '.join(SUPPORTED_ARCHITECTURES)} (QwQ-32B, QwQ-32B-Preview, DeepSeek-R1-Distill-Qwen, Qwen2.5)"
    )
    architectures = data.get("architectures")
    if architectures is None:
        model_type = data.get("model_type")
        if model_type in SUPPORTED_ARCHITECTURES.values():
            return
        named = (
            f"model_type {json.dumps(model_type)}" if model_type is not None else "neither architectures nor model_type"
        )
        raise CheckpointError(f"{source}: config.json names {named}; {supported}")
    if not isinstance(architectures, list) or not architectures or not isinstance(architectures[0], str):
        raise CheckpointError(
            f'{source}: config.json\'s architectures must be a list of names, like ["Qwen2ForCausalLM"]'
        )
    if architectures[0] not in SUPPORTED_ARCHITECTURES:
        raise CheckpointError(f"{source}: architecture {architectures[0]} is not supported; {supported}")


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
