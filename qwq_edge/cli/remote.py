"""A running ``qwq-edge serve`` from the command line: ``ps`` (what it has loaded), ``stop``
(unload one), and the model ``run`` and ``chat`` use (the server's when one answers).

The server's own endpoints (``GET /v1/models`` with each model's ``qwq_edge.loaded`` state,
``POST /v1/models/{name}/unload``) through ``services.remote``: a command that only asks a
server something needs no engine and not the server's extra.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from ..runtime.model import Model
from ..services.remote import DEFAULT_SERVER, RemoteModel, Server, ServerError
from .options import load_model
from .tables import Field, print_fitted

#: The model options that shape a load: given on the command line, ``run`` and ``chat`` load here.
LOAD_OPTIONS = (
    "engine",
    "context_length",
    "kv_cache",
    "parallel",
    "cache_ram",
    "prompt_cache_dir",
    "no_prompt_cache",
    "n_threads",
    "n_gpu_layers",
    "distributed",
)


def _address(command: Any) -> Any:
    command = click.option(
        "--server",
        "server_url",
        envvar="QWQ_EDGE_SERVER",
        help=f"A running server's address (default: {DEFAULT_SERVER}); also QWQ_EDGE_SERVER.",
    )(command)
    return click.option(
        "--api-key", "server_key", envvar="QWQ_EDGE_API_KEY", help="The server's key, if it has one (QWQ_EDGE_API_KEY)."
    )(command)


def server_options(command: Any) -> Any:
    """``--server``, ``--no-server`` and the server's key, for ``run`` and ``chat``."""
    command = click.option(
        "--no-server",
        is_flag=True,
        envvar="QWQ_EDGE_NO_SERVER",
        help="Load the model in this process even when a server answers at the default address (QWQ_EDGE_NO_SERVER=1).",
    )(command)
    return _address(command)


def open_model(params: dict[str, Any]) -> Model | RemoteModel:
    """The model ``run`` and ``chat`` use: a running server's (``--server``; or the default address
    when it answers, serves the model and no load option was given), else one loaded here."""
    url, key, no_server = params.pop("server_url"), params.pop("server_key"), params.pop("no_server")
    if no_server and url is None:
        return load_model(params)
    server = Server(url or DEFAULT_SERVER, key)
    if url is None and (_load_options_given() or not server.answers()):
        return load_model(params)
    try:
        return RemoteModel(server, _served_name(params["model_path"]))
    except ServerError:
        if url is not None:
            raise
        return load_model(params)  # the server there does not serve this model


def _load_options_given() -> bool:
    ctx = click.get_current_context()
    default = (None, click.core.ParameterSource.DEFAULT)
    return any(ctx.get_parameter_source(name) not in default for name in LOAD_OPTIONS)


def _served_name(model: str | None) -> str | None:
    """The name a server knows a ``--model`` by: a file's name without ``.gguf``, a folder's name,
    or the catalog name as given (``None``: the server's default model)."""
    if model is None:
        return None
    path = Path(model).expanduser()
    if path.exists():
        return path.stem if path.suffix == ".gguf" else path.name
    return model


def _size(value: int) -> str:
    return f"{value / 1e9:.1f} GB" if value >= 1e8 else f"{value / 1e6:.0f} MB"


def _until(expires_at: int | None) -> str:
    """When an idle model unloads, as ``ps`` says it: ``in 4m 10s``, or ``never``."""
    if expires_at is None:
        return "never"
    seconds = max(0, int(expires_at - time.time()))
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return "in " + (f"{hours}h {minutes}m" if hours else f"{minutes}m {seconds}s" if minutes else f"{seconds}s")


PS_FIELDS = [
    Field("model"),
    Field("engine", drop=2),
    Field("memory"),
    Field("context", drop=3),
    Field("requests"),
    Field("unloads"),
    Field("path", wraps=True, drop=1),
]


@click.command()
@_address
@click.option("--json", "as_json", is_flag=True, help="The loaded models as JSON.")
def ps(server_url: str | None, server_key: str | None, as_json: bool) -> None:
    """The models a running server has loaded: memory, context, requests in flight, when each unloads."""
    listed = Server(server_url or DEFAULT_SERVER, server_key).request("GET", "/v1/models")["data"]
    loaded = [model["qwq_edge"] for model in listed if model.get("qwq_edge", {}).get("loaded")]
    if as_json:
        click.echo(json.dumps(loaded, indent=2))
        return
    if not loaded:
        click.echo(f"no model is loaded ({len(listed)} can be: qwq-edge list)")
        return
    rows = [
        [
            m["name"],
            m["engine"],
            _size(m["memory_bytes"]),
            str(m["context_length"]),
            str(m["requests"]),
            "in use" if m["requests"] else _until(m["expires_at"]),
            m["path"],
        ]
        for m in loaded
    ]
    print_fitted(Console(), PS_FIELDS, rows)


@click.command()
@_address
@click.argument("model")
def stop(server_url: str | None, server_key: str | None, model: str) -> None:
    """Unload MODEL from a running server now (or, if a request is using it, once that ends)."""
    path = f"/v1/models/{urllib.parse.quote(model, safe='')}/unload"
    reply = Server(server_url or DEFAULT_SERVER, server_key).request("POST", path)
    click.echo(f"{reply['id']}: {reply['message']}")
