"""``n`` choices of one chat completion (OpenAI's ``n``, up to 8).

The model generates them at once (``Model.streams``: the prompt evaluated once, its KV state
copied; their tokens share each pass on a model loaded with ``--parallel n``), each ended by
the request's stop strings on its own. Each choice's chunks and body are what one choice's
would be, with its index; the usage counts the prompt once and every choice's tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..events import ChoiceEvent, Event, GenerationResult, each_generation
from ..runtime.fanout import fan_out
from ..runtime.model import Model, Prompt
from ..runtime.options import GenerationOptions
from ..runtime.stream import Stream
from ..text.stops import stop_at
from .errors import error_body
from .mapping import Reply, chat_chunk, chat_first_chunk, chat_response, usage
from .replies import Encoder, sse
from .schemas import GenerationFields


def several(model: Model, prompt: Prompt, options: GenerationOptions, count: int, stops: Sequence[str]) -> Stream:
    """``count`` generations of ``prompt`` at once, each ended by ``stops`` on its own."""
    streams = model.streams(prompt, count, options)
    return fan_out([stream.around(stop_at(stream, stops, stream.cancel)) for stream in streams])


class OpenAIChoices(Encoder):
    """A chat completion with several choices (one ``Reply`` each, sharing its id)."""

    def __init__(self, replies: list[Reply], request: GenerationFields) -> None:
        super().__init__(replies[0].id, request.stream)  # no stops here: each choice has its own (``several``)
        self.replies = replies
        self.places = len(replies)
        self.include_usage = request.stream_options is not None and request.stream_options.include_usage

    def opening(self) -> list[str]:
        return [sse(_indexed(chat_first_chunk(reply), index)) for index, reply in enumerate(self.replies)]

    def frames(self, event: Event | ChoiceEvent) -> list[str]:
        if not isinstance(event, ChoiceEvent):
            return []  # the last Done: every choice has ended with its own
        chunk = chat_chunk(event.event, self.replies[event.index])
        return [sse(_indexed(chunk, event.index))] if chunk is not None else []

    def closing(self, result: GenerationResult) -> list[str]:
        ending = {**self.replies[0].envelope(True), "choices": [], "usage": _usage(each_generation(result))}
        return [*([sse(ending)] if self.include_usage else []), sse("[DONE]")]

    def whole(self, result: GenerationResult) -> dict[str, Any]:
        results = each_generation(result)
        bodies = [chat_response(one, reply) for one, reply in zip(results, self.replies, strict=True)]
        choices = [choice for index, body in enumerate(bodies) for choice in _indexed(body, index)["choices"]]
        return {**bodies[0], "choices": choices, "usage": _usage(results)}

    def failure(self, message: str, kind: str, code: str | None) -> str:
        return sse(error_body(message, kind, None, code))


def _indexed(body: dict[str, Any], index: int) -> dict[str, Any]:
    for choice in body["choices"]:
        choice["index"] = index
    return body


def _usage(results: Sequence[GenerationResult]) -> dict[str, Any]:
    """The prompt once, every choice's tokens."""
    each = [usage(result.stats) for result in results]
    completion = sum(one["completion_tokens"] for one in each)
    reasoning = sum(one["completion_tokens_details"]["reasoning_tokens"] for one in each)
    return each[0] | {
        "completion_tokens": completion,
        "total_tokens": each[0]["prompt_tokens"] + completion,
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }
