"""Prompt lookup: drafts copied from the text itself (the prompt and what was generated).

Reasoning and editing repeat text: the problem restated, an equation carried to the
next line, a source file rewritten with one change. When the last few tokens occurred
before, the tokens that followed them then are a good guess for what follows now.
"""

from __future__ import annotations

from collections.abc import Sequence

#: The longest suffix looked up in the tables.
MAX_MATCH = 8
#: How far back a match of ``MAX_MATCH`` tokens is followed to choose among its earlier
#: occurrences: in a text that repeats itself with variations (a loop, a list, a refactor),
#: the occurrence with the longest shared context is the one that continues the same way.
CONTEXT_STEPS = (16, 32, 64)
#: How many recent occurrences of each ``MAX_MATCH``-gram are compared.
KEPT = 16


class NgramIndex:
    """Where each n-gram (n = 1 … ``MAX_MATCH``) of a token history last occurred with a
    token after it (for ``MAX_MATCH``, its last ``KEPT`` occurrences), so that the longest
    suffix match is a few dictionary look-ups and a few slice comparisons."""

    def __init__(self, tokens: Sequence[int] = ()) -> None:
        self.tokens: list[int] = []
        #: ``_next[n - 1][ngram]``: the position right after the n-gram's latest occurrence.
        self._next: list[dict[tuple[int, ...], int]] = [{} for _ in range(MAX_MATCH - 1)]
        #: ``_after[ngram]``: the positions right after the latest occurrences of a ``MAX_MATCH``-gram.
        self._after: dict[tuple[int, ...], list[int]] = {}
        self.extend(tokens)

    def extend(self, tokens: Sequence[int]) -> None:
        history, tables = self.tokens, self._next
        for token in tokens:
            end = len(history)
            for n in range(1, min(MAX_MATCH - 1, end) + 1):
                tables[n - 1][tuple(history[end - n : end])] = end
            if end >= MAX_MATCH:
                seen = self._after.setdefault(tuple(history[end - MAX_MATCH : end]), [])
                seen.append(end)
                del seen[:-KEPT]
            history.append(token)

    def truncate(self, length: int) -> None:
        """Forget everything from ``length`` on (a rewind; rare, so the index is rebuilt)."""
        if length < len(self.tokens):
            kept = self.tokens[:length]
            self.tokens, self._next, self._after = [], [{} for _ in range(MAX_MATCH - 1)], {}
            self.extend(kept)

    def propose(self, limit: int) -> tuple[list[int], int]:
        """Up to ``limit`` tokens that followed the longest earlier occurrence of the
        history's suffix, and that suffix's length (0 and no tokens when nothing matches)."""
        history = self.tokens
        after = self._after.get(tuple(history[-MAX_MATCH:])) if len(history) >= MAX_MATCH else None
        if after:  # the occurrence sharing the most context; of equals, the latest
            start = max(reversed(after), key=self._shared)
            return history[start : start + limit], MAX_MATCH
        for n in range(min(MAX_MATCH - 1, len(history)), 0, -1):
            start = self._next[n - 1].get(tuple(history[-n:]))
            if start is not None:
                return history[start : start + limit], n
        return [], 0

    def _shared(self, start: int) -> int:
        """How many tokens before ``start`` equal the history's last ones (``MAX_MATCH`` known,
        then in the steps of ``CONTEXT_STEPS``)."""
        history, end, shared = self.tokens, len(self.tokens), MAX_MATCH
        for step in CONTEXT_STEPS:
            if start < step or history[start - step : start] != history[end - step :]:
                break
            shared = step
        return shared
