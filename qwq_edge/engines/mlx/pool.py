"""Several sequences of one MLX model, evaluated together (continuous batching).

``MlxPool`` keeps the sequences of the last pass in mlx-lm's ``BatchKVCache`` (one per
layer): each is a row, left-padded so that every row's last token sits in the same column,
and one model call runs a rows × width block of tokens. Rows that feed fewer tokens than
the widest are right-padded, and the padding is rolled to the left after the pass (mlx-lm's
``prepare`` / ``finalize``, as its own batch generator does); a rewind of one row is that
same roll over the tokens it drops, so rows rewind independently.

A sequence not in a pass leaves the batch (its KV is copied into a cache of its own, kept
for its return and for the prefix reuse of a next request); one that comes in first runs
all but the tokens that need logits alone into its own cache (a prompt never widens the
batch), and is then merged in. So copies happen when a sequence comes or goes, never per
token.

Every pass runs on the MLX thread (``thread``), like every other MLX call.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...errors import InvalidRequestError
from ...sampling import SamplingParams
from ..pooled import LAST_ONLY, PooledSequence
from ..prompt_cache import PromptCache
from ..scheduler import Scheduler
from .engine import (  # through engine, which says what is missing when mlx-lm is
    BatchKVCache,
    MlxModel,
    MlxSampler,
    fill_cache,
    make_prompt_cache,
    mx,
    trim_prompt_cache,
)
from .states import cache_bytes, cache_from_bytes, keeps_states
from .thread import on_mlx_thread

#: Pending tokens (beyond those that need logits) above which a sequence runs them alone
#: before it joins the batch, so that the other rows do not compute a prompt's width.
WIDE = 16


class MlxSequence(PooledSequence):
    """One sequence of an ``MlxPool``: an ``Engine`` whose passes the pool runs."""

    def __init__(self, pool: MlxPool, index: int) -> None:
        super().__init__(pool, index)
        #: Tokens its KV cache holds: more than ``evaluated`` after a rewind, until the next pass.
        self.held = 0
        #: Its KV cache (a layer's ``KVCache`` each) while it is out of the batch.
        self.own: list[Any] = []
        #: Logits of the last pass that ran it, one row per token that kept them (evaluated).
        self.logits: Any = None
        self._choices: list[int] = []
        self._rows_from = 0

    def forget_logits(self) -> None:
        """Nothing to do: each pass's logits are arrays of their own, which a later pass never overwrites."""

    def row(self, at: int | None) -> int:
        """The row of ``logits`` that chooses the token at position ``at`` (None: the next one)."""
        self.evaluate_pending()
        row = (self.position if at is None else at) - 1 - self._rows_from
        if not 0 <= row < len(self._choices):
            raise ValueError(f"no logits for position {at} in the last pass")
        return row

    def greedy(self, row: int) -> int:
        return self._choices[row]

    def new_sampler(self, params: SamplingParams, seed: int) -> MlxSampler:
        return MlxSampler(self, params, seed)

    def save_state(self) -> bytes:
        return on_mlx_thread(lambda: cache_bytes(self.pool.layers_of(self), self.evaluated))

    def restore_state(self, state: bytes) -> None:
        on_mlx_thread(lambda: self.pool.restore(self, state))


