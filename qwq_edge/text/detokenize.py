"""Incremental detokenization that is safe across UTF-8 boundaries.

Byte-level BPE tokens can split a multi-byte character (a CJK character, an
emoji) over two tokens. The decoder keeps the incomplete bytes until the rest
arrives, so no replacement characters appear mid-stream.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Iterable


class IncrementalDetokenizer:
    """Turn token ids into text one token at a time."""

    def __init__(self, token_bytes: Callable[[int], bytes]) -> None:
        self._token_bytes = token_bytes
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def add(self, tokens: Iterable[int]) -> str:
        """Text completed by these tokens (possibly empty)."""
        data = b"".join(self._token_bytes(token) for token in tokens)
        return self._decoder.decode(data)

    @property
    def whole(self) -> bool:
        """No character is left incomplete (a cut here splits no UTF-8 character)."""
        return not self._decoder.getstate()[0]

    def flush(self) -> str:
        """Whatever bytes are still pending, decoded with replacement."""
        return self._decoder.decode(b"", final=True)
