"""Check a converted model against its source: the same tokens in, compare the next-token distributions.

Fixed texts (English, Chinese, code, ChatML) are tokenized with the Hugging Face
side's ``tokenizer.json``; each model gives logits after every token; the report
holds the top-1 agreement and the mean KL divergence (reference ‖ converted).
Logits come from the numpy reference for a Hugging Face checkpoint, and from
the engine that runs the model otherwise (llama.cpp for a GGUF file, mlx-lm for
an MLX folder: each engine's spec says how).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from ..engines.registry import spec_for_path
from ..errors import ConversionError
from ..safetensors_header import saved_format
from .checkpoint import Checkpoint
from .reference import Qwen2Reference

TEXTS = (
    "<|im_start|>user\nHow many r are in the word strawberry? Think step by step.<|im_end|>\n<|im_start|>assistant\n",
    "量子计算机利用叠加和纠缠来处理信息，我们来一步一步地思考。",
    "def fibonacci(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n",
)
MAX_TOKENS = 48


@dataclass(frozen=True)
class VerifyReport:
    converted: str
    reference: str
    positions: int
    top1_agreement: float
    mean_kl: float
    max_kl: float

    def to_dict(self) -> dict:
        return asdict(self)


def _is_checkpoint(path: Path) -> bool:
    """A Hugging Face checkpoint folder (its weights not saved by mlx): the numpy reference runs it."""
    if not path.is_dir():
        return False
    shard = next(iter(sorted(path.glob("*.safetensors"))), None)
    return shard is None or saved_format(shard) != "mlx"


def token_sequences(tokenizer_json: Path, vocab_limit: int) -> list[list[int]]:
    tokenizer = Tokenizer.from_file(str(tokenizer_json))
    sequences = []
    for text in TEXTS:
        ids = [i for i in tokenizer.encode(text).ids if i < vocab_limit][:MAX_TOKENS]
        if len(ids) >= 2:
            sequences.append(ids)
    return sequences


def logits_for(path: Path, sequences: Sequence[Sequence[int]]) -> list[np.ndarray]:
    """The numpy reference's logits for a checkpoint; else those of the engine that runs ``path``."""
    if _is_checkpoint(path):
        return Qwen2Reference(Checkpoint(path)).logits(sequences)
    spec = spec_for_path(path)
    if spec.logits is None:
        raise ConversionError(f"the {spec.name} engine gives no logits to verify {path} with")
    return spec.logits(path, sequences)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def compare(reference: list[np.ndarray], converted: list[np.ndarray]) -> tuple[float, float, float]:
    """(top-1 agreement, mean KL, max KL) over every position."""
    ref = np.concatenate(reference)
    conv = np.concatenate(converted)
    width = min(ref.shape[1], conv.shape[1])
    ref_log, conv_log = _log_softmax(ref[:, :width]), _log_softmax(conv[:, :width])
    kl = np.sum(np.exp(ref_log) * (ref_log - conv_log), axis=-1)
    agreement = float(np.mean(ref.argmax(axis=-1) == conv.argmax(axis=-1)))
    return agreement, float(np.mean(kl)), float(np.max(kl))


def verify(converted: str | Path, reference: str | Path) -> VerifyReport:
    """Compare ``converted`` with ``reference``; one of them must be a Hugging Face folder."""
    converted, reference = Path(converted), Path(reference)
    folders = [p for p in (reference, converted) if (p / "tokenizer.json").is_file()]
    hf_side = folders[0] if folders else None
    if hf_side is None:
        raise ConversionError("verify needs a Hugging Face or MLX folder (with tokenizer.json) on one side")
    vocab = int(json.loads((hf_side / "config.json").read_text())["vocab_size"])
    sequences = token_sequences(hf_side / "tokenizer.json", vocab)
    agreement, mean_kl, max_kl = compare(logits_for(reference, sequences), logits_for(converted, sequences))
    return VerifyReport(str(converted), str(reference), sum(len(s) for s in sequences), agreement, mean_kl, max_kl)
