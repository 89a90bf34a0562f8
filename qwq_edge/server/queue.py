"""Up to ``parallel`` generations at a time (the model's), the others waiting in a bounded
first-come queue. A request with ``n`` choices takes ``n`` places (one alone may take them all).

The engine is blocking, so a generation runs in a thread of its own and hands its
events to the event loop through an ``asyncio.Queue``; the loop stays free to
stream, accept and refuse. A consumer that goes away (a client disconnect, a
stop button) stops its own generation at the next token and gives its place to the
next request as soon as the thread has let go of it (one token's time).
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections import deque
from collections.abc import AsyncGenerator, Callable, Iterator
from contextlib import aclosing

from ..events import Event
from .errors import QueueFullError, ShuttingDownError

_END = object()


class Admission:
    """An admitted request's places: waiting, then running, then released (once)."""

    def __init__(self, runner: Runner, places: int = 1) -> None:
        self._runner = runner
        self.places = places
        self.released = False
        #: Called once, when the place is given back.
        self.on_release: Callable[[], object] = lambda: None

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._runner._admitted -= self.places
            self.on_release()


class Runner:
    """Admits up to ``max_queue`` waiting requests besides the ``parallel`` running ones,
    and runs up to ``parallel`` generations at a time."""

    def __init__(self, max_queue: int, parallel: int = 1, on_wait: Callable[[float], object] | None = None) -> None:
        self.max_queue = max_queue
        self.parallel = parallel
        #: Told how long each request waited for its turn (the metrics).
        self.on_wait = on_wait or (lambda seconds: None)
        self._admitted = 0
        self._running = 0
        self._waiters: deque[tuple[asyncio.Future[None], int]] = deque()  # each with its places
        self._stops: set[Callable[[BaseException], None]] = set()
        self._closing = False
        self._seconds = 5.0  # a running average of how long a generation takes, for Retry-After

    @property
    def busy(self) -> bool:
        return self._running > 0

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return max(0, self._admitted - self._running)

    def admit(self, places: int = 1) -> Admission:
        """``places`` in the queue, or ``QueueFullError`` (429) when they would take more than
        ``max_queue`` besides the running ones (a request alone is always admitted)."""
        if self._closing:
            raise ShuttingDownError()
        if self._admitted and self._admitted + places > self.max_queue + self.parallel:
            # a place frees up when the running generation ends: about one generation's time
            raise QueueFullError(self.waiting, min(max(1, math.ceil(self._seconds)), 60))
        self._admitted += places
        return Admission(self, places)

    async def events(
        self, admission: Admission, start: Callable[[], Iterator[Event]], cancel: Callable[[], None]
    ) -> AsyncGenerator[Event, None]:
        """Wait for a place, run ``start()``'s events in a thread and yield them here;
        ``cancel`` stops that generation."""
        try:
            loop = asyncio.get_running_loop()
            asked = loop.time()
            await self._take_turn(admission.places)
            try:
                began = loop.time()
                self.on_wait(began - asked)
                async with aclosing(self._run(start, cancel)) as events:
                    async for event in events:
                        yield event
                self._seconds = 0.8 * self._seconds + 0.2 * (loop.time() - began)
            finally:
                self._hand_over(admission.places)
        finally:
            admission.release()

    def shutdown(self) -> None:
        """Every waiting and running request ends with ``ShuttingDownError``."""
        self._closing = True
        while self._waiters:
            waiter, _ = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(ShuttingDownError())
        for stop in list(self._stops):
            stop(ShuttingDownError())

    def _fits(self, places: int) -> bool:
        """Whether ``places`` more may run now (more than ``parallel`` when nothing runs)."""
        return self._running == 0 or self._running + places <= self.parallel

    async def _take_turn(self, places: int) -> None:
        if self._fits(places) and not self._waiters:
            self._running += places
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((waiter, places))
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._hand_over(places)  # the turn came as this waiter was cancelled: pass it on
            elif (waiter, places) in self._waiters:
                self._waiters.remove((waiter, places))
                self._wake()  # the next may fit where this one did not
            raise

    def _hand_over(self, places: int) -> None:
        self._running -= places
        self._wake()

    def _wake(self) -> None:
        """Give their turn to the first waiters that fit, in order."""
        while self._waiters:
            waiter, places = self._waiters[0]
            if waiter.done():
                self._waiters.popleft()
            elif self._fits(places):
                self._waiters.popleft()
                self._running += places
                waiter.set_result(None)
            else:
                return

    async def _run(
        self, start: Callable[[], Iterator[Event]], cancel: Callable[[], None]
    ) -> AsyncGenerator[Event, None]:
        loop = asyncio.get_running_loop()
        items: asyncio.Queue[object] = asyncio.Queue()
        abandon = threading.Event()
        finished = asyncio.Event()

        def put(item: object) -> None:
            loop.call_soon_threadsafe(items.put_nowait, item)

        def produce() -> None:
            try:
                _produce(start, put, abandon)
            finally:
                loop.call_soon_threadsafe(finished.set)

        def stop(error: BaseException | None = None) -> None:
            abandon.set()
            cancel()
            if error is not None:
                items.put_nowait(error)

        self._stops.add(stop)
        threading.Thread(target=produce, name="qwq-edge-generation", daemon=True).start()
        try:
            while (item := await items.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                yield item  # type: ignore[misc]
        finally:
            self._stops.discard(stop)
            if not finished.is_set():
                stop()
                await asyncio.shield(finished.wait())


def _produce(start: Callable[[], Iterator[Event]], put: Callable[[object], None], abandon: threading.Event) -> None:
    """The generation thread: every event to ``put``, then ``_END``; an error is put as it is."""
    try:
        events = start()
        try:
            for event in events:
                put(event)
                if abandon.is_set():
                    break
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()
    except Exception as error:
        put(error)
    finally:
        put(_END)
