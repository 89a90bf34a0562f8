"""Prompt lookup: drafts copied from the text itself (the prompt and what was generated).

Reasoning and editing repeat text: the problem restated, an equation carried to the
next line, a source file rewritten with one change. When the last few tokens occurred
before, the tokens that followed them then are a good guess for what follows now.
"""

from __future__ import annotations

from collections.abc import Sequence

#: The longest suffix looked up; longer matches are rare and change little.
MAX_MATCH = 8


class NgramIndex:
    """Where each n-gram (n = 1 … ``MAX_MATCH``) of a token history last occurred with a
    token after it, so that the longest suffix match is a few dictionary look-ups."""

    def __init__(self, tokens: Sequence[int] = ()) -> None:
        self.tokens: list[int] = []
        #: ``_next[n - 1][ngram]``: the position right after the n-gram's latest occurrence.
        self._next: list[dict[tuple[int, ...], int]] = [{} for _ in range(MAX_MATCH)]
        self.extend(tokens)

    def extend(self, tokens: Sequence[int]) -> None:
        history, tables = self.tokens, self._next
        for token in tokens:
            end = len(history)
            for n in range(1, min(MAX_MATCH, end) + 1):
                tables[n - 1][tuple(history[end - n : end])] = end
            history.append(token)

    def truncate(self, length: int) -> None:
        """Forget everything from ``length`` on (a rewind; rare, so the index is rebuilt)."""
        if length < len(self.tokens):
            kept = self.tokens[:length]
            self.tokens, self._next = [], [{} for _ in range(MAX_MATCH)]
            self.extend(kept)

    def propose(self, limit: int) -> tuple[list[int], int]:
        """Up to ``limit`` tokens that followed the longest earlier occurrence of the
        history's suffix, and that suffix's length (0 and no tokens when nothing matches)."""
        history = self.tokens
        for n in range(min(MAX_MATCH, len(history)), 0, -1):
            start = self._next[n - 1].get(tuple(history[-n:]))
            if start is not None:
                return history[start : start + limit], n
        return [], 0
