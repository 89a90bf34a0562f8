"""``qwq-edge serve``: the OpenAI-compatible server and the web chat page, run by uvicorn."""

from __future__ import annotations

import ipaddress
import logging
import sys
from types import FrameType
from typing import TYPE_CHECKING, Any

import click

from .options import generation_options, load_model, model_options, options_from_params

if TYPE_CHECKING:
    from ..server.service import Service

NEEDS_EXTRA = "the server needs its extra: pip install 'qwq-edge[server]'"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind_warning(host: str, api_key: str | None) -> str | None:
    """The warning for a server reachable from other machines without a key."""
    if api_key or is_loopback(host):
        return None
    return f"warning: serving on {host} without an API key: anyone who can reach this address can use the model"


@click.command()
@model_options
@generation_options
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address to bind (another than loopback: set a key)."
)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="0: any free port.")
@click.option(
    "--api-key",
    envvar="QWQ_EDGE_API_KEY",
    help="Require this key (Bearer) on /v1/* and /metrics; also QWQ_EDGE_API_KEY.",
)
@click.option("--max-queue", type=click.IntRange(min=0), default=8, show_default=True, help="Requests that may wait.")
@click.option("--cors-origin", "cors_origins", multiple=True, help="A web origin allowed to call the API (repeatable).")
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    help="A name the Host header may give besides the bound address and localhost (repeatable; * for any).",
)
@click.option("--max-prompt-chars", type=click.IntRange(min=1), help="Most prompt characters (default: 8 × context).")
@click.option(
    "--max-body-mb", type=click.IntRange(min=1), default=16, show_default=True, help="Largest request body, in MiB."
)
@click.option("--model-id", help="The name /v1/models lists (default: the model file's name).")
@click.option("--metrics-public", is_flag=True, help="Serve /metrics without the API key.")
def serve(
    host: str,
    port: int,
    api_key: str | None,
    max_queue: int,
    cors_origins: tuple[str, ...],
    allowed_hosts: tuple[str, ...],
    max_prompt_chars: int | None,
    max_body_mb: int,
    model_id: str | None,
    metrics_public: bool,
    **params: Any,
) -> None:
    """Serve the model over OpenAI's chat-completions API, with a web chat page at /.

    The generation options are the server's defaults; each request's fields change them.
    """
    try:
        import uvicorn

        from ..server.app import create_app
        from ..server.limits import Limits, prompt_chars_for
    except ImportError:
        raise click.ClickException(NEEDS_EXTRA) from None
    model = load_model(params)
    defaults = options_from_params(params, model)  # after the load: --draft auto names the model's draft
    prompt_chars = max_prompt_chars or prompt_chars_for(model.info.context_length)
    app = create_app(
        model,
        defaults=defaults,
        model_id=model_id,
        api_key=api_key,
        max_queue=max_queue,
        cors_origins=cors_origins,
        host=host,
        allowed_hosts=allowed_hosts,
        limits=Limits(max_body_bytes=max_body_mb * 1024 * 1024, max_prompt_chars=prompt_chars),
        metrics_public=metrics_public,
    )
    warning = bind_warning(host, api_key)
    if warning:
        click.echo(warning, err=True)
    _log_requests()
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False, timeout_graceful_shutdown=5
    )
    try:
        _server_class(uvicorn)(config, app.state.service).run()
    finally:
        model.close()


def _log_requests() -> None:
    """The server's one line per request, on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    logger = logging.getLogger("qwq_edge.server")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def _server_class(uvicorn: Any) -> type:
    class Server(uvicorn.Server):
        """uvicorn's server that announces its address and, on SIGINT/SIGTERM, ends open
        requests with an error at once instead of waiting for them."""

        def __init__(self, config: Any, service: Service) -> None:
            super().__init__(config)
            self.service = service

        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started:
                bound_host, bound_port = self.servers[0].sockets[0].getsockname()[:2]
                info = self.service.model.info
                url = f"http://{_url_host(bound_host)}:{bound_port}"
                click.echo(f"qwq-edge serving {self.service.model_id} ({info.engine} on {info.device}) at {url}")
                click.echo(f"  web chat: {url}/   API: {url}/v1   Ctrl-C to stop", err=True)

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            self.service.begin_shutdown()
            super().handle_exit(sig, frame)

    return Server


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
