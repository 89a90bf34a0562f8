"""One thinking block as it streams: its text, its end marker, its cut candidates, what is shown."""

from __future__ import annotations

from .cut import Cut, CutTracker, Mark
from .markers import MarkerScanner


class ThinkingBlock:
    """The raw text of one thinking block (the model's and the runtime's), split at the end marker.

    ``release`` hands out the text to show, never beyond what the marker scanner holds
    back or what a budget cut could still take back.
    """

    def __init__(self, marker: str, budget: int | None, minimum: int = 0) -> None:
        self.marker = marker
        self.raw = ""
        self.shown = 0
        self.scanner = MarkerScanner(marker)
        self.cuts = CutTracker(budget, minimum)

    def add_token(self, position: int, count: int, whole: bool) -> None:
        """A sampled token at engine ``position`` is next; ``count``: the turn's thinking tokens before it."""
        self.cuts.add(Mark(position, len(self.raw), count, whole))

    def feed(self, text: str) -> tuple[str, int | None]:
        """Add text; return the part known to be thinking and, once the end marker is seen,
        its offset (else ``None``)."""
        start = len(self.raw) - self.scanner.held
        before, after = self.scanner.feed(text)
        self.raw += text
        self.cuts.settle(self.raw)
        return before, (start + len(before) if after is not None else None)

    def visible(self) -> int:
        """How far the text is known not to be part of the end marker."""
        return len(self.raw) - self.scanner.held

    def release(self, upto: int) -> str:
        """The text from what was shown up to ``upto``, now shown."""
        if upto <= self.shown:
            return ""
        text, self.shown = self.raw[self.shown : upto], upto
        return text

    def release_safe(self, count: int) -> str:
        """The text that no budget cut can take back any more (``count``: the turn's thinking tokens)."""
        return self.release(self.cuts.release_point(self.raw, count, self.visible()))

    def fence(self) -> None:
        """The runtime wrote text: it is shown, and no cut goes back before it."""
        self.cuts.fence(len(self.raw))

    def cut(self, whole: bool) -> Cut:
        """Where the budget cut falls; the text after it is dropped, the marker scan starts afresh."""
        cut = self.cuts.plan(self.raw, whole)
        if cut.mark is not None:
            self.take_back(cut.mark)
        self.scanner = MarkerScanner(self.marker)
        return cut

    def take_back(self, mark: Mark, upto: int | None = None) -> None:
        """Drop the tokens from ``mark`` on (and the text from ``upto``, default the mark's offset)."""
        self.cuts.drop(mark)
        self.raw = self.raw[: mark.offset if upto is None else upto]
        self.shown = min(self.shown, len(self.raw))
        self.scanner = MarkerScanner(self.marker)

    def first_mark_before(self, offset: int) -> Mark:
        """The last token that began at or before ``offset`` (the first one if none did)."""
        return next((m for m in reversed(self.cuts.marks) if m.offset <= offset), self.cuts.marks[0])

    @property
    def sampled(self) -> int:
        """How many sampled tokens the block holds."""
        return len(self.cuts.marks)
