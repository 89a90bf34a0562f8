"""Check a converted model against its source: the same tokens in, compare the next-token distributions.

Fixed texts (English, Chinese, code, ChatML) are tokenized with the Hugging Face
side's ``tokenizer.json``; each model gives logits after every token; the report
holds the top-1 agreement and the mean KL divergence (reference ‖ converted).
Logits come from the numpy reference for a Hugging Face checkpoint, from
llama.cpp for a GGUF file and from mlx-lm for an MLX folder.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from ..errors import ConversionError
from .checkpoint import Checkpoint
from .reference import Qwen2Reference
from .safetensors_io import read_header

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


def model_kind(path: Path) -> str:
    """``gguf`` for a file; ``mlx`` for a folder whose weights mlx saved; ``hf`` otherwise."""
    if path.is_file():
        return "gguf"
    shard = next(iter(sorted(path.glob("*.safetensors"))), None)
    if shard is not None and (read_header(shard)[0].get("__metadata__") or {}).get("format") == "mlx":
        return "mlx"
    return "hf"


def token_sequences(tokenizer_json: Path, vocab_limit: int) -> list[list[int]]:
    tokenizer = Tokenizer.from_file(str(tokenizer_json))
    sequences = []
    for text in TEXTS:
        ids = [i for i in tokenizer.encode(text).ids if i < vocab_limit][:MAX_TOKENS]
        if len(ids) >= 2:
            sequences.append(ids)
    return sequences


def llama_cpp_logits(path: Path, sequences: Sequence[Sequence[int]]) -> list[np.ndarray]:
    import llama_cpp

    longest = max(len(s) for s in sequences)
    llama = llama_cpp.Llama(str(path), n_ctx=max(64, longest + 8), logits_all=True, n_gpu_layers=0, verbose=False)
    try:
        results = []
        for seq in sequences:
            llama.reset()
            llama.eval(list(seq))
            results.append(np.array(llama.scores[: len(seq)], dtype=np.float32))
        return results
    finally:
        llama.close()


def mlx_logits(path: Path, sequences: Sequence[Sequence[int]]) -> list[np.ndarray]:
    import mlx.core as mx
    from mlx_lm import load

    model, _ = load(str(path))
    return [np.array(model(mx.array([list(seq)]))[0].astype(mx.float32)) for seq in sequences]


def logits_for(path: Path, sequences: Sequence[Sequence[int]]) -> list[np.ndarray]:
    kind = model_kind(path)
    if kind == "gguf":
        return llama_cpp_logits(path, sequences)
    if kind == "mlx":
        return mlx_logits(path, sequences)
    return Qwen2Reference(Checkpoint(path)).logits(sequences)


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
    folders = [p for p in (reference, converted) if model_kind(p) != "gguf" and (p / "tokenizer.json").is_file()]
    hf_side = folders[0] if folders else None
    if hf_side is None:
        raise ConversionError("verify needs a Hugging Face or MLX folder (with tokenizer.json) on one side")
    vocab = int(json.loads((hf_side / "config.json").read_text())["vocab_size"])
    sequences = token_sequences(hf_side / "tokenizer.json", vocab)
    agreement, mean_kl, max_kl = compare(logits_for(reference, sequences), logits_for(converted, sequences))
    return VerifyReport(str(converted), str(reference), sum(len(s) for s in sequences), agreement, mean_kl, max_kl)
