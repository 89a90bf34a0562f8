"""``Stream``: one generation's events, and the two things a caller may do while it runs."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from ..events import Event


class Stream(Iterator[Event]):
    """One generation's events; ``cancel()`` (from any thread) stops it at its next token,
    and it is still read to its ``Done``; ``answer_now()`` (from any thread) ends its thinking."""

    def __init__(self, events: Iterator[Event], cancel: Callable[[], None], answer: Callable[[], bool]) -> None:
        self._events = events
        self._cancel = cancel
        self._answer = answer

    def __next__(self) -> Event:
        return next(self._events)

    def cancel(self) -> None:
        self._cancel()

    def answer_now(self) -> bool:
        """Close the thinking at its next sentence end, with the wrap-up, and let the answer
        follow (a minimum thinking length gives way). ``False`` when the thinking is already
        over (or the generation does not think): then nothing changes."""
        return self._answer()

    def close(self) -> None:
        close = getattr(self._events, "close", None)
        if close is not None:
            close()

    def around(self, events: Iterator[Event]) -> Stream:
        """A stream of ``events`` (read from this one's) that cancels and answers as this one does."""
        return Stream(events, self._cancel, self._answer)
