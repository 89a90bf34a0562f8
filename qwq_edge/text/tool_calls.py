"""Tools: OpenAI's ``tools`` and ``tool_choice`` checked, and the model's ``<tool_call>`` blocks read back.

Qwen's chat format (QwQ's too) offers the functions in the system turn and has the
model answer a call as ``<tool_call>{"name": …, "arguments": {…}}</tool_call>``.
``split_tool_calls`` reads a whole answer; ``ToolCallScanner`` reads one as it streams,
holding back text that may open a block, so that a client sees either text or calls.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidRequestError

OPEN, CLOSE = "<tool_call>", "</tool_call>"
TOOL_CHOICES = ("auto", "none", "required")
#: OpenAI's rule for a function's name: it is rendered into the prompt as it is.
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_BLOCK = re.compile(re.escape(OPEN) + r"(.*?)" + re.escape(CLOSE), re.DOTALL)


def check_tools(tools: list[Any] | None, tool_choice: Any) -> None:
    """Refuse tools that are not OpenAI function tools with a name and an object schema, and
    a ``tool_choice`` that is not auto, none, required or one of the tools by name."""
    names = [_function(tool, index)["name"] for index, tool in enumerate(tools or [])]
    if len(set(names)) != len(names):
        raise InvalidRequestError("two tools have the same name")
    if tool_choice is None or tool_choice in TOOL_CHOICES:
        if tool_choice == "required" and not names:
            raise InvalidRequestError("tool_choice is required but no tools are given")
        return
    name = chosen_name(tool_choice)
    if name not in names:
        raise InvalidRequestError(f"tool_choice names {name!r}, which is not one of the tools")


def _function(tool: Any, index: int) -> dict[str, Any]:
    function = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise InvalidRequestError(f'tools[{index}] must be {{"type": "function", "function": {{"name": …}}}}')
    if not _NAME.fullmatch(function["name"]):
        raise InvalidRequestError(f"tools[{index}]'s name must be 1 to 64 letters, digits, _ or -")
    if not isinstance(function.get("parameters", {}), dict):
        raise InvalidRequestError(f"tools[{index}]'s parameters must be a JSON schema object")
    return function


def chosen_name(tool_choice: Any) -> str:
    """The function named by ``{"type": "function", "function": {"name": …}}``."""
    function = tool_choice.get("function") if isinstance(tool_choice, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise InvalidRequestError(
            'tool_choice must be auto, none, required or {"type": "function", "function": {"name": …}}'
        )
    return function["name"]


def offered_tools(tools: list[Any] | None, tool_choice: Any) -> list[dict[str, Any]]:
    """The tools the prompt shows the model (none when ``tool_choice`` is ``none``)."""
    return [] if tool_choice == "none" else list(tools or [])


def forced_functions(tools: list[Any] | None, tool_choice: Any) -> list[dict[str, Any]]:
    """The functions the answer must call one of: all for ``required``, the named one, else none."""
    functions = [tool["function"] for tool in tools or []]
    if tool_choice == "required":
        return functions
    if tool_choice is None or tool_choice in TOOL_CHOICES:
        return []
    return [function for function in functions if function["name"] == chosen_name(tool_choice)]


@dataclass(frozen=True)
class ToolCall:
    """One call the model made; ``arguments`` is JSON text, as OpenAI sends it."""

    name: str
    arguments: str
    id: str = field(default_factory=lambda: f"call_{uuid.uuid4().hex[:24]}")

    def to_openai(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


def parse_call(body: str) -> ToolCall | None:
    """The call inside one block, or ``None`` when it is not ``{"name": …, "arguments": …}``."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return None
    arguments = data.get("arguments", {})
    return ToolCall(data["name"], arguments if isinstance(arguments, str) else json.dumps(arguments))


def split_tool_calls(answer: str) -> tuple[str, list[ToolCall]]:
    """The answer's text outside well-formed call blocks, and the calls in order."""
    calls: list[ToolCall] = []

    def take(match: re.Match[str]) -> str:
        call = parse_call(match.group(1))
        if call is None:
            return match.group(0)
        calls.append(call)
        return ""

    return _BLOCK.sub(take, answer).strip(), calls


class ToolCallScanner:
    """Streamed answer text in, text and calls out: a call is given whole when its block closes."""

    def __init__(self) -> None:
        self._held = ""

    def feed(self, text: str) -> list[str | ToolCall]:
        self._held += text
        out: list[str | ToolCall] = []
        while True:
            start = self._held.find(OPEN)
            if start < 0:
                keep = _partial_open(self._held)
                out.append(self._held[: len(self._held) - keep])
                self._held = self._held[len(self._held) - keep :]
                break
            end = self._held.find(CLOSE, start)
            if end < 0:
                out.append(self._held[:start])
                self._held = self._held[start:]
                break
            out.append(self._held[:start])
            block, self._held = self._held[start : end + len(CLOSE)], self._held[end + len(CLOSE) :]
            call = parse_call(block[len(OPEN) : -len(CLOSE)])
            out.append(call if call is not None else block)
        return [item for item in out if item]

    def flush(self) -> str:
        """What is still held (an unclosed block is text)."""
        held, self._held = self._held, ""
        return held


def _partial_open(text: str) -> int:
    """How many of ``text``'s last characters could begin ``<tool_call>``."""
    for size in range(min(len(OPEN) - 1, len(text)), 0, -1):
        if OPEN.startswith(text[-size:]):
            return size
    return 0
