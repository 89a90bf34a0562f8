"""Options shared by the commands that load a model and generate."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..catalog.entries import find
from ..catalog.families import family_for
from ..catalog.planner import parse_size
from ..engines import ENGINE_CHOICES
from ..engines.base import KV_CACHE_TYPES
from ..errors import InsufficientMemoryError, InvalidRequestError
from ..reasoning.effort import effort_table
from ..reasoning.formats import FORMAT_CHOICES
from ..runtime.fanout import MAX_CHOICES
from ..runtime.model import Model, load
from ..runtime.options import DECLARED, TYPES, Declared, GenerationOptions
from .library import local_path, model_path, with_alternatives

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def _apply(options: list[Decorator]) -> Decorator:
    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


def _size(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return 0 if value.strip() == "0" else parse_size(value, "--cache-ram")
    except InvalidRequestError as error:
        raise click.BadParameter(str(error)) from None


def _context(ctx: click.Context, param: click.Parameter, value: str) -> int | None:
    if value == "auto":
        return None
    if not value.isdigit() or int(value) < 16:
        raise click.BadParameter(f"{value!r} is not 'auto' or a whole number >= 16")
    return int(value)


model_options = _apply(
    [
        click.option(
            "--model",
            "-m",
            "model_path",
            help="A GGUF file, an MLX folder, a catalog name (NAME[:QUANT]) or a hub repo id; default: the catalog's.",
        ),
        click.option("--yes", "-y", is_flag=True, help="Do not ask before downloading the model."),
        click.option(
            "--min-speed",
            type=click.FloatRange(min=0, min_open=True),
            metavar="TOK_PER_S",
            help="Without --model: the first run picks a model that thinks at least this fast here "
            "(default: a medium thought within 5 minutes; QWQ_EDGE_MIN_SPEED).",
        ),
        click.option("--engine", type=click.Choice(ENGINE_CHOICES), default="auto", show_default=True),
        click.option(
            "--ctx",
            "context_length",
            default="auto",
            show_default=True,
            callback=_context,
            help="Context length in tokens, or auto: the longest that fits in memory.",
        ),
        click.option(
            "--kv-cache",
            type=click.Choice(["auto", *KV_CACHE_TYPES]),
            default="auto",
            show_default=True,
            help="KV-cache type; auto: f16 if it fits, else 8-bit.",
        ),
        click.option(
            "--parallel",
            type=click.IntRange(min=1),
            default=1,
            show_default=True,
            help="Generations that run at once, in one batch (both engines); the KV cache holds this × --ctx.",
        ),
        click.option(
            "--cache-ram",
            callback=_size,
            metavar="SIZE",
            help="Memory for recent prompts' KV states, which any request may start from (e.g. 2GB; 0: none; "
            "default: a quarter of what the model leaves free).",
        ),
        click.option(
            "--prompt-cache",
            "prompt_cache_dir",
            metavar="DIR",
            help="Where long prompts' KV states are kept on disk (default: QWQ_EDGE_HOME's prompt-cache).",
        ),
        click.option("--no-prompt-cache", is_flag=True, help="Keep no prompt states on disk."),
        click.option("--threads", "n_threads", type=click.IntRange(min=1), help="CPU threads (default: all cores)."),
        click.option(
            "--gpu-layers",
            "n_gpu_layers",
            type=int,
            help="Layers to offload (-1: all; default: all if a GPU is usable).",
        ),
        click.option(
            "--reasoning-format",
            type=click.Choice(FORMAT_CHOICES),
            default="auto",
            show_default=True,
            help="How the model marks its thinking: read from the model, or forced.",
        ),
        click.option("--verbose", "-v", is_flag=True, help="Show the engine chosen and why."),
        click.option(
            "--distributed",
            is_flag=True,
            help="Split an MLX model over the machines of an mlx.launch run (start it with qwq-edge launch).",
        ),
        click.option(
            "--rank-timeout",
            type=click.FloatRange(min=1),
            default=60.0,
            show_default=True,
            help="With --distributed: seconds to wait for the other ranks before stopping the run.",
        ),
    ]
)


def _click_type(name: str, declared: Declared) -> Any:
    """The click type of option ``name``: its choices, or its number type with the declared range."""
    if declared.choices:
        return click.Choice(list(declared.choices))
    kind = {int | None: int, float | None: float, int: int, float: float}.get(TYPES[name])
    if kind is None:
        return None
    if declared.low is None and declared.high is None:
        return kind
    bounds = {"min": declared.low, "max": declared.high, "min_open": declared.low_open, "max_open": declared.high_open}
    return click.IntRange(**bounds) if kind is int else click.FloatRange(**bounds)


def _generation_option(name: str, declared: Declared) -> Decorator:
    """The click option of one ``GenerationOptions`` field, from its declaration.

    A negating flag (``--no-think``) stores False under the field's own name; every flag
    defaults to None (not given), so the options' own defaults stay the ones that apply.
    """
    if declared.negate:
        return click.option(declared.negate, name, flag_value=False, default=None, help=declared.help)
    flags = declared.flags or ("--" + name.replace("_", "-"),)
    if TYPES[name] is bool:
        return click.option(*flags, name, flag_value=True, default=None, help=declared.help)
    help = f"{declared.help.removesuffix('.')} ({effort_table()})." if name == "effort" else declared.help
    default = {"show_default": True, "default": GenerationOptions().language} if name == "language" else {}
    return click.option(*flags, name, type=_click_type(name, declared), metavar=declared.metavar, help=help, **default)


#: The CLI-only flags that build ``response_format`` (the option itself is a JSON object).
_RESPONSE_FORMAT_FLAGS = [
    click.option("--json-object", is_flag=True, help="Answer with one JSON object (the thinking stays free)."),
    click.option(
        "--json-schema",
        metavar="FILE",
        help="Answer with JSON that matches the JSON schema in FILE (the thinking stays free).",
    ),
]

#: The ``GenerationOptions`` fields that have a flag, in declaration order.
FLAG_FIELDS = tuple(name for name, declared in DECLARED.items() if declared.flags is not None or declared.negate)

generation_options = _apply(
    [*(_generation_option(name, DECLARED[name]) for name in FLAG_FIELDS), *_RESPONSE_FORMAT_FLAGS]
)

display_options = _apply(
    [
        click.option(
            "--show-thinking",
            "thinking_display",
            flag_value="show",
            default=True,
            help="Stream the thinking (default).",
        ),
        click.option("--hide-thinking", "thinking_display", flag_value="hide", help="A spinner with a token count."),
        click.option(
            "--thinking-summary",
            "thinking_display",
            flag_value="summary",
            help="A spinner, then the thinking's last sentences.",
        ),
    ]
)


votes_option = click.option(
    "--votes",
    type=click.IntRange(1, MAX_CHOICES),
    default=1,
    show_default=True,
    metavar="K",
    help=f"Think K times (up to {MAX_CHOICES}) and answer with the majority of the final answers (ties: the "
    "thought with the highest mean log-probability); they run together: the model loads with --parallel K "
    "unless --parallel is given.",
)


def parallel_for_votes(params: dict[str, Any], votes: int) -> dict[str, Any]:
    """``params`` with ``--parallel`` raised to ``votes`` where it was left at its default."""
    source = click.get_current_context().get_parameter_source("parallel")
    if votes > 1 and source in (None, click.core.ParameterSource.DEFAULT) and not params["distributed"]:
        return params | {"parallel": votes}
    return params


def load_kwargs(params: dict[str, Any]) -> dict[str, Any]:
    """The ``qwq_edge.load`` keyword arguments for the ``model_options`` given."""
    return {
        "engine": params["engine"],
        "context_length": params["context_length"],
        "kv_cache": None if params["kv_cache"] == "auto" else params["kv_cache"],
        "n_threads": params["n_threads"],
        "n_gpu_layers": params["n_gpu_layers"],
        "reasoning_format": params["reasoning_format"],
        "distributed": params["distributed"],
        "rank_timeout": params["rank_timeout"],
        "parallel": params["parallel"],
        "cache_ram": params["cache_ram"],
        "prompt_cache_dir": params["prompt_cache_dir"],
        "disk_cache": not params["no_prompt_cache"],
    }


def load_model(params: dict[str, Any]) -> Model:
    """Load the model named by ``model_options``; report the engine when verbose.

    With ``--distributed``, a rank other than 0 follows rank 0 here and exits when it stops,
    so a command's own code runs on rank 0 only.
    """
    try:
        path = model_path(params["model_path"], params["yes"], params["min_speed"])
        model = load(path, **load_kwargs(params))
    except InsufficientMemoryError as error:
        raise with_alternatives(error, None) from None
    if model.rank != 0:
        model.follow()
        sys.exit(0)
    if params["verbose"]:
        info = model.info
        click.echo(f"engine: {info.engine} on {info.device} ({model.engine_reason})", err=True)
        if model.memory_plan is not None:
            click.echo(f"memory: {model.memory_plan.describe()}", err=True)
        click.echo(f"reasoning format: {model.reasoning_format.name}", err=True)
    return model


def generation_changes(params: dict[str, Any], *, given_only: bool = False) -> dict[str, Any]:
    """The ``GenerationOptions`` fields the ``generation_options`` set, by field name.

    ``given_only``: only what was typed on the command line (or came from the
    environment), not click's defaults, so that resuming a chat keeps its own options.
    """
    ctx = click.get_current_context()
    given = {
        name: params[name]
        for name in (*FLAG_FIELDS, "json_object", "json_schema")
        if not (given_only and ctx.get_parameter_source(name) in (None, click.core.ParameterSource.DEFAULT))
    }
    json_object, schema_file = given.pop("json_object", None), given.pop("json_schema", None)
    if json_object and schema_file:
        raise InvalidRequestError("give --json-object or --json-schema, not both")
    if json_object or schema_file:
        given["response_format"] = _response_format(schema_file or True)
    return {name: value for name, value in given.items() if value is not None}


def _response_format(schema_file: str | bool) -> dict[str, Any]:
    """``response_format`` for ``--json-object`` (``True``) or ``--json-schema FILE``."""
    if schema_file is True:
        return {"type": "json_object"}
    path = Path(str(schema_file))
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise InvalidRequestError(f"cannot read the JSON schema {path}: {error.strerror or error}") from None
    except ValueError as error:
        raise InvalidRequestError(f"{path} is not JSON: {error}") from None
    if not isinstance(schema, dict):
        raise InvalidRequestError(f"{path} must hold a JSON schema object")
    return {"type": "json_schema", "json_schema": {"name": path.stem, "schema": schema, "strict": True}}


def options_from_params(params: dict[str, Any], model: Model | None = None) -> GenerationOptions:
    """The ``GenerationOptions`` the command line asks for (``model``: the one loaded, for ``--draft auto``)."""
    return options_maker(params)(model)


def options_maker(params: dict[str, Any]) -> Callable[[Model | None], GenerationOptions]:
    """``options_from_params`` for any model loaded later (a server's, on demand), with the command
    line read now, while click's context is there."""
    changes = generation_changes(params)

    def for_model(model: Model | None) -> GenerationOptions:
        resolved = dict(changes)
        if "draft" in resolved:
            resolved["draft"] = draft_path(resolved["draft"], params["yes"], model.info.model_name if model else None)
        return GenerationOptions().replace(**resolved)

    return for_model


def draft_path(draft: str, yes: bool, model_name: str | None) -> str:
    """``--draft`` as ``GenerationOptions.draft`` takes it: ngram, off, or a local model path
    (``auto`` is the catalog's draft for the model named; a catalog name is pulled if needed)."""
    if draft in ("ngram", "off") or Path(draft).exists():
        return draft
    if draft == "auto":
        entry = find(family_for(model_name).key) if model_name else None
        if entry is None or entry.draft is None:
            raise InvalidRequestError(f"the catalog names no draft model for {model_name}; use --draft ngram or a path")
        draft = entry.draft
    return str(local_path(draft, yes))
