"""Random-weight Qwen checkpoints (Qwen2, Qwen3, Qwen3 MoE) with a real byte-level BPE tokenizer.

Tests, benchmarks and ``doctor`` need Qwen checkpoints they can make offline:
the weights are random (seeded), the tokenizer is a small BPE trained here with
Qwen2's own pre-tokenizer (split regex + byte level), ChatML special tokens and
``<think>``/``</think>`` as added tokens, exactly the layout of QwQ's tokenizer (a Qwen3
checkpoint gets Qwen3's added tokens and its own chat template, shipped in ``qwq_edge/data``).
Weights are written tensor by tensor, so a 1.5B checkpoint needs little memory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import numpy as np
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from ..architecture.qwen import SUPPORTED_ARCHITECTURES, QwenConfig, tensor_shapes
from ..text.template import CHATML_TEMPLATE
from .safetensors_io import PlannedTensor, SafetensorsWriter

#: Qwen2's pre-tokenizer split pattern (from its tokenizer.json).
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
ADDED_TOKENS = ("<think>", "</think>")
THINK_TEMPLATE = CHATML_TEMPLATE.replace("'<|im_start|>assistant\\n'", "'<|im_start|>assistant\\n<think>\\n'")
#: The tokens Qwen3's tokenizer adds after Qwen2.5's (ids 151665 to 151668 in Qwen's vocabulary), not special.
QWEN3_ADDED_TOKENS = ("<tool_response>", "</tool_response>", "<think>", "</think>")

_CORPUS = [
    "The quick brown fox jumps over the lazy dog. Reasoning models think before they answer.",
    "Let me think step by step: 12 + 30 = 42, so the answer is 42.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))\n",
    "for i in range(10):\n    if i % 2 == 0:\n        continue\n",
    "我们来一步一步地思考这个问题。答案是四十二。",
    "量子计算和机器学习正在改变世界。",
    "**Final Answer**\n\n\\boxed{42}",
    "Wait, let me check that again. Hmm, actually the result is correct.",
]


@dataclass(frozen=True)
class SyntheticSpec:
    """Sizes of a synthetic Qwen2 model."""

    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    vocab_size: int = 1024
    tokenizer_vocab: int = 900
    tie_word_embeddings: bool = False
    torch_dtype: str = "bfloat16"
    #: ``qwen2``, ``qwen3`` or ``qwen3_moe``.
    architecture: str = "qwen2"
    #: Qwen3's explicit head size (``None``: hidden ÷ heads).
    head_dim: int | None = None
    #: Qwen3 MoE: experts, how many each token uses, and their width.
    experts: int = 4
    experts_per_token: int = 2
    expert_intermediate_size: int = 64


TINY = SyntheticSpec()
#: Checkpoints of growing size for the conversion memory benchmark (Qwen2.5-like shapes).
SIZES = {
    "0.1B": SyntheticSpec(512, 2048, 8, 8, 2, 151_936, 4096),
    "0.5B": SyntheticSpec(896, 4864, 24, 14, 2, 151_936, 4096),
    "1.5B": SyntheticSpec(1536, 8960, 28, 12, 2, 151_936, 4096),
}


def train_tokenizer(vocab: int) -> Tokenizer:
    """A byte-level BPE with Qwen2's pre-tokenizer, trained on a small mixed corpus."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tokenizer.train_from_iterator(_CORPUS * 20, trainer)
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in ADDED_TOKENS])
    return tokenizer


def qwen3_chat_template() -> str:
    """Qwen3's own chat template (from Qwen/Qwen3-0.6B's tokenizer_config.json): thinking
    switched by ``enable_thinking``."""
    return files("qwq_edge").joinpath("data", "qwen3-chat-template.jinja").read_text(encoding="utf-8").rstrip("\n")


_ARCHITECTURES = {kind: name for name, kind in SUPPORTED_ARCHITECTURES.items()}


