"""What every llama.cpp engine shares, through llama-cpp-python: the loaded model and its
vocabulary, one ``llama_decode`` on the llama.cpp thread, and the sampler.

Keeps llama.cpp's fast path: tokens are drawn by llama.cpp's own C sampler chain. A mask
is applied by writing ``-inf`` into the logits buffer just before the chain runs, so no
Python callback sits inside the sampler and the per-token Python work stays a few
microseconds. The engines themselves (one sequence, or several in one KV cache) are in
``pool``.
"""

from __future__ import annotations

import ctypes
from collections import deque
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ...errors import EngineUnavailableError, ModelFormatError
from ...sampling import SamplingParams, chain_probabilities, penalized_argmax
from ...system.machine import gpu_offload_supported, usable_cores
from ..base import CPU_PASS_COSTS, DEFAULT_CONTEXT, GPU_PASS_COSTS, EngineInfo
from ..gguf_file import read_gguf_header
from .thread import on_llama_thread

try:
    import llama_cpp
    from llama_cpp._internals import LlamaSampler
except ImportError as error:  # pragma: no cover - depends on the install
    raise EngineUnavailableError(f"llama-cpp-python is not installed ({error})") from None

_SPECIAL_ATTRS = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED
_KV_TYPES = {"f16": llama_cpp.GGML_TYPE_F16, "q8_0": llama_cpp.GGML_TYPE_Q8_0}


class _UnusedChatFormatter:
    """Stands in for llama-cpp-python's chat formatter while a model loads: qwq-edge renders
    prompts itself (with bounds, see ``qwq_edge.template``), and llama-cpp-python would
    compile the model's template unbounded and fail the whole load on a syntax error."""

    def __init__(self, **_: Any) -> None:
        pass

    def to_chat_handler(self) -> None:
        return None


@contextmanager
def _without_chat_formatter() -> Iterator[None]:
    chat_format = llama_cpp.llama_chat_format
    original = chat_format.Jinja2ChatFormatter
    chat_format.Jinja2ChatFormatter = _UnusedChatFormatter
    try:
        yield
    finally:
        chat_format.Jinja2ChatFormatter = original


class _WithSequences:
    """llama-cpp-python's context class, made with room for ``count`` sequences (its ``Llama``
    takes no ``n_seq_max``); each sequence gets its own part of the KV cache (not unified)."""

    def __init__(self, original: Any, count: int) -> None:
        self.original, self.count = original, count

    def __call__(self, *, params: Any, **kwargs: Any) -> Any:
        params.n_seq_max, params.kv_unified = self.count, False
        return self.original(params=params, **kwargs)


@contextmanager
def _with_sequences(count: int) -> Iterator[None]:
    internals = llama_cpp._internals
    original = internals.LlamaContext
    if count > 1:
        internals.LlamaContext = _WithSequences(original, count)
    try:
        yield
    finally:
        internals.LlamaContext = original


def _load_llama(
    path: str | Path, n_ctx: int, threads: int, gpu_layers: int, kv_cache: str, sequences: int = 1
) -> llama_cpp.Llama:
    def construct() -> llama_cpp.Llama:
        with _without_chat_formatter(), _with_sequences(sequences):
            return llama_cpp.Llama(
                model_path=str(path),
                n_ctx=n_ctx,
                n_batch=min(512, n_ctx),
                n_threads=threads,
                n_threads_batch=threads,
                n_gpu_layers=gpu_layers,
                # Flash attention, as llama.cpp's own tools run by default (llama-cpp-python turns it
                # off): on 2 CPU cores and the 0.5B model a one-token pass takes 20.7 instead of
                # 22.5 ms, a 4-sequence pass 49.9 instead of 52.5 (74.0 instead of 80.9 at 1,500
                # tokens of context). A quantized V cache needs it anyway.
                flash_attn=True,
                type_k=_KV_TYPES[kv_cache],
                type_v=_KV_TYPES[kv_cache],
                verbose=False,
            )

    try:
        return on_llama_thread(construct)  # the load computes too (weights repacked for the CPU)
    except (ValueError, RuntimeError) as error:
        hint = " (with an 8-bit KV cache; try --kv-cache f16)" if kv_cache != "f16" else ""
        raise ModelFormatError(f"llama.cpp could not load {path}{hint}: {error}") from None


