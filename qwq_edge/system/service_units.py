"""``qwq-edge serve`` as a service of the user's login: a systemd user unit on Linux, a launchd
agent on macOS.

The file is built here from the serve command line (this interpreter running ``-m qwq_edge
serve`` with the user's flags), the environment qwq-edge reads (``QWQ_EDGE_*``, where models
and the hub cache are, the import path) and the folder it was installed from (so a relative
``--model ./x.gguf`` still names the same file). It is written atomically, then the platform's
manager is told: ``systemctl --user`` (logs in the journal: ``journalctl --user -u qwq-edge``)
or ``launchctl`` (logs in ``~/Library/Logs/qwq-edge/serve.log``). Stopping sends SIGTERM and
waits the server's drain time and 10 seconds more before killing it.
"""

from __future__ import annotations

import os
import plistlib
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import ServiceError
from ..files import write_bytes_atomic

UNIT_NAME = "qwq-edge.service"
LABEL = "io.qwq-edge.serve"
#: ``launchctl print``'s exit status for a service it does not have.
NOT_LOADED = 113
#: Besides every ``QWQ_EDGE_*``: what decides where models, the hub cache and qwq_edge itself are found.
CARRIED = ("PYTHONPATH", "XDG_DATA_HOME", "HF_HOME", "HF_HUB_CACHE", "HF_HUB_OFFLINE")
#: Seconds the service gets to stop beyond the server's drain time, before it is killed.
STOP_MARGIN_SECONDS = 10
#: An ExecStart word that needs no quotes (``%`` and ``$`` are doubled first).
_PLAIN = re.compile(r"[\w@%+=:,./$-]+", re.ASCII)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_QUOTED_ESCAPES = {"\\": "\\\\", '"': '\\"', **{chr(c): f"\\x{c:02x}" for c in (*range(32), 127)}}


@dataclass(frozen=True)
class ServiceSpec:
    """What the service runs: the command, its environment and folder, and how long it may take to stop."""

    argv: tuple[str, ...]
    environment: Mapping[str, str]
    working_directory: Path
    stop_seconds: int


def serve_spec(
    flags: Sequence[str], drain_seconds: int, environ: Mapping[str, str] = os.environ, cwd: Path | None = None
) -> ServiceSpec:
    """The service of ``qwq-edge serve FLAGS`` as run now: this interpreter, this environment, this folder."""
    carried = {
        name: value
        for name, value in sorted(environ.items())
        if (name.startswith("QWQ_EDGE_") or name in CARRIED) and value
    }
    return ServiceSpec(
        argv=(sys.executable, "-m", "qwq_edge", "serve", *flags),
        environment=carried,
        working_directory=cwd or Path.cwd(),
        stop_seconds=drain_seconds + STOP_MARGIN_SECONDS,
    )


def systemd_quote(word: str) -> str:
    """One ExecStart word that systemd reads back as ``word``: specifiers (``%``) and variables
    (``$``) doubled, and double quotes with C escapes around anything but a plain word."""
    text = word.replace("%", "%%").replace("$", "$$")
    if _PLAIN.fullmatch(text):
        return text
    return '"' + "".join(_QUOTED_ESCAPES.get(char, char) for char in text) + '"'


def _environment_line(name: str, value: str) -> str:
    """``Environment="NAME=VALUE"``: quoted with C escapes, specifiers doubled (systemd expands no ``$`` here)."""
    text = f"{name}={value}".replace("%", "%%")
    return 'Environment="' + "".join(_QUOTED_ESCAPES.get(char, char) for char in text) + '"'


def systemd_unit(spec: ServiceSpec) -> str:
    """The systemd user unit of ``spec``: restarted when it fails, stopped by SIGTERM."""
    folder = str(spec.working_directory)
    if _CONTROL.search(folder):
        raise ServiceError(f"a unit cannot hold this folder as its working directory: {folder!r}")
    environment = [_environment_line(name, value) for name, value in spec.environment.items()]
    lines = [
        "# Written by `qwq-edge service install`; `qwq-edge service uninstall` removes it.",
        "[Unit]",
        "Description=qwq-edge serve: an OpenAI-compatible server of a local reasoning model",
        "After=network.target",
        "",
        "[Service]",
        "Type=simple",
        "ExecStart=" + " ".join(systemd_quote(word) for word in spec.argv),
        "WorkingDirectory=" + folder.replace("%", "%%"),
        *environment,
        "Restart=on-failure",
        "KillSignal=SIGTERM",
        f"TimeoutStopSec={spec.stop_seconds}",
        "",
        "[Install]",
        "WantedBy=default.target",
    ]
    return "\n".join(lines) + "\n"


def launchd_plist(spec: ServiceSpec, log_file: Path) -> bytes:
    """The launchd agent of ``spec``: started at login, started again when it exits with an error."""
    agent = {
        "Label": LABEL,
        "ProgramArguments": list(spec.argv),
        "EnvironmentVariables": dict(spec.environment),
        "WorkingDirectory": str(spec.working_directory),
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "StandardOutPath": str(log_file),
        "StandardErrorPath": str(log_file),
        "ExitTimeOut": spec.stop_seconds,
    }
    try:
        return plistlib.dumps(agent)
    except ValueError as error:  # a control character: XML cannot hold it
        raise ServiceError(f"a launchd agent cannot hold this command line: {error}") from None


@dataclass(frozen=True)
class Platform:
    """Where this platform's service file goes and where its logs are."""

    manager: str  # "systemd" or "launchd"
    path: Path
    logs: str  # a command that shows them, or their file
    log_file: Path | None = None


