"""Sharing one model between generations: one scheduler per pool, one way for every engine.

Every loaded model is a pool of sequences: an engine that batches builds its pool with this
scheduler (``--parallel N``: N sequences in one KV cache), and any other engine is a pool of
one (``SoloPool``). A generation ``claim``s a sequence (first come, first served; the free one
whose cache its prompt extends most, else the one that loses least), runs its steps
between ``step`` brackets, and ``release``s it. A pool's sequence gets the scheduler when it
is built: it reports each ``fed`` token, waits for its pending tokens in ``evaluate``, and
``settle``s before a rewind.

There is no scheduling thread. A generation that needs logits runs the pass itself, once
every claimed sequence has fed its next tokens and is done reading the last pass's logits (or
is held at a ``yield`` by its consumer for more than ``grace`` seconds); the pass carries the
pending tokens of all of them, and runs on the engine's own thread (``one_thread``) like every
other call into the engine's library. No lock is held across a ``yield``: a stream abandoned
while suspended for ``stale_after`` seconds loses its sequence to a request that needs one.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from time import monotonic
from typing import Any

from ..errors import QwqEdgeError
from .base import Engine, reusable_prefix

#: How long a pass waits for a generation whose consumer holds it between two steps.
GRACE_SECONDS = 0.01
#: How long a stream may stay suspended at a ``yield`` before a waiting request takes its sequence.
STALE_SECONDS = 2.0


class Claim:
    """One generation's hold on one sequence of the pool."""

    def __init__(self, index: int, engine: Any, cancel: threading.Event) -> None:
        self.index = index
        self.engine = engine
        self.cancel = cancel
        self.stepping = True  # the claimer steps at once
        #: Whether it holds logits it may still read (from the pass that ran its last token to its next feed).
        self.reading = False
        self.error: BaseException | None = None
        self.suspended_since = monotonic()


