"""Several sequences in one llama.cpp KV cache, evaluated together (continuous batching).

``LlamaCppPool`` loads the model once with ``n_seq_max`` sequences, each with its own part
of the KV cache. Its ``sequences`` are engines of their own (prefix reuse, rewind, sampler)
whose fed tokens wait until logits are needed; the pool's scheduler (``engines.scheduler``)
then has ``decode`` put the pending tokens of every waiting sequence in one ``llama_batch``,
each with its sequence id, and one ``llama_decode`` runs them all.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import llama_cpp

from ...sampling import SamplingParams
from ..pooled import LAST_ONLY, PooledSequence
from ..prompt_cache import PromptCache
from ..scheduler import Scheduler
from .engine import LlamaCppModel, LlamaCppSampler, decode, place
from .thread import on_llama_thread


class LlamaCppSequence(PooledSequence):
    """One sequence of a pool: an ``Engine`` whose passes the pool runs."""

    def __init__(self, pool: LlamaCppPool, seq_id: int) -> None:
        super().__init__(pool, seq_id)
        self.seq_id = seq_id
        self.llama = pool.llama
        #: (index in the last batch, position) of the first token that kept its logits.
        self.rows = (-1, -1)

    def forget_logits(self) -> None:
        """The next pass overwrites this sequence's logits: from the first token that kept
        them (all of a speculative pass's rows), its tokens run again in a later pass."""
        first = self.rows[1]
        self.evaluated = min(self.evaluated, first)
        if first < self.position - 1:
            self.wanted_from = min(self.wanted_from, first)

    def logits_index(self, at: int | None) -> int:
        """The row of the last batch's logits that chooses the token at position ``at``."""
        self.evaluate_pending()
        index, first = self.rows
        row = (self.position if at is None else at) - 1
        if not first <= row < self.position:
            raise ValueError(f"no logits for position {at} in the last pass")
        return index + row - first

    def new_sampler(self, params: SamplingParams, seed: int) -> LlamaCppSampler:
        return LlamaCppSampler(self, params, seed)

    def save_state(self) -> bytes:
        """llama.cpp's state of this sequence (its KV cells), on the llama.cpp thread."""
        return on_llama_thread(self._state)

    def _state(self) -> bytes:
        ctx = self.llama.ctx
        buffer = (ctypes.c_uint8 * llama_cpp.llama_state_seq_get_size(ctx, self.seq_id))()
        size = llama_cpp.llama_state_seq_get_data(ctx, buffer, len(buffer), self.seq_id)
        return ctypes.string_at(buffer, size)

    def restore_state(self, state: bytes) -> None:
        def restore() -> None:
            llama_cpp.llama_memory_seq_rm(self.pool.memory, self.seq_id, -1, -1)
            buffer = (ctypes.c_uint8 * len(state)).from_buffer_copy(state)
            if not llama_cpp.llama_state_seq_set_data(self.llama.ctx, buffer, len(state), self.seq_id):
                raise RuntimeError("llama.cpp could not restore a cached prompt state")

        on_llama_thread(restore)


class LlamaCppPool(LlamaCppModel):
    """A GGUF model with ``parallel`` sequences in one KV cache, each ``context_length`` long."""

    def __init__(self, path: str | Path, *, parallel: int, **options: Any) -> None:
        super().__init__(path, sequences=parallel, **options)
        self.capacity = llama_cpp.llama_n_batch(self.llama.ctx)
        self._batch = llama_cpp.llama_batch_init(self.capacity, 0, 1)
        self.memory = llama_cpp.llama_get_memory(self.llama.ctx)
        #: States of recent prompts shared by the sequences (``load`` sets it; None: none kept).
        self.prompt_cache: PromptCache | None = None
        self.scheduler = Scheduler(self, parallel)
        self.sequences = [LlamaCppSequence(self, seq_id) for seq_id in range(parallel)]
        #: How many tokens its passes have run, all sequences together.
        self.tokens_run = 0

    def decode(self, sequences: Sequence[LlamaCppSequence]) -> None:
        """One ``llama_decode`` over the pending tokens of ``sequences``, which get the batch's
        capacity in the order given: a sequence whose tokens do not all fit keeps the rest pending."""
        room, taken = self.capacity, []
        for seq in sequences:
            if count := min(seq.pending, room):
                taken.append((seq, count))
                room -= count
        if taken:
            self._decode(sorted(taken, key=lambda item: item[0].seq_id))

    def _decode(self, taken: list[tuple[LlamaCppSequence, int]]) -> None:
        """The pass over ``count`` pending tokens of each sequence, in the order of their ids:
        llama.cpp runs a batch whose sequences come out of order about 30% slower."""
        batch, used, placed = self._batch, 0, []
        for seq, count in taken:
            start, end = seq.evaluated, seq.evaluated + count
            first = seq.first_row() if end == seq.position else LAST_ONLY
            place(batch, used, seq.cached_tokens[start:end], start, seq.seq_id, first)
            placed.append((seq, used - start, end, first))
            used += count
        batch.n_tokens = used
        rewound = [(seq.seq_id, seq.evaluated) for seq, _ in taken]
        decode(self.llama, batch, lambda: self._drop_after(rewound))
        self.tokens_run += used
        for seq, offset, end, first in placed:
            seq.evaluated = end
            if first != LAST_ONLY:
                seq.rows, seq.wanted_from = (offset + first, first), LAST_ONLY

    def _drop_after(self, rewound: list[tuple[int, int]]) -> None:
        """Clear each sequence's KV cells from its first pending position on (rewound tokens)."""
        for seq_id, start in rewound:
            llama_cpp.llama_memory_seq_rm(self.memory, seq_id, start, -1)

    def close(self) -> None:
        llama_cpp.llama_batch_free(self._batch)
        super().close()


class LlamaCppEngine(LlamaCppSequence):
    """A GGUF model with one KV cache: the one sequence of a pool of its own (``--parallel 1``),
    so that a sequence's bookkeeping and passes are the same code with or without batching."""

    def __init__(self, path: str | Path, **options: Any) -> None:
        super().__init__(LlamaCppPool(path, parallel=1, **options), 0)
        self.n_threads = self.pool.n_threads

    def close(self) -> None:
        self.pool.close()
