"""Detect recursive reasoning loops in streamed thinking text.

QwQ can fall into loops: the same sentence, or a cycle of near-identical
paragraphs, again and again. The detector keeps the recent thinking and fires when
one sentence with real words recurs ``repeats`` times, or when a paragraph nearly
repeats one of the recent paragraphs (same words, Jaccard ≥ 0.9) for the second time.
Legitimate repetition is left alone: a list of numbers or a table changes its
digits from row to row, and lines that are mostly symbols (code, table rules) or
short never count.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[。！？])\s*|\n+")
_WORD = re.compile(r"[^\W\d_]{2,}", re.UNICODE)
MIN_WORDS = 4
MIN_CJK_CHARS = 8
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")
MIN_LETTER_SHARE = 0.6
WINDOW_CHARS = 4000


def normalize_sentence(sentence: str) -> str | None:
    """A comparable form of a sentence, or ``None`` if it is too short or mostly symbols."""
    text = " ".join(sentence.lower().split())
    if len(_WORD.findall(text)) < MIN_WORDS and len(_CJK.findall(text)) < MIN_CJK_CHARS:
        return None
    letters = sum(ch.isalpha() or ch.isspace() for ch in text)
    if letters < MIN_LETTER_SHARE * len(text):
        return None
    return text


def _jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a and b else 0.0


@dataclass
class LoopDetector:
    repeats: int = 3
    paragraph_similarity: float = 0.9
    _text: str = ""
    _sentences: Counter = field(default_factory=Counter)
    _paragraphs: list[set[str]] = field(default_factory=list)
    _near_repeats: int = 0

    def feed(self, text: str) -> bool:
        """Add thinking text; ``True`` when the thinking has started to loop."""
        self._text += text
        looping = False
        while True:
            match = _SENTENCE_END.search(self._text)
            if match is None:
                break
            sentence, boundary = self._text[: match.start()], match.group()
            self._text = self._text[match.end() :]
            looping |= self._sentence(sentence)
            if "\n\n" in boundary:
                looping |= self._paragraph_end()
        if len(self._text) > WINDOW_CHARS:
            self._text = self._text[-WINDOW_CHARS:]
        return looping

    def _sentence(self, sentence: str) -> bool:
        normal = normalize_sentence(sentence)
        if normal is None:
            return False
        self._sentences[normal] += 1
        self._current_paragraph().update(_WORD.findall(normal))
        return self._sentences[normal] >= self.repeats

    def _current_paragraph(self) -> set[str]:
        if not self._paragraphs:
            self._paragraphs.append(set())
        return self._paragraphs[-1]

    def _paragraph_end(self) -> bool:
        done = self._current_paragraph()
        self._paragraphs.append(set())
        if len(done) < MIN_WORDS:
            return False
        if any(_jaccard(done, earlier) >= self.paragraph_similarity for earlier in self._paragraphs[-6:-2]):
            self._near_repeats += 1
        return self._near_repeats >= 2

    def end_sentence(self) -> bool:
        """The text fed so far ends a sentence (the runtime forced text after it); ``True`` when
        that sentence makes a loop."""
        sentence, self._text = self._text, ""
        return self._sentence(sentence)

    def reset(self) -> None:
        """Forget the past (after an intervention, only new text counts)."""
        self._text = ""
        self._sentences.clear()
        self._paragraphs.clear()
        self._near_repeats = 0
