"""The ``qwq-edge`` command line: a thin layer over the Python API."""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any

import click

from .. import __version__
from ..errors import QwqEdgeError, QwqEdgeWarning
from .bench import bench
from .chat import chat
from .convert import convert, verify_command
from .evaluate import evaluate
from .inspect import doctor, info
from .launch import launch
from .library import list_command, pull_command, rm_command
from .remote import ps, stop
from .run import run
from .serve import serve
from .service import service


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="qwq-edge")
def cli() -> None:
    """Run QwQ-class reasoning models locally, with control over how long they think."""


for command in (
    chat,
    run,
    serve,
    ps,
    stop,
    service,
    bench,
    convert,
    verify_command,
    info,
    doctor,
    evaluate,
    pull_command,
    list_command,
    rm_command,
    launch,
):
    cli.add_command(command)


def _fail(message: str, code: int) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _show_warning(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
    """qwq-edge's own warnings as one line each; others as Python shows them."""
    if issubclass(category, QwqEdgeWarning):
        click.echo(f"warning: {message}", err=True)
    else:
        _python_show_warning(message, category, *args, **kwargs)


_python_show_warning = warnings.showwarning


def main(args: list[str] | None = None) -> None:
    """Console entry point: every failure is one line on stderr and a non-zero exit."""
    warnings.showwarning = _show_warning
    try:
        code = cli.main(args=args, prog_name="qwq-edge", standalone_mode=False)
    except QwqEdgeError as error:
        _fail(str(error), 1)
    except click.UsageError as error:
        _fail(error.format_message(), 2)
    except click.ClickException as error:
        _fail(error.format_message(), error.exit_code)
    except (click.Abort, KeyboardInterrupt):
        click.echo("", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.stderr.close()
        sys.exit(1)
    except Exception as error:  # a bug: keep the promise of one line, unless debugging
        if os.environ.get("QWQ_EDGE_DEBUG"):
            raise
        _fail(f"internal error: {type(error).__name__}: {error} (set QWQ_EDGE_DEBUG=1 for a traceback)", 70)
    sys.exit(code or 0)
