"""Running one model over several machines: the ``mlx.launch`` command, and whether we run under it.

``qwq-edge launch`` builds the ``mlx.launch`` call here (nothing here imports MLX):
``mlx.launch`` starts one process per rank (over ssh for other hosts), sets each
rank's environment (``MLX_RANK``, and ``MLX_HOSTFILE`` for the ring backend or
``MLX_JACCL_COORDINATOR`` for JACCL), sends its standard input to every rank and
merges their output. It ends the other ranks when one exits with an error, but
its own exit status is 0 whatever the ranks did, and the ring backend prints a
line per failed socket operation; ``LaunchLog`` reads its standard error to give
a true exit status and to keep the backend's chatter out of the way.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

#: Environment variables ``mlx.launch`` (or mpirun) sets in every rank.
LAUNCHER_ENV = ("MLX_RANK", "MLX_HOSTFILE", "MLX_JACCL_COORDINATOR", "OMPI_COMM_WORLD_SIZE")
BACKENDS = ("ring", "jaccl", "any")
#: qwq-edge commands that take ``--distributed``; ``launch`` adds it when missing.
DISTRIBUTED_COMMANDS = ("run", "chat", "bench", "serve", "doctor")
_NODE_FAILED = re.compile(r"Node with rank (\d+) (?:was killed|exited with code (-?\d+))")
_BACKEND_CHATTER = re.compile(r"^\[(?:ring|jaccl)\] ")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def launched() -> bool:
    """Whether this process was started by ``mlx.launch`` (or mpirun) as one rank of a group."""
    return any(name in os.environ for name in LAUNCHER_ENV)


@dataclass(frozen=True)
class LaunchPlan:
    """What ``qwq-edge launch`` was asked for."""

    command: tuple[str, ...]
    hosts: str | None = None
    hostfile: Path | None = None
    repeat: int | None = None
    backend: str = "ring"
    verbose: bool = False


def launcher() -> list[str]:
    """The ``mlx.launch`` of this Python environment (the one next to this interpreter first)."""
    beside = Path(sys.executable).parent / "mlx.launch"
    found = str(beside) if beside.is_file() else shutil.which("mlx.launch")
    if found is None:
        return [sys.executable, "-m", "mlx._distributed_utils.launch"]
    return [found]


def rank_command(command: tuple[str, ...]) -> list[str]:
    """The command every rank runs: a qwq-edge command (``run …``) becomes this
    interpreter's ``python -m qwq_edge run --distributed …``; anything else runs as given."""
    if not command or command[0] not in DISTRIBUTED_COMMANDS:
        return list(command)
    name, *rest = command
    flags = [] if "--distributed" in rest else ["--distributed"]
    return [sys.executable, "-m", "qwq_edge", name, *flags, *rest]


def launch_command(plan: LaunchPlan) -> list[str]:
    """The ``mlx.launch`` call for ``plan``."""
    args = launcher()
    if plan.hostfile is not None:
        args += ["--hostfile", str(plan.hostfile)]
    if plan.hosts is not None:
        args += ["--hosts", plan.hosts]
    if plan.repeat is not None:
        args += ["-n", str(plan.repeat)]
    if plan.backend != "any":
        args += ["--backend", plan.backend]
    if plan.verbose:
        args.append("--verbose")
    return [*args, "--", *rank_command(plan.command)]


class LaunchLog:
    """Reads ``mlx.launch``'s standard error: which ranks failed, and which lines to show."""

    def __init__(self, verbose: bool = False) -> None:
        self.verbose = verbose
        self.failed: dict[int, str] = {}
        #: Whether a rank said why the run failed (an ``error:`` line).
        self.reported = False

    def line(self, text: str) -> bool:
        """Note a line; whether to show it."""
        plain = _ANSI.sub("", text)
        match = _NODE_FAILED.search(plain)
        if match:
            rank, code = int(match.group(1)), match.group(2)
            self.failed[rank] = "was killed" if code is None else f"exited with code {code}"
        self.reported |= plain.startswith("error:")
        return self.verbose or not _BACKEND_CHATTER.match(plain)

    def unreported_failure(self) -> str | None:
        """The one line to print when ranks failed and none said why (``mlx.launch`` may stop
        rank 0 before it notices that another rank is gone)."""
        if not self.failed or self.reported:
            return None
        ranks = "; ".join(f"rank {rank} {why}" for rank, why in sorted(self.failed.items()))
        return f"error: distributed run failed: {ranks}"

    @property
    def exit_code(self) -> int:
        """0 when every rank finished well; rank 0's status when it failed with one; else 1."""
        own = self.failed.get(0, "").removeprefix("exited with code ")
        if own.isdigit():
            return int(own)
        return 1 if self.failed else 0
