"""Request bodies as pydantic models: the OpenAI fields, and qwq-edge's extension fields.

The generation options' fields are built from their declarations (``runtime/options.py``:
type, range, HTTP names), so a new option is a request field with no edit here.

Types are strict (a string where a number belongs is a 400, not a guess); fields a
client sends that this server does not know are ignored, as OpenAI-compatible
servers do, except those whose meaning cannot be honoured (``n`` above 1, ``echo``,
a completion's log-probabilities), which ``unsupported`` names.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, create_model

from ..runtime.fanout import MAX_CHOICES
from ..runtime.options import DECLARED, TYPES, Declared
from .errors import APIError, bad_request


class Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class ContentPart(Body):
    type: str
    text: str | None = None


class FunctionCall(Body):
    name: str
    arguments: str = "{}"


class ToolCallIn(Body):
    """A call of an earlier assistant turn, as the client sends it back."""

    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None


class StreamOptions(Body):
    include_usage: bool = False


class TemplateKwargs(Body):
    enable_thinking: bool | None = None


#: Whole numbers a request may give: what the engines take (a C ``int``), a seed any 64-bit
#: integer (``mapping.engine_seed`` makes it the engines' unsigned one).
INT_RANGE = (-(2**31), 2**31 - 1)
INT_RANGES = {"seed": (-(2**63), 2**64 - 1)}


def _declared_field(name: str, declared: Declared) -> tuple[Any, Any]:
    """A request field for the option ``name``: its type, range and HTTP names, from its declaration."""
    low, high = declared.low, declared.high
    if TYPES[name] == int | None:
        least, most = INT_RANGES.get(name, INT_RANGE)
        low, high = max(least, low if low is not None else least), min(most, high if high is not None else most)
    bounds = {
        ("gt" if declared.low_open else "ge"): low,
        ("lt" if declared.high_open else "le"): high,
    }
    names = declared.http or (name,)
    alias = AliasChoices(*names) if names != (name,) else None
    return TYPES[name] | None, Field(None, validation_alias=alias, **{k: v for k, v in bounds.items() if v is not None})


#: The options a request carries, under their own names (``http`` names are aliases).
_OPTION_FIELDS = {name: d for name, d in DECLARED.items() if d.http is not None and not d.chat_only}
_CHAT_OPTION_FIELDS = {name: d for name, d in DECLARED.items() if d.http is not None and d.chat_only}


def option_fields(*excluded: str) -> dict[str, tuple[Any, Any]]:
    """Every generation option a request may carry (by its name and HTTP names), but ``excluded``:
    for ``create_model``, so that another door's request keeps qwq-edge's extensions."""
    return {
        name: _declared_field(name, d) for name, d in DECLARED.items() if d.http is not None and name not in excluded
    }


#: How long the model stays loaded once idle, from this request on (Ollama's ``keep_alive``:
#: seconds, or ``30s``, ``5m``, ``1h``; negative: always); an extension field on the other doors.
KeepAlive = str | int | float | None


class _Request(Body):
    """What both endpoints take besides the generation options."""

    model: str | None = None
    keep_alive: KeepAlive = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1)
    logprobs: bool | int | None = None
    return_token_ids: bool = False
    #: qwq-edge's: every count and timing of the generation (``GenerationStats``) in the last ``qwq_edge``.
    return_stats: bool = False


#: Both endpoints' fields: every generation option (``runtime/options.py`` declares them), the rest above.
GenerationFields = create_model(
    "GenerationFields",
    __base__=_Request,
    **{name: _declared_field(name, declared) for name, declared in _OPTION_FIELDS.items()},
)


class _ChatFields(GenerationFields):  # type: ignore[misc,valid-type]
    messages: list[ChatMessage] = Field(min_length=1)
    #: With it, each answer token's log-probability (``top_logprobs``: and the most likely tokens').
    logprobs: bool | None = None
    chat_template_kwargs: TemplateKwargs | None = None


ChatCompletionRequest = create_model(
    "ChatCompletionRequest",
    __base__=_ChatFields,
    **{name: _declared_field(name, declared) for name, declared in _CHAT_OPTION_FIELDS.items()},
)


class CompletionRequest(GenerationFields):  # type: ignore[misc,valid-type]
    prompt: str | list[int] | list[str]
    echo: bool = False
    best_of: int | None = None


#: Fields whose values this server cannot honour: field → (is it acceptable?, why not).
_UNSUPPORTED = {
    "n": (lambda v: 1 <= v <= MAX_CHOICES, f"n must be in [1, {MAX_CHOICES}]"),
    "best_of": (lambda v: v in (None, 1), "only best_of=1 is supported"),
    "echo": (lambda v: not v, "echo is not supported"),
}
#: The same for completions only.
_UNSUPPORTED_IN_COMPLETIONS = {
    "n": (lambda v: v <= 1, "n above 1 is for chat completions"),
    "logprobs": (lambda v: not v, "log-probabilities are given on chat completions (logprobs, top_logprobs)"),
}


def parse(model: type[Body], body: Any) -> Any:
    """``body`` (decoded JSON) as ``model``, or a 400 naming the first bad field."""
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object", code="invalid_json")
    try:
        request = model.model_validate(body)
    except ValidationError as error:
        raise _validation_error(error) from None
    unsupported(request)
    return request


def unsupported(request: Body) -> None:
    """A 400 for a field set to what this server cannot do."""
    checks = _UNSUPPORTED | (_UNSUPPORTED_IN_COMPLETIONS if isinstance(request, CompletionRequest) else {})
    for name, (acceptable, why) in checks.items():
        if name in type(request).model_fields and not acceptable(getattr(request, name)):
            raise bad_request(why, param=name, code="unsupported_value")


def _union_tag(part: Any) -> bool:
    """Pydantic names the member of a union it tried (``str``, ``list[int]``) in an error's location."""
    return isinstance(part, str) and (part in ("str", "int", "bool", "float", "none") or "[" in part)


def _validation_error(error: ValidationError) -> APIError:
    first = error.errors()[0]
    location = [str(part) for part in first["loc"] if not _union_tag(part)]
    param = ".".join(location) or None
    message = first["msg"] if first["type"] != "missing" else "a required field is missing"
    return bad_request(f"{param}: {message}" if param else message, param=param)
