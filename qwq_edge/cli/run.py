"""``qwq-edge run``: one prompt, one answer."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from rich.console import Console

from ..errors import InvalidRequestError
from ..events import collect
from ..runtime.prompt import check_text
from .interrupt import cancel_on_interrupt
from .options import display_options, generation_options, model_options, options_from_params
from .remote import open_model, server_options
from .render import EventRenderer, thinking_flags_notice


def _read_prompt(prompt: str | None) -> str:
    if prompt is None and not sys.stdin.isatty():
        data = sys.stdin.buffer.read()
        try:
            prompt = data.decode("utf-8")
        except UnicodeDecodeError as error:
            byte = f"0x{data[error.start]:02x}"
            raise InvalidRequestError(
                f"the prompt on standard input is not valid UTF-8 (byte {byte} at offset {error.start})"
            ) from None
    if not prompt or not prompt.strip():
        raise click.UsageError("the prompt is empty: give it as an argument or on standard input")
    check_text(prompt)
    return prompt


@click.command()
@click.argument("prompt", required=False)
@model_options
@server_options
@generation_options
@display_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object: thinking, answer, tokens, timings.")
def run(prompt: str | None, as_json: bool, thinking_display: str, **params: Any) -> None:
    """Answer PROMPT (or standard input) once and exit.

    The answer goes to standard output, the thinking to standard error.
    """
    text = _read_prompt(prompt)
    model = open_model(params)
    options = options_from_params(params, model)
    notice = thinking_flags_notice(model.reasoning_format, options, "run it")
    if notice:
        click.echo(notice, err=True)
    events = model.stream(text, options)
    with cancel_on_interrupt(model):
        if as_json:
            result = collect(events)
            click.echo(json.dumps(result.to_dict(), ensure_ascii=False))
        else:
            result = EventRenderer(Console(stderr=True), display=thinking_display).render(events)
    if result is not None and result.stats.finish_reason == "cancelled":
        sys.exit(130)
