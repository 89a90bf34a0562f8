"""Ctrl-C during a generation cancels it instead of killing the process."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType

from ..runtime.model import Model


@dataclass
class Interrupt:
    """Whether Ctrl-C was pressed inside ``cancel_on_interrupt``."""

    requested: bool = False


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
