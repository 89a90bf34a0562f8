"""Request bodies as pydantic models: the OpenAI fields, and qwq-edge's extension fields.

Types are strict (a string where a number belongs is a 400, not a guess); fields a
client sends that this server does not know are ignored, as OpenAI-compatible
servers do, except those whose meaning cannot be honoured (``n`` above 1, ``echo``,
log-probabilities), which ``unsupported`` names.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError

from .errors import APIError, bad_request


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class ContentPart(_Body):
    type: str
    text: str | None = None


class FunctionCall(_Body):
    name: str
    arguments: str = "{}"


class ToolCallIn(_Body):
    """A call of an earlier assistant turn, as the client sends it back."""

    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None


class StreamOptions(_Body):
    include_usage: bool = False


class TemplateKwargs(_Body):
    enable_thinking: bool | None = None


class GenerationFields(_Body):
    """What both endpoints take: sampling, bounds and the reasoning controls."""

    model: str | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0)
    top_p: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = 1
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logprobs: bool | int | None = None
    # extension fields (qwq-edge's names; thinking_budget_tokens is llama.cpp's)
    max_thinking_tokens: int | None = Field(
        None, ge=0, validation_alias=AliasChoices("max_thinking_tokens", "thinking_budget_tokens")
    )
    min_thinking_tokens: int | None = Field(None, ge=0)
    max_answer_tokens: int | None = Field(None, ge=0)
    reasoning_effort: str | None = None
    language: str | None = None
    language_in_thinking: bool | None = None
    loop_guard: bool | None = None
    think: bool | None = None
    reasoning_format: str | None = None
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    draft: str | None = None
    return_token_ids: bool = False


class ChatCompletionRequest(GenerationFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    chat_template_kwargs: TemplateKwargs | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None


class CompletionRequest(GenerationFields):
    prompt: str | list[int] | list[str]
    echo: bool = False
    best_of: int | None = None


#: Fields whose values this server cannot honour: field → (is it acceptable?, why not).
_UNSUPPORTED = {
    "n": (lambda v: v == 1, "only n=1 is supported"),
    "best_of": (lambda v: v in (None, 1), "only best_of=1 is supported"),
    "echo": (lambda v: not v, "echo is not supported"),
    "logprobs": (lambda v: not v, "log-probabilities are not supported"),
}


def parse(model: type[_Body], body: Any) -> Any:
    """``body`` (decoded JSON) as ``model``, or a 400 naming the first bad field."""
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object", code="invalid_json")
    try:
        request = model.model_validate(body)
    except ValidationError as error:
        raise _validation_error(error) from None
    unsupported(request)
    return request


def unsupported(request: _Body) -> None:
    """A 400 for a field set to what this server cannot do."""
    for name, (acceptable, why) in _UNSUPPORTED.items():
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