def place(batch: Any, at: int, tokens: Sequence[int], start: int, seq_id: int, rows_from: int) -> None:
    """Write ``tokens`` of sequence ``seq_id`` (positions from ``start`` on) into ``batch`` from
    index ``at`` on; positions from ``rows_from`` on keep their logits."""
    for i, token in enumerate(tokens):
        j, position = at + i, start + i
        batch.token[j], batch.pos[j], batch.n_seq_id[j] = token, position, 1
        batch.seq_id[j][0], batch.logits[j] = seq_id, position >= rows_from


def decode(llama: llama_cpp.Llama, batch: Any, before: Callable[[], None]) -> None:
    """One ``llama_decode`` of ``batch``, ``before()`` first, on the llama.cpp thread (``thread``):
    a KV cache edited from another thread while a restore runs there loses cells or keeps stale ones.

    llama.cpp puts a batch's output rows back in batch order lazily, on the first read of its
    logits, by swapping rows in place. The sequences of a pass read their rows from their own
    threads at once, and two reads swapping the same rows put them back out of order (a stream
    took another's row): the rows are put in order here, once, before any reader runs."""

    def run() -> int:
        before()
        status = llama_cpp.llama_decode(llama.ctx, batch)
        if status == 0:
            llama_cpp.llama_get_logits(llama.ctx)  # the lazy reorder, done on this thread
        return status

    if on_llama_thread(run) != 0:
        raise RuntimeError(f"llama_decode failed on a batch of {batch.n_tokens} tokens")


class LogitsSource(Protocol):
    """Where a sampler finds its logits: a llama.cpp context and the row for a position."""

    llama: llama_cpp.Llama
    vocab_size: int

    def logits_index(self, at: int | None) -> int: ...


class LlamaCppSampler:
    """One generation's sampler: llama.cpp's C chain plus an optional logit mask."""

    def __init__(self, engine: LogitsSource, params: SamplingParams, seed: int) -> None:
        self._engine = engine
        self._chain = LlamaSampler()
        penalized = params.penalized
        # Greedy is an argmax over the logits buffer (the penalties applied to the few tokens they
        # touch): the same token as llama.cpp's chain without building its 150k-entry candidate array.
        self._argmax, self._sampling = params.greedy, params
        #: The tokens the chain's penalties would count: its last ``penalty_window`` accepted ones.
        self._recent: deque[int] | None = deque(maxlen=params.penalty_window) if penalized else None
        #: Sampled without penalties: the chain's distribution is a function of the logits alone.
        self._params = params if not params.greedy and not penalized else None
        self.rng = np.random.default_rng(seed)
        if penalized:
            self._chain.add_penalties(
                engine.vocab_size,
                params.penalty_window,
                params.repetition_penalty,
                params.frequency_penalty,
                params.presence_penalty,
            )
        if params.greedy:
            self._chain.add_greedy()
        else:
            if params.top_k > 0:
                self._chain.add_top_k(params.top_k)
            self._chain.add_top_p(params.top_p, 1)
            if params.min_p > 0:
                self._chain.add_min_p(params.min_p, 1)
            self._chain.add_temp(params.temperature)
            self._chain.add_dist(seed & 0xFFFFFFFF)
        self._masks: dict[Collection[int], np.ndarray] = {}

    def _logits(self, index: int) -> np.ndarray:
        """One row of logits (``index`` in the last batch), as a writable view of llama.cpp's buffer."""
        pointer = llama_cpp.llama_get_logits_ith(self._engine.llama.ctx, index)
        return np.ctypeslib.as_array(pointer, shape=(self._engine.vocab_size,))

    def _masked(self, banned: Collection[int], at: int | None, banned_mask: Any = None) -> int:
        """The index of the logits row for ``at``, with ``banned`` and ``banned_mask`` written to ``-inf``."""
        index = self._last_index = self._engine.logits_index(at)
        if banned:
            ids = self._masks.get(banned)
            if ids is None:
                ids = self._masks.setdefault(banned, np.fromiter(banned, dtype=np.int64))
            self._logits(index)[ids] = -np.inf
        if banned_mask is not None:
            np.copyto(self._logits(index), -np.inf, where=banned_mask)
        return index

    def probabilities(
        self, banned: Collection[int] = (), at: int | None = None, banned_mask: Any = None
    ) -> np.ndarray | None:
        if self._params is None:
            return None
        return chain_probabilities(self._logits(self._masked(banned, at, banned_mask)), self._params)

    def sample(self, banned: Collection[int] = (), at: int | None = None, banned_mask: Any = None) -> int:
        index = self._masked(banned, at, banned_mask)
        if not self._argmax:
            return int(llama_cpp.llama_sampler_sample(self._chain.sampler, self._engine.llama.ctx, index))
        if self._recent is None:
            return int(np.argmax(self._logits(index)))
        token = penalized_argmax(self._logits(index), self._recent, self._sampling)
        self._recent.append(token)  # as the chain accepts the token it samples
        return token

    def masked_row(self) -> np.ndarray:
        return self._logits(self._last_index)  # the masks were written into llama.cpp's buffer

    def accept(self, tokens: Sequence[int]) -> None:
        for token in tokens:
            self._chain.accept(token)
        if self._recent is not None:
            self._recent.extend(tokens)


