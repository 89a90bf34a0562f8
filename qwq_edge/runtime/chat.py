"""A multi-turn conversation, and saving / resuming it.

The history keeps answers only: a model's thinking is never carried into later
turns (as the QwQ model card asks). The engine's KV cache keeps the previous
prompt, so a new turn evaluates only the tokens after the common prefix.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any, Protocol

from ..errors import ChatFileError, InvalidRequestError
from ..events import Done, Event, GenerationResult, collect
from ..files import write_text_atomic
from .options import GenerationOptions
from .prompt import ROLES, Message, as_messages
from .stream import Stream


class ChatModel(Protocol):
    """What a chat needs of a loaded model (``runtime.model.Model``): its facts and ``stream``."""

    info: Any

    def stream(self, prompt: Any, options: GenerationOptions | None = None, **overrides: Any) -> Stream: ...


CHAT_FILE_FORMAT = "qwq-edge-chat"
CHAT_FILE_VERSION = 1


class Chat:
    """A conversation with one model.

    ``options`` (and ``overrides`` of its fields) are the conversation's own: they
    apply to every turn and are saved with it. ``session`` holds changes for this
    session only (a seed, an answer bound given when resuming): they apply to every
    turn but are not saved.
    """

    def __init__(
        self,
        model: ChatModel,
        options: GenerationOptions | None = None,
        *,
        history: list[Message] | None = None,
        session: dict[str, Any] | None = None,
        **overrides: Any,
    ) -> None:
        self.model = model
        self.options = (options or GenerationOptions()).replace(**overrides)
        self.options.replace(**(session or {}))  # checked now, not at the first turn
        self.session: dict[str, Any] = dict(session or {})
        self.history: list[Message] = list(history or [])

    def set(self, **changes: Any) -> None:
        """Change the conversation's options (they win over this session's)."""
        self.options = self.options.replace(**changes)
        for name in changes:
            self.session.pop(name, None)

    @property
    def effective_options(self) -> GenerationOptions:
        """What the next turn runs with: the conversation's options, then this session's."""
        return self.options.replace(**self.session)

    @property
    def unanswered(self) -> str | None:
        """A last user message that has no answer (the chat stopped while it was asked)."""
        last = self.history[-1] if self.history else None
        return last.content if last is not None and last.role == "user" else None

    def stream(self, text: str, **overrides: Any) -> Stream:
        """Send ``text``; it joins the history at once, the answer when the stream ends.

        A cancelled turn keeps the user's message and whatever answer was written; one
        answered now keeps the answer that followed.
        """
        options = self.effective_options.replace(**overrides)
        earlier = self.history[:-1] if self.unanswered is not None else self.history
        messages = as_messages([*earlier, Message("user", text)])
        events = self.model.stream(messages, options)
        self.history = messages
        return events.around(self._record(events))

    def _record(self, events: Stream) -> Iterator[Event]:
        with closing(events):
            for event in events:
                if isinstance(event, Done):
                    self.history.append(Message("assistant", event.result.answer))
                yield event

    def send(self, text: str, **overrides: Any) -> GenerationResult:
        """Send ``text`` and wait for the whole reply."""
        return collect(self.stream(text, **overrides))

    def clear(self) -> None:
        self.history.clear()

    # -- saving ----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": CHAT_FILE_FORMAT,
            "version": CHAT_FILE_VERSION,
            "model": self.model.info.model_path,
            "options": self.options.to_dict(),
            "messages": [message.to_dict() for message in self.history],
        }

    def save(self, path: str | Path) -> None:
        """Write the conversation as JSON, atomically."""
        try:
            write_text_atomic(path, json.dumps(self.to_dict(), ensure_ascii=False, indent=2) + "\n")
        except OSError as error:
            raise ChatFileError(f"cannot save the chat to {path}: {error.strerror or error}") from None

    @classmethod
    def load(cls, model: ChatModel, path: str | Path, **session: Any) -> Chat:
        """Resume a saved conversation with its own options; ``session`` changes apply
        to this session only and are not saved."""
        data = _read_chat_file(path)
        history = _saved_messages(data.get("messages", []), path)
        saved = data.get("options", {})
        if data.get("system") is not None and isinstance(saved, dict):  # files of version 1 kept it apart
            saved = {**saved, "system": data["system"]}
        try:
            return cls(model, GenerationOptions.from_dict(saved), history=history, session=session)
        except InvalidRequestError as error:
            raise ChatFileError(f"{path} has invalid options: {error}") from None


def _read_chat_file(path: str | Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise ChatFileError(f"cannot read {path}: {error.strerror or error}") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ChatFileError(f"{path} is not a saved qwq-edge chat (not valid JSON)") from None
    if not isinstance(data, dict) or data.get("format") != CHAT_FILE_FORMAT:
        raise ChatFileError(f"{path} is not a saved qwq-edge chat")
    return data


def _saved_messages(items: Any, path: str | Path) -> list[Message]:
    malformed = ChatFileError(f"{path} has malformed messages (each needs a role and a text content)")
    if not isinstance(items, list):
        raise malformed
    messages = []
    for item in items:
        if not isinstance(item, dict) or item.get("role") not in ROLES or not isinstance(item.get("content"), str):
            raise malformed
        messages.append(Message(item["role"], item["content"]))
    return messages
