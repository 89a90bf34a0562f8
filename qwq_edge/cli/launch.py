"""``qwq-edge launch``: start a command on every machine of a distributed run, through ``mlx.launch``."""

from __future__ import annotations

import contextlib
import math
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import IO

import click

from ..system.distributed import BACKENDS, LaunchLog, LaunchPlan, launch_command


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


#: Seconds the ranks get to stop after one failed or after Ctrl-C / SIGTERM, before what is
#: left is killed (a hung or stopped rank would keep ``mlx.launch`` waiting for ever).
GRACE_SECONDS = 10.0


def run_launch(command: list[str], log: LaunchLog, grace: float = GRACE_SECONDS) -> int:
    """Run ``mlx.launch``; the exit status says whether every rank finished well.

    Without a terminal, ``mlx.launch`` and the local ranks get a session of their own,
    so that a stop (SIGINT or SIGTERM to this process) reaches every rank as Ctrl-C in a
    terminal does, and what is left after ``grace`` seconds can be killed together."""
    interactive = sys.stdin.isatty()
    try:
        process = subprocess.Popen(
            command,
            stdin=None if interactive else subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=None if interactive else _own_session,
        )
    except OSError as error:
        raise click.ClickException(f"cannot start {command[0]}: {error.strerror or error}") from None
    assert process.stderr is not None
    if process.stdin is not None:
        threading.Thread(target=_feed_input, args=(process.stdin,), daemon=True).start()
    relay = threading.Thread(target=_relay, args=(process.stderr, log), daemon=True)
    relay.start()
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        status = _wait(process, log, not interactive, grace)
    except KeyboardInterrupt:
        status = _stop(process, not interactive, grace)
    finally:
        signal.signal(signal.SIGTERM, previous)
    relay.join(GRACE_SECONDS)  # the rest of mlx.launch's messages (it has ended: the pipe closes)
    if (unreported := log.unreported_failure()) is not None:
        click.echo(unreported, err=True)
    return status or log.exit_code


def _own_session() -> None:
    """In ``mlx.launch``'s process, before it starts: a session of its own, and SIGINT ignored,
    so that a stop does not end it with a traceback before its ranks; the ranks inherit the
    ignore: rank 0's commands handle SIGINT themselves, the others follow rank 0's stop."""
    os.setsid()
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _wait(process: subprocess.Popen, log: LaunchLog, own_group: bool, grace: float) -> int:
    """``mlx.launch``'s status; once a rank has failed, the others get the grace time."""
    failed_at: float | None = None
    while (status := process.poll()) is None:
        if log.failed and failed_at is None:
            failed_at = time.monotonic()
        if failed_at is not None and time.monotonic() - failed_at > grace:
            _kill(process, own_group)
            return log.exit_code or 1
        time.sleep(0.1)
    return status


def _stop(process: subprocess.Popen, own_group: bool, grace: float) -> int:
    """Pass a stop on to every rank (in a terminal, Ctrl-C reached them already), then wait."""
    if own_group:
        os.killpg(process.pid, signal.SIGINT)
    try:
        return process.wait(grace)
    except subprocess.TimeoutExpired:
        _kill(process, own_group)
        return 130


def _kill(process: subprocess.Popen, own_group: bool) -> None:
    """Kill ``mlx.launch`` (and, in its own session, every local rank, stopped ones too)."""
    with contextlib.suppress(ProcessLookupError):
        if own_group:
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.kill()
    process.wait()


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a number of seconds")
    return value


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
@click.option(
    "--grace",
    type=click.FloatRange(0, 3600),
    default=GRACE_SECONDS,
    show_default=True,
    metavar="SECONDS",
    callback=lambda ctx, param, value: _finite(value),
    help="How long the ranks get to stop after one fails, Ctrl-C or SIGTERM, before what is left is "
    "killed (0: at once, with no clean shutdown).",
)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def launch(
    hosts: str | None,
    hostfile: Path | None,
    repeat: int | None,
    backend: str,
    dry_run: bool,
    verbose: bool,
    grace: float,
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
    sys.exit(run_launch(argv, LaunchLog(verbose), grace))
