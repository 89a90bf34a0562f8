"""``GenerationOptions``: every per-request option, declared once, checked once.

Each field carries its ``Declared`` metadata: the help text, the range, the CLI flag
names and the HTTP field names. The CLI's click options (``cli/options.py``) and the
server's request model (``server/schemas.py``) are built from it, so adding an option is
one field here plus its behaviour. The Python API takes keyword arguments
(``model.stream(prompt, options, **overrides)``), a saved chat its JSON. Every later
layer reads the fields by name; nothing re-packs them. ``None`` in a sampling field
means "the model's default" (from its catalog entry).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass, field, fields
from functools import lru_cache
from typing import Any, get_type_hints

from ..errors import InvalidRequestError
from ..reasoning.controller import ThinkingLimits
from ..reasoning.effort import EFFORTS, apply_effort
from ..reasoning.formats import FORMAT_CHOICES
from ..reasoning.grammar import answer_grammar, response_schema
from ..reasoning.language import LANGUAGE_CHOICES
from ..sampling import MAX_TOP_LOGPROBS, SamplingParams
from ..text.tool_calls import check_tools, forced_functions, offered_tools

#: The fields that override the model's sampling defaults.
SAMPLING_FIELDS = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "seed",
)

_INT, _FLOAT, _BOOL, _STR = "a whole number", "a number", "true or false", "a string"
_OBJECT, _LIST, _STR_OR_OBJECT = "a JSON object", "a list", "a string or a JSON object"


@dataclass(frozen=True)
class Declared:
    """What the CLI and the HTTP server need to know of one option.

    ``flags``: the CLI's flag names (``()``: ``--`` and the field's name with dashes; ``None``:
    no flag, and ``no_flag`` says why). ``negate``: a flag that sets a boolean to False
    (``--no-think``). ``http``: the request fields that carry it, first found wins (``()``: the
    field's name; ``None``: none, and ``no_http`` says why); ``chat_only``: chat completions
    only. ``low``/``high`` bound a number (``low_open``/``high_open``: the bound itself is out).
    """

    help: str
    flags: tuple[str, ...] | None = ()
    negate: str | None = None
    no_flag: str = ""
    http: tuple[str, ...] | None = ()
    no_http: str = ""
    chat_only: bool = False
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] = ()
    metavar: str | None = None

    def out_of_range(self, value: float) -> str | None:
        """Why ``value`` is out of this option's range, or None."""
        below = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        above = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        return f"must be {self.range_text()}" if below or above else None

    def range_text(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {_number(self.low)}"
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {_number(self.high)}"
        opening, closing = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"in {opening}{_number(self.low)}, {_number(self.high)}{closing}"


def _number(value: float | None) -> str:
    return str(int(value)) if value is not None and float(value).is_integer() else str(value)


def option(default: Any, help: str, **declared: Any) -> Any:
    """A ``GenerationOptions`` field with its declaration (see ``Declared``)."""
    return field(default=default, metadata={"declared": Declared(help, **declared)})


def declaration(name: str) -> Declared:
    """The declaration of the option ``name``."""
    return DECLARED[name]


@dataclass(frozen=True)
class GenerationOptions:
    """How one reply is generated.

    ``max_thinking_tokens`` caps the thinking (the runtime then closes it and the
    model answers); ``max_tokens`` caps thinking and answer together, as OpenAI's
    ``max_completion_tokens`` does (the thinking is closed in time for a short
    answer); ``min_thinking_tokens`` makes it think at least that long (an early
    close becomes "Wait"); ``effort`` (minimal, low, medium, high, max) sets both from
    a table, explicit numbers win. ``max_answer_tokens`` caps the answer;
    ``think=False`` skips the thinking (a hybrid model's template renders its own no-think
    form; ``/no_think`` in a message does the same for it); ``loop_guard`` nudges a thinking that loops
    (masking the loop's n-grams for a stretch), then closes it if it loops again;
    ``language`` (``auto``, ``en``, ``zh``, …, ``off``) keeps the answer (and with
    ``language_in_thinking`` the thinking) in one language, sparing code, math, URLs
    and the user's own words, and makes the runtime's forced texts speak it.
    ``reasoning_format`` overrides the model's (``think``, ``hybrid``, ``qwq-preview``,
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

    max_thinking_tokens: int | None = option(
        None,
        "Thinking budget: at N tokens the runtime closes the thinking and the model answers.",
        flags=("--max-thinking-tokens", "--budget"),
        http=("max_thinking_tokens", "thinking_budget_tokens"),  # the second is llama.cpp's name
        low=0,
    )
    min_thinking_tokens: int | None = option(
        None, 'Think at least N tokens: an earlier close becomes "Wait" (the s1 recipe).', low=0
    )
    max_answer_tokens: int | None = option(None, "Upper bound on answer tokens.", low=0)
    max_tokens: int | None = option(
        None,
        "Upper bound on thinking plus answer tokens (the thinking is closed in time for a short answer).",
        http=("max_completion_tokens", "max_tokens"),
        low=1,
    )
    effort: str | None = option(
        None,
        "Preset budget and minimum.",
        choices=EFFORTS,
        http=("reasoning_effort",),  # it replaces the server's default budget and minimum (server/mapping.py)
    )
    think: bool = option(True, "Answer without thinking.", negate="--no-think")
    loop_guard: bool = option(True, "Do not nudge or close a thinking that repeats itself.", negate="--no-loop-guard")
    language: str = option(
        "off", "Keep the answer in one language (auto: the language of your message).", choices=LANGUAGE_CHOICES
    )
    language_in_thinking: bool = option(False, "Apply --language to the thinking too.")
    reasoning_format: str | None = option(
        None,
        "How the model marks its thinking (think, hybrid, qwq-preview, none); default: read from the model.",
        flags=None,
        no_flag="--reasoning-format is a load option on the CLI (model_options): it applies to every turn",
        choices=FORMAT_CHOICES,
    )
    system: str | None = option(
        None, "System prompt (default: the model's own).", http=None, no_http="a request's messages carry it"
    )
    temperature: float | None = option(None, "0 for greedy decoding.", low=0)
    top_p: float | None = option(
        None, "Nucleus sampling: keep the most likely tokens up to this mass.", low=0, high=1, low_open=True
    )
    top_k: int | None = option(None, "Keep the K most likely tokens (0: all).", low=0)
    min_p: float | None = option(
        None, "Drop tokens below this share of the most likely one's probability.", low=0, high=1, high_open=True
    )
    presence_penalty: float | None = option(
        None, "Subtracted from the logit of every token already generated (OpenAI's meaning).", low=-2, high=2
    )
    frequency_penalty: float | None = option(
        None,
        "Subtracted from a token's logit once per time it was generated (OpenAI's meaning).",
        low=-2,
        high=2,
    )
    repetition_penalty: float | None = option(
        None, "Divide a repeated token's positive logit by this (multiply a negative one).", low=0, low_open=True
    )
    seed: int | None = option(None, "Fixed seed: the same seed gives the same output.")
    top_logprobs: int | None = option(
        None,
        "Give each sampled token's log-probability and the N most likely tokens' there (0-20; in --json).",
        low=0,
        high=MAX_TOP_LOGPROBS,
        metavar="N",
        chat_only=True,  # with OpenAI's logprobs: true (server/mapping.py)
    )
    draft: str = option(
        "off",
        "Speculative decoding, the same tokens faster: ngram drafts from the text itself; auto: the catalog's "
        "draft model for this model; MODEL: a small model with the same tokenizer (default: off).",
        metavar="ngram|auto|MODEL|off",
    )
    response_format: dict[str, Any] | None = option(
        None,
        "OpenAI's response_format: the answer follows a JSON object or a JSON schema.",
        flags=None,
        no_flag="--json-object and --json-schema FILE build it (cli/options.py)",
        chat_only=True,
    )
    tools: list[dict[str, Any]] | None = option(
        None,
        "OpenAI's function tools, offered through the model's chat template.",
        flags=None,
        no_flag="tool definitions are JSON objects: the Python API and the server take them",
        chat_only=True,
    )
    tool_choice: str | dict[str, Any] | None = option(
        None,
        "auto, none, required, or the function the answer must call.",
        flags=None,
        no_flag="it goes with tools",
        chat_only=True,
    )

    def __post_init__(self) -> None:
        for name in DECLARED:
            _check_value(name, getattr(self, name))
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
#: Every option's declaration, in field order.
DECLARED: dict[str, Declared] = {f.name: f.metadata["declared"] for f in fields(GenerationOptions)}
#: Every option's Python type (``int | None``, …), for the request model and the click types.
TYPES: dict[str, Any] = get_type_hints(GenerationOptions)


def _check_value(name: str, value: Any) -> None:
    """The option's type, then its declared range."""
    if value is None and name in _OPTIONAL:
        return
    _check_type(name, value)
    problem = DECLARED[name].out_of_range(value) if _TYPES[name] in (_INT, _FLOAT) else None
    if problem:
        raise InvalidRequestError(f"{name} {problem}, not {value!r}")


def _check_type(name: str, value: Any) -> None:
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
