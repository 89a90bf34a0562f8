"""A plain numpy Qwen forward pass: the reference converted models are checked against.

RMSNorm, rotary position embeddings (NeoX layout, as Qwen uses), grouped-query
attention (Qwen2: with a QKV bias; Qwen3: an RMSNorm on each query and key head, an
explicit head size), SwiGLU MLP (Qwen3 MoE: a softmax router over SwiGLU experts),
untied or tied output head. It runs layer by layer over all sequences and converts
one layer's weights to float32 at a time, so its memory is one layer plus
activations, never the whole model. For small models it is exact to float32
tolerance; it knows nothing about any engine.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..architecture.qwen import QwenConfig
from .checkpoint import Checkpoint
from .safetensors_io import bf16_to_float32


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    variance = np.mean(x * x, axis=-1, keepdims=True)
    return x / np.sqrt(variance + eps) * weight


def rope_tables(config: QwenConfig, length: int) -> tuple[np.ndarray, np.ndarray]:
    dim = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    angles = np.outer(np.arange(length, dtype=np.float64), inv_freq)
    angles = np.concatenate([angles, angles], axis=-1)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """``x``: (heads, length, head_dim)."""
    half = x.shape[-1] // 2
    rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    shifted = x - np.max(x, axis=axis, keepdims=True)
    exp = np.exp(shifted)
    return exp / np.sum(exp, axis=axis, keepdims=True)


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


class QwenReference:
    """Next-token logits of a Hugging Face Qwen checkpoint, in numpy."""

    def __init__(self, checkpoint: Checkpoint) -> None:
        self.checkpoint = checkpoint
        self.config = checkpoint.config

    def _w(self, name: str) -> np.ndarray:
        return self.checkpoint.float32(name)

    def _attention(self, x: np.ndarray, prefix: str, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
        c = self.config
        length, dim = x.shape[0], c.head_dim

        def project(name: str, heads: int, norm: str = "") -> np.ndarray:
            out = x @ self._w(f"{prefix}self_attn.{name}.weight").T
            if c.attention_bias:
                out = out + self._w(f"{prefix}self_attn.{name}.bias")
            out = out.reshape(length, heads, dim)
            if norm and c.qk_norm:  # per head, before the rotary embedding
                out = rms_norm(out, self._w(f"{prefix}self_attn.{norm}.weight"), c.rms_norm_eps)
            return out.transpose(1, 0, 2)

        q = apply_rope(project("q_proj", c.num_attention_heads, "q_norm"), cos, sin)
        k = apply_rope(project("k_proj", c.num_key_value_heads, "k_norm"), cos, sin)
        v = project("v_proj", c.num_key_value_heads)
        group = c.num_attention_heads // c.num_key_value_heads
        k, v = np.repeat(k, group, axis=0), np.repeat(v, group, axis=0)
        scores = q @ k.transpose(0, 2, 1) / np.sqrt(dim)
        scores = scores + np.triu(np.full((length, length), -np.inf, dtype=np.float32), k=1)
        attended = (softmax(scores) @ v).transpose(1, 0, 2).reshape(length, -1)
        return attended @ self._w(f"{prefix}self_attn.o_proj.weight").T

    def _mlp(self, x: np.ndarray, prefix: str) -> np.ndarray:
        gate = x @ self._w(f"{prefix}gate_proj.weight").T
        up = x @ self._w(f"{prefix}up_proj.weight").T
        return (silu(gate) * up) @ self._w(f"{prefix}down_proj.weight").T

    def _experts(self, x: np.ndarray, prefix: str) -> np.ndarray:
        """Qwen3 MoE: each token's top experts by the router's softmax, weighted."""
        experts = self.config.experts
        assert experts is not None
        probabilities = softmax(x @ self._w(f"{prefix}mlp.gate.weight").T)
        chosen = np.argsort(-probabilities, axis=-1, kind="stable")[:, : experts.per_token]
        weights = np.take_along_axis(probabilities, chosen, axis=-1)
        if experts.normalize:
            weights = weights / weights.sum(axis=-1, keepdims=True)
        out = np.zeros_like(x)
        for expert in np.unique(chosen):
            rows, slot = np.nonzero(chosen == expert)
            out[rows] += weights[rows, slot, None] * self._mlp(x[rows], f"{prefix}mlp.experts.{expert}.")
        return out

    def _ffn(self, x: np.ndarray, layer: int, prefix: str) -> np.ndarray:
        return self._experts(x, prefix) if self.config.sparse(layer) else self._mlp(x, prefix + "mlp.")

    def logits(self, sequences: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """Logits (length × vocab) after every token of each sequence."""
        c = self.config
        embed = self.checkpoint.raw("model.embed_tokens.weight")
        states = [self._embed(embed, seq) for seq in sequences]
        tables = [rope_tables(c, len(seq)) for seq in sequences]
        for layer in range(c.num_hidden_layers):
            prefix = f"model.layers.{layer}."
            attn_norm = self._w(prefix + "input_layernorm.weight")
            ffn_norm = self._w(prefix + "post_attention_layernorm.weight")
            for i, (cos, sin) in enumerate(tables):
                h = states[i] + self._attention(rms_norm(states[i], attn_norm, c.rms_norm_eps), prefix, cos, sin)
                states[i] = h + self._ffn(rms_norm(h, ffn_norm, c.rms_norm_eps), layer, prefix)
        norm = self._w("model.norm.weight")
        head = self._w("model.embed_tokens.weight" if c.tie_word_embeddings else "lm_head.weight")
        return [rms_norm(h, norm, c.rms_norm_eps) @ head.T for h in states]

    def _embed(self, embed: np.ndarray, tokens: Sequence[int]) -> np.ndarray:
        rows = np.asarray(embed[np.asarray(tokens)])
        if self.checkpoint.dtype("model.embed_tokens.weight") == "BF16":
            return bf16_to_float32(rows)
        return rows.astype(np.float32)
