"""Ctrl-C during a generation cancels it (or, in ``chat``, first answers now) instead of killing the process."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType

from ..runtime.model import Model
from ..runtime.stream import Stream


@dataclass
class Interrupt:
    """Whether Ctrl-C was pressed inside ``cancel_on_interrupt`` (``requested``: to stop), and
    whether it asked for the answer now (``answering``)."""

    requested: bool = False
    answering: bool = False


@contextmanager
def cancel_on_interrupt(model: Model) -> Iterator[Interrupt]:
    """While inside, SIGINT cancels the model's running generation (it ends cleanly) and is noted."""
    interrupt = Interrupt()

    def handler(signum: int, frame: FrameType | None) -> None:
        interrupt.requested = True
        model.cancel()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield interrupt
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def answer_now_on_interrupt(stream: Stream) -> Iterator[Interrupt]:
    """While inside, the first Ctrl-C while ``stream`` thinks answers now; a Ctrl-C after that
    (or while it answers) cancels it. The handler only sets flags and asks the stream: the
    renderer reads ``answering`` and says so."""
    interrupt = Interrupt()

    def handler(signum: int, frame: FrameType | None) -> None:
        if not interrupt.answering and stream.answer_now():
            interrupt.answering = True
            return
        interrupt.requested = True
        stream.cancel()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield interrupt
    finally:
        signal.signal(signal.SIGINT, previous)
