"""The raw engines, run the way their own libraries stream: the baseline qwq-edge is measured against.

Each runner takes prompt token ids and yields once per generated token, with no
chat template, no reasoning controls and no prefix reuse between calls. Settings
(context, threads, layers offloaded, KV-cache type) are copied from the qwq-edge
engine being compared, so both sides do the same work.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from ..engines.base import Engine
from ..sampling import SamplingParams


class RawRunner(Protocol):
    #: What the baseline is, in words (e.g. "llama-cpp-python streaming completion").
    label: str

    def stream(self, prompt_tokens: Sequence[int], n: int, params: SamplingParams, seed: int) -> Iterator[Any]:
        """Generate at most ``n`` tokens from the whole prompt, yielding once per token."""
        ...

    def close(self) -> None: ...


class RawLlamaCpp:
    """Plain ``llama_cpp.Llama.create_completion(..., stream=True)``."""

    label = "llama-cpp-python streaming completion"

    def __init__(self, path: str | Path, **llama_options: Any) -> None:
        """``llama_options`` go to ``llama_cpp.Llama`` (n_ctx, n_threads, use_mmap, …)."""
        import llama_cpp

        self.llama = llama_cpp.Llama(model_path=str(path), **{"verbose": False, **llama_options})

    @classmethod
    def like(cls, path: str | Path, llama: Any) -> RawLlamaCpp:
        """A second ``Llama`` with the settings of one already loaded."""
        import llama_cpp

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
            seed=seed,
            stream=True,
        )
        # The last chunk only says why the completion ended; it carries no token.
        return (chunk for chunk in chunks if chunk["choices"][0]["finish_reason"] is None)

    def close(self) -> None:
        self.llama.close()


class RawMlx:
    """Plain ``mlx_lm.stream_generate`` with mlx-lm's own sampler and penalty processors."""

    label = "mlx_lm.stream_generate"

    def __init__(self, path: str | Path) -> None:
        import mlx_lm

        self.model, self.tokenizer = mlx_lm.load(str(path))

    def stream(self, prompt_tokens: Sequence[int], n: int, params: SamplingParams, seed: int) -> Iterator[Any]:
        import mlx.core as mx
        import mlx_lm
        from mlx_lm.sample_utils import make_logits_processors, make_sampler

        mx.random.seed(seed)
        sampler = make_sampler(temp=params.temperature, top_p=params.top_p, min_p=params.min_p, top_k=params.top_k)
        processors = make_logits_processors(
            repetition_penalty=params.repetition_penalty if params.repetition_penalty != 1.0 else None,
            repetition_context_size=params.penalty_window,
            presence_penalty=params.presence_penalty or None,
            presence_context_size=params.penalty_window,
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


def open_raw(engine: Engine) -> RawRunner:
    """The raw baseline for a loaded qwq-edge engine, on the same model file with the same settings."""
    path = engine.info.model_path
    if engine.info.engine == "mlx":
        return RawMlx(path)
    return RawLlamaCpp.like(path, engine.llama)  # type: ignore[attr-defined]
