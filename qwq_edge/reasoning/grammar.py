"""Structured answers: a grammar compiled by llguidance masks the answer's tokens, never the thinking's.

``answer_grammar`` turns a request's ``response_format`` (OpenAI's ``json_object`` or
``json_schema``) or its forced tool call into an llguidance grammar (a JSON schema, or a
Lark rule around one for a ``<tool_call>`` block); it is checked when the options are
made. ``GrammarVocabulary`` wraps one model's vocabulary for llguidance (built once per
model, about half a second for 151k tokens); ``AnswerGrammar`` follows one answer: the
ids the grammar forbids next, as a dense boolean row (the engines apply it to the
logits), the tokens taken, and whether the grammar has ended.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import numpy as np
from llguidance import LLMatcher, LLTokenizer, TokenizerWrapper
from llguidance.numpy import allocate_token_bitmask, fill_next_token_bitmask

from ..errors import InvalidRequestError

#: One-line JSON in the usual spacing (``{"a": 1, "b": [2, 3]}``): a flexible whitespace rule
#: would let a small model pad its answer with newlines until the token bound.
JSON_STYLE = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
RESPONSE_FORMATS = ("text", "json_object", "json_schema")
TOOL_CALL_OPEN, TOOL_CALL_CLOSE = "<tool_call>", "</tool_call>"
_POSITION = re.compile(r"^at \d+\(\d+\): ")  # where in the generated grammar: nothing the user wrote


def response_schema(response_format: dict[str, Any] | None) -> tuple[dict[str, Any] | None, bool]:
    """The JSON schema OpenAI's ``response_format`` asks for (``None`` for text) and whether it is strict."""
    if response_format is None:
        return None, True
    if not isinstance(response_format, dict) or response_format.get("type") not in RESPONSE_FORMATS:
        raise InvalidRequestError(f"response_format's type must be one of {', '.join(RESPONSE_FORMATS)}")
    kind = response_format["type"]
    if kind != "json_schema":
        return ({"type": "object"} if kind == "json_object" else None), True
    spec = response_format.get("json_schema")
    if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
        raise InvalidRequestError('response_format json_schema needs {"json_schema": {"name": …, "schema": {…}}}')
    return spec.get("schema", {}), spec.get("strict") is not False


def answer_grammar(schema: dict[str, Any] | None, strict: bool, functions: list[dict[str, Any]]) -> str | None:
    """The grammar of an answer that is JSON matching ``schema``, or one ``<tool_call>`` block
    (Qwen's format) calling one of ``functions`` (OpenAI's ``function`` objects) with
    arguments that match its parameter schema, or either; ``None`` when neither is asked.
    A non-strict schema may use keywords llguidance does not know (they are ignored)."""
    starts, rules = [], []
    if schema is not None:
        starts.append("answer")
        rules.append(f"answer: %json {_json({**schema, 'x-guidance': {**JSON_STYLE, 'lenient': not strict}})}")
    if functions:
        bodies = [_call_schema(function) for function in functions]
        call = {**(bodies[0] if len(bodies) == 1 else {"anyOf": bodies}), "x-guidance": JSON_STYLE}
        opening, closing = json.dumps(TOOL_CALL_OPEN + "\n"), json.dumps("\n" + TOOL_CALL_CLOSE)
        starts.append("tool_call")
        rules += [f"tool_call: {opening} call {closing}", f"call: %json {_json(call)}"]
    if not starts:
        return None
    grammar = LLMatcher.grammar_from_lark("\n".join([f"start: {' | '.join(starts)}", *rules]))
    problem = LLMatcher.validate_grammar(grammar)
    if problem:
        what = "the JSON schema" if schema is not None else "a tool's parameters"
        raise InvalidRequestError(f"{what} cannot be used: {_POSITION.sub('', problem.splitlines()[0])}")
    return grammar


def _call_schema(function: dict[str, Any]) -> dict[str, Any]:
    """The JSON inside a ``<tool_call>`` block: the function's name and its arguments."""
    return {
        "type": "object",
        "properties": {
            "name": {"const": function["name"]},
            "arguments": function.get("parameters") or {"type": "object"},
        },
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def _json(value: Any) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError) as error:
        raise InvalidRequestError(f"the schema is not JSON: {error}") from None


@dataclass
class _Source:
    """What llguidance's ``TokenizerWrapper`` reads: every token's bytes, the end token, an encoder."""

    tokens: list[bytes]
    eos_token_id: int | None
    encode: Callable[[str], list[int]]
    bos_token_id: int | None = None

    def __call__(self, text: bytes) -> list[int]:
        return self.encode(text.decode("utf-8", "replace"))


class GrammarVocabulary:
    """One model's vocabulary as llguidance needs it (built on first use, then kept)."""

    def __init__(
        self,
        token_bytes: Callable[[int], bytes],
        tokenize: Callable[[str], list[int]],
        vocab_size: int,
        end_of_generation: Collection[int],
    ) -> None:
        self._token_bytes = token_bytes
        self._tokenize = tokenize
        self.vocab_size = vocab_size
        self._end = sorted(end_of_generation)
        self._tokenizer: LLTokenizer | None = None

    def _wrapped(self) -> TokenizerWrapper:
        tokens = [self._token_bytes(token) for token in range(self.vocab_size)]
        return TokenizerWrapper(_Source(tokens, self._end[0] if self._end else None, self._tokenize))

    def matcher(self, grammar: str) -> AnswerGrammar:
        if self._tokenizer is None:
            self._tokenizer = LLTokenizer(self._wrapped(), n_vocab=self.vocab_size, eos_token=self._end)
        return AnswerGrammar(LLMatcher(self._tokenizer, grammar, log_level=0), self.vocab_size)


class AnswerGrammar:
    """One answer's place in its grammar."""

    def __init__(self, matcher: LLMatcher, vocab_size: int) -> None:
        if matcher.is_error():
            raise InvalidRequestError(f"the grammar cannot be used: {matcher.get_error()}")
        self._matcher = matcher
        self._vocab_size = vocab_size
        self._bitmask = allocate_token_bitmask(1, vocab_size)

    def banned_mask(self) -> np.ndarray:
        """``True`` for every id the grammar forbids next (llguidance's bit mask, inverted and unpacked)."""
        fill_next_token_bitmask(self._matcher, self._bitmask)
        forbidden = np.invert(self._bitmask[0]).view(np.uint8)
        return np.unpackbits(forbidden, count=self._vocab_size, bitorder="little").view(bool)

    def take(self, token: int) -> None:
        """The answer took ``token`` (one the mask allowed)."""
        if not self._matcher.consume_token(token):  # pragma: no cover - the mask allowed it
            raise RuntimeError(f"the grammar refused token {token}: {self._matcher.get_error()}")

    @property
    def ended(self) -> bool:
        """Nothing can follow: the answer is complete."""
        return self._matcher.is_stopped()

    @property
    def accepting(self) -> bool:
        return self._matcher.is_accepting()
