"""Steer a thinking out of a loop: after the nudge, mask the loop's own n-grams for a stretch.

A nudge alone does not change a small model's course: the looped sentence comes
straight back. So, for ``STRETCH`` sampled tokens after the nudge, the controller bans
(through the mask lever) every token that would continue an n-gram the loop has
already repeated (a no-repeat rule limited to the loop's n-grams), and at a sentence
start the tokens that started the loop's repeated sentences. Then the mask is
released; if the loop comes back, the loop guard closes the thinking.
"""

from __future__ import annotations

import re
from collections import Counter, deque
from collections.abc import Sequence

#: The n of the n-grams: a token is banned when it would complete a repeated n-gram.
NGRAM = 3
#: How many sampled tokens the mask lasts after a nudge.
STRETCH = 64
#: How many recent thinking tokens the loop's n-grams are taken from.
HISTORY = 512

_EMPTY: frozenset[int] = frozenset()
_SENTENCE_START = re.compile(r"(?:[.!?。！？][\"'”’)]*|\n)\s*$")


def starts_sentence(text: str) -> bool:
    """Does a token after ``text`` start a sentence (or a line)?"""
    return not text.strip() or bool(_SENTENCE_START.search(text[-8:]))


class LoopSteer:
    """The recent thinking tokens, and after ``arm`` the mask that keeps the loop from coming back."""

    def __init__(self, ngram: int = NGRAM, stretch: int | None = None) -> None:
        self.ngram = ngram
        self.stretch = STRETCH if stretch is None else stretch
        self.left = 0
        self._history: deque[tuple[int, bool]] = deque(maxlen=HISTORY)
        self._continue: dict[tuple[int, ...], frozenset[int]] = {}
        self._starters = _EMPTY
        self._with_starters: dict[tuple[int, ...], frozenset[int]] = {}

    def record(self, tokens: Sequence[int], sentence_start: bool = False) -> None:
        """Thinking tokens were appended; ``sentence_start``: the first of them starts a sentence."""
        for index, token in enumerate(tokens):
            self._history.append((token, sentence_start and index == 0))

    def arm(self, nudge: Sequence[int] = ()) -> None:
        """The loop guard fired: ban the loop's repeated n-grams and sentence starts for a stretch,
        and the ``nudge``'s n-grams (a small model parrots the nudge into a loop of its own)."""
        tokens = [token for token, _ in self._history]
        n = self.ngram
        grams = Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
        grams.update({tuple(nudge[i : i + n]): 2 for i in range(len(nudge) - n + 1)})
        follow: dict[tuple[int, ...], set[int]] = {}
        for gram, count in grams.items():
            if count >= 2:
                follow.setdefault(gram[:-1], set()).add(gram[-1])
        self._continue = {key: frozenset(nexts) for key, nexts in follow.items()}
        starts = Counter(token for token, start in self._history if start)
        self._starters = frozenset(token for token, count in starts.items() if count >= 2)
        self._with_starters = {}
        self.left = self.stretch

    def banned(self, sentence_start: bool) -> frozenset[int]:
        """The tokens banned at the next step (none once the stretch is over)."""
        if not self.left:
            return _EMPTY
        context = min(self.ngram - 1, len(self._history))
        key = tuple(self._history[index][0] for index in range(-context, 0))
        ban = self._continue.get(key, _EMPTY)
        if not sentence_start or not self._starters:
            return ban
        joined = self._with_starters.get(key)
        if joined is None:
            joined = self._with_starters[key] = ban | self._starters
        return joined

    def sampled(self) -> None:
        """One sampled token of the stretch is done."""
        self.left = max(0, self.left - 1)
