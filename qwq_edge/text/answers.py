"""Final answers out of model output, compared with math-aware normalisation.

The extractor takes the last ``\\boxed{…}`` (braces balanced), else the last number or
simple expression. Normalisation removes LaTeX spacing and wrappers, turns
``\\frac{a}{b}`` into ``a/b``, drops thousands separators and units written as
``\\text{…}``; two answers are equal when their normal forms match or they are the
same number (``0.5`` = ``1/2`` = ``\\frac{1}{2}``, ``2`` = ``2.0``).
"""

from __future__ import annotations

import re
from fractions import Fraction

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")
_FRAC_START = re.compile(r"\\[dt]?frac(?=\{)")
_SPACING = re.compile(r"\\[,;:!]|\\left|\\right|\\displaystyle|\$|\s+")
_TEXT = re.compile(r"\\(?:text|mathrm|textbf|mbox)\{([^{}]*)\}")


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{…}`` (or ``\\fbox{…}``), braces balanced."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    index = text.index("{", start) + 1
    depth = 1
    for position in range(index, len(text)):
        depth += {"{": 1, "}": -1}.get(text[position], 0)
        if depth == 0:
            return text[index:position]
    return None


def extract_answer(text: str) -> str | None:
    """The model's final answer: the last boxed expression, else the last number."""
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed.strip()
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


def _brace_group(text: str, start: int) -> tuple[str, int] | None:
    """The ``{…}`` group opening at ``start`` and the index after it."""
    if start >= len(text) or text[start] != "{":
        return None
    depth = 0
    for position in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[position], 0)
        if depth == 0:
            return text[start + 1 : position], position + 1
    return None


def _fractions(text: str) -> str:
    """``\\frac{a}{b}`` (also ``dfrac``, ``tfrac``, nested) → ``(a)/(b)``."""
    match = _FRAC_START.search(text)
    if match is None:
        return text
    numerator = _brace_group(text, match.end())
    denominator = _brace_group(text, numerator[1]) if numerator else None
    if numerator is None or denominator is None:
        return text
    replaced = f"({_fractions(numerator[0])})/({_fractions(denominator[0])})"
    return text[: match.start()] + replaced + _fractions(text[denominator[1] :])


def _unwrap(text: str) -> str:
    """Drop parentheses that wrap the whole answer, and those around single terms of a fraction."""
    while text.startswith("(") and text.endswith(")") and _brace_balanced(text[1:-1]):
        text = text[1:-1]
    return re.sub(r"\(([\w.\\{}]+)\)", r"\1", text)


def _brace_balanced(text: str) -> bool:
    depth = 0
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            return False
    return depth == 0


def normalize(answer: str) -> str:
    """A canonical text form of an answer."""
    has_number = re.search(r"\d", _TEXT.sub("", answer))
    text = _TEXT.sub("" if has_number else r"\1", answer)  # units go, words stay
    text = re.sub(r"\\sqrt(\w)", r"\\sqrt{\1}", text).replace("\\%", "%")
    text = _SPACING.sub("", _fractions(text)).rstrip(".")
    text = re.sub(r"^[a-zA-Z]=", "", text)
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?%?", text):
        text = text.replace(",", "")
    return _unwrap(text).lower()


def as_number(answer: str) -> Fraction | None:
    """The answer as an exact number, if it is one (integer, decimal, fraction, percent)."""
    text = normalize(answer).rstrip("%")
    try:
        return Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None


def answers_match(predicted: str | None, expected: str) -> bool:
    if predicted is None:
        return False
    a, b = as_number(predicted), as_number(expected)
    if a is not None and b is not None:
        return a == b
    return normalize(predicted) == normalize(expected)
