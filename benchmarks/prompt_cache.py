"""The prompt cache: how soon a returning conversation's turn 2 starts, and what the cache costs.

On the 0.5B test model over HTTP (a real ``qwq-edge serve``, ``--parallel 1``, greedy), a
~1,800-token first message, then turn 2 of that conversation:

- right after turn 1, and after 1 and 4 unrelated requests in between (each evicts the
  conversation from the one sequence: the memory cache keeps it);
- after a restart of the server (the disk cache);
- the same, with the prompt cache off (``--cache-ram 0 --no-prompt-cache``): the baseline.

Time to first token is timed from the request to the first streamed chunk, median of the
rounds, the arms alternating. Decode speed with the cache on ÷ off is the cost; the
server's RSS after the runs shows the memory it holds.

    python benchmarks/prompt_cache.py            # 3 rounds, writes benchmarks/results/
    python benchmarks/prompt_cache.py --quick    # 1 round, a shorter document (what the tests run)
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from qwq_edge.services.testdata import fixture_model_path

try:
    from benchmarks.common import RESULTS, machine, median, save
except ImportError:  # run as a script from the repository root
    from common import RESULTS, machine, median, save

INTERRUPTIONS = (0, 1, 4)
ARMS = {"cache on": (), "cache off": ("--cache-ram", "0", "--no-prompt-cache")}


def document(clauses: int) -> str:
    return " ".join(
        f"Clause {i}: the tenant keeps the garden tidy; rent is due on day {i % 28 + 1}." for i in range(clauses)
    )


@contextmanager
def serving(*flags: str) -> Iterator[str]:
    """A ``qwq-edge serve`` of the test model on a free loopback port; its base URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "qwq_edge", "serve", "-m", str(fixture_model_path()), "--port", str(port)]
    process = subprocess.Popen([*command, "--ctx", "4096", *flags], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2).close()
                break
            except OSError:
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def ask(url: str, messages: list[dict[str, str]], tokens: int = 8) -> dict[str, Any]:
    """One streamed greedy chat request: time to the first chunk, decode speed, the usage."""
    body = {"model": "", "messages": messages, "max_tokens": tokens, "temperature": 0, "stream": True}
    body |= {"reasoning_format": "none", "stream_options": {"include_usage": True}}
    request = urllib.request.Request(f"{url}/v1/chat/completions", json.dumps(body).encode(), method="POST")
    request.add_header("Content-Type", "application/json")
    start, first, usage, text = time.perf_counter(), None, {}, ""
    with urllib.request.urlopen(request, timeout=600) as response:
        for line in response:
            if not line.startswith(b"data: {"):
                continue
            chunk = json.loads(line[6:])
            first = first or time.perf_counter()
            usage = chunk.get("usage") or usage
            text += "".join(c["delta"].get("content") or "" for c in chunk.get("choices", []))
    end = time.perf_counter()
    decode = (usage.get("completion_tokens", 1) - 1) / max(end - first, 1e-9)
    return {"ttft": first - start, "decode_tokens_per_s": decode, "usage": usage, "text": text}


def conversation(doc: str, answer: str = "") -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    turn1 = [{"role": "user", "content": doc + "\nWhen is rent due under clause 7?"}]
    turn2 = [*turn1, {"role": "assistant", "content": answer}, {"role": "user", "content": "And under clause 9?"}]
    return turn1, turn2


def one_round(flags: tuple[str, ...], doc: str, home: Path) -> dict[str, Any]:
    """Turn 2's time to first token after 0, 1 and 4 unrelated requests, and after a restart."""
    result: dict[str, Any] = {}
    env_flags = (*flags, "--prompt-cache", str(home)) if "--no-prompt-cache" not in flags else flags
    with serving(*env_flags) as url:
        for between in INTERRUPTIONS:
            first = ask(url, conversation(doc)[0])
            result.setdefault("cold", first["ttft"])
            for n in range(between):
                ask(url, [{"role": "user", "content": f"Give chat number {n} a title."}])
            second = ask(url, conversation(doc, first["text"])[1])
            result[f"after {between}"] = second["ttft"]
            result[f"served from, after {between}"] = second["usage"]["prompt_tokens_details"]["cached_from"]
            result["decode_tokens_per_s"] = second["decode_tokens_per_s"]
        time.sleep(2)  # the disk write of the long prompt, in the background
    with serving(*env_flags) as url:
        result["after a restart"] = ask(url, conversation(doc, first["text"])[1])["ttft"]
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1 round, a shorter document")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    rounds, doc = (1, document(12)) if args.quick else (args.rounds, document(110))
    runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in ARMS}
    for _ in range(rounds):
        for arm, flags in ARMS.items():  # the arms alternate, round after round
            home = Path(tempfile.mkdtemp(prefix="qwq-edge-bench-cache-"))
            try:
                runs[arm].append(one_round(flags, doc, home))
            finally:
                shutil.rmtree(home, ignore_errors=True)
    keys = [f"after {n}" for n in INTERRUPTIONS] + ["after a restart", "cold", "decode_tokens_per_s"]
    medians = {arm: {key: median([run[key] for run in rs]) for key in keys} for arm, rs in runs.items()}
    data = {"machine": machine(), "rounds": rounds, "runs": runs, "medians": medians}
    save("prompt_cache_quick" if args.quick else "prompt_cache", data, table(data), args.out)
    return data


def table(data: dict[str, Any]) -> str:
    on, off = data["medians"]["cache on"], data["medians"]["cache off"]
    spread = {key: [round(run[key], 3) for run in data["runs"]["cache on"]] for key in on}
    lines = ["| turn 2's time to first token | cache on | cache off | cache on, each round |", "|---|---|---|---|"]
    for key in [f"after {n}" for n in INTERRUPTIONS] + ["after a restart", "cold"]:
        label = key if key != "cold" else "turn 1 (cold)"
        lines.append(f"| {label} | {on[key]:.2f} s | {off[key]:.2f} s | {spread[key]} |")
    cost = on["decode_tokens_per_s"] / off["decode_tokens_per_s"]
    lines += [
        "",
        f"Decode with the cache on ÷ off: {cost:.3f}. Median of {data['rounds']} rounds, the arms alternating; "
        "qwq-edge serve --parallel 1, the 0.5B test model, greedy, over HTTP (streamed, time to the first chunk).",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
