"""The engine interface: everything the runtime needs from an inference engine.

An engine owns one loaded model and one KV cache holding a single token
sequence. The generation loop drives it with three calls per step:
``TokenSampler.sample`` (choose from the current logits, with some ids masked),
``feed`` (append tokens to the cache; may run asynchronously), and ``position``.
Engines know nothing about budgets, thinking or chat; only the adapters in this
package import an engine library.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..errors import ContextOverflowError
from ..sampling import SamplingParams


@dataclass(frozen=True)
class EngineInfo:
    """What an engine reports about the model it loaded."""

    engine: str
    model_path: str
    model_name: str
    architecture: str
    context_length: int
    trained_context_length: int
    vocab_size: int
    chat_template: str | None
    device: str
    metadata: dict[str, str] = field(default_factory=dict, repr=False)


class TokenSampler(Protocol):
    """Draws tokens for one generation; holds its own RNG and penalty history."""

    #: The RNG of ``probabilities``' users (speculation's rejection rule); None without them.
    rng: np.random.Generator | None

    def sample(self, banned: Collection[int] = (), at: int | None = None, banned_mask: Any = None) -> int:
        """Choose the token at cache position ``at`` from the logits of the token before it.

        ``banned`` ids are masked out, and so is every id where ``banned_mask`` (a numpy
        boolean row over the vocabulary, a grammar's) is true.

        ``at=None`` is the next position (after the last fed token). After ``feed_all``,
        ``at`` may be any position that pass computed logits for, so that drafted tokens
        are verified one by one, each with its own mask.
        """
        ...

    def accept(self, tokens: Sequence[int]) -> None:
        """Record tokens the runtime forced, so penalties see them."""
        ...

    def probabilities(
        self, banned: Collection[int] = (), at: int | None = None, banned_mask: Any = None
    ) -> np.ndarray | None:
        """The distribution ``sample`` would draw the token at ``at`` from (masks applied), or
        None where there is none to give (greedy, penalties, an engine that does not say)."""
        ...

    def masked_row(self) -> np.ndarray:
        """The logits the last ``sample`` (or ``probabilities``) read, its masks applied, before
        temperature and penalties: log-probabilities come from it. Valid until the next feed."""
        ...


class Engine(Protocol):
    info: EngineInfo
    #: Ids that end a generation (end of turn, end of text).
    end_of_generation: frozenset[int]
    #: Texts of the vocabulary's control and user-defined tokens: the strings that
    #: must never become special tokens when they occur in user text.
    special_texts: frozenset[str]

    @property
    def position(self) -> int:
        """Number of tokens the KV cache holds."""
        ...

    def tokenize(self, text: str, *, special: bool) -> list[int]:
        """Token ids of ``text``; ``special`` lets special-token texts become special ids."""
        ...

    def token_bytes(self, token: int) -> bytes:
        """The bytes one token stands for (control tokens give ``b""``)."""
        ...

    def prefill(self, tokens: Sequence[int]) -> int:
        """Make the cache hold exactly ``tokens``; return how many were reused."""
        ...

    def rewind(self, position: int) -> None:
        """Drop every cached token from ``position`` on."""
        ...

    def feed(self, tokens: Sequence[int]) -> None:
        """Append tokens to the cache and compute the logits after the last one."""
        ...

    def feed_all(self, tokens: Sequence[int]) -> None:
        """Append tokens in one forward pass that keeps the logits after each of them.

        The sampler may then choose the token at any position from ``position`` before
        the call + 1 to ``position`` after it (speculative decoding verifies drafted
        tokens this way); ``rewind`` to one of those positions keeps its logits current.
        """
        ...

    def new_sampler(self, params: SamplingParams, seed: int) -> TokenSampler:
        """A sampler for one generation."""
        ...

    def close(self) -> None:
        """Free the model."""
        ...


class BatchedSequence(Engine, Protocol):
    """One sequence of an ``EnginePool``: an engine whose fed tokens wait to be evaluated by
    its pool's scheduler (given when the sequence is built)."""

    #: Its place in the pool.
    index: int
    #: The tokens the sequence holds (fed ones included), for choosing a sequence to reuse.
    cached_tokens: Sequence[int]

    @property
    def pending(self) -> int:
        """Tokens fed but not yet evaluated."""
        ...

    def forget_logits(self) -> None:
        """The next pass overwrites this sequence's logits: evaluate its last token again when
        they are needed (its thread was held at a ``yield`` before it read them)."""
        ...


class PassScheduler(Protocol):
    """What a pool's sequences tell their scheduler (``engines.scheduler.Scheduler``)."""

    def fed(self, sequence: Any) -> None:
        """Called after every ``feed``: the sequence is done with its logits."""
        ...

    def evaluate(self, sequence: Any) -> None:
        """Run the sequence's pending tokens (in a pass shared with others); return when they ran."""
        ...

    def settle(self, sequence: Any) -> None:
        """Wait until no running pass reads the sequence's tokens (``rewind`` calls it first:
        a controller may take back a token its own pass is still evaluating)."""
        ...


class EnginePool(Protocol):
    """One model holding several sequences in one KV cache, whose passes run together.

    It stands for the model (vocabulary, facts, ``close``); ``info.context_length`` is one
    sequence's context.
    """

    info: EngineInfo
    end_of_generation: frozenset[int]
    special_texts: frozenset[str]
    sequences: Sequence[BatchedSequence]
    #: Hands the sequences to generations and runs their passes (``engines.scheduler``).
    scheduler: Any

    def tokenize(self, text: str, *, special: bool) -> list[int]: ...

    def token_bytes(self, token: int) -> bytes: ...

    def decode(self, sequences: Sequence[BatchedSequence]) -> None:
        """One forward pass over the pending tokens of ``sequences`` (in order, as many as
        fit); a sequence whose tokens do not all fit keeps the rest pending."""
        ...

    def close(self) -> None: ...


#: Context an engine uses when the caller names none (``load`` normally sizes it with
#: the memory planner instead): long enough for real thinking, small enough that a
#: 32B model's KV cache (256 KiB/token at fp16) stays at 2 GiB.
DEFAULT_CONTEXT = 8192

#: What a forward pass over n tokens (logits for each) costs ÷ a one-token pass, as
#: ``(n, cost)`` points: the speculation tuner weighs drafted tokens against it. An engine
#: sets ``pass_costs`` to one of these. Measured with llama.cpp on 2 CPU cores and the
#: 0.5B model (one-token decode reads the weights once; more tokens add compute):
CPU_PASS_COSTS = ((1, 1.0), (2, 2.0), (4, 2.55), (8, 4.4), (16, 6.0), (32, 9.5), (48, 13.2), (64, 19.0))
#: A bandwidth-bound engine (a GPU, Apple silicon): extra tokens cost little (not measured here).
GPU_PASS_COSTS = ((1, 1.0), (2, 1.08), (8, 1.4), (32, 2.6), (64, 4.2))

#: KV-cache element types both engines offer: fp16, or 8-bit (llama.cpp's q8_0 with
#: flash attention; MLX's 8-bit quantized cache), each about half of fp16.
KV_CACHE_TYPES = ("f16", "q8_0")


def reusable_prefix(cached: Sequence[int], tokens: Sequence[int]) -> int:
    """How many leading ``tokens`` a cache holding ``cached`` can keep.

    The last token is always evaluated again, so that its logits are fresh.
    """
    if not tokens:
        raise ValueError("prefill needs at least one token")
    reused = 0
    for old, new in zip(cached, tokens, strict=False):
        if old != new:
            break
        reused += 1
    return min(reused, len(tokens) - 1)


def prefill_reusing(engine: Engine, cached: Sequence[int], tokens: Sequence[int]) -> int:
    """What every adapter's ``prefill`` does: keep the longest prefix the cache (holding
    ``cached``) shares with ``tokens``, feed the rest, and return how many were kept."""
    reused = reusable_prefix(cached, tokens)
    check_room(len(tokens), engine.info.context_length)
    engine.rewind(reused)
    engine.feed(tokens[reused:])
    return reused


def check_room(needed: int, context_length: int) -> None:
    """Refuse to hold more tokens than the context has."""
    if needed > context_length:
        raise ContextOverflowError(f"{needed} tokens do not fit in the context of {context_length} tokens")
