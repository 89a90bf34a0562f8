"""mlx-lm used plainly, without qwq-edge: the raw baseline of ``bench`` and the logits of ``verify``."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx_lm
import numpy as np
from mlx_lm.sample_utils import make_logits_processors, make_sampler

from ...sampling import SamplingParams


class RawMlx:
    """Plain ``mlx_lm.stream_generate`` with mlx-lm's own sampler and penalty processors."""

    label = "mlx_lm.stream_generate"

    def __init__(self, path: str | Path) -> None:
        self.model, self.tokenizer = mlx_lm.load(str(path))

    def stream(self, prompt_tokens: Sequence[int], n: int, params: SamplingParams, seed: int) -> Iterator[Any]:
        mx.random.seed(seed)
        sampler = make_sampler(temp=params.temperature, top_p=params.top_p, min_p=params.min_p, top_k=params.top_k)
        processors = make_logits_processors(
            repetition_penalty=params.repetition_penalty if params.repetition_penalty != 1.0 else None,
            repetition_context_size=params.penalty_window,
            presence_penalty=params.presence_penalty or None,
            presence_context_size=params.penalty_window,
            frequency_penalty=params.frequency_penalty or None,
            frequency_context_size=params.penalty_window,
        )
        return mlx_lm.stream_generate(
            self.model,
            self.tokenizer,
            list(prompt_tokens),
            max_tokens=n,
            sampler=sampler,
            logits_processors=processors,
        )

    def close(self) -> None:
        self.model = self.tokenizer = None


def mlx_logits(path: Path, sequences: Sequence[Sequence[int]]) -> list[np.ndarray]:
    model, _ = mlx_lm.load(str(path))
    return [np.array(model(mx.array([list(seq)]))[0].astype(mx.float32)) for seq in sequences]
