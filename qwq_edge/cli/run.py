"""``qwq-edge run``: one prompt, one answer."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from rich.console import Console

from ..errors import InvalidRequestError
from ..events import ChoiceEvent, Done, GenerationResult, collect
from ..runtime.prompt import check_text
from ..runtime.votes import VoteResult, final_answer
from .interrupt import cancel_on_interrupt
from .options import (
    display_options,
    generation_options,
    load_model,
    model_options,
    options_from_params,
    parallel_for_votes,
    votes_option,
)
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
@votes_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object: thinking, answer, tokens, timings.")
def run(prompt: str | None, as_json: bool, thinking_display: str, votes: int, **params: Any) -> None:
    """Answer PROMPT (or standard input) once and exit.

    The answer goes to standard output, the thinking to standard error.
    """
    text = _read_prompt(prompt)
    if votes > 1:
        _vote(text, votes, as_json, params)
        return
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


def _vote(text: str, votes: int, as_json: bool, params: dict[str, Any]) -> None:
    """``--votes K``: K thoughts here, a line on standard error as each ends, then the majority's answer."""
    given = click.get_current_context().get_parameter_source("server_url") == click.core.ParameterSource.COMMANDLINE
    if params.pop("server_url") and given:  # QWQ_EDGE_SERVER alone does not refuse: the thoughts run here
        raise InvalidRequestError("--votes runs its thoughts here, not through a server: drop --server")
    params.pop("server_key"), params.pop("no_server")
    model = load_model(parallel_for_votes(params, votes))
    options = options_from_params(params, model)
    console = Console(stderr=True)
    if notice := thinking_flags_notice(model.reasoning_format, options, "run it"):
        console.print(notice, markup=False)
    with cancel_on_interrupt(model):
        for event in model.vote(text, votes, options):
            if isinstance(event, ChoiceEvent) and isinstance(event.event, Done):
                console.print(_thought_line(event.index, votes, event.event.result), markup=False)
            elif isinstance(event, Done):
                result = event.result
    if as_json:
        click.echo(json.dumps(result.to_dict(), ensure_ascii=False))
    else:
        console.print(_tally_line(result), markup=False)
        click.echo(result.answer)
    if any(thought.stats.finish_reason == "cancelled" for thought in result.results):
        sys.exit(130)


def _thought_line(index: int, votes: int, result: GenerationResult) -> str:
    stats = result.stats
    answer = final_answer(result)
    said = f"answers {answer}" if answer is not None else "gives no answer to count"
    return f"thought {index + 1}/{votes} {said} ({stats.thinking_tokens} thinking tokens, {stats.finish_reason})"


def _tally_line(result: VoteResult) -> str:
    if result.majority is None:
        return f"no thought gave an answer to count: showing thought {result.chosen + 1}'s"
    tally = ", ".join(f"{answer} ×{count}" for answer, count in result.tally)
    tie = " (a tie: the thought with the highest mean log-probability)" if result.tie else ""
    return f"votes: {tally} → {result.majority}{tie}"
