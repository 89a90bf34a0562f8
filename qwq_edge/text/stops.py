"""Stop strings: end the answer where one of them first appears (OpenAI's ``stop``).

A wrapper over an event stream, not part of the generation loop: the answer text
is held back only while it could still be the start of a stop string, the stop
string itself is never shown, and once one is seen the generation is cancelled and
the result is cut there with ``finish_reason == "stop"``. Stop strings apply to
the answer only: a model's thinking may mention them freely.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence

from ..events import AnswerDelta, Done, Event, GenerationResult


def stop_at(events: Iterator[Event], stops: Sequence[str], cancel: Callable[[], None]) -> Iterator[Event]:
    """``events`` with the answer ended at the first of ``stops``; ``cancel()`` stops the
    generation behind ``events`` (it is still read to its ``Done`` for the counts)."""
    stops = [stop for stop in stops if stop]
    if not stops:
        yield from events
        return
    pending, shown, stopped = "", [], ""
    for event in events:
        if isinstance(event, Done):
            if pending and not stopped:
                shown.append(pending)
                yield AnswerDelta(pending)
            yield Done(_cut(event.result, "".join(shown), stopped) if stopped else event.result)
        elif not isinstance(event, AnswerDelta):
            if not stopped:
                yield event
        elif not stopped:
            text, pending, stopped = _split(pending + event.text, stops)
            if stopped:
                cancel()
            if text:
                shown.append(text)
                yield dataclasses.replace(event, text=text)


def _split(text: str, stops: Sequence[str]) -> tuple[str, str, str]:
    """(text to show, text to hold back, the stop string found first or "")."""
    found = [(index, stop) for index, stop in ((text.find(stop), stop) for stop in stops) if index >= 0]
    if found:
        index, stop = min(found)
        return text[:index], "", stop
    held = max((_overlap(text, stop) for stop in stops), default=0)
    return text[: len(text) - held], text[len(text) - held :], ""


def _overlap(text: str, stop: str) -> int:
    """The length of the longest end of ``text`` that begins ``stop``."""
    for size in range(min(len(text), len(stop) - 1), 0, -1):
        if stop.startswith(text[-size:]):
            return size
    return 0


def _cut(result: GenerationResult, answer: str, stop: str) -> GenerationResult:
    stats = dataclasses.replace(result.stats, finish_reason="stop", stop_string=stop)
    return dataclasses.replace(result, answer=answer, stats=stats)
