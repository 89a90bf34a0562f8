"""Find a marker in text that arrives in pieces.

A marker such as ``</think>`` or ``**Final Answer**`` can be split over several
tokens. The scanner emits only text that cannot be the start of the marker and
holds back the rest until the next piece settles it.
"""

from __future__ import annotations


def _held_suffix_length(text: str, marker: str) -> int:
    """Length of the longest end of ``text`` that is a proper start of ``marker``."""
    for length in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-length:]):
            return length
    return 0


class MarkerScanner:
    """Split a stream of text at the first occurrence of ``marker``."""

    def __init__(self, marker: str) -> None:
        self.marker = marker
        self._held = ""
        self.found = False

    def feed(self, piece: str) -> tuple[str, str | None]:
        """Return ``(before, after)``.

        ``before`` is text known to come before the marker. ``after`` is ``None``
        while the marker has not been seen; once it is, it holds the text that
        followed the marker in this piece (and ``found`` becomes true).
        """
        text = self._held + piece
        index = text.find(self.marker)
        if index >= 0:
            self._held = ""
            self.found = True
            return text[:index], text[index + len(self.marker) :]
        keep = _held_suffix_length(text, self.marker)
        self._held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep], None

    @property
    def held(self) -> int:
        """How many characters are held back."""
        return len(self._held)

    def flush(self) -> str:
        """Release held-back text at the end of the stream."""
        held, self._held = self._held, ""
        return held
