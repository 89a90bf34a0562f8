"""Several generations of one prompt at once (``n`` choices, votes).

The prompt is evaluated once: the first generation prefills it, the others wait until it has
and then copy its sequence's KV state into theirs (``PooledSequence.copy_prefix``) instead of
running it again; on a model of one sequence they follow one another and keep the prompt the
sequence holds. ``fan_out`` reads each stream in a thread of its own, so that a pool of
several sequences runs their tokens in one pass per step, and merges their events.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..events import ChoiceEvent, Choices, Done, Event, GenerationResult
from .stream import Stream

#: The most generations of one prompt a request may ask for (``n``, ``votes``).
MAX_CHOICES = 8

_END = object()


class SharedPrompt:
    """One prompt's evaluation, shared by several generations."""

    def __init__(self) -> None:
        #: The first generation's sequence while it holds the evaluated prompt (``None`` once it lets go).
        self.source: Any = None
        self.ready = threading.Event()
        #: Held while a copy reads ``source``: the first cannot let its sequence go mid-copy.
        self.copying = threading.Lock()

    def seat(self, first: bool) -> Seat:
        return Seat(self, first)


class Seat:
    """One generation's part in a ``SharedPrompt``: the first evaluates, the others copy."""

    def __init__(self, shared: SharedPrompt, first: bool) -> None:
        self.shared = shared
        self.first = first

    def before_claim(self, cancelled: Callable[[], bool]) -> None:
        """The others take a sequence once the first has evaluated the prompt (or ended), or
        once they are cancelled. Read the first stream first, or with the others at once."""
        while not self.first and not self.shared.ready.wait(0.05) and not cancelled():
            pass

    def after_claim(self, engine: Any, tokens: Sequence[int]) -> None:
        """The others copy the first's evaluated prompt into their sequence, if it is another."""
        if self.first or not hasattr(engine, "copy_prefix"):
            return
        with self.shared.copying:
            source = self.shared.source
            if source is not None and source is not engine:
                engine.copy_prefix(source, tokens)

    def evaluated(self, engine: Any) -> None:
        """The first's prompt is evaluated in ``engine``."""
        if self.first and not self.shared.ready.is_set():
            self.shared.source = engine
            self.shared.ready.set()

    def leaving(self) -> None:
        """The first lets its sequence go (after any copy from it): the others no longer copy
        from it (another request may take it), and they go on if they still wait."""
        if self.first:
            with self.shared.copying:
                self.shared.source = None
            self.shared.ready.set()


def fan_out(streams: Sequence[Stream]) -> Stream:
    """``streams`` run at once, one thread each: their events as ``ChoiceEvent``s as they come
    (each stream's ``Done`` too), then one ``Done`` with a ``Choices`` of every result.
    Cancelling or answering now acts on all of them; an error in one cancels the others."""
    merged = _merged(list(streams))

    def cancel() -> None:
        for stream in streams:
            stream.cancel()

    def answer_now() -> bool:
        return any([stream.answer_now() for stream in streams])

    return Stream(merged, cancel, answer_now)


def _merged(streams: list[Stream]) -> Iterator[Event | ChoiceEvent]:
    events: queue.Queue[tuple[int, object]] = queue.Queue()
    threads = [threading.Thread(target=_pump, args=(i, s, events), daemon=True) for i, s in enumerate(streams)]
    for thread in threads:
        thread.start()
    results: list[GenerationResult | None] = [None] * len(streams)
    left = len(streams)
    try:
        while left:
            index, item = events.get()
            if item is _END:
                left -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                if isinstance(item, Done):
                    results[index] = item.result
                yield ChoiceEvent(index, item)  # type: ignore[arg-type]
    finally:
        if left:  # abandoned, or one failed: the others stop at their next token
            for stream in streams:
                stream.cancel()
        for thread in threads:
            thread.join()
    yield Done(Choices.of(result for result in results if result is not None))


def _pump(index: int, stream: Stream, events: queue.Queue[tuple[int, object]]) -> None:
    """One stream's thread: each event into ``events``, then the end (an error as it is)."""
    try:
        for event in stream:
            events.put((index, event))
    except Exception as error:
        events.put((index, error))
    finally:
        stream.close()
        events.put((index, _END))
