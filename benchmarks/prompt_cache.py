"""The prompt cache: how soon a returning conversation's turn 2 starts, and what the cache costs.

Over HTTP on a real ``qwq-edge serve`` (``--parallel 1``, greedy): a ~1,800-token first
message, then a turn 2 of that conversation that the server has not seen before (its own
question each time, so only turn 1 and its answer can come from a cache):

- right after turn 1, and after 1 and 4 unrelated requests in between (each evicts the
  conversation from the one sequence: the memory cache keeps it);
- after a restart of the server (the disk cache);
- the same with the prompt cache off (``--cache-ram 0 --no-prompt-cache``), and on llama.cpp's
  own ``llama-server -np 1`` with its defaults (its host-memory prompt cache) when given
  ``--llama-server PATH``: the same requests, the same chat template (the GGUF's).

Time to first token is timed from the request to the first streamed token, median of the
rounds, the arms alternating. Decode speed with the cache on ÷ off is the cost.

    python benchmarks/prompt_cache.py --llama-server PATH   # 3 rounds, the 0.5B GGUF
    python benchmarks/prompt_cache.py --engine mlx          # a random model in MLX (see MLX_MODEL)
    python benchmarks/prompt_cache.py --quick               # 1 round, a shorter document (the tests)
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
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from qwq_edge.convert import convert_to_mlx
from qwq_edge.convert.synthetic import SyntheticSpec, make_checkpoint
from qwq_edge.services.testdata import fixture_model_path, fixture_tokenizer_json
from qwq_edge.system.machine import usable_cores

try:
    from benchmarks.common import RESULTS, machine, median, save
    from benchmarks.llama_server import running
except ImportError:  # run as a script from the repository root
    from common import RESULTS, machine, median, save
    from llama_server import running

INTERRUPTIONS = (0, 1, 4)
#: The MLX arm's model: a random Qwen2 with Qwen2.5's vocabulary and tokenizer.
MLX_MODEL = SyntheticSpec(256, 768, 4, 4, 2, 151_936, 0, False, "float32")
MODELS = {
    "llama.cpp": "the 0.5B test model",
    "mlx": "a random Qwen2 (hidden 256, 4 layers, Qwen2.5's vocabulary), float32, MLX's CPU build",
}
#: The qwq-edge arms: their flags besides the model's.
QWQ_EDGE_ARMS = {"cache on": (), "cache off": ("--cache-ram", "0", "--no-prompt-cache")}
#: What a server of an arm is: given the round's cache folder, a context giving its base URL.
Serve = Callable[[Path], AbstractContextManager[str]]


def document(clauses: int) -> str:
    return " ".join(
        f"Clause {i}: the tenant keeps the garden tidy; rent is due on day {i % 28 + 1}." for i in range(clauses)
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def serving(model: Path, *flags: str) -> Iterator[str]:
    """A ``qwq-edge serve`` of ``model`` on a free loopback port; its base URL."""
    port = free_port()
    command = [sys.executable, "-m", "qwq_edge", "serve", "-m", str(model), "--port", str(port)]
    process = subprocess.Popen([*command, "--ctx", "4096", *flags], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
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


def arms(model: Path, engine: str, llama_server: Path | None) -> dict[str, Serve]:
    """Each arm's server: qwq-edge with the cache on and off, and llama-server when given."""
    chosen: dict[str, Serve] = {}
    for name, flags in QWQ_EDGE_ARMS.items():
        disk = "--no-prompt-cache" not in flags

        def serve(home: Path, flags: tuple[str, ...] = flags, disk: bool = disk) -> AbstractContextManager[str]:
            return serving(model, "--engine", engine, *flags, *(("--prompt-cache", str(home)) if disk else ()))

        chosen[name] = serve
    if llama_server is not None:
        threads = usable_cores()
        chosen["llama-server"] = lambda home: running(
            llama_server, model, free_port(), threads, "-c", "4096", "-np", "1"
        )
    return chosen


def ask(url: str, messages: list[dict[str, str]], tokens: int = 8) -> dict[str, Any]:
    """One streamed greedy chat request: time to the first token, decode speed, the usage."""
    body = {"model": "", "messages": messages, "max_tokens": tokens, "temperature": 0, "stream": True}
    body |= {"reasoning_format": "none", "stream_options": {"include_usage": True}}
    request = urllib.request.Request(f"{url}/v1/chat/completions", json.dumps(body).encode(), method="POST")
    request.add_header("Content-Type", "application/json")
    start, first, usage, pieces = time.perf_counter(), None, {}, []
    with urllib.request.urlopen(request, timeout=600) as response:
        for line in response:
            if not line.startswith(b"data: {"):
                continue
            chunk = json.loads(line[6:])
            usage = chunk.get("usage") or usage
            text = "".join(c["delta"].get("content") or "" for c in chunk.get("choices", []))
            if text:
                first = first or time.perf_counter()
                pieces.append(text)
    end = time.perf_counter()
    first = first or end
    decode = (usage.get("completion_tokens", len(pieces)) - 1) / max(end - first, 1e-9)
    return {"ttft": first - start, "decode_tokens_per_s": decode, "usage": usage, "text": "".join(pieces)}


