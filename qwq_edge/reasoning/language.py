"""The language guard: keep an answer (and optionally the thinking) in one language.

QwQ switches languages mid-answer. The guard classifies every token of the
vocabulary once by the scripts its text uses, and bans, at each step, the tokens
whose script lies outside the allowed set; digits, punctuation, math symbols,
whitespace and special tokens are always allowed, and so is what math in a CJK
answer needs (LaTeX commands, one-letter variables after a space). Code in a CJK
answer is not: use ``en`` or ``off`` for code.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable

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


def banned_tokens(token_bytes: Callable[[int], bytes], vocab_size: int, language: str) -> frozenset[int]:
    """Ids of tokens whose text is in a script outside ``language``'s."""
    allowed = LANGUAGE_SCRIPTS[language]
    latin_allowed = "latin" in allowed
    banned = set()
    for token in range(vocab_size):
        piece = token_bytes(token)
        scripts = token_scripts(piece)
        if "partial" in scripts and not latin_allowed:
            continue  # CJK and Cyrillic text can need byte pieces
        outside = scripts - allowed
        if outside == {"latin"} and _math(piece):
            continue
        if outside:
            banned.add(token)
    return frozenset(banned)


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