def platform_for(
    system: str = sys.platform, home: Path | None = None, environ: Mapping[str, str] = os.environ
) -> Platform:
    """The service layout of ``system`` (``sys.platform``) for the user whose home is ``home``."""
    home = home or Path.home()
    if system.startswith("linux"):
        config = environ.get("XDG_CONFIG_HOME", "")
        base = Path(config) if os.path.isabs(config) else home / ".config"
        return Platform("systemd", base / "systemd" / "user" / UNIT_NAME, "journalctl --user -u qwq-edge")
    if system == "darwin":
        log_file = home / "Library" / "Logs" / "qwq-edge" / "serve.log"
        return Platform("launchd", home / "Library" / "LaunchAgents" / f"{LABEL}.plist", str(log_file), log_file)
    raise ServiceError(f"qwq-edge service runs on Linux (systemd) and macOS (launchd), not on {system}")


def render(platform: Platform, spec: ServiceSpec) -> bytes:
    """The service file's bytes for ``platform``."""
    try:
        if platform.log_file is not None:
            return launchd_plist(spec, platform.log_file)
        return systemd_unit(spec).encode("utf-8")
    except UnicodeEncodeError as error:
        raise ServiceError(f"the command line is not valid UTF-8: {error.object[error.start : error.end]!r}") from None


def _domain() -> str:
    return f"gui/{os.getuid()}"


def _tool(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run ``systemctl`` or ``launchctl``; a missing tool is a ServiceError. No timeout of our own:
    a stop waits for the drain, and the managers bound their jobs themselves."""
    try:
        return subprocess.run(argv, capture_output=True, text=True, check=False)
    except OSError as error:
        raise ServiceError(f"cannot run {argv[0]}: {error.strerror or error}") from None


def _must(*argv: str) -> None:
    """Run ``argv``; its failure is a ServiceError with the tool's own last line."""
    proc = _tool(*argv)
    if proc.returncode != 0:
        said = (proc.stderr.strip() or proc.stdout.strip() or f"exit status {proc.returncode}").splitlines()[-1]
        raise ServiceError(f"{' '.join(argv)} failed: {said}")


def _loaded() -> bool:
    """Whether launchd has the agent loaded now."""
    return _tool("launchctl", "print", f"{_domain()}/{LABEL}").returncode == 0


def start_command(platform: Platform) -> str:
    """What starts the installed service by hand (after ``install --no-start``)."""
    if platform.manager == "systemd":
        return "systemctl --user daemon-reload && systemctl --user enable --now qwq-edge"
    return f"launchctl bootstrap {_domain()} {platform.path}"


def install(platform: Platform, spec: ServiceSpec, start: bool = True) -> None:
    """Write the service file (atomically; a new one replaces the old) and, with ``start``,
    (re)start the service so the new command line applies."""
    data = render(platform, spec)
    if platform.log_file is not None:
        platform.log_file.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(platform.path, data)
    if not start:
        return
    try:
        if platform.manager == "systemd":
            _must("systemctl", "--user", "daemon-reload")
            _must("systemctl", "--user", "enable", UNIT_NAME)
            _must("systemctl", "--user", "restart", UNIT_NAME)
        else:
            if _loaded():
                _must("launchctl", "bootout", f"{_domain()}/{LABEL}")
            _must("launchctl", "bootstrap", _domain(), str(platform.path))
    except ServiceError as error:
        raise ServiceError(f"{error} (the service file is written: {platform.path})") from None


def uninstall(platform: Platform, stop: bool = True) -> bool:
    """Stop the service (with ``stop``) and remove its file; False when there was none. A stop
    that fails leaves the file, so nothing keeps running without one."""
    if not platform.path.exists():
        return False
    try:
        if stop and platform.manager == "systemd":
            _must("systemctl", "--user", "disable", "--now", UNIT_NAME)
        elif stop and _loaded():
            _must("launchctl", "bootout", f"{_domain()}/{LABEL}")
    except ServiceError as error:
        raise ServiceError(f"{error} (the service file is kept; uninstall --no-stop removes it alone)") from None
    platform.path.unlink()
    if stop and platform.manager == "systemd":
        _must("systemctl", "--user", "daemon-reload")
    return True


@dataclass(frozen=True)
class ServiceStatus:
    """Whether the service file is there, what the manager says of it, and where its logs are."""

    installed: bool
    path: Path
    state: str | None  # None: the manager's tool is not on this machine
    logs: str


def status(platform: Platform) -> ServiceStatus:
    """The service as the file system and the manager see it now."""
    installed = platform.path.exists()
    if platform.manager == "systemd":
        argv = ("systemctl", "--user", "is-active", UNIT_NAME)
    else:
        argv = ("launchctl", "print", f"{_domain()}/{LABEL}")
    if shutil.which(argv[0]) is None:
        return ServiceStatus(installed, platform.path, None, platform.logs)
    proc = _tool(*argv)
    if platform.manager == "systemd":
        state = proc.stdout.strip()  # active, inactive, failed, activating, …
    else:
        found = re.search(r"^\s*state = (.+)$", proc.stdout, re.MULTILINE)
        state = found.group(1).strip() if found else "not loaded" if proc.returncode == NOT_LOADED else ""
    if not state:
        said = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        state = f"unknown ({said[-1]})" if said else "unknown"
    return ServiceStatus(installed, platform.path, state, platform.logs)