class Scheduler:
    """Hands a pool's sequences to generations and runs their passes together."""

    def __init__(self, pool: Any, size: int, grace: float = GRACE_SECONDS, stale_after: float = STALE_SECONDS) -> None:
        self.pool = pool
        self.grace = grace
        self.stale_after = stale_after
        self._changed = threading.Condition()
        self._holders: dict[int, Claim | None] = dict.fromkeys(range(size))
        self._used = dict.fromkeys(self._holders, 0.0)  # when each sequence was last claimed
        self._queue: deque[object] = deque()
        self._closed = False
        self._first = 0  # round-robin: which sequence's tokens go first into a full batch
        #: Sequences in the pass running now: the runner reads their tokens outside the lock, so
        #: one released meanwhile is not handed to a new generation until the pass ends.
        self._in_flight: set[int] = set()

    @property
    def active(self) -> list[Claim]:
        """The generations holding a sequence now."""
        return [claim for claim in self._holders.values() if claim is not None]

    # -- generations ---------------------------------------------------------------------

    def claim(self, cancel: threading.Event, tokens: Sequence[int]) -> Claim:
        """Wait (first come, first served) for a free sequence; take the one whose cache
        shares the longest prefix with ``tokens``."""
        ticket = object()
        with self._changed:
            self._queue.append(ticket)
            while (index := self._free(tokens) if self._queue[0] is ticket else None) is None:
                self._changed.wait(self._take_over_stale())
            self._queue.popleft()
            _drop_unrun_tokens(self.pool.sequences[index])
            claim = self._holders[index] = Claim(index, self.pool.sequences[index], cancel)
            self._used[index] = monotonic()
            self._changed.notify_all()  # the next in the queue may take another free sequence
        return claim

    def _free(self, tokens: Sequence[int]) -> int | None:
        """The free sequence whose cache ``tokens`` extends most (keeping at least half of what it
        holds), else the one that loses the fewest cached tokens (then the least recently used):
        a side request that shares only a system prompt never evicts a long conversation that
        another sequence can spare it (the prompt cache keeps what is evicted anyway)."""
        free = [index for index, claim in self._holders.items() if claim is None and index not in self._in_flight]
        if len(free) <= 1:
            return free[0] if free else None
        held = {index: len(self.pool.sequences[index].cached_tokens) for index in free}
        kept = {index: self._kept(index, tokens) for index in free}
        extended = [index for index in free if kept[index] and 2 * kept[index] >= held[index]]
        if extended:
            return max(extended, key=lambda index: kept[index])
        return min(free, key=lambda index: (held[index] - kept[index], self._used[index]))

    def _kept(self, index: int, tokens: Sequence[int]) -> int:
        cached = self.pool.sequences[index].cached_tokens
        return reusable_prefix(cached, tokens) if cached and tokens else 0

    def _take_over_stale(self) -> float | None:
        """Cancel and free a sequence whose stream was abandoned; how long to wait before the next look."""
        now, soonest = monotonic(), None
        for index, claim in self._holders.items():
            if claim is None or claim.stepping:
                continue
            idle = now - claim.suspended_since
            if idle >= self.stale_after:
                claim.cancel.set()
                self._holders[index] = None
                return 0.0
            soonest = min(soonest or self.stale_after, self.stale_after - idle)
        return soonest

    def release(self, claim: Claim) -> None:
        """``claim``'s generation is over (finished, cancelled, closed or taken over)."""
        with self._changed:
            if self._holders[claim.index] is claim:
                self._holders[claim.index] = None
            self._changed.notify_all()

    @contextmanager
    def step(self, claim: Claim) -> Iterator[None]:
        """One step of ``claim``'s generation (the code between two yields)."""
        with self._changed:
            claim.stepping = True
        try:
            yield
        finally:
            with self._changed:
                claim.stepping = False
                claim.suspended_since = monotonic()
                self._changed.notify_all()

    # -- a pool's sequences --------------------------------------------------------------

    def fed(self, sequence: Any) -> None:
        """``sequence`` was fed: it is done with its logits, and has tokens for the next pass."""
        with self._changed:
            claim = self._holders[sequence.index]
            if claim is not None:
                claim.reading = False
                self._changed.notify_all()

    def settle(self, sequence: Any) -> None:
        """Wait until the running pass (if it carries ``sequence``) has ended."""
        with self._changed:
            while sequence.index in self._in_flight:
                self._changed.wait()

    def evaluate(self, sequence: Any) -> None:
        """Wait until the pending tokens of ``sequence`` have been run and their pass has ended:
        run the pass once every claimed sequence is ready, unless another generation's thread
        is running one."""
        with self._changed:
            claim = self._holders[sequence.index]
            if claim is None or claim.engine is not sequence:
                if not self.active:  # a sequence used on its own, outside any generation
                    self._run_alone(sequence)
                return  # else taken over: the generation touches the engine no more
            self._changed.notify_all()
            while self._unevaluated(sequence) and claim.error is None:
                if self._closed:
                    raise QwqEdgeError("the model was closed while a generation was running")
                if not self._in_flight and self._ready():
                    self._run_pass()
                else:
                    self._changed.wait(self._patience())
            error, claim.error = claim.error, None
        if error is not None:
            raise error

    def _unevaluated(self, sequence: Any) -> bool:
        """Its tokens wait for a pass, or the pass running them has not ended: a pass marks a
        sequence's tokens evaluated before it says where their logits are."""
        return bool(sequence.pending) or sequence.index in self._in_flight

    def _run_alone(self, sequence: Any) -> None:
        while sequence.pending:
            if (error := self._run([sequence])) is not None:
                raise error

    def _run_pass(self) -> None:
        """One pass over the ready holders' pending tokens, run by the caller's thread with the
        lock released (the other generations go on streaming meanwhile)."""
        batch = self._batch()
        if not batch:
            return
        for claim in self.active:
            if claim.reading:  # idle with unread logits, which this pass overwrites
                claim.engine.forget_logits()
                claim.reading = False
        error = self._run([claim.engine for claim in batch])
        for claim in batch:
            claim.error = error
            claim.reading = not claim.engine.pending  # it has fresh logits to read

    def _run(self, sequences: list[Any]) -> BaseException | None:
        """``pool.decode(sequences)`` outside the lock (held on entry and on return); its error."""
        self._in_flight = {sequence.index for sequence in sequences}
        self._changed.release()
        try:
            self.pool.decode(sequences)
            error = None
        except Exception as failure:  # every sequence of the failed pass hears of it
            error = failure
        finally:
            self._changed.acquire()
            self._in_flight = set()
            self._changed.notify_all()  # waiters, settles, and a sequence released during the pass
        return error

    def close(self) -> None:
        """Refuse further passes and wait for the one running (the pool is closed by its owner
        next, and a pass over a freed model would crash)."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
            while self._in_flight:
                self._changed.wait()

    def _idle(self, claim: Claim, now: float) -> bool:
        """Held at a ``yield`` past ``grace``: its tokens wait until its thread is back."""
        return not claim.stepping and now - claim.suspended_since >= self.grace

    def _ready(self) -> bool:
        """Some holder has tokens to run, and each is fed and done reading its logits, or idle."""
        now, active = monotonic(), self.active
        return any(c.engine.pending and not self._idle(c, now) for c in active) and all(
            (c.engine.pending and not c.reading) or self._idle(c, now) for c in active
        )

    def _patience(self) -> float | None:
        """How long to sleep before the next look (None: until something changes)."""
        now = monotonic()
        idle = [now - c.suspended_since for c in self.active if not c.stepping]
        return min((self.grace - i for i in idle if i < self.grace), default=None)

    def _batch(self) -> list[Claim]:
        """The holders (not idle) with tokens to run, starting from the next in round-robin order."""
        count, now = len(self._holders), monotonic()
        order = [(self._first + offset) % count for offset in range(count)]
        self._first = (self._first + 1) % count
        claims = [self._holders[index] for index in order]
        return [c for c in claims if c is not None and c.engine.pending and not self._idle(c, now)]


def _drop_unrun_tokens(sequence: Any) -> None:
    """Forget the tokens the last holder fed but never ran: a pass would otherwise run them for
    the new holder while its prefill replaces the sequence's tokens (or restores a cached state)."""
    if getattr(sequence, "pending", 0):
        sequence.rewind(sequence.position - sequence.pending)


class SoloPool:
    """An engine that does not batch, as a pool of one: its one sequence is the engine itself,
    which runs its own passes (``decode`` is never asked for)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sequences = [engine]
        self.scheduler = Scheduler(self, 1)

    def decode(self, sequences: Sequence[Engine]) -> None:
        raise TypeError("an engine that does not batch runs its own passes")
