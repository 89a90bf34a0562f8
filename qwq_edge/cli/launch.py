"""``qwq-edge launch``: start a command on every machine of a distributed run, through ``mlx.launch``."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

import click

from ..distributed import BACKENDS, LaunchLog, LaunchPlan, launch_command


def _relay(stream: IO[bytes], log: LaunchLog) -> None:
    """Copy ``mlx.launch``'s standard error to ours, noting failed ranks and dropping backend chatter."""
    for raw in iter(stream.readline, b""):
        if log.line(raw.decode(errors="replace")):
            sys.stderr.buffer.write(raw)
            sys.stderr.buffer.flush()


def _feed_input(pipe: IO[bytes]) -> None:
    """Copy our standard input to ``mlx.launch``'s and keep its pipe open at the end: at
    end of file it would read nothing in a busy loop (it never passes the end on to the ranks)."""
    while chunk := os.read(sys.stdin.fileno(), 8192):
        try:
            pipe.write(chunk)
            pipe.flush()
        except BrokenPipeError:
            return


def run_launch(command: list[str], log: LaunchLog) -> int:
    """Run ``mlx.launch``; the exit status says whether every rank finished well."""
    interactive = sys.stdin.isatty()
    try:
        process = subprocess.Popen(command, stdin=None if interactive else subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as error:
        raise click.ClickException(f"cannot start {command[0]}: {error.strerror or error}") from None
    assert process.stderr is not None
    if process.stdin is not None:
        threading.Thread(target=_feed_input, args=(process.stdin,), daemon=True).start()
    relay = threading.Thread(target=_relay, args=(process.stderr, log), daemon=True)
    relay.start()
    try:
        status = process.wait()
    except KeyboardInterrupt:  # mlx.launch got the Ctrl-C too; let it stop the ranks
        status = process.wait()
    relay.join()
    return status or log.exit_code


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--hosts", help="Comma-separated hosts, rank 0 first (IP addresses for the ring backend).")
@click.option(
    "--hostfile",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="An mlx.launch hostfile (JSON; mlx.distributed_config writes one).",
)
@click.option("-n", "repeat", type=click.IntRange(min=1), help="Processes per host (-n 2 alone: two on this machine).")
@click.option("--backend", type=click.Choice(BACKENDS), default="ring", show_default=True)
@click.option("--dry-run", is_flag=True, help="Print the mlx.launch command instead of running it.")
@click.option("--verbose", "-v", is_flag=True, help="mlx.launch's and the backend's own messages too.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def launch(
    hosts: str | None,
    hostfile: Path | None,
    repeat: int | None,
    backend: str,
    dry_run: bool,
    verbose: bool,
    command: tuple[str, ...],
) -> None:
    """Run COMMAND on every host, one rank each, with mlx.launch.

    A qwq-edge command (run, chat, bench, serve, doctor) runs as
    `python -m qwq_edge COMMAND --distributed …` with this machine's Python, which
    must be at the same path on every host; anything else runs as given. Rank 0
    (the first host) reads standard input and writes the output. Example:

        qwq-edge launch --hostfile hosts.json -- chat -m ~/models/QwQ-32B-8bit
    """
    if hosts is not None and hostfile is not None:
        raise click.UsageError("give --hosts or --hostfile, not both")
    plan = LaunchPlan(tuple(command), hosts, hostfile, repeat, backend, verbose)
    argv = launch_command(plan)
    if dry_run:
        click.echo(shlex.join(argv))
        return
    sys.exit(run_launch(argv, LaunchLog(verbose)))
