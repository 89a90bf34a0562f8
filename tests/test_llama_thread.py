"""The one thread that runs every llama.cpp load and pass (``engines/llama_cpp/thread.py``).

The engine-level check (generations from several live threads add no OpenMP workers) is
in ``test_engines.py``; these tests hold the hand-over itself to its promises.
"""

import os
import signal
import threading
import time

import pytest
from conftest import in_threads

from qwq_edge.engines.llama_cpp.thread import iterate_on_llama_thread, on_llama_thread


def test_work_from_any_thread_runs_on_one_thread_and_hands_back_its_result():
    idents = in_threads(lambda i: on_llama_thread(threading.get_ident), 4)
    assert len(set(idents)) == 1 and idents[0] != threading.get_ident()
    assert on_llama_thread(lambda: 6 * 7) == 42


def test_an_error_is_raised_in_the_callers_thread_and_the_thread_goes_on():
    def failing_pass() -> None:
        raise RuntimeError("decode failed")

    with pytest.raises(RuntimeError, match="decode failed"):
        on_llama_thread(failing_pass)
    assert on_llama_thread(lambda: "still serving") == "still serving"


def test_work_that_asks_for_the_thread_from_the_thread_runs_at_once():
    """A load that decodes, say: no deadlock waiting for itself."""
    assert on_llama_thread(lambda: on_llama_thread(lambda: "inner")) == "inner"


def test_a_generator_is_advanced_on_the_thread_one_item_at_a_time():
    seen = []

    def items():
        for item in range(3):
            seen.append(threading.get_ident())
            yield item

    assert list(iterate_on_llama_thread(items())) == [0, 1, 2]
    assert len(set(seen)) == 1 and seen[0] != threading.get_ident()


@pytest.mark.skipif(not hasattr(signal, "SIGINT"), reason="POSIX signals")
def test_ctrl_c_while_waiting_is_raised_once_the_work_is_over():
    """As with a pass run in the caller's own thread: the caller's state never changes under it."""
    finished = threading.Event()

    def slow_pass() -> None:
        time.sleep(0.5)
        finished.set()

    threading.Timer(0.1, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
    with pytest.raises(KeyboardInterrupt):
        on_llama_thread(slow_pass)
    assert finished.is_set()