def conversation(doc: str, clause: int, answer: str) -> list[dict[str, str]]:
    """Turn 2 of the conversation about ``doc``: a question about ``clause`` after turn 1's answer."""
    return [
        *turn_1(doc),
        {"role": "assistant", "content": answer},
        {"role": "user", "content": f"And clause {clause}?"},
    ]


def turn_1(doc: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": doc + "\nWhen is rent due under clause 7?"}]


def one_round(serve: Serve, doc: str, home: Path) -> dict[str, Any]:
    """Turn 2's time to first token after 0, 1 and 4 unrelated requests, and after a restart;
    each turn 2 asks about a clause of its own."""
    result: dict[str, Any] = {}
    with serve(home) as url:
        for between in INTERRUPTIONS:
            first = ask(url, turn_1(doc))
            result.setdefault("cold", first["ttft"])
            for n in range(between):
                ask(url, [{"role": "user", "content": f"Give chat number {n} a title."}])
            second = ask(url, conversation(doc, 9 + between, first["text"]))
            result[f"after {between}"] = second["ttft"]
            details = second["usage"].get("prompt_tokens_details") or {}
            result[f"served from, after {between}"] = details.get("cached_from", "")
            result["decode_tokens_per_s"] = second["decode_tokens_per_s"]
        time.sleep(2)  # the disk write of the long prompt, in the background
    with serve(home) as url:
        result["after a restart"] = ask(url, conversation(doc, 20, first["text"]))["ttft"]
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1 round, a shorter document")
    parser.add_argument("--engine", choices=("llama.cpp", "mlx"), default="llama.cpp")
    parser.add_argument("--llama-server", type=Path, help="llama.cpp's llama-server executable: a third arm")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.engine == "mlx" and args.llama_server:
        parser.error("llama-server serves GGUF files: its arm runs with --engine llama.cpp")
    rounds, doc = (1, document(12)) if args.quick else (args.rounds, document(110))
    with tempfile.TemporaryDirectory(prefix="qwq-edge-bench-model-") as temp:
        model = fixture_model_path() if args.engine == "llama.cpp" else mlx_model(Path(temp))
        runs = alternate(arms(model, args.engine, args.llama_server), doc, rounds)
    keys = [f"after {n}" for n in INTERRUPTIONS] + ["after a restart", "cold", "decode_tokens_per_s"]
    medians = {arm: {key: median([run[key] for run in rs]) for key in keys} for arm, rs in runs.items()}
    data = {"machine": machine(), "engine": args.engine, "rounds": rounds, "runs": runs, "medians": medians}
    name = "prompt_cache" + ("_mlx" if args.engine == "mlx" else "") + ("_quick" if args.quick else "")
    save(name, data, table(data), args.out)
    return data


def alternate(servers: dict[str, Serve], doc: str, rounds: int) -> dict[str, list[dict[str, Any]]]:
    """Every arm's rounds, the arms taking turns (each round with a disk cache folder of its own)."""
    runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in servers}
    for _ in range(rounds):
        for arm, serve in servers.items():
            home = Path(tempfile.mkdtemp(prefix="qwq-edge-bench-cache-"))
            try:
                runs[arm].append(one_round(serve, doc, home))
            finally:
                shutil.rmtree(home, ignore_errors=True)
    return runs


def mlx_model(folder: Path) -> Path:
    """``MLX_MODEL`` as an MLX folder under ``folder``: MLX's CPU build takes minutes per request
    for the 0.5B model's long prompt, so the MLX arm runs a smaller random model whose cold
    prefill of the document still takes seconds."""
    source = make_checkpoint(folder / "source", MLX_MODEL, tokenizer_json=fixture_tokenizer_json())
    convert_to_mlx(source, folder / "mlx", bits=16, verify=False)
    return folder / "mlx"


def table(data: dict[str, Any]) -> str:
    medians = data["medians"]
    on, off = medians["cache on"], medians["cache off"]
    spread = {key: [round(run[key], 3) for run in data["runs"]["cache on"]] for key in on}
    header = " | ".join(medians)
    lines = [f"| turn 2's time to first token | {header} | cache on, each round |", "|---" * (len(medians) + 2) + "|"]
    for key in [f"after {n}" for n in INTERRUPTIONS] + ["after a restart", "cold"]:
        label = key if key != "cold" else "turn 1 (cold)"
        cells = " | ".join(f"{arm[key]:.2f} s" for arm in medians.values())
        lines.append(f"| {label} | {cells} | {spread[key]} |")
    cost = on["decode_tokens_per_s"] / off["decode_tokens_per_s"]
    server = f"qwq-edge serve --engine {data['engine']} --parallel 1"
    lines += [
        "",
        f"Turn 2 after 4 others ÷ after none, cache on: {on['after 4'] / on['after 0']:.2f} (target ≤ 1.5); "
        f"after a restart ÷ after none: {on['after a restart'] / on['after 0']:.2f} (target ≤ 3). "
        f"Decode with the cache on ÷ off: {cost:.3f}. Median of {data['rounds']} rounds, the arms alternating; "
        f"{server}, {MODELS[data['engine']]}, greedy, over HTTP (streamed, time to the first token).",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