def _qwen3_config(spec: SyntheticSpec) -> dict:
    """What a Qwen3 config.json adds to Qwen2's keys (and, for MoE, its experts)."""
    config = {"head_dim": spec.head_dim or spec.hidden_size // spec.num_attention_heads, "attention_bias": False}
    if spec.architecture == "qwen3_moe":
        config |= {
            "num_experts": spec.experts,
            "num_experts_per_tok": spec.experts_per_token,
            "moe_intermediate_size": spec.expert_intermediate_size,
            "norm_topk_prob": True,
            "decoder_sparse_step": 1,
            "mlp_only_layers": [],
        }
    return config


def _config(spec: SyntheticSpec, tokenizer: Tokenizer) -> dict:
    eos = tokenizer.token_to_id("<|im_end|>")
    return {
        "architectures": [_ARCHITECTURES[spec.architecture]],
        "model_type": spec.architecture,
        "vocab_size": spec.vocab_size,
        "hidden_size": spec.hidden_size,
        "intermediate_size": spec.intermediate_size,
        "num_hidden_layers": spec.num_hidden_layers,
        "num_attention_heads": spec.num_attention_heads,
        "num_key_value_heads": spec.num_key_value_heads,
        "hidden_act": "silu",
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "tie_word_embeddings": spec.tie_word_embeddings,
        "torch_dtype": spec.torch_dtype,
        "bos_token_id": tokenizer.token_to_id("<|endoftext|>"),
        "eos_token_id": eos,
        "use_sliding_window": False,
        **(_qwen3_config(spec) if spec.architecture != "qwen2" else {}),
    }


def _random_tensor(rng: np.random.Generator, name: str, shape: tuple[int, ...]) -> np.ndarray:
    if name.endswith("norm.weight"):
        return (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
    if name.endswith(".bias"):
        return (0.1 * rng.standard_normal(shape)).astype(np.float32)
    scale = 1.0 if "embed_tokens" in name else 1.0 / np.sqrt(shape[-1])
    if name == "lm_head.weight":
        scale *= 4.0  # peaked next-token distributions: clear argmaxes to compare
    return (scale * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)


def make_checkpoint(
    folder: str | Path, spec: SyntheticSpec = TINY, *, seed: int = 0, tokenizer_json: Path | None = None
) -> Path:
    """Write a random Qwen checkpoint (config, tokenizer, one safetensors file) into ``folder``.

    ``tokenizer_json`` uses an existing tokenizer (e.g. Qwen's own, whose vocabulary
    fills ``spec.vocab_size``) instead of training a small one.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer.from_file(str(tokenizer_json)) if tokenizer_json else train_tokenizer(spec.tokenizer_vocab)
    qwen3 = spec.architecture != "qwen2"
    if qwen3:
        missing = [token for token in QWEN3_ADDED_TOKENS if tokenizer.token_to_id(token) is None]
        tokenizer.add_tokens([AddedToken(token, special=False, normalized=False) for token in missing])
    tokenizer.save(str(folder / "tokenizer.json"))
    config = _config(spec, tokenizer)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    tokenizer_config = {
        "chat_template": qwen3_chat_template() if qwen3 else THINK_TEMPLATE,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "bos_token": None,
        "add_bos_token": False,
        "model_max_length": 4096,
        "tokenizer_class": "Qwen2Tokenizer",
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": config["eos_token_id"]}))
    shapes = tensor_shapes(QwenConfig.from_dict(config, "synthetic"))
    dtype = {"bfloat16": "BF16", "float16": "F16", "float32": "F32"}[spec.torch_dtype]
    plan = [PlannedTensor(name, "F32" if len(shape) == 1 else dtype, shape) for name, shape in shapes.items()]
    writer = SafetensorsWriter(folder / "model.safetensors", plan)
    rng = np.random.default_rng(seed)
    for tensor in plan:
        writer.write(tensor.name, _random_tensor(rng, tensor.name, tensor.shape))
    writer.close()
    return folder
