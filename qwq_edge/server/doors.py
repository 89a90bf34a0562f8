"""What every door does with a generation request before its own mapping.

A door is one protocol's endpoints in a module of its own (``app`` for OpenAI's chat
completions and completions, ``anthropic_messages``, ``openai_responses``, ``ollama_api``):
it reads its request with ``read_request``, maps it to a prompt and ``GenerationOptions``
(``mapping.options_from_request`` with what its own fields say), checks the prompt's size
with ``limits.check_chat``, and answers through ``Service.respond`` with an ``Encoder`` of
its own. Its errors are ``APIError``s; ``app.error_response`` gives them the door's shape.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from .limits import decode_json, read_body
from .schemas import parse
from .service import Service


def service_of(request: Request) -> Service:
    return request.app.state.service


async def read_request(request: Request, schema: type[Any]) -> tuple[Service, Any]:
    """The key checked, then the body read within the limits, decoded and parsed as ``schema``."""
    service = service_of(request)
    service.check_key(request)
    limits = service.limits
    return service, parse(schema, decode_json(await read_body(request, limits.max_body_bytes), limits.max_depth))
