"""``qwq-edge service``: the systemd user unit passes ``systemd-analyze verify`` (where it is
installed) and reads back the exact serve command line, the launchd agent parses with
``plistlib``, and install, status and uninstall write, report and remove the file. Starting and
stopping are checked against stand-in ``systemctl`` / ``launchctl`` scripts on PATH (a test
machine has no session manager to start anything in); a bad serve flag is one line."""

from __future__ import annotations

import os
import plistlib
import re
import shutil
import subprocess
import sys

import pytest

from qwq_edge.errors import ServiceError
from qwq_edge.system.service_units import (
    ServiceSpec,
    install,
    platform_for,
    render,
    serve_spec,
    systemd_unit,
    uninstall,
)

pytestmark = pytest.mark.subprocess

#: Words systemd would mangle if written as they are: specifiers, variables, quotes, a lone ``;``.
AWKWARD = ["a b  c", "100%", "%h", "$HOME", "${HOME}", "$$", 'say "hi"', "it's", "back\\slash", ";", "", "tab\there"]
SYSTEMD = sys.platform.startswith("linux")


def qwq(*args, home, env=None):
    """Run the real CLI with ``home`` as HOME, the config folder and the working folder."""
    environ = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / "config"), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "qwq_edge", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=home,
        env=environ,
        check=False,
    )


#: What systemd expands in an ExecStart word: ``%%`` and ``$$`` are one character, anything
#: else after ``%`` is a specifier and ``$NAME`` / ``${NAME}`` a variable (marked, never equal).
EXPANDED = re.compile(r"%.?|\$(?:\$|\{[^}]*\}?|\w*)", re.DOTALL)
C_ESCAPE = re.compile(r"\\(x[0-9a-f]{2}|.)", re.DOTALL)


def exec_start(unit: str) -> list[str]:
    """ExecStart's words as systemd reads them: split on blanks outside double quotes, C escapes
    undone inside them, then specifiers and variables expanded."""
    (line,) = re.findall(r"^ExecStart=(.*)$", unit, re.MULTILINE)
    words = []
    for quoted, plain in re.findall(r'"((?:[^"\\]|\\.)*)"|(\S+)', line):
        text = plain or C_ESCAPE.sub(lambda m: chr(int(m[1][1:], 16)) if len(m[1]) == 3 else m[1], quoted)
        words.append(EXPANDED.sub(lambda m: m[0][0] if m[0] in ("%%", "$$") else f"<expanded {m[0]}>", text))
    return words


