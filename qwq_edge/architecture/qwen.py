"""The Qwen architectures as numbers: their config and the tensors a checkpoint of each holds.

Three kinds share one layout (RMSNorm, rotary attention with grouped KV heads, SwiGLU):
``qwen2`` (QwQ, DeepSeek-R1-Distill-Qwen, Qwen2.5: a bias on the query, key and value
projections, head size = hidden ÷ heads), ``qwen3`` (Qwen3 dense: an explicit
``head_dim``, an RMSNorm over each head of the queries and keys, no bias) and
``qwen3_moe`` (Qwen3's mixture of experts: Qwen3's attention, a router and experts in
place of the MLP). Shared by the converters, the numpy reference and ``info`` (which
counts a model folder's parameters from its config, since quantized weights hide the count).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import CheckpointError
from .config import REQUIRED, config_number

#: Hugging Face architecture name → kind (``model_type``).
SUPPORTED_ARCHITECTURES = {
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
    "Qwen3MoeForCausalLM": "qwen3_moe",
}
_MODELS = "QwQ-32B, QwQ-32B-Preview, DeepSeek-R1-Distill-Qwen, Qwen2.5, Qwen3, DeepSeek-R1-0528-Qwen3"


@dataclass(frozen=True)
class Experts:
    """A mixture-of-experts MLP (Qwen3 MoE): a softmax router picks ``per_token`` of ``count``
    experts, each a SwiGLU of width ``intermediate_size``; ``normalize``: their weights are
    rescaled to sum to one."""

    count: int
    per_token: int
    intermediate_size: int
    normalize: bool
    #: Layers that keep a dense MLP instead (``mlp_only_layers``, and those ``decoder_sparse_step`` skips).
    dense_layers: frozenset[int] = frozenset()


@dataclass(frozen=True)
class QwenConfig:
    """The numbers of a Qwen model that converters and the reference need."""

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
    #: ``qwen2``, ``qwen3`` or ``qwen3_moe``.
    model_type: str = "qwen2"
    #: Size of one attention head: explicit in Qwen3 (e.g. 128 with 16 heads of a 1024-wide model).
    head_dim: int = 0
    experts: Experts | None = None

    def __post_init__(self) -> None:
        if not self.head_dim:
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_attention_heads)

    @property
    def attention_bias(self) -> bool:
        """Qwen2 adds a bias to the query, key and value projections; Qwen3 does not."""
        return self.model_type == "qwen2"

    @property
    def qk_norm(self) -> bool:
        """Qwen3 normalizes each query and key head (RMSNorm over ``head_dim``) before the rotary embedding."""
        return self.model_type != "qwen2"

    @property
    def parameter_count(self) -> int:
        return sum(int(np.prod(shape)) for shape in tensor_shapes(self).values())

    def sparse(self, layer: int) -> bool:
        """Whether ``layer``'s MLP is a mixture of experts."""
        return self.experts is not None and layer not in self.experts.dense_layers

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str) -> QwenConfig:
        kind = _check_architecture(data, source)

        def number(key: str, default: Any = REQUIRED, kind: type = int) -> Any:
            return config_number(data, key, source, default=default, kind=kind, error=CheckpointError)

        heads = number("num_attention_heads")
        # transformers 5 writes rope_theta and the rope scaling inside rope_parameters
        rope = data.get("rope_parameters") if isinstance(data.get("rope_parameters"), dict) else {}
        scaling = data.get("rope_scaling") if isinstance(data.get("rope_scaling"), dict) else None
        if scaling is None and rope.get("rope_type", "default") != "default":
            scaling = rope
        theta = number("rope_theta", None, float) or config_number(
            rope, "rope_theta", source, default=10000.0, kind=float, error=CheckpointError
        )
        return cls(
            vocab_size=number("vocab_size"),
            hidden_size=number("hidden_size"),
            intermediate_size=number("intermediate_size"),
            num_hidden_layers=number("num_hidden_layers"),
            num_attention_heads=heads,
            num_key_value_heads=number("num_key_value_heads", heads),
            rms_norm_eps=number("rms_norm_eps", 1e-6, float),
            rope_theta=theta,
            max_position_embeddings=number("max_position_embeddings", 32768),
            tie_word_embeddings=bool(data.get("tie_word_embeddings", False)),
            torch_dtype=str(data.get("torch_dtype") or data.get("dtype") or "bfloat16"),
            rope_scaling=scaling,
            raw=data,
            model_type=kind,
            head_dim=number("head_dim", 0) if kind != "qwen2" else 0,
            experts=_experts(data, source, number) if kind == "qwen3_moe" else None,
        )


