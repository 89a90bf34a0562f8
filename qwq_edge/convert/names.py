"""Qwen tensor names: Hugging Face ⇄ GGUF (llama.cpp's ``qwen2``, ``qwen3`` and ``qwen3moe``).

A MoE layer's experts are stacked per projection (``convert/layout.py``): the stacked tensor's
name has no expert number, ``model.layers.N.mlp.experts.gate_proj.weight``.
"""

from __future__ import annotations

import re

GLOBAL = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
PER_LAYER = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "self_attn.q_norm": "attn_q_norm",  # Qwen3: RMSNorm over each query head
    "self_attn.k_norm": "attn_k_norm",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "mlp.gate": "ffn_gate_inp",  # Qwen3 MoE: the router
    "mlp.experts.gate_proj": "ffn_gate_exps",
    "mlp.experts.up_proj": "ffn_up_exps",
    "mlp.experts.down_proj": "ffn_down_exps",
}
#: The end of a MoE router's name (kept in F32 in a GGUF, 8-bit in MLX).
ROUTER = "mlp.gate.weight"
_HF_LAYER = re.compile(r"model\.layers\.(\d+)\.(.+)\.(weight|bias)")
_GGUF_LAYER = re.compile(r"blk\.(\d+)\.(.+)\.(weight|bias)")
_GGUF_TO_HF = {value: key for key, value in PER_LAYER.items()}


def to_gguf(name: str) -> str:
    if name in GLOBAL:
        return GLOBAL[name]
    match = _HF_LAYER.fullmatch(name)
    if match is None or match.group(2) not in PER_LAYER:
        raise KeyError(name)
    return f"blk.{match.group(1)}.{PER_LAYER[match.group(2)]}.{match.group(3)}"


def to_hf(name: str) -> str:
    for hf, gguf in GLOBAL.items():
        if gguf == name:
            return hf
    match = _GGUF_LAYER.fullmatch(name)
    if match is None or match.group(2) not in _GGUF_TO_HF:
        raise KeyError(name)
    return f"model.layers.{match.group(1)}.{_GGUF_TO_HF[match.group(2)]}.{match.group(3)}"
