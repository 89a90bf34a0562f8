"""Continuous batching: several generations, each in its own thread, share one forward pass per step.

An engine pool (``engines.base.EnginePool``) holds several sequences in one KV cache; each
generation claims one (first come, first served; the free one whose cache holds most of its
prompt, else the one used least recently) and runs ``generate_step`` on it as on any engine,
with its own controller, sampler, options and cancel. The scheduler's one decoding thread
runs a pass as soon as every claimed sequence has fed its next tokens and is done reading
the last pass's logits (or is not stepping, held at a ``yield`` by its consumer, for more
than ``grace`` seconds); the pass carries the pending tokens of all of them. So the pass
runs while the generations' threads still stream their last tokens, a sequence that needs
logits waits only for what is left of it, no logits are overwritten while a thread still
reads them, a new request joins at the next pass (its prompt in it), and a finished or
cancelled one leaves at once.

Like ``turns``, no lock is held across a ``yield``: a stream that is abandoned suspended for
``stale_after`` seconds loses its sequence to a request that needs one.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from time import monotonic

from ..engines.base import BatchedSequence, EnginePool, reusable_prefix

#: How long a pass waits for a generation whose consumer holds it between two steps.
GRACE_SECONDS = 0.01


class Claim:
    """One generation's hold on one sequence of the pool."""

    def __init__(self, engine: BatchedSequence, cancel: threading.Event) -> None:
        self.engine = engine
        self.cancel = cancel
        self.stepping = True  # the claimer steps at once
        #: Whether it holds logits it may still read (from the pass that ran its last token to its next feed).
        self.reading = False
        self.error: BaseException | None = None
        self.suspended_since = monotonic()


class Scheduler:
    """Hands the pool's sequences to generations and runs their passes together."""

    def __init__(self, pool: EnginePool, grace: float = GRACE_SECONDS, stale_after: float = 2.0) -> None:
        self.pool = pool
        self.grace = grace
        self.stale_after = stale_after
        lock = threading.Lock()
        self._changed = threading.Condition(lock)  # claimers: a sequence was freed
        self._work = threading.Condition(lock)  # the decoding thread: a holder's state changed
        self._done = threading.Condition(lock)  # sequences waiting for logits: a pass ended
        self._holders: dict[int, Claim | None] = dict.fromkeys(range(len(pool.sequences)))
        self._used = dict.fromkeys(self._holders, 0.0)  # when each sequence was last claimed
        self._queue: deque[object] = deque()
        self._decoder: threading.Thread | None = None
        self._closed = False
        self._first = 0  # round-robin: which sequence's tokens go first into a full batch
        #: Sequences in the pass running now: the decoding thread reads their tokens outside the
        #: lock, so one released meanwhile is not handed to a new generation until the pass ends.
        self._in_flight: set[int] = set()
        for index, engine in enumerate(pool.sequences):
            engine.evaluate = lambda index=index: self._evaluate(index)
            engine.fed = lambda index=index: self._fed(index)
            engine.settle = lambda index=index: self._settle(index)

    @property
    def active(self) -> list[Claim]:
        """The generations holding a sequence now."""
        return [claim for claim in self._holders.values() if claim is not None]

    def claim(self, cancel: threading.Event, tokens: Sequence[int]) -> Claim:
        """Wait (first come, first served) for a free sequence; take the one whose cache
        shares the longest prefix with ``tokens``."""
        ticket = object()
        with self._changed:
            self._queue.append(ticket)
            while (index := self._free(tokens) if self._queue[0] is ticket else None) is None:
                self._changed.wait(self._take_over_stale())
            self._queue.popleft()
            claim = self._holders[index] = Claim(self.pool.sequences[index], cancel)
            if self._decoder is None:
                self._decoder = threading.Thread(target=self._decode_forever, name="qwq-edge-batch", daemon=True)
                self._decoder.start()
            self._used[index] = monotonic()
        return claim

    def _free(self, tokens: Sequence[int]) -> int | None:
        """The free sequence whose cache holds at least half of ``tokens`` (the most), else the
        one used least recently, so that a short shared start does not evict a long cache."""
        free = [index for index, claim in self._holders.items() if claim is None and index not in self._in_flight]
        if not free:
            return None
        cached = self.pool.sequences
        best = max(free, key=lambda index: reusable_prefix(cached[index].cached_tokens, tokens) if tokens else 0)
        if tokens and 2 * reusable_prefix(cached[best].cached_tokens, tokens) >= len(tokens):
            return best
        return min(free, key=lambda index: self._used[index])

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
            for index, holder in self._holders.items():
                if holder is claim:
                    self._holders[index] = None
            self._changed.notify_all()
            self._work.notify()

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
                self._work.notify()

    def _fed(self, index: int) -> None:
        """Sequence ``index`` was fed: it is done with its logits, and has tokens for the next pass."""
        with self._changed:
            claim = self._holders[index]
            if claim is not None:
                claim.reading = False
                self._work.notify()

    def _settle(self, index: int) -> None:
        """Wait until the running pass (if it carries sequence ``index``) has ended."""
        with self._changed:
            while index in self._in_flight:
                self._done.wait()

    def _evaluate(self, index: int) -> None:
        """Wait until the pending tokens of sequence ``index`` have been run."""
        claim = self._holders[index]
        if claim is None:  # taken over: the generation touches the engine no more
            return
        with self._changed:
            # Its tokens may be pending without a feed (logits forgotten while it was held idle,
            # the other generations since gone): the decoding thread must look again.
            self._work.notify()
            while claim.engine.pending and claim.error is None:
                self._done.wait()
            error, claim.error = claim.error, None
        if error is not None:
            raise error

    def _decode_forever(self) -> None:
        """The one thread that runs passes: llama.cpp's worker threads stay with one caller."""
        while True:
            with self._changed:
                while not self._closed and not self._ready():
                    self._work.wait(self._patience())
                if self._closed:
                    return
                batch = self._batch()
                if not batch:  # the last runnable one turned idle in between
                    continue
                self._in_flight = {self.pool.sequences.index(claim.engine) for claim in batch}
                for claim in self.active:
                    if claim.reading:  # idle with unread logits, which this pass overwrites
                        claim.engine.forget_logits()
                        claim.reading = False
            self._run(batch)

    def close(self) -> None:
        """Stop the decoding thread, after the pass it may be running (the pool is closed by
        its owner next, and a pass over a freed model would crash)."""
        with self._changed:
            self._closed = True
            self._work.notify()
            decoder = self._decoder
        if decoder is not None and decoder is not threading.current_thread():
            decoder.join()

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

    def _run(self, batch: list[Claim]) -> None:
        error: BaseException | None = None
        try:
            self.pool.decode([claim.engine for claim in batch])
        except Exception as failure:  # every sequence of the failed pass hears of it
            error = failure
        with self._changed:
            for claim in batch:
                claim.error = error
                claim.reading = not claim.engine.pending  # it has fresh logits to read
            self._in_flight = set()
            self._done.notify_all()
            self._changed.notify_all()  # a sequence released during the pass is free now
