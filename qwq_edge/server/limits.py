"""What a request may hold, checked while it is read and parsed, before any tokenizing.

The body is read in chunks and refused (413) as soon as it passes ``max_body_bytes``;
the JSON is strict (no ``NaN``, ``Infinity`` or a number too large for a float) and at most
``MAX_DEPTH`` levels deep; a chat has at most ``MAX_MESSAGES`` messages, and neither one
message nor the whole prompt (messages and tool definitions) may pass ``max_prompt_chars``.
A client that leaves while sending its body raises ``ClientGone`` (logged as 499).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from starlette.requests import Request

from .errors import APIError, bad_request

#: The default body limit: far above any prompt a context holds.
MAX_BODY_BYTES = 16 * 1024 * 1024
#: Characters of prompt per token of context, by default: a token is 3 to 4 characters of
#: English and fewer of most other languages, so a prompt past this cannot fit anyway.
CHARS_PER_TOKEN = 8
MAX_MESSAGES = 4096
MAX_DEPTH = 64

_SURROGATE = re.compile("[\ud800-\udfff]")


class ClientGone(Exception):
    """The client disconnected before its request was read."""


@dataclass(frozen=True)
class Limits:
    """The server's limits on one request (``max_prompt_chars``: see ``prompt_chars_for``)."""

    max_body_bytes: int = MAX_BODY_BYTES
    max_prompt_chars: int = CHARS_PER_TOKEN * 32768
    max_messages: int = MAX_MESSAGES
    max_depth: int = MAX_DEPTH


def prompt_chars_for(context_length: int) -> int:
    """The default prompt limit for a model with this context."""
    return CHARS_PER_TOKEN * context_length


async def read_body(request: Request, limit: int) -> bytes:
    """The body, read chunk by chunk; 413 once it passes ``limit`` bytes (or says it will)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks, size = [], 0
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _too_large(limit: int) -> APIError:
    message = f"the request body is larger than this server takes ({limit:,} bytes)"
    return APIError(413, message, code="request_too_large")


def decode_json(raw: bytes, max_depth: int = MAX_DEPTH) -> Any:
    """The body as JSON, strictly: a 400 for what is not JSON, ``NaN``/``Infinity``, a number
    out of a float's range, nesting deeper than ``max_depth``, or text that is not Unicode."""
    try:
        value = json.loads(raw, parse_constant=_no_constant, parse_float=_finite)
    except RecursionError:
        raise _too_deep(max_depth) from None
    except (ValueError, UnicodeDecodeError) as error:
        detail = f": {error}" if isinstance(error, _NotJSON) else ""
        raise bad_request(f"the request body is not valid JSON{detail}", code="invalid_json") from None
    _check_tree(value, max_depth)
    return value


class _NotJSON(ValueError):
    """A value Python's parser takes that JSON does not have."""


def _no_constant(name: str) -> Any:
    raise _NotJSON(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotJSON(f"{text[:20]} is out of range for a number")
    return value


def _check_tree(value: Any, max_depth: int) -> None:
    """Depth and text, without recursion (a deep value must not crash the check)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise bad_request(
                    "the request body has a lone surrogate (\\ud800-\\udfff): not text", code="invalid_json"
                )
        elif isinstance(item, (dict, list)):
            if depth > max_depth:
                raise _too_deep(max_depth)
            children = item.items() if isinstance(item, dict) else ((None, child) for child in item)
            for key, child in children:
                if key is not None:
                    stack.append((key, depth))
                stack.append((child, depth + 1))


def _too_deep(max_depth: int) -> APIError:
    return bad_request(f"the request body is nested more than {max_depth} levels deep", code="invalid_json")


def check_prompt(body: Any, limits: Limits) -> None:
    """A 400 for a chat with too many messages, or a message or prompt with too many characters."""
    messages = getattr(body, "messages", None)
    if messages is not None and len(messages) > limits.max_messages:
        raise bad_request(
            f"the chat has {len(messages):,} messages; this server takes at most {limits.max_messages:,}",
            param="messages",
            code="too_many_messages",
        )
    sizes = [(f"messages.{i}.content", _chars(message.content)) for i, message in enumerate(messages or ())]
    prompt = getattr(body, "prompt", None)
    if prompt is not None:
        sizes.append(("prompt", _chars(prompt)))
    tools = getattr(body, "tools", None)
    if tools:
        sizes.append(("tools", len(json.dumps(tools))))
    for param, size in sizes:
        _check_size(param, size, limits.max_prompt_chars, "it")
    total = sum(size for _, size in sizes)
    _check_size("messages" if messages else "prompt", total, limits.max_prompt_chars, "the prompt")


def check_chat(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, limits: Limits) -> None:
    """``check_prompt`` for a door's messages once mapped to ``{"role", "content"}`` (any protocol)."""
    check_prompt(
        SimpleNamespace(messages=[SimpleNamespace(content=m.get("content") or "") for m in messages], tools=tools),
        limits,
    )


def _chars(value: Any) -> int:
    """Characters of a text, of text parts or texts, or a count of token ids (one each)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, int):
        return 1
    if isinstance(value, list):
        return sum(map(_chars, value))
    return _chars(getattr(value, "text", None) or "")  # a content part, or no content


def _check_size(param: str, size: int, limit: int, what: str) -> None:
    if size > limit:
        raise bad_request(
            f"{param}: {what} is {size:,} characters; this server takes at most {limit:,} (serve --max-prompt-chars)",
            param=param,
            code="context_length_exceeded",
        )
