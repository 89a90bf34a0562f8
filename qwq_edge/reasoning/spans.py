"""Follow an answer as it streams and say whether the next token is inside code, math or a URL.

The language guard lets Latin through there: a Chinese answer keeps its prose Chinese
but its code ASCII. Recognized: fenced code blocks (three or more backticks, closed
by as many), inline code (closed by the same run of backticks or a line end), LaTeX
math (``$…$``, ``$$…$$``, ``\\(…\\)``, ``\\[…\\]``) and URLs (``http://``,
``https://``, ``www.`` up to a space or a non-ASCII character). Engine-free, like
the marker scanner: it only reads the text.
"""

from __future__ import annotations

PROSE, FENCE, INLINE, MATH, URL = "prose", "fence", "inline", "math", "url"
_URL_STARTS = ("https://", "http://", "www.")
_MATH_OPENERS = {"\\(": "\\)", "\\[": "\\]"}


class SpanScanner:
    """The state (``PROSE``, ``FENCE``, ``INLINE``, ``MATH``, ``URL``) after the text fed so far."""

    def __init__(self) -> None:
        self.state = PROSE
        self._ticks = 0  # a run of backticks not yet settled
        self._run = 0  # the run of backticks that opened the current code span
        self._closer = ""  # what closes the current math span
        self._tail = ""  # the last characters, for two-character delimiters
        self._word = ""  # the current word in prose, for URL starts

    @property
    def in_code(self) -> bool:
        """Inside code, math or a URL, or at a start of one that is not settled yet."""
        return self.state != PROSE or self._ticks > 0 or self._url_start()

    def feed(self, text: str) -> None:
        for char in text:
            if char == "`":
                self._ticks += 1
            else:
                if self._ticks:
                    self._backticks(self._ticks)
                    self._ticks = 0
                self._char(char)
            self._tail = (self._tail + char)[-2:]

    def _backticks(self, run: int) -> None:
        if self.state in (PROSE, URL):
            self.state, self._run = (FENCE if run >= 3 else INLINE), run
        elif (self.state == FENCE and run >= self._run) or (self.state == INLINE and run == self._run):
            self.state = PROSE
        self._word = ""

    def _char(self, char: str) -> None:
        if self.state == PROSE:
            self._prose(char)
        elif self.state == INLINE and char == "\n":
            self.state = PROSE
        elif self.state == MATH:
            self._math(char)
        elif self.state == URL and (char.isspace() or not char.isascii()):
            self.state = PROSE
            self._prose(char)

    def _prose(self, char: str) -> None:
        pair = self._tail[-1:] + char
        if char == "$":
            self.state, self._closer = MATH, "$"
        elif pair in _MATH_OPENERS:
            self.state, self._closer = MATH, _MATH_OPENERS[pair]
        self._word = "" if char.isspace() or not char.isascii() else self._word + char
        if self._word.lower().startswith(_URL_STARTS):
            self.state = URL

    def _math(self, char: str) -> None:
        pair = self._tail[-1:] + char
        if self._closer == "$" and pair == "$$" and self._tail[-2:-1] != "$":
            self._closer = "$$"  # "$$" opens display math
        elif pair == self._closer or (self._closer == "$" and char == "$") or (pair == "\n\n" and self._closer == "$"):
            self.state, self._word = PROSE, ""

    def _url_start(self) -> bool:
        word = self._word.lower()
        return self.state == PROSE and len(word) >= 3 and any(start.startswith(word) for start in _URL_STARTS)
