"""A multi-turn conversation, and saving / resuming it.

The history keeps answers only: a model's thinking is never carried into later
turns (as the QwQ model card asks). The engine's KV cache keeps the previous
prompt, so a new turn evaluates only the tokens after the common prefix.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ChatFileError
from .events import Done, Event, GenerationResult, collect
from .files import write_text_atomic
from .prompt import Message, as_messages

if TYPE_CHECKING:
    from .model import Model

CHAT_FILE_FORMAT = "qwq-edge-chat"
CHAT_FILE_VERSION = 1


class Chat:
    """A conversation with one model. ``options`` apply to every turn."""

    def __init__(
        self,
        model: Model,
        *,
        system: str | None = None,
        options: dict[str, Any] | None = None,
        history: list[Message] | None = None,
    ) -> None:
        self.model = model
        self.system = system
        self.options: dict[str, Any] = dict(options or {})
        self.history: list[Message] = list(history or [])

    def messages_for(self, text: str) -> list[Message]:
        """The messages the model would see if ``text`` were sent now."""
        return as_messages([*self.history, Message("user", text)])

    def stream(self, text: str, **overrides: Any) -> Iterator[Event]:
        """Send ``text``; the answer joins the history when the stream ends.

        A cancelled turn keeps the user's message and whatever answer was written.
        """
        events = self.model.stream(self.messages_for(text), system=self.system, **{**self.options, **overrides})
        return self._record(text, events)

    def _record(self, text: str, events: Iterator[Event]) -> Iterator[Event]:
        for event in events:
            if isinstance(event, Done):
                self.history += [Message("user", text), Message("assistant", event.result.answer)]
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
            "system": self.system,
            "options": self.options,
            "messages": [message.to_dict() for message in self.history],
        }

    def save(self, path: str | Path) -> None:
        """Write the conversation as JSON, atomically."""
        try:
            write_text_atomic(path, json.dumps(self.to_dict(), ensure_ascii=False, indent=2) + "\n")
        except OSError as error:
            raise ChatFileError(f"cannot save the chat to {path}: {error.strerror or error}") from None

    @classmethod
    def load(cls, model: Model, path: str | Path, **options: Any) -> Chat:
        """Resume a saved conversation; ``options`` override the saved ones."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as error:
            raise ChatFileError(f"cannot read {path}: {error.strerror or error}") from None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ChatFileError(f"{path} is not a saved qwq-edge chat (not valid JSON)") from None
        if not isinstance(data, dict) or data.get("format") != CHAT_FILE_FORMAT:
            raise ChatFileError(f"{path} is not a saved qwq-edge chat")
        try:
            history = [Message(m["role"], m["content"]) for m in data.get("messages", [])]
        except (KeyError, TypeError):
            raise ChatFileError(f"{path} has malformed messages") from None
        saved = data.get("options") or {}
        return cls(model, system=data.get("system"), options={**saved, **options}, history=history)