def verify(path, tmp_path) -> subprocess.CompletedProcess[str]:
    """``systemd-analyze --user verify`` with a runtime folder of its own (a container has none)."""
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = {**os.environ, "HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(runtime)}
    return subprocess.run(
        ["systemd-analyze", "--user", "verify", str(path)], capture_output=True, text=True, env=env, check=False
    )


@pytest.mark.skipif(not SYSTEMD or not shutil.which("systemd-analyze"), reason="needs Linux and systemd-analyze")
def test_the_installed_unit_passes_systemd_verify_and_runs_serve_with_the_flags(tmp_path):
    flags = ["--model", "X", "--port", "8123", "--model-id", 'my model 100% $HOME "x" ;']
    env = {"QWQ_EDGE_HOME": str(tmp_path / "q h"), "UNRELATED_SECRET": "s3cret"}
    proc = qwq("service", "install", "--no-start", "--drain-seconds", "12", *flags, home=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    unit_path = tmp_path / "config" / "systemd" / "user" / "qwq-edge.service"
    assert f"installed {unit_path}" in proc.stdout and "not started" in proc.stdout
    assert unit_path.stat().st_mode & 0o077 == 0  # it may hold an API key
    unit = unit_path.read_text(encoding="utf-8")
    assert exec_start(unit) == [sys.executable, "-m", "qwq_edge", "serve", *flags, "--drain-seconds", "12"]
    assert f'Environment="QWQ_EDGE_HOME={tmp_path / "q h"}"' in unit and "s3cret" not in unit
    assert f"WorkingDirectory={tmp_path}\n" in unit and "TimeoutStopSec=22\n" in unit
    checked = verify(unit_path, tmp_path)
    assert checked.returncode == 0 and "qwq-edge.service" not in checked.stdout + checked.stderr, checked.stderr
    # the check can fail: an unbalanced quote in the same unit is reported
    broken = tmp_path / "broken" / "qwq-edge.service"
    broken.parent.mkdir()
    broken.write_text(unit.replace(' ;"', " ;"), encoding="utf-8")
    assert "Unbalanced quoting" in verify(broken, tmp_path).stderr


def test_awkward_words_read_back_as_they_were(tmp_path):
    argv = (sys.executable, "-m", "qwq_edge", "serve", "--model-id", *AWKWARD, "newline\nhere")
    spec = ServiceSpec(argv, {"QWQ_EDGE_HOME": '/x/100% "$HOME"'}, tmp_path / "50% off", 40)
    unit = systemd_unit(spec)
    assert exec_start(unit) == list(argv)
    assert 'Environment="QWQ_EDGE_HOME=/x/100%% \\"$HOME\\""' in unit  # no $ expansion in Environment=
    assert f"WorkingDirectory={tmp_path}/50%% off\n" in unit
    if shutil.which("systemd-analyze"):
        path = tmp_path / "qwq-edge.service"
        (tmp_path / "50% off").mkdir()
        path.write_text(unit, encoding="utf-8")
        checked = verify(path, tmp_path)
        assert checked.returncode == 0 and "qwq-edge.service" not in checked.stdout + checked.stderr, checked.stderr


def test_the_launchd_agent_parses_with_plistlib(tmp_path):
    platform = platform_for("darwin", home=tmp_path)
    environ = {"QWQ_EDGE_HOME": "/q", "HF_HOME": "/hf", "PATH": "/bin"}
    flags = ["--model", "X", "--port", "8123", *AWKWARD]
    spec = serve_spec(flags, 30, environ=environ, cwd=tmp_path)
    install(platform, spec, start=False)
    assert platform.path == tmp_path / "Library" / "LaunchAgents" / "io.qwq-edge.serve.plist"
    agent = plistlib.loads(platform.path.read_bytes())
    assert agent["Label"] == "io.qwq-edge.serve"
    assert agent["ProgramArguments"] == [sys.executable, "-m", "qwq_edge", "serve", *flags]
    assert agent["EnvironmentVariables"] == {"HF_HOME": "/hf", "QWQ_EDGE_HOME": "/q"}
    log = tmp_path / "Library" / "Logs" / "qwq-edge" / "serve.log"
    assert agent["StandardOutPath"] == agent["StandardErrorPath"] == str(log) and log.parent.is_dir()
    assert agent["RunAtLoad"] is True and agent["KeepAlive"] == {"SuccessfulExit": False}
    assert agent["ExitTimeOut"] == 40 and agent["WorkingDirectory"] == str(tmp_path)
    with pytest.raises(ServiceError, match="launchd agent cannot hold"):
        render(platform, serve_spec(["--model-id", "bell\a"], 30, environ={}, cwd=tmp_path))


def test_status_install_and_uninstall(tmp_path):
    platform = platform_for(home=tmp_path, environ={"XDG_CONFIG_HOME": str(tmp_path / "config")})
    before = qwq("service", "status", home=tmp_path)
    assert before.returncode == 0, before.stderr
    assert f"not installed (would be {platform.path})" in before.stdout and f"logs: {platform.logs}" in before.stdout
    assert qwq("service", "install", "--no-start", "--port", "8123", home=tmp_path).returncode == 0
    after = qwq("service", "status", home=tmp_path)
    assert after.returncode == 0 and f"installed: {platform.path}" in after.stdout, after.stderr
    removed = qwq("service", "uninstall", "--no-stop", home=tmp_path)
    assert removed.returncode == 0 and f"removed {platform.path}" in removed.stdout, removed.stderr
    assert not platform.path.exists()
    assert "not installed" in qwq("service", "status", home=tmp_path).stdout
    again = qwq("service", "uninstall", "--no-stop", home=tmp_path)
    assert again.returncode == 0 and "not installed" in again.stdout


def fake_tool(folder, name, print_status=0, fail=False):
    """A ``systemctl`` or ``launchctl`` on PATH that notes each call in ``calls`` and succeeds
    (``print`` exits with ``print_status``), or fails every call as one without a session bus."""
    folder.mkdir(exist_ok=True)
    calls = folder / "calls"
    script = folder / name
    failing = 'echo "Failed to connect to bus: No medium found" >&2; exit 1'
    script.write_text(
        f'#!/bin/sh\necho "$*" >> "{calls}"\n{failing if fail else ""}\n'
        f'[ "$1" = print ] && exit {print_status}\nexit 0\n',
        encoding="utf-8",
    )
    script.chmod(0o755)
    return calls


@pytest.mark.skipif(not SYSTEMD, reason="the CLI writes a systemd unit on Linux only")
def test_install_and_uninstall_tell_systemd(tmp_path):
    calls = fake_tool(tmp_path / "bin", "systemctl")
    path = {"PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    installed = qwq("service", "install", "--port", "8123", home=tmp_path, env=path)
    assert installed.returncode == 0 and "started" in installed.stdout, installed.stderr
    assert qwq("service", "uninstall", home=tmp_path, env=path).returncode == 0
    assert calls.read_text().splitlines() == [
        "--user daemon-reload",
        "--user enable qwq-edge.service",
        "--user restart qwq-edge.service",  # a running one takes the new flags
        "--user disable --now qwq-edge.service",
        "--user daemon-reload",
    ]


@pytest.mark.skipif(not SYSTEMD, reason="the CLI writes a systemd unit on Linux only")
def test_a_refused_stop_is_one_line_and_keeps_the_file(tmp_path):
    assert qwq("service", "install", "--no-start", home=tmp_path).returncode == 0
    fake_tool(tmp_path / "bin", "systemctl", fail=True)
    path = {"PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    proc = qwq("service", "uninstall", home=tmp_path, env=path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert "Failed to connect to bus" in line and "uninstall --no-stop" in line
    assert (tmp_path / "config" / "systemd" / "user" / "qwq-edge.service").exists()


def test_install_and_uninstall_tell_launchd(tmp_path, monkeypatch):
    calls = fake_tool(tmp_path / "bin", "launchctl", print_status=0)  # an agent is loaded already
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    platform = platform_for("darwin", home=tmp_path)
    install(platform, serve_spec(["--port", "8123"], 30, environ={}, cwd=tmp_path))
    assert uninstall(platform) and not platform.path.exists()
    agent = f"gui/{os.getuid()}/io.qwq-edge.serve"
    assert calls.read_text().splitlines() == [
        f"print {agent}",
        f"bootout {agent}",  # the old one goes, so the new flags apply
        f"bootstrap gui/{os.getuid()} {platform.path}",
        f"print {agent}",
        f"bootout {agent}",
    ]


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--prot", "8123"], "No such option '--prot'"),
        (["--port", "99999"], "99999 is not in the range"),
        (["--model", "X", "stray"], "unexpected extra argument (stray)"),
    ],
)
def test_a_bad_serve_flag_is_one_line_and_writes_nothing(tmp_path, flags, fragment):
    proc = qwq("service", "install", "--no-start", *flags, home=tmp_path)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: serve would refuse these flags: "), proc.stderr
    assert fragment in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "config").exists() and not (tmp_path / "Library").exists()


def test_another_platform_is_refused_in_one_line():
    with pytest.raises(ServiceError, match=r"Linux \(systemd\) and macOS \(launchd\), not on win32"):
        platform_for("win32")
