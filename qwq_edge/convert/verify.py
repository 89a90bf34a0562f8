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

from ..architecture.safetensors_header import saved_format
from ..engines.registry import spec_for_path
from ..errors import ConversionError
from .checkpoint import Checkpoint
from .reference import QwenReference

TEXTS = (
    "<|im_start|>user\nHow many r are in the word strawberry? Think step by step.<|im_end|>\n<|im_start|>assistant\n",
    "量子计算机利用叠加和纠缠来处理信息，我们来一步一步地思考。",
    "def fibonacci(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n",
)
MAX_TOKENS = 48
#: A position where the reference gives its top token this probability counts as confident.
CONFIDENT = 0.5
#: Largest mean KL allowed, as a fraction of the reference's information (log vocab - entropy).
#: Levels: ``full`` (no quantization), ``quantized`` (4 bits per weight or more), ``low`` (fewer).
#: Measured on random test weights (relative KL; confident top-1): Q4_K_M 0.025, 98%; MLX 4-bit
#: 0.05, 90%; Q3_K_M 0.08, 94%; MLX mixed_3_6 0.20, 79%; MLX 3-bit 0.26, 63%; Q2_K 0.33, 37%.
#: A different model is at 2.5 (KL 11.7), a wrong tensor layout near 0% confident top-1.
MAX_RELATIVE_KL = {"full": 0.02, "quantized": 0.2, "low": 0.5}
#: A mean KL this small passes whatever the reference (rounding noise).
MIN_KL = 1e-5
#: Least top-1 agreement where the reference is confident, judged when there are enough such positions.
MIN_CONFIDENT_AGREEMENT = {"full": 0.9, "quantized": 0.6, "low": 0.25}
MIN_CONFIDENT_POSITIONS = 8


@dataclass(frozen=True)
class VerifyReport:
    converted: str
    reference: str
    positions: int
    top1_agreement: float
    mean_kl: float
    max_kl: float
    #: Mean entropy of the reference's next-token distributions (nats): how uncertain it is.
    reference_entropy: float = 0.0
    #: Mean KL of the reference from the uniform distribution (log vocab - entropy, nats): how much
    #: the reference says beyond a coin toss over the vocabulary.
    reference_information: float = 0.0
    #: Positions where the reference gives its top token at least ``CONFIDENT`` probability,
    #: and the top-1 agreement over those alone (``None`` when there are none).
    confident_positions: int = 0
    confident_top1_agreement: float | None = None

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
        return QwenReference(Checkpoint(path)).logits(sequences)
    spec = spec_for_path(path)
    if spec.logits is None:
        raise ConversionError(f"the {spec.name} engine gives no logits to verify {path} with")
    return spec.logits(path, sequences)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def compare(reference: list[np.ndarray], converted: list[np.ndarray]) -> dict[str, float | int | None]:
    """Top-1 agreement, mean and max KL (reference ‖ converted), the reference's mean entropy,
    and the top-1 agreement where the reference is confident, over every position."""
    ref = np.concatenate(reference)
    conv = np.concatenate(converted)
    width = min(ref.shape[1], conv.shape[1])
    ref_log, conv_log = _log_softmax(ref[:, :width]), _log_softmax(conv[:, :width])
    ref_prob = np.exp(ref_log)
    kl = np.sum(ref_prob * (ref_log - conv_log), axis=-1)
    agrees = ref.argmax(axis=-1) == conv.argmax(axis=-1)
    confident = ref_prob.max(axis=-1) >= CONFIDENT
    entropy = float(np.mean(-np.sum(ref_prob * ref_log, axis=-1)))
    return {
        "top1_agreement": float(np.mean(agrees)),
        "mean_kl": float(np.mean(kl)),
        "max_kl": float(np.max(kl)),
        "reference_entropy": entropy,
        "reference_information": float(np.log(width)) - entropy,
        "confident_positions": int(confident.sum()),
        "confident_top1_agreement": float(np.mean(agrees[confident])) if confident.any() else None,
    }


def judge(report: VerifyReport, level: str) -> str | None:
    """Why a conversion fails verification, or ``None`` when it passes.

    Two tests, each meaningful where the other is not. The mean KL must be small next to
    what the reference says beyond a uniform guess (log vocab - entropy): nearly flat
    distributions, as random test weights give, make top-1 a coin toss, and make any KL
    small (a different model entirely is within a fraction of the entropy), but not
    small next to that. And top-1 must agree where the reference is confident. ``level``
    (``full``, ``quantized`` or ``low``) sets how closely.
    """
    kind = level
    limit = max(MAX_RELATIVE_KL[kind] * report.reference_information, MIN_KL)
    if report.mean_kl > limit:
        return (
            f"mean KL from the source is {report.mean_kl:.4g}, over {limit:.4g} ({MAX_RELATIVE_KL[kind]:.0%} of "
            f"the {report.reference_information:.4g} nats the source's predictions hold beyond a uniform guess)"
        )
    agreement = report.confident_top1_agreement
    needed = MIN_CONFIDENT_AGREEMENT[kind]
    if report.confident_positions >= MIN_CONFIDENT_POSITIONS and agreement is not None and agreement < needed:
        return (
            f"top-1 agreement is {agreement:.1%} where the source is confident "
            f"({report.confident_positions} positions; needs {needed:.0%})"
        )
    return None


def verify(converted: str | Path, reference: str | Path) -> VerifyReport:
    """Compare ``converted`` with ``reference``; one of them must be a Hugging Face folder."""
    converted, reference = Path(converted), Path(reference)
    folders = [p for p in (reference, converted) if (p / "tokenizer.json").is_file()]
    hf_side = folders[0] if folders else None
    if hf_side is None:
        raise ConversionError("verify needs a Hugging Face or MLX folder (with tokenizer.json) on one side")
    vocab = int(json.loads((hf_side / "config.json").read_text())["vocab_size"])
    sequences = token_sequences(hf_side / "tokenizer.json", vocab)
    stats = compare(logits_for(reference, sequences), logits_for(converted, sequences))
    return VerifyReport(str(converted), str(reference), sum(len(s) for s in sequences), **stats)
