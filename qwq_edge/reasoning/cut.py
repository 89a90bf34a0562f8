"""Where to end a thinking whose budget is spent: at a sentence, else at a word, never inside a character.

At the budget the runtime closes the thinking at the last paragraph, line or sentence
end within the last 10% of the budget (rewinding the tokens after it), else at the
last word end (looking back at most ``WORD_REACH`` tokens, or 10% of the budget),
else at the last token boundary that does not split a UTF-8 character.

A text shown to the user is never taken back: while a cut is still possible, the
tracker says how far the text may be shown (``release_point``), holding back what a
cut could drop — the last partial word before the window, and in the window what
follows its last sentence end.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .language import char_script

#: How many tokens a word cut may look back when 10% of the budget is fewer.
WORD_REACH = 8
#: Kinds of cut at a sentence or longer unit, preferred within the window.
SENTENCE_KINDS = ("paragraph", "line", "sentence")

_SENTENCE_END = re.compile(r"[.!?。！？…][\"'”’)\]*]*[ \t]*$")
_LIST_NUMBER = re.compile(r"(?:^|\n)[ \t]*(?:\d{1,3}|[A-Za-z])[.)][ \t]*$")
_FULL_STOPS = "。！？"
_INNER_WORD = "_'’-"
_JOINERS = ".,:/"


def word_char(char: str) -> bool:
    return char.isalnum() or char in _INNER_WORD


def boundary_kind(text: str, offset: int) -> str | None:
    """What ends at ``offset`` in ``text``: ``paragraph``, ``line``, ``sentence``, ``word`` or ``None``.

    What follows ``offset`` settles a boundary (a period followed by a digit is a
    decimal point); at the end of ``text`` only what the text itself shows counts.
    """
    before, after = text[max(0, offset - 64) : offset], text[offset : offset + 1]
    if not before.strip():
        return None
    stripped = before.rstrip(" \t")
    if stripped.endswith("\n"):
        return "paragraph" if stripped.endswith("\n\n") or after == "\n" else "line"
    settled = stripped != before or stripped[-1] in _FULL_STOPS or after.isspace()
    if settled and _SENTENCE_END.search(stripped) and not _LIST_NUMBER.search(stripped):
        return "sentence"
    last = before[-1]
    if last in _JOINERS and before[-2:-1].isalnum() and (after.isalnum() or not after):
        return None  # 3.14, 1,000, a/b, e.g; at the end of the text "4." may still become "4.5"
    if not word_char(last) or (after and not word_char(after)) or char_script(last) in ("han", "kana"):
        return "word"
    return None


@dataclass
class Mark:
    """Where one sampled thinking token began: its engine position, its offset in the block's
    text, the turn's thinking tokens before it, and whether the text before it is whole
    (no UTF-8 character split)."""

    position: int
    offset: int
    count: int
    whole: bool = True
    kind: str | None = None


@dataclass(frozen=True)
class Cut:
    """Where the thinking ends: ``mark`` is the first token taken back (``None``: none is)."""

    kind: str
    mark: Mark | None = None

    def describe(self, dropped: int) -> str:
        """Where the cut fell, in words (the ``budget`` intervention's detail)."""
        where = {"paragraph": "a paragraph end", "line": "a line end", "sentence": "a sentence end"}
        place = where.get(self.kind, "a word end" if self.kind == "word" else "a token boundary")
        taken = f", {dropped} token{'s' if dropped != 1 else ''} taken back" if dropped else ""
        return f"closed at {place}{taken}"


class CutTracker:
    """The cut candidates of one thinking block, for a ``budget`` counted over the turn; no
    cut goes below the ``minimum`` thinking."""

    def __init__(self, budget: int | None, minimum: int = 0) -> None:
        self.budget = budget
        self.window_start = max(budget - budget // 10, minimum) if budget is not None else 0
        self.reach_start = max(budget - max(budget // 10, WORD_REACH), minimum) if budget is not None else 0
        self.marks: list[Mark] = []
        self.floor = 0
        self._unsettled: list[Mark] = []
        self._last_sentence: Mark | None = None
        self._last_word: Mark | None = None
        self._last_whole: Mark | None = None
        self._offsets: dict[int, int] = {}

    def add(self, mark: Mark) -> None:
        """A sampled token begins at ``mark`` (its text is added to the block's text next)."""
        self.marks.append(mark)
        self._unsettled.append(mark)

    def settle(self, text: str) -> None:
        """Classify the boundaries that ``text`` (the block's text so far) now has a character after."""
        while self._unsettled and self._unsettled[0].offset < len(text):
            mark = self._unsettled.pop(0)
            if not mark.whole or mark.offset < self.floor:
                continue
            self._last_whole = mark
            mark.kind = boundary_kind(text, mark.offset)
            if mark.kind is not None and mark.count >= self.reach_start:
                self._last_word = mark
            if mark.kind in SENTENCE_KINDS and mark.count >= self.window_start:
                self._last_sentence = mark

    def drop(self, mark: Mark) -> None:
        """Forget ``mark`` and the marks after it (their tokens were taken back)."""
        del self.marks[self.marks.index(mark) :]
        self._unsettled = [m for m in self._unsettled if m.count < mark.count]
        self.fence(mark.offset)

    def fence(self, offset: int) -> None:
        """The runtime wrote text up to ``offset``: no cut may go back before it (it is shown)."""
        self.floor = offset
        self._last_sentence = self._last_word = self._last_whole = None

    def plan(self, text: str, whole: bool) -> Cut:
        """Where to cut now that the budget is spent; ``whole``: no character is left incomplete
        (else the end of ``text`` lies before the tokens that hold the incomplete one)."""
        end_mark = None if whole else self._whole_end(len(text))
        end_ok = (whole or end_mark is not None) and len(text) > self.floor
        end = boundary_kind(text, len(text)) if end_ok else None
        if end in SENTENCE_KINDS:
            return Cut(end, end_mark)
        if self._last_sentence is not None:
            return Cut(self._last_sentence.kind or "sentence", self._last_sentence)
        if end is not None:
            return Cut("word", end_mark)
        if self._last_word is not None:
            return Cut("word", self._last_word)
        if end_ok:
            return Cut("token", end_mark)
        return Cut("token", self._last_whole or next((m for m in self.marks if m.whole), None))

    def _whole_end(self, end: int) -> Mark | None:
        """The whole boundary at the end of the text, before tokens that completed no character."""
        for mark in reversed(self.marks):
            if mark.offset < end:
                return None
            if mark.whole:
                return mark
        return None

    def release_point(self, text: str, count: int, visible: int) -> int:
        """How much of ``text`` may be shown when ``count`` thinking tokens are done and the
        first ``visible`` characters are known not to belong to the end marker."""
        if self.budget is None or count < self.reach_start:
            return visible
        if self._last_sentence is not None:
            return min(visible, self._last_sentence.offset)
        if boundary_kind(text, len(text)) is not None:
            word = len(text)
        elif self._last_word is not None:
            word = self._last_word.offset
        else:
            word = self._first_offset(self.reach_start, len(text))
        window = self._first_offset(self.window_start, len(text)) if count >= self.window_start else len(text)
        return min(visible, word, window)

    def _first_offset(self, count: int, end: int) -> int:
        """The offset of the boundary after ``count`` thinking tokens (not before the floor)."""
        offset = self._offsets.get(count)
        if offset is None:
            offset = next((m.offset for m in self.marks if m.count >= count), None)
            if offset is None:
                return max(end, self.floor)
            self._offsets[count] = offset
        return max(offset, self.floor)
