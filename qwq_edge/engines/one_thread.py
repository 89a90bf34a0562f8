"""One long-lived thread that runs every call of an engine library, whichever thread asks.

Both engines need it (``engines/llama_cpp/thread``, ``engines/mlx/thread``): llama.cpp's OpenMP workers
slow down once several threads have run passes, and MLX runs a graph only on the thread
that built it and aborts a process that exits while a thread that used it is ending.
The caller waits; a Ctrl-C meanwhile is raised once the job is over.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from queue import SimpleQueue
from typing import TypeVar

T = TypeVar("T")


class _Job:
    def __init__(self, work: Callable[[], object]) -> None:
        self.work = work
        self.done = threading.Event()
        self.result: object = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.work()
        except BaseException as error:  # handed to the caller's thread, which raises it
            self.error = error
        self.done.set()

    def wait(self) -> None:
        """Wait for the job; a Ctrl-C meanwhile is raised once it is over, as it would be after
        a pass run in the caller's own thread (the caller's state must not change under the pass)."""
        interrupted: BaseException | None = None
        while not self.done.is_set():
            try:
                self.done.wait()
            except KeyboardInterrupt as error:
                interrupted = error
        if interrupted is not None:
            raise interrupted


class OneThread:
    """A long-lived daemon thread that runs the jobs handed to it, one at a time."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._jobs: SimpleQueue[_Job] = SimpleQueue()
        self._thread: threading.Thread | None = None
        self._starting = threading.Lock()

    def _serve(self) -> None:
        while True:
            self._jobs.get().run()

    def _start_once(self) -> None:
        with self._starting:
            if self._thread is None or not self._thread.is_alive():  # not yet, or not in a forked child
                self._thread = threading.Thread(target=self._serve, name=self.name, daemon=True)
                self._thread.start()

    def run(self, work: Callable[[], T]) -> T:
        """``work()``, run on this thread (the caller waits for it; called there, it runs at once)."""
        if threading.current_thread() is self._thread:
            return work()
        self._start_once()
        job = _Job(work)
        self._jobs.put(job)
        job.wait()
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[return-value]

    def iterate(self, items: Iterable[T]) -> Iterator[T]:
        """``items``, each one computed on this thread (for a generator that computes as it goes)."""
        iterator = iter(items)
        while True:
            try:
                item = self.run(lambda: next(iterator))
            except StopIteration:
                return
            yield item