def _experts(data: dict[str, Any], source: str, number: Any) -> Experts:
    """Qwen3 MoE's experts; transformers 5 names their count ``num_local_experts``."""
    count = number("num_experts", None) or number("num_local_experts")
    step = number("decoder_sparse_step", 1)
    layers = number("num_hidden_layers")
    only_dense = data.get("mlp_only_layers") or []
    if not isinstance(only_dense, list) or not all(isinstance(i, int) for i in only_dense):
        raise CheckpointError(f"{source}: config.json's mlp_only_layers must be a list of layer numbers")
    dense = {i for i in range(layers) if i in only_dense or (i + 1) % step}
    return Experts(
        count=count,
        per_token=number("num_experts_per_tok"),
        intermediate_size=number("moe_intermediate_size"),
        normalize=bool(data.get("norm_topk_prob", False)),
        dense_layers=frozenset(dense),
    )


def _check_architecture(data: dict[str, Any], source: str) -> str:
    """The kind of a supported checkpoint, named by ``architectures`` or, without it, by ``model_type``."""
    supported = f"supported: {', '.join(SUPPORTED_ARCHITECTURES)} ({_MODELS})"
    architectures = data.get("architectures")
    if architectures is None:
        model_type = data.get("model_type")
        if model_type in SUPPORTED_ARCHITECTURES.values():
            return str(model_type)
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
    kind = SUPPORTED_ARCHITECTURES[architectures[0]]
    if kind != "qwen2" and data.get("attention_bias"):
        raise CheckpointError(f"{source}: attention_bias is not supported for {kind} (llama.cpp and mlx-lm have none)")
    return kind


def _attention_names(config: QwenConfig, prefix: str) -> list[str]:
    names = []
    for proj in ("q_proj", "k_proj", "v_proj"):
        names.append(f"{prefix}self_attn.{proj}.weight")
        if config.attention_bias:
            names.append(f"{prefix}self_attn.{proj}.bias")
    names.append(prefix + "self_attn.o_proj.weight")
    if config.qk_norm:
        names += [prefix + "self_attn.q_norm.weight", prefix + "self_attn.k_norm.weight"]
    return names


def _mlp_names(config: QwenConfig, layer: int, prefix: str) -> list[str]:
    projections = ("gate_proj", "up_proj", "down_proj")
    if not config.sparse(layer):
        return [f"{prefix}mlp.{proj}.weight" for proj in projections]
    assert config.experts is not None
    experts = range(config.experts.count)
    return [prefix + "mlp.gate.weight"] + [f"{prefix}mlp.experts.{e}.{p}.weight" for e in experts for p in projections]


def tensor_names(config: QwenConfig) -> list[str]:
    """Every tensor a checkpoint of this config holds, in file order."""
    names = ["model.embed_tokens.weight"]
    for i in range(config.num_hidden_layers):
        prefix = f"model.layers.{i}."
        names += [prefix + "input_layernorm.weight", *_attention_names(config, prefix)]
        names += [prefix + "post_attention_layernorm.weight", *_mlp_names(config, i, prefix)]
    names.append("model.norm.weight")
    if not config.tie_word_embeddings:
        names.append("lm_head.weight")
    return names


def _layer_shape(config: QwenConfig, name: str) -> tuple[int, ...]:
    """The shape of a per-layer tensor, by its name after ``model.layers.N.``."""
    hidden, head = config.hidden_size, config.head_dim
    queries, kv = config.num_attention_heads * head, config.num_key_value_heads * head
    shapes = {
        "input_layernorm.weight": (hidden,),
        "self_attn.q_proj.weight": (queries, hidden),
        "self_attn.q_proj.bias": (queries,),
        "self_attn.k_proj.weight": (kv, hidden),
        "self_attn.k_proj.bias": (kv,),
        "self_attn.v_proj.weight": (kv, hidden),
        "self_attn.v_proj.bias": (kv,),
        "self_attn.o_proj.weight": (hidden, queries),
        "self_attn.q_norm.weight": (head,),
        "self_attn.k_norm.weight": (head,),
        "post_attention_layernorm.weight": (hidden,),
    }
    if name in shapes:
        return shapes[name]
    if name == "mlp.gate.weight":
        assert config.experts is not None
        return (config.experts.count, hidden)
    width = config.experts.intermediate_size if name.startswith("mlp.experts.") and config.experts else 0
    width = width or config.intermediate_size
    return (hidden, width) if name.endswith("down_proj.weight") else (width, hidden)


def tensor_shapes(config: QwenConfig) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor a checkpoint of this config holds, in file order."""
    whole_model = {
        "model.embed_tokens.weight": (config.vocab_size, config.hidden_size),
        "model.norm.weight": (config.hidden_size,),
        "lm_head.weight": (config.vocab_size, config.hidden_size),
    }
    return {name: whole_model.get(name) or _layer_shape(config, name.split(".", 3)[3]) for name in tensor_names(config)}


def folder_config(config: dict[str, Any], source: str) -> QwenConfig:
    """A model folder's ``config.json`` as a Qwen config; one that names neither an architecture
    nor a Qwen ``model_type`` is read as Qwen2 (MLX folders sometimes leave both out)."""
    if not config.get("architectures") and config.get("model_type") not in SUPPORTED_ARCHITECTURES.values():
        config = {**config, "architectures": ["Qwen2ForCausalLM"]}
    return QwenConfig.from_dict(config, source)