class MlxPool(MlxModel):
    """An MLX model with ``parallel`` sequences, each ``context_length`` long, run in batched passes."""

    def __init__(
        self, path: str | Path, *, parallel: int, context_length: int | None = None, kv_cache: str = "f16"
    ) -> None:
        if kv_cache != "f16":
            raise InvalidRequestError(
                f"MLX runs batched sequences with an fp16 KV cache only, not {kv_cache}: "
                "use --kv-cache f16 with --parallel, or --parallel 1"
            )
        super().__init__(path, context_length=context_length)
        self.scheduler = Scheduler(self, parallel)
        self.sequences = [MlxSequence(self, index) for index in range(parallel)]
        self._rows: list[MlxSequence] = []  # the sequences in the batch cache, in row order
        #: How many tokens its passes have run, all sequences together.
        self.tokens_run = 0
        self._cache: list[Any] = []
        if keeps_states(make_prompt_cache(self.model)):
            #: States of recent prompts shared by the sequences (``load`` sets it; None: none kept).
            self.prompt_cache: PromptCache | None = None

    def layers_of(self, seq: MlxSequence) -> list[Any]:
        """``seq``'s KV cache, a layer's cache each (its row of the batch, or its own)."""
        if seq in self._rows:
            return [layer.extract(self._rows.index(seq)) for layer in self._cache]
        return seq.own

    def restore(self, seq: MlxSequence, state: bytes) -> None:
        """Make ``seq`` hold a saved state: out of the batch, with a cache of its own."""
        if seq in self._rows:
            self._leave([seq])
        seq.own = cache_from_bytes(state, len(self.model.layers))
        seq.held = seq.own[0].offset

    def decode(self, sequences: Sequence[MlxSequence]) -> None:
        """One batched pass over the pending tokens of ``sequences`` (all of them: MLX has no batch capacity)."""
        taken = [seq for seq in sequences if seq.pending]
        if not taken:
            return
        on_mlx_thread(lambda: self._decode(taken))

    def _decode(self, taken: list[MlxSequence]) -> None:
        self._drop_rewound()
        self._arrange(taken)
        self._run()

    def _drop_rewound(self) -> None:
        """Roll the tokens each row's rewinds dropped out of the batch cache (to its left padding)."""
        surplus = [seq.held - seq.evaluated for seq in self._rows]
        if any(surplus):
            for layer in self._cache:
                layer.prepare(right_padding=surplus)
                layer.finalize()
            for seq in self._rows:
                seq.held = seq.evaluated

    def _arrange(self, taken: list[MlxSequence]) -> None:
        """Make the batch hold exactly ``taken``: the others leave, the newcomers join."""
        wide = [seq for seq in taken if seq.first_row() - seq.evaluated > WIDE]
        staying = [seq for seq in self._rows if seq in taken and seq not in wide]
        self._leave([seq for seq in self._rows if seq not in staying])
        joining = [seq for seq in taken if seq not in staying]
        for seq in joining:
            self._prepare_to_join(seq)
        if joining:
            merged = [BatchKVCache.merge(list(layers)) for layers in zip(*(seq.own for seq in joining), strict=True)]
            if self._cache:
                for layer, other in zip(self._cache, merged, strict=True):
                    layer.extend(other)
            else:
                self._cache = merged
        for seq in joining:
            seq.own = []
        self._rows = staying + joining

    def _leave(self, leaving: list[MlxSequence]) -> None:
        """Take ``leaving`` out of the batch, each with its KV copied into a cache of its own."""
        if not leaving:
            return
        for seq in leaving:
            seq.own = [layer.extract(self._rows.index(seq)) for layer in self._cache]
            mx.eval([layer.state for layer in seq.own])
        staying = [seq for seq in self._rows if seq not in leaving]
        if staying:
            kept = mx.array([index for index, seq in enumerate(self._rows) if seq in staying])
            for layer in self._cache:
                layer.filter(kept)
        else:
            self._cache = []
        self._rows = staying

    def _prepare_to_join(self, seq: MlxSequence) -> None:
        """Give ``seq`` a cache holding its evaluated tokens, then run into it alone all its
        pending tokens but those that need logits."""
        if not seq.own:
            seq.own = make_prompt_cache(self.model)
        if seq.held > seq.evaluated:
            trim_prompt_cache(seq.own, seq.held - seq.evaluated)
        seq.held = seq.evaluated
        alone = seq.cached_tokens[seq.evaluated : seq.first_row()]
        for step in fill_cache(self.model, seq.own, alone):
            seq.evaluated += len(step)
            self.tokens_run += len(step)
            seq.held = seq.evaluated

    def _run(self) -> None:
        """The pass: every row's pending tokens, right-padded to the widest."""
        rows = self._rows
        width = max(seq.pending for seq in rows)
        self.tokens_run += sum(seq.pending for seq in rows)
        padding = [width - seq.pending for seq in rows]
        tokens = mx.array(
            [seq.cached_tokens[seq.evaluated :] + [0] * pad for seq, pad in zip(rows, padding, strict=True)]
        )
        if any(padding):
            for layer in self._cache:
                layer.prepare(right_padding=padding)
        logits = self.model(tokens, cache=self._cache)
        if any(padding):
            for layer in self._cache:
                layer.finalize()
        kept = [logits[index, seq.first_row() - seq.evaluated : seq.pending] for index, seq in enumerate(rows)]
        choices = mx.argmax(logits, axis=-1)
        mx.eval(kept, choices, [layer.state for layer in self._cache])
        for seq, seq_logits, seq_choices in zip(rows, kept, choices.tolist(), strict=True):
            first = seq.first_row()
            seq.logits, seq._choices = seq_logits, seq_choices[first - seq.evaluated : seq.pending]
            seq._rows_from, seq.wanted_from = first, LAST_ONLY
            seq.evaluated = seq.held = seq.position

    def close(self) -> None:
        self._cache, self._rows = [], []
        for seq in self.sequences:
            seq.own = []
        super().close()
