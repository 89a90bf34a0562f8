"""llama-cpp-python used plainly, without qwq-edge: the raw baseline of ``bench`` and the logits of ``verify``.

Its loads and passes run on the llama.cpp thread too (``thread``): a second thread
with its own OpenMP team would slow both engines of a benchmark down.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np

from ...sampling import SamplingParams
from .thread import iterate_on_llama_thread, on_llama_thread


class RawLlamaCpp:
    """Plain ``llama_cpp.Llama.create_completion(..., stream=True)``."""

    label = "llama-cpp-python streaming completion"

    def __init__(self, path: str | Path, **llama_options: Any) -> None:
        """``llama_options`` go to ``llama_cpp.Llama`` (n_ctx, n_threads, use_mmap, …)."""
        options = {"verbose": False, **llama_options}
        self.llama = on_llama_thread(lambda: llama_cpp.Llama(model_path=str(path), **options))

    @classmethod
    def like(cls, path: str | Path, llama: Any) -> RawLlamaCpp:
        """A second ``Llama`` with the settings of one already loaded."""
        context = llama.context_params
        return cls(
            path,
            n_ctx=llama.n_ctx(),
            n_batch=llama.n_batch,
            n_threads=llama.n_threads,
            n_threads_batch=llama.n_threads_batch,
            n_gpu_layers=llama.model_params.n_gpu_layers,
            flash_attn=context.flash_attn_type == llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED,
            type_k=context.type_k,
            type_v=context.type_v,
        )

    def stream(self, prompt_tokens: Sequence[int], n: int, params: SamplingParams, seed: int) -> Iterator[Any]:
        self.llama.reset()  # llama-cpp-python would otherwise reuse the previous run's prefix
        chunks = self.llama.create_completion(
            list(prompt_tokens),
            max_tokens=n,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k,
            min_p=params.min_p,
            repeat_penalty=params.repetition_penalty,
            presence_penalty=params.presence_penalty,
            frequency_penalty=params.frequency_penalty,
            seed=seed,
            stream=True,
        )
        # The last chunk only says why the completion ended; it carries no token.
        return (chunk for chunk in iterate_on_llama_thread(chunks) if chunk["choices"][0]["finish_reason"] is None)

    def close(self) -> None:
        self.llama.close()


def llama_cpp_logits(path: Path, sequences: Sequence[Sequence[int]]) -> list[np.ndarray]:
    return on_llama_thread(lambda: _logits(path, sequences))


def _logits(path: Path, sequences: Sequence[Sequence[int]]) -> list[np.ndarray]:
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
