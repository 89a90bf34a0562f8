"""``qwq-edge serve``: the OpenAI-compatible server and the web chat page, run by uvicorn."""

from __future__ import annotations

import ipaddress
import logging
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import click

from ..catalog.planner import AUTO_CONTEXT_CAP
from ..errors import QwqEdgeError
from .options import generation_options, load_kwargs, load_model, model_options, options_maker

if TYPE_CHECKING:
    from ..server.models import ModelHost
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
@click.option(
    "--models",
    "model_folders",
    multiple=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A folder whose GGUF files and MLX folders are served by name, loaded on demand (repeatable).",
)
@click.option(
    "--keep-alive",
    metavar="DURATION",
    help="How long an idle model stays loaded: 30s, 5m, 1h or seconds; 0: unload after each reply; -1: always "
    "(default: 5m; a --model stays unless this is given).",
)
@click.option(
    "--drain-seconds",
    type=click.FloatRange(min=0),
    default=30,
    show_default=True,
    help="On SIGTERM, how long requests under way may take to finish before they are ended.",
)
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
    model_folders: tuple[Path, ...],
    keep_alive: str | None,
    drain_seconds: float,
    metrics_public: bool,
    **params: Any,
) -> None:
    """Serve models over OpenAI's, Anthropic's and Ollama's APIs, with a web chat page at /.

    With --model, that model is loaded now and requests that name no model get it; every
    model on disk (`qwq-edge list`, and --models folders) is loaded when a request names it,
    and unloaded once idle for --keep-alive. The generation options are the server's
    defaults; each request's fields change them.
    """
    try:
        import uvicorn

        from ..server.app import create_app
        from ..server.limits import Limits, prompt_chars_for
        from ..server.service import default_model_id
    except ImportError:
        raise click.ClickException(NEEDS_EXTRA) from None
    models = model_host(params, model_folders, keep_alive)
    model = load_model(params) if params["model_path"] is not None else None
    context = model.info.context_length if model is not None else AUTO_CONTEXT_CAP
    prompt_chars = max_prompt_chars or prompt_chars_for(context)
    app = create_app(
        models,
        api_key=api_key,
        max_queue=max_queue,
        cors_origins=cors_origins,
        host=host,
        allowed_hosts=allowed_hosts,
        limits=Limits(max_body_bytes=max_body_mb * 1024 * 1024, max_prompt_chars=prompt_chars),
        metrics_public=metrics_public,
    )
    if model is not None:
        name = model_id or default_model_id(model)
        models.aliases[name] = Path(model.info.model_path)
        models.adopt(name, model, models.defaults_for(model), models.keep_alive if keep_alive is not None else None)
    warning = bind_warning(host, api_key)
    if warning:
        click.echo(warning, err=True)
    _log_requests()
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False, timeout_graceful_shutdown=drain_seconds + 5
    )
    try:
        _server_class(uvicorn)(config, app.state.service, drain_seconds).run()
    finally:
        models.close()


def model_host(params: dict[str, Any], folders: tuple[Path, ...], keep_alive: str | None) -> ModelHost:
    """The models the server may load: the pulled ones and those in ``folders``, each loaded with
    the command line's model options and kept ``keep_alive`` once idle."""
    from ..catalog.store import installed
    from ..server.models import DEFAULT_KEEP_ALIVE, ModelHost, keep_alive_seconds, servable_models

    try:
        seconds = keep_alive_seconds(keep_alive) if keep_alive is not None else DEFAULT_KEEP_ALIVE
    except QwqEdgeError as error:
        raise click.BadParameter(str(error), param_hint="--keep-alive") from None
    return ModelHost(
        lambda: servable_models(folders, installed),
        {key: value for key, value in load_kwargs(params).items() if key not in ("distributed", "rank_timeout")},
        options_maker(params),
        keep_alive=seconds,
    )


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

        def __init__(self, config: Any, service: Service, drain_seconds: float) -> None:
            super().__init__(config)
            self.service = service
            self.drain_seconds = drain_seconds

        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started:
                bound_host, bound_port = self.servers[0].sockets[0].getsockname()[:2]
                url = f"http://{_url_host(bound_host)}:{bound_port}"
                click.echo(f"qwq-edge serving {_serving(self.service.models)} at {url}")
                click.echo(f"  web chat: {url}/   API: {url}/v1   Ctrl-C to stop", err=True)

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            """Ctrl-C ends open requests now; SIGTERM (a service manager's stop) lets them finish
            for ``--drain-seconds``, then ends them (each with its protocol's error) and exits."""
            self.service.begin_shutdown(self.drain_seconds if sig == signal.SIGTERM else 0.0)
            super().handle_exit(sig, frame)

    return Server


def _serving(models: ModelHost) -> str:
    """What the start line says is served: the preloaded model, or how many can be loaded."""
    loaded = models.loaded.get(models.default or "")
    if loaded is not None:
        info = loaded.model.info
        return f"{loaded.name} ({info.engine} on {info.device})"
    count = len(models.paths())
    if not count:
        return "no model yet (qwq-edge pull NAME, or --models DIR)"
    return f"{count} model{'s' if count != 1 else ''} on demand"


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
