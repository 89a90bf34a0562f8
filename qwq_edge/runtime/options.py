"""``GenerationOptions``: every per-request option, in one place, checked once.

The CLI builds one from its shared click options, the Python API from keyword
arguments (``model.stream(prompt, options, **overrides)``), a saved chat from its
JSON, and the server from a request body. Every later layer reads the fields by
name; nothing re-packs them. ``None`` in a sampling field means "the model's
default" (from its catalog entry).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Any

from ..errors import InvalidRequestError
from ..reasoning.controller import ThinkingLimits
from ..reasoning.effort import EFFORTS, apply_effort
from ..reasoning.formats import FORMAT_CHOICES
from ..reasoning.grammar import answer_grammar, response_schema
from ..reasoning.language import LANGUAGE_CHOICES
from ..sampling import SamplingParams
from ..text.tool_calls import check_tools, forced_functions, offered_tools

#: The fields that override the model's sampling defaults.
SAMPLING_FIELDS = ("temperature", "top_p", "top_k", "min_p", "presence_penalty", "repetition_penalty", "seed")

_INT, _FLOAT, _BOOL, _STR = "a whole number", "a number", "true or false", "a string"
_OBJECT, _LIST, _STR_OR_OBJECT = "a JSON object", "a list", "a string or a JSON object"


@dataclass(frozen=True)
class GenerationOptions:
    """How one reply is generated.

    ``max_thinking_tokens`` caps the thinking (the runtime then closes it and the
    model answers); ``max_tokens`` caps thinking and answer together, as OpenAI's
    ``max_completion_tokens`` does (the thinking is closed in time for a short
    answer); ``min_thinking_tokens`` makes it think at least that long (an early
    close becomes "Wait"); ``effort`` (low, medium, high, max) sets both from
    a table, explicit numbers win. ``max_answer_tokens`` caps the answer;
    ``think=False`` skips the thinking; ``loop_guard`` nudges a thinking that loops
    (masking the loop's n-grams for a stretch), then closes it if it loops again;
    ``language`` (``auto``, ``en``, ``zh``, …, ``off``) keeps the answer (and with
    ``language_in_thinking`` the thinking) in one language, sparing code, math, URLs
    and the user's own words, and makes the runtime's forced texts speak it.
    ``reasoning_format`` overrides the model's (``think``, ``qwq-preview``,
    ``none``); ``system`` replaces the model's default system prompt. The sampling
    fields override the model's defaults; a fixed ``seed`` makes a reply
    reproducible on the same engine. ``draft`` speculates: ``ngram`` drafts tokens from
    the text itself, a model path drafts with that small model (same tokenizer), ``off``
    does not; the tokens are the same either way, only faster.
    ``response_format`` is OpenAI's (``{"type": "json_object"}``, or ``json_schema`` with a
    ``schema`` and ``strict``): the answer (never the thinking) is held to it by a grammar,
    and ends where the grammar ends. ``tools`` (OpenAI's function tools) are offered to the
    model through its chat template; ``tool_choice`` is ``auto``, ``none`` (not offered),
    ``required`` or ``{"type": "function", "function": {"name": …}}`` (the answer is then a
    call whose arguments match that function's parameters).
    """

    max_thinking_tokens: int | None = None
    min_thinking_tokens: int | None = None
    max_answer_tokens: int | None = None
    max_tokens: int | None = None
    effort: str | None = None
    think: bool = True
    loop_guard: bool = True
    language: str = "off"
    language_in_thinking: bool = False
    reasoning_format: str | None = None
    system: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    presence_penalty: float | None = None
    repetition_penalty: float | None = None
    seed: int | None = None
    draft: str = "off"
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None

    def __post_init__(self) -> None:
        for field in fields(self):
            _check_type(field.name, getattr(self, field.name))
        _check_choice("effort", self.effort, (*EFFORTS, None))
        _check_choice("language", self.language, LANGUAGE_CHOICES)
        _check_choice("reasoning_format", self.reasoning_format, (*FORMAT_CHOICES, None))
        self.thinking_limits()  # budget, minimum and answer bound are consistent
        self.sampling(SamplingParams())  # sampling values are in range
        check_tools(self.tools, self.tool_choice)
        self.answer_grammar()  # the schema and the tools' parameters compile

    def replace(self, **changes: Any) -> GenerationOptions:
        """A copy with ``changes`` (field names) applied and checked."""
        _check_names(changes)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-able."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> GenerationOptions:
        """The options a ``to_dict`` (or a request body) holds; unknown keys and wrong types are errors."""
        if not isinstance(data, dict):
            raise InvalidRequestError(f"options must be an object of option names to values, not {_kind(data)}")
        _check_names(data)
        return cls(**data)

    def sampling(self, defaults: SamplingParams) -> SamplingParams:
        """``defaults`` (the model's) with this request's sampling fields applied."""
        return defaults.replace(**{name: getattr(self, name) for name in SAMPLING_FIELDS})

    def answer_grammar(self) -> str | None:
        """The llguidance grammar the answer follows, or ``None`` when it is free text."""
        forced = forced_functions(self.tools, self.tool_choice)
        return _grammar(json.dumps([self.response_format, forced]))  # key order is property order

    def offered_tools(self) -> list[dict[str, Any]]:
        """The tools the prompt offers the model."""
        return offered_tools(self.tools, self.tool_choice)

    def thinking_limits(self, model_budgets: dict[str, int] | None = None) -> ThinkingLimits:
        """Budget, minimum and answer bound after the effort preset (``model_budgets``:
        a catalog entry's own budgets per effort level)."""
        budget, minimum = apply_effort(self.effort, self.max_thinking_tokens, self.min_thinking_tokens, model_budgets)
        return ThinkingLimits(budget, self.max_answer_tokens, self.think, minimum, self.loop_guard, self.max_tokens)


@lru_cache(maxsize=64)
def _grammar(key: str) -> str | None:
    """``answer_grammar`` for one JSON-encoded (response format, forced functions): compiled once."""
    response_format, functions = json.loads(key)
    return answer_grammar(*response_schema(response_format), functions)


_KINDS = {
    "int | None": _INT,
    "float | None": _FLOAT,
    "bool": _BOOL,
    "dict[str, Any] | None": _OBJECT,
    "list[dict[str, Any]] | None": _LIST,
    "str | dict[str, Any] | None": _STR_OR_OBJECT,
}
_TYPES: dict[str, str] = {f.name: _KINDS.get(str(f.type), _STR) for f in fields(GenerationOptions)}
_OPTIONAL = {f.name for f in fields(GenerationOptions) if str(f.type).endswith("| None")}


def _check_type(name: str, value: Any) -> None:
    if value is None and name in _OPTIONAL:
        return
    expected = _TYPES[name]
    ok = {
        _INT: isinstance(value, int) and not isinstance(value, bool),
        _FLOAT: isinstance(value, (int, float)) and not isinstance(value, bool),
        _BOOL: isinstance(value, bool),
        _STR: isinstance(value, str),
        _OBJECT: isinstance(value, dict),
        _LIST: isinstance(value, list),
        _STR_OR_OBJECT: isinstance(value, str | dict),
    }[expected]
    if not ok:
        raise InvalidRequestError(f"option {name} must be {expected}, not {_kind(value)}")


def _check_choice(name: str, value: Any, choices: tuple[Any, ...]) -> None:
    if value not in choices:
        named = ", ".join(str(choice) for choice in choices if choice is not None)
        raise InvalidRequestError(f"unknown {name.replace('_', ' ')} {value!r}; choose one of {named}")


def _check_names(names: Any) -> None:
    known = _TYPES.keys()
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(str(name), known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise InvalidRequestError(f"unknown option {name!r}{hint}")


def _kind(value: Any) -> str:
    return "null" if value is None else f"{type(value).__name__} {value!r}"[:60]
