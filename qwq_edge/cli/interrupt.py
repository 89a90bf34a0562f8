"""Ctrl-C during a generation cancels it instead of killing the process."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from ..model import Model


@contextmanager
def cancel_on_interrupt(model: Model) -> Iterator[None]:
    """While inside, SIGINT cancels the model's running generation (it ends cleanly)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        model.cancel()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
