"""``qwq-edge service install|uninstall|status``: ``serve`` as a systemd user unit or a launchd agent."""

from __future__ import annotations

import click

from ..system import service_units as units
from .serve import serve


@click.group()
def service() -> None:
    """Run `qwq-edge serve` as a service of your login: a systemd user unit (Linux) or a launchd agent (macOS)."""


def check_serve_flags(flags: tuple[str, ...]) -> None:
    """Parse ``flags`` with serve's own parser (without serving), so a typo fails now rather than
    in a service restarting over and over."""
    try:
        serve.make_context("serve", list(flags), resilient_parsing=False)
    except click.UsageError as error:
        message = " ".join(error.format_message().split())
        raise click.ClickException(f"serve would refuse these flags: {message}") from None


@service.command(context_settings={"ignore_unknown_options": True})
@click.option("--no-start", is_flag=True, help="Only write the service file; do not (re)start the service.")
@click.option(
    "--drain-seconds",
    type=click.IntRange(min=0),
    default=30,
    show_default=True,
    help="Seconds a stop (SIGTERM) lets running requests finish (serve's --drain-seconds).",
)
@click.argument("serve_flags", nargs=-1, type=click.UNPROCESSED, metavar="[SERVE FLAGS]...")
def install(no_start: bool, drain_seconds: int, serve_flags: tuple[str, ...]) -> None:
    """Install (or replace) the service running `qwq-edge serve SERVE FLAGS`, and start it.

    It runs this Python with this environment's QWQ_EDGE_* and hub settings, in this folder.
    """
    platform = units.platform_for()
    flags = (*serve_flags, "--drain-seconds", str(drain_seconds))
    check_serve_flags(flags)
    spec = units.serve_spec(flags, drain_seconds)
    units.install(platform, spec, start=not no_start)
    click.echo(f"installed {platform.path}")
    if no_start:
        click.echo(f"not started (--no-start); to start it: {units.start_command(platform)}")
    else:
        click.echo("started")
    click.echo(f"logs: {platform.logs}")


@service.command()
@click.option("--no-stop", is_flag=True, help="Only remove the service file; do not stop the service.")
def uninstall(no_stop: bool) -> None:
    """Stop the service and remove its file."""
    platform = units.platform_for()
    if units.uninstall(platform, stop=not no_stop):
        click.echo(f"removed {platform.path}")
    else:
        click.echo(f"not installed (no {platform.path})")


@service.command()
def status() -> None:
    """Whether the service is installed, its state and where its logs are."""
    found = units.status(units.platform_for())
    click.echo(f"installed: {found.path}" if found.installed else f"not installed (would be {found.path})")
    if found.state is not None:
        click.echo(f"state: {found.state}")
    click.echo(f"logs: {found.logs}")
