"""One thread runs every llama.cpp load and forward pass in the process.

llama.cpp's CPU backend runs its worker threads with OpenMP (libgomp). libgomp keeps a
team of workers for every thread that has started a parallel region, for as long as that
thread lives, and once the teams together hold more threads than there are cores, its
workers stop spinning at the barriers between operations (100 spins instead of 300,000)
and sleep: every barrier then waits for a wake-up. So once two live threads had run
passes (a model used from the main thread and then from a server's worker, the Python
API called from a thread pool, the batching scheduler's thread after a pool's load),
every pass was slower: on 2 cores and the 0.5B model, 31.4 against 21.9 ms per token,
a 4-sequence pass 61–72 against 51 ms. With every load and pass on one long-lived
thread there is one team, whichever thread asks."""

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


class _LlamaThread:
    def __init__(self) -> None:
        self._jobs: SimpleQueue[_Job] = SimpleQueue()
        self._thread: threading.Thread | None = None
        self._starting = threading.Lock()

    def _serve(self) -> None:
        while True:
            self._jobs.get().run()

    def _start_once(self) -> None:
        with self._starting:
            if self._thread is None or not self._thread.is_alive():  # not yet, or not in a forked child
                self._thread = threading.Thread(target=self._serve, name="qwq-edge-llama.cpp", daemon=True)
                self._thread.start()

    def run(self, work: Callable[[], T]) -> T:
        if threading.current_thread() is self._thread:
            return work()
        self._start_once()
        job = _Job(work)
        self._jobs.put(job)
        job.wait()
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[return-value]


_THREAD = _LlamaThread()


def on_llama_thread(work: Callable[[], T]) -> T:
    """``work()``, run on the process's llama.cpp thread (the caller waits for it)."""
    return _THREAD.run(work)


def iterate_on_llama_thread(items: Iterable[T]) -> Iterator[T]:
    """``items``, each one computed on the llama.cpp thread (for a generator that decodes as it goes)."""
    iterator = iter(items)
    while True:
        try:
            item = on_llama_thread(lambda: next(iterator))
        except StopIteration:
            return
        yield item
