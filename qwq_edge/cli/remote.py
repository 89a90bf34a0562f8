"""Talking to a running ``qwq-edge serve``: ``ps`` (what it has loaded) and ``stop`` (unload one).

The server's own endpoints (``GET /v1/models`` with each model's ``qwq_edge.loaded`` state,
``POST /v1/models/{name}/unload``) over the standard library's HTTP client: a command that
only asks a server something should not need the server's extra installed.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import click
from rich.console import Console

from .tables import Field, print_fitted

#: Where ``qwq-edge serve`` listens unless told otherwise.
DEFAULT_SERVER = "http://127.0.0.1:8000"

server_options = [
    click.option(
        "--server",
        "server_url",
        envvar="QWQ_EDGE_SERVER",
        default=DEFAULT_SERVER,
        show_default=True,
        help="The running server's address; also QWQ_EDGE_SERVER.",
    ),
    click.option(
        "--api-key", envvar="QWQ_EDGE_API_KEY", help="The server's key, if it has one; also QWQ_EDGE_API_KEY."
    ),
]


def _with_server_options(command: Any) -> Any:
    for option in reversed(server_options):
        command = option(command)
    return command


def call(server_url: str, api_key: str | None, method: str, path: str, timeout: float = 30) -> Any:
    """One request to the server, its JSON reply; a one-line error when it is not there or refuses."""
    request = urllib.request.Request(
        server_url.rstrip("/") + path, method=method, data=b"" if method == "POST" else None
    )
    if api_key:
        request.add_header("Authorization", f"Bearer {api_key}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        raise click.ClickException(f"{server_url}: {_error_message(error)}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise click.ClickException(
            f"no qwq-edge server answers at {server_url} ({reason}): start one with qwq-edge serve"
        ) from None


def _error_message(error: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(error.read())
        return str(body["error"]["message"] if isinstance(body.get("error"), dict) else body["error"])
    except (ValueError, KeyError, TypeError, AttributeError):
        return f"HTTP {error.code}"


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
@_with_server_options
@click.option("--json", "as_json", is_flag=True, help="The loaded models as JSON.")
def ps(server_url: str, api_key: str | None, as_json: bool) -> None:
    """The models a running server has loaded: memory, context, requests in flight, when each unloads."""
    listed = call(server_url, api_key, "GET", "/v1/models")["data"]
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
@_with_server_options
@click.argument("model")
def stop(server_url: str, api_key: str | None, model: str) -> None:
    """Unload MODEL from a running server now (or, if a request is using it, once that ends)."""
    reply = call(server_url, api_key, "POST", f"/v1/models/{urllib.parse.quote(model, safe='')}/unload")
    click.echo(f"{reply['id']}: {reply['message']}")
