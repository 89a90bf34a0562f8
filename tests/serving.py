"""A real ``qwq-edge serve`` process on a free loopback port, for the server and web-page tests."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KEY = "sk-test-key"
#: Fast, repeatable defaults: a short context, greedy decoding, and the <think> format so the
#: 0.5B test model (a plain instruct model) thinks before it answers.
FAST = ["--ctx", "2048", "--temperature", "0", "--reasoning-format", "think"]


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log_path: Path

    @property
    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8")


def _first_line(process: subprocess.Popen, timeout: float) -> str:
    """The server's first stdout line (its URL), or a failure with what it wrote on stderr."""
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return line[0] if line else ""


@contextmanager
def running_server(command: list[str], model_path: Path | None, *options: str, timeout: float = 60) -> Iterator[Server]:
    """Start ``qwq-edge serve`` on port 0 and yield it once it prints its URL; stop it after.
    ``model_path`` ``None``: no ``--model``, the server loads models on demand."""
    with tempfile.TemporaryDirectory() as folder:
        log_path = Path(folder) / "stderr.log"
        with open(log_path, "w", encoding="utf-8") as log:
            model = ["-m", str(model_path)] if model_path is not None else []
            args = [*command, "serve", *model, "--port", "0", *FAST, *options]
            process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, text=True)
        try:
            found = re.search(r"http://[\d.]+:\d+", _first_line(process, timeout))
            assert found, f"the server did not start: {log_path.read_text(encoding='utf-8')[-2000:]}"
            yield Server(found.group(), process, log_path)
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # names in lower case
    body: Any


def http(
    method: str, url: str, body: bytes | dict | None = None, key: str | None = None, headers: dict | None = None
) -> Answer:
    """One plain HTTP request (for what an OpenAI client would not send: any ``headers``, ``Host``
    and ``Origin`` too); a JSON body is decoded, another is text."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if key is not None:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            status, headers, raw = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        status, headers, raw = error.code, dict(error.headers), error.read()
    headers = {name.lower(): value for name, value in headers.items()}
    is_json = "json" in headers.get("content-type", "")
    return Answer(status, headers, (json.loads(raw) if is_json else raw.decode("utf-8", "replace")) if raw else None)


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a ``/metrics`` text (parsed by prometheus-client), 0 when absent."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(key) == value for key, value in labels.items()):
                return sample.value
    return 0.0
