"""What one sequence of any engine pool does without its engine library.

A pool's sequence holds its tokens; those fed but not yet run are pending until a pass
(its pool's ``decode``, batched with other sequences' by the pool's scheduler) runs them. Prefix
reuse, rewind and feeding are the same for every engine; an adapter's sequence adds where
its logits are and how its KV cache drops rewound tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .base import PassScheduler, check_room, prefill_reusing, reusable_prefix
from .prompt_cache import PromptCache

#: ``wanted_from`` when only the last pending token needs logits.
LAST_ONLY = 1 << 62


class PooledSequence:
    """The engine-free part of one sequence of an ``EnginePool``."""

    def __init__(self, pool: Any, index: int) -> None:
        self.pool = pool
        #: Its place in the pool; the pool's scheduler runs its passes (``engines.scheduler``).
        self.index = index
        self.scheduler: PassScheduler = pool.scheduler
        self.info = pool.info
        self.vocab_size = pool.vocab_size
        self.end_of_generation = pool.end_of_generation
        self.special_texts = pool.special_texts
        self.pass_costs = pool.pass_costs
        self.cached_tokens: list[int] = []
        #: Where the tokens the last prefill kept came from: this ``sequence``, ``memory``, ``disk``, a ``copy``.
        self.cached_from = "sequence"
        #: How many of ``cached_tokens`` the KV cache holds (the rest are pending).
        self.evaluated = 0
        #: Position from which the pending tokens need logits (``LAST_ONLY``: only the last one).
        self.wanted_from = LAST_ONLY
        #: Whether its tokens were copied from another sequence since its last prefill.
        self._copied = False

    @property
    def position(self) -> int:
        return len(self.cached_tokens)

    @property
    def pending(self) -> int:
        return len(self.cached_tokens) - self.evaluated

    def first_row(self) -> int:
        """The position of the first pending token that needs logits."""
        return min(self.wanted_from, self.position - 1)

    def tokenize(self, text: str, *, special: bool) -> list[int]:
        return self.pool.tokenize(text, special=special)

    def token_bytes(self, token: int) -> bytes:
        return self.pool.token_bytes(token)

    def prefill(self, tokens: Sequence[int]) -> int:
        """Keep what the cache shares with ``tokens``, else start from the prompt cache's longest
        prefix of them; feed and run the rest. ``cached_from`` says where the kept tokens came
        from (``copy``: another sequence's state, ``copy_prefix``)."""
        cache: PromptCache | None = getattr(self.pool, "prompt_cache", None)
        copied, self._copied = self._copied, False
        self.cached_from = "copy" if copied else "sequence"
        if cache is not None and not copied:
            self._from_prompt_cache(cache, tokens)
        reused = prefill_reusing(self, self.cached_tokens, tokens)
        self.evaluate_pending()
        if cache is not None and cache.disk is not None and self.cached_from == "sequence":
            cache.disk.save_later(tokens, self.save_state)  # the state holds exactly the prompt now
        return reused

    def _from_prompt_cache(self, cache: PromptCache, tokens: Sequence[int]) -> None:
        """Keep a long prefix this request would drop; then restore the cache's best prefix of
        ``tokens`` if it beats what this sequence holds."""
        held = self._keep_what_goes(cache, tokens)
        found = cache.longest(tokens)
        if found is not None and min(found[1], len(tokens) - 1) > held:
            prefix, _ = found
            self.restore_state(prefix.state)
            self.cached_tokens[:] = prefix.tokens
            self.evaluated, self.wanted_from = len(prefix.tokens), LAST_ONLY
            self.cached_from = prefix.where

    def _keep_what_goes(self, cache: PromptCache | None, tokens: Sequence[int]) -> int:
        """Put in the prompt cache a long prefix this sequence holds and a request for ``tokens``
        would drop; how many of ``tokens`` it holds."""
        self.scheduler.settle(self)
        held = reusable_prefix(self.cached_tokens, tokens) if self.cached_tokens else 0
        evaluated = self.cached_tokens[: self.evaluated]
        if cache is not None and len(evaluated) - held >= cache.min_tokens and not cache.holds(evaluated):
            cache.put(evaluated, self.save_state())
        return held

    def copy_prefix(self, source: PooledSequence, tokens: Sequence[int]) -> int:
        """Hold what ``source`` (a sequence of the same pool) has evaluated of ``tokens``, copied
        from its state rather than run again (several generations of one prompt), unless this
        sequence holds as much already; how many tokens of ``tokens`` it then holds."""
        if not hasattr(self.pool, "prompt_cache"):  # the pool keeps no states
            return 0
        held = min(self._keep_what_goes(self.pool.prompt_cache, tokens), self.evaluated)
        self.scheduler.settle(source)
        count = reusable_prefix(source.cached_tokens[: source.evaluated], tokens) if source.evaluated else 0
        if count <= held:
            return held
        # The state may hold more than ``count`` tokens: the next pass drops those past ``evaluated``.
        self.restore_state(source.save_state())
        self.cached_tokens[:] = tokens[:count]
        self.evaluated, self.wanted_from, self._copied = count, LAST_ONLY, True
        return count

    def save_state(self) -> bytes:
        """The engine's state of this sequence's evaluated tokens (an adapter with a prompt cache sets it)."""
        raise NotImplementedError

    def restore_state(self, state: bytes) -> None:
        """Make this sequence's KV cache hold a state ``save_state`` gave."""
        raise NotImplementedError

    def rewind(self, position: int) -> None:
        """Drop every token from ``position`` on (the next pass clears them from the KV cache)."""
        self.scheduler.settle(self)
        del self.cached_tokens[position:]
        self.evaluated = min(self.evaluated, position)
        if self.wanted_from >= position:
            self.wanted_from = LAST_ONLY

    def feed(self, tokens: Sequence[int]) -> None:
        check_room(self.position + len(tokens), self.info.context_length)
        self.cached_tokens.extend(tokens)
        self.scheduler.fed(self)

    def feed_all(self, tokens: Sequence[int]) -> None:
        self.wanted_from = min(self.wanted_from, self.position)
        self.feed(tokens)

    def evaluate_pending(self) -> None:
        """Wait until the pending tokens have run and their pass has ended (the scheduler knows
        both: with none pending, their pass may still be running)."""
        self.scheduler.evaluate(self)

    def close(self) -> None:
        """The pool frees the model."""
