"""Whose turn it is on a model that serves one generation at a time.

A generation owns the model from its first step to its end, but holds no lock
while it is suspended at a ``yield``: a stream that its caller abandons (never
iterated again, never closed) cannot block the model for good. A new request
waits while the owner keeps stepping; an owner that has stayed suspended for
``stale_after`` seconds is taken over: it is cancelled, and if it is ever
resumed it only finishes its bookkeeping (it touches the engine no more). A
stream that is garbage-collected or closed gives its turn back at once.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from time import monotonic


class Turn:
    """One generation's claim on the model."""

    def __init__(self, cancel: threading.Event | None = None) -> None:
        self.cancel = cancel or threading.Event()
        self.stepping = False
        self.suspended_since = monotonic()


class Turns:
    """Hands the model to one ``Turn`` at a time."""

    def __init__(self, stale_after: float = 2.0) -> None:
        self.stale_after = stale_after
        self._changed = threading.Condition()
        self._owner: Turn | None = None

    @property
    def owner(self) -> Turn | None:
        return self._owner

    def claim(self, cancel: threading.Event | None = None, prompt: Sequence[int] = ()) -> Turn:
        """Wait for the model; take it over from an owner suspended too long (``prompt``:
        unused here, where there is one cache)."""
        turn = Turn(cancel)
        with self._changed:
            while self._owner is not None:
                owner = self._owner
                idle = monotonic() - owner.suspended_since
                if not owner.stepping and idle >= self.stale_after:
                    owner.cancel.set()
                    break
                self._changed.wait(timeout=None if owner.stepping else self.stale_after - idle)
            self._owner = turn
        return turn

    @contextmanager
    def step(self, turn: Turn) -> Iterator[None]:
        """One step of ``turn``'s generation (the code between two yields)."""
        with self._changed:
            turn.stepping = True
        try:
            yield
        finally:
            with self._changed:
                turn.stepping = False
                turn.suspended_since = monotonic()
                self._changed.notify_all()

    def release(self, turn: Turn) -> None:
        """``turn`` is over (finished, closed, collected or taken over)."""
        with self._changed:
            if self._owner is turn:
                self._owner = None
            self._changed.notify_all()