class LlamaCppModel:
    """A GGUF model loaded in llama.cpp: vocabulary and facts, shared by its sequences."""

    name = "llama.cpp"

    def __init__(
        self,
        path: str | Path,
        *,
        context_length: int | None = None,
        n_threads: int | None = None,
        n_gpu_layers: int | None = None,
        kv_cache: str = "f16",
        sequences: int = 1,
    ) -> None:
        header = read_gguf_header(path)
        trained = header.context_length or 4096
        n_ctx = context_length or min(trained, DEFAULT_CONTEXT)
        gpu_layers = n_gpu_layers if n_gpu_layers is not None else (-1 if gpu_offload_supported() else 0)
        threads = n_threads or usable_cores()
        self.llama = _load_llama(path, n_ctx * sequences, threads, gpu_layers, kv_cache, sequences)
        self.vocab_size = self.llama.n_vocab()
        self._vocab = llama_cpp.llama_model_get_vocab(self.llama.model)
        self._pieces: dict[int, bytes] = {}
        self.n_threads = threads
        self.pass_costs = GPU_PASS_COSTS if gpu_layers else CPU_PASS_COSTS
        self.special_texts, self.end_of_generation = self._scan_special_tokens()
        metadata = dict(self.llama.metadata)
        self.info = EngineInfo(
            engine=self.name,
            model_path=str(path),
            model_name=header.name,
            architecture=header.architecture,
            # llama.cpp may round the context up; llama-cpp-python's buffers keep the size asked for.
            context_length=min(n_ctx, llama_cpp.llama_n_ctx_seq(self.llama.ctx)),
            trained_context_length=trained,
            vocab_size=self.vocab_size,
            # From the header: llama-cpp-python drops all metadata when one string is not UTF-8.
            chat_template=header.metadata.get("tokenizer.chat_template"),
            device=f"gpu ({gpu_layers} layers offloaded)" if gpu_layers else f"cpu ({threads} threads)",
            metadata=metadata,
        )

    def _scan_special_tokens(self) -> tuple[frozenset[str], frozenset[int]]:
        texts, stops = set(), set()
        for token in range(self.vocab_size):
            if llama_cpp.llama_vocab_get_attr(self._vocab, token) & _SPECIAL_ATTRS:
                texts.add(llama_cpp.llama_vocab_get_text(self._vocab, token).decode("utf-8", "replace"))
                if llama_cpp.llama_vocab_is_eog(self._vocab, token):
                    stops.add(token)
        stops.add(self.llama.token_eos())
        return frozenset(texts), frozenset(stops)

    def tokenize(self, text: str, *, special: bool) -> list[int]:
        return self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=special)

    def token_bytes(self, token: int) -> bytes:
        piece = self._pieces.get(token)
        if piece is None:
            size = 64
            while True:
                buffer = ctypes.create_string_buffer(size)
                n = llama_cpp.llama_token_to_piece(self._vocab, token, buffer, size, 0, False)
                if n >= 0:
                    break
                size = -n
            piece = self._pieces[token] = buffer.raw[:n]
        return piece

    def close(self) -> None:
        self.llama.close()
