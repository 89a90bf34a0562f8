"""The language guard: keep an answer (and optionally the thinking) in one language.

QwQ switches languages mid-answer. The guard classifies every token of the
vocabulary once by the scripts its text uses, and bans, at each step, the tokens
whose script lies outside the allowed set; digits, punctuation, math symbols,
whitespace and special tokens are always allowed, and so is what math in a CJK
answer needs (LaTeX commands, one-letter variables after a space). Inside code
blocks, inline code, math and URLs (``spans`` follows them as the answer streams)
Latin is spared, and so are the words the user wrote (``user_terms``).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

LANGUAGE_SCRIPTS: dict[str, frozenset[str]] = {
    "en": frozenset({"latin"}),
    "fr": frozenset({"latin"}),
    "de": frozenset({"latin"}),
    "es": frozenset({"latin"}),
    "zh": frozenset({"han"}),
    "ja": frozenset({"han", "kana"}),
    "ko": frozenset({"hangul"}),
    "ru": frozenset({"cyrillic"}),
}
LANGUAGE_CHOICES = ("auto", *LANGUAGE_SCRIPTS, "off")
_CODE_OPENERS = ("`", "$", "http", "www.")
_SPACED_WORD = re.compile(r"[^\W\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_QUOTED = re.compile(r"[“\"「『`《‘]([^“”\"「」『』`《》‘’\n]{1,40})[”\"」』`》’]")
_RANGES = (
    ("han", 0x3400, 0x4DBF),
    ("han", 0x4E00, 0x9FFF),
    ("han", 0xF900, 0xFAFF),
    ("han", 0x3000, 0x303F),  # CJK punctuation
    ("han", 0xFF00, 0xFFEF),  # full-width forms
    ("kana", 0x3040, 0x30FF),
    ("hangul", 0x1100, 0x11FF),
    ("hangul", 0x3130, 0x318F),
    ("hangul", 0xAC00, 0xD7AF),
    ("cyrillic", 0x0400, 0x04FF),
    ("arabic", 0x0600, 0x06FF),
    ("devanagari", 0x0900, 0x097F),
    ("thai", 0x0E00, 0x0E7F),
    ("greek", 0x0370, 0x03FF),
    ("hebrew", 0x0590, 0x05FF),
)


def char_script(char: str) -> str:
    """``latin``, a named script, or ``common`` (digits, punctuation, symbols, space)."""
    code = ord(char)
    for script, low, high in _RANGES:
        if low <= code <= high:
            return script
    if char.isalpha():
        return "latin" if unicodedata.name(char, "").startswith("LATIN") else "other"
    return "common"


def token_scripts(piece: bytes) -> set[str]:
    """The scripts a token's text uses; a piece of a split multi-byte character is ``partial``."""
    try:
        text = piece.decode("utf-8")
    except UnicodeDecodeError:
        return {"partial"}
    return {char_script(char) for char in text} - {"common"}


def _math(piece: bytes) -> bool:
    """Latin tokens a CJK answer still needs: LaTeX commands and spaced one-letter variables (" x").

    Letters that glue onto a word are banned, or the model spells English from them.
    """
    text = piece.decode("utf-8", errors="ignore")
    return text.lstrip().startswith("\\") or (text[:1].isspace() and sum(ch.isalpha() for ch in text) == 1)


@dataclass(frozen=True)
class LanguageBans:
    """The ids a language guard masks: in ``prose``, and in ``code`` (code blocks, inline
    code, math, URLs), where Latin is spared."""

    prose: frozenset[int]
    code: frozenset[int]

    def allowing(self, tokens: frozenset[int]) -> LanguageBans:
        """These bans with ``tokens`` (the user's own words) allowed everywhere."""
        if not tokens & self.prose:
            return self
        return LanguageBans(self.prose - tokens, self.code - tokens)


def _opens_code(text: str) -> bool:
    """A Latin token that starts code, math or a URL (```python, `x, $x, http), spared in prose too."""
    return text.lstrip().startswith(_CODE_OPENERS)


def language_bans(token_bytes: Callable[[int], bytes], vocab_size: int, language: str) -> LanguageBans:
    """Ids of tokens whose text is in a script outside ``language``'s, in prose and in code."""
    allowed = LANGUAGE_SCRIPTS[language]
    latin_allowed = "latin" in allowed
    banned, latin_only, openers = set(), set(), set()
    for token in range(vocab_size):
        piece = token_bytes(token)
        scripts = token_scripts(piece)
        if "partial" in scripts and not latin_allowed:
            continue  # CJK and Cyrillic text can need byte pieces
        outside = scripts - allowed
        if outside == {"latin"}:
            if _math(piece):
                continue
            latin_only.add(token)
            if _opens_code(piece.decode("utf-8", errors="ignore")):
                openers.add(token)
        if outside:
            banned.add(token)
    return LanguageBans(frozenset(banned - openers), frozenset(banned - latin_only))


def user_terms(text: str) -> set[str]:
    """The words a user wrote that an answer may repeat in any language: every word of a
    spaced script (Latin, Cyrillic, Hangul, …) and every quoted span (a Chinese term in
    quotes; unquoted Chinese is not split into words, so it is not a term)."""
    terms = set(_SPACED_WORD.findall(text))
    terms.update(span.strip() for span in _QUOTED.findall(text) if span.strip())
    return {term for term in terms if any(char.isalpha() for char in term)}


def detect_language(text: str) -> str:
    """The language of a message, from the scripts of its letters (English when Latin or unclear)."""
    counts: dict[str, int] = {}
    for char in text:
        script = char_script(char)
        if script != "common":
            counts[script] = counts.get(script, 0) + 1
    if counts.get("kana"):
        return "ja"
    script = max(counts, key=counts.__getitem__, default="latin")
    return {"han": "zh", "hangul": "ko", "cyrillic": "ru"}.get(script, "en")


def resolve_language(requested: str, message: str) -> str:
    """``auto`` becomes the language of ``message``; a code or ``off`` stays as it is."""
    return detect_language(message) if requested == "auto" else requested
