"""llama.cpp's own server on the prompts of ``speculation.py`` and ``parallel.py``: the peer's
figures for the same work, so that the tables compare like with like.

llama-server is not part of qwq-edge; build it from the llama.cpp that llama-cpp-python
vendors (its sdist's ``vendor/llama.cpp``: ``cmake -B build && cmake --build build --target
llama-server``, about 10 minutes on 2 cores) and pass its path. Every run is greedy, with
the thread count qwq-edge uses, on the prompt token ids qwq-edge builds (sent as ids, so
the template is the same):

- speculation: per workload, decode tokens/s without drafts and with ``--spec-type
  ngram-simple`` (and ``ngram-mod``), from the server's own timings, and whether the texts match;
- parallel: one stream after another on one slot, then 4 and 8 concurrent streams of 128
  tokens on as many slots; aggregate tokens/s over the wall time, as ``parallel.py`` counts.

    python benchmarks/llama_server.py --server PATH/llama-server
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from qwq_edge import load
from qwq_edge.services.benchmarking.parallel import CONTEXT, greedy, prompts
from qwq_edge.services.testdata import fixture_model_path
from qwq_edge.system.machine import usable_cores

try:
    from benchmarks.common import RESULTS, machine, median, save, spread
    from benchmarks.speculation import WORKLOADS, workload_tokens
except ImportError:  # run as a script from the repository root
    from common import RESULTS, machine, median, save, spread
    from speculation import WORKLOADS, workload_tokens

SPECULATION = ("ngram-simple", "ngram-mod")


@contextmanager
def running(server: Path, model: Path, port: int, threads: int, *extra: str) -> Iterator[str]:
    """A llama-server on a loopback port until the block ends; its base URL."""
    command = [str(server), "-m", str(model), "--port", str(port), "--host", "127.0.0.1"]
    command += ["-t", str(threads), "-tb", str(threads), "--no-webui", *extra]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"llama-server did not start: {' '.join(command)}") from None
                time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def complete(url: str, tokens: Sequence[int], n: int) -> dict[str, Any]:
    """One greedy /completion of ``n`` tokens from prompt token ids, nothing cached."""
    body = {"prompt": list(tokens), "n_predict": n, "temperature": 0.0, "repeat_penalty": 1.0, "cache_prompt": False}
    request = urllib.request.Request(
        f"{url}/completion", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=600) as response:
        return json.loads(response.read())


def prompt_tokens(path: Path) -> tuple[dict[str, list[int]], list[list[int]]]:
    """The token ids qwq-edge sends: each speculation workload's, and the parallel streams'."""
    with load(path, engine="llama.cpp", context_length=CONTEXT) as model:
        workloads = {name: workload_tokens(model, name) for name in WORKLOADS}
        streams = [model.prompt_tokens(text, greedy(128)) for text in prompts(8)]
    return workloads, streams


def speculation(args: argparse.Namespace, workloads: dict[str, list[int]]) -> dict[str, Any]:
    """Decode tokens/s per workload without drafts and with each n-gram mode. The modes take
    turns round after round (a server each), so that the machine's drift falls on all of them;
    each mode ÷ off is taken within a round, then the median of the rounds."""
    rounds: dict[str, dict[str, list[dict[str, Any]]]] = {name: {} for name in workloads}
    for _ in range(args.repetitions):
        for mode in ("off", *SPECULATION):
            extra = ("--spec-type", mode) if mode != "off" else ()
            with running(args.server, args.model, args.port, args.threads, "-c", "4096", "-np", "1", *extra) as url:
                for name, tokens in workloads.items():
                    rounds[name].setdefault(mode, []).append(complete(url, tokens, args.tokens))
    return {name: _modes(runs) for name, runs in rounds.items()}


def _modes(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """One workload's rounds per mode: median decode speed, the last text and drafts, and ÷ off per round."""
    speeds = {mode: [run["timings"]["predicted_per_second"] for run in rs] for mode, rs in runs.items()}
    results: dict[str, Any] = {}
    for mode, rs in runs.items():
        timings = rs[-1]["timings"]
        results[mode] = {
            "decode_tokens_per_s": median(speeds[mode]),
            "text": rs[-1]["content"],
            "drafts": [timings.get("draft_n_accepted", 0), timings.get("draft_n", 0)],
        }
        if mode != "off":
            ratios = [s / o for s, o in zip(speeds[mode], speeds["off"], strict=True)]
            results[mode] |= {"vs_off": median(ratios), "vs_off_each_round": ratios}
            results[mode]["same_text"] = results[mode]["text"] == results["off"]["text"]
    return results


def concurrent(url: str, streams: Sequence[Sequence[int]], n: int) -> tuple[int, float]:
    """Every stream at once: generated tokens and wall seconds."""
    generated = [0] * len(streams)

    def run(index: int) -> None:
        generated[index] = complete(url, streams[index], n)["timings"]["predicted_n"]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(streams))]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(generated), time.perf_counter() - began


def parallel(args: argparse.Namespace, streams: list[list[int]]) -> list[dict[str, Any]]:
    """One stream at a time on one slot, then 4 and 8 at once on as many slots."""
    rows = []
    with running(args.server, args.model, args.port, args.threads, "-c", str(CONTEXT), "-np", "1") as url:
        tokens, seconds = 0, 0.0
        for stream in streams:
            count, wall = concurrent(url, [stream], 128)
            tokens, seconds = tokens + count, seconds + wall
        one = tokens / seconds
        rows.append({"streams": 1, "tokens": tokens, "tokens_per_s": one, "speedup": 1.0})
    for count in (4, 8):
        slots = ("-c", str(CONTEXT * count), "-np", str(count))
        with running(args.server, args.model, args.port, args.threads, *slots) as url:
            concurrent(url, streams[:count], 8)  # warm-up
            tokens, wall = concurrent(url, streams[:count], 128)
        rows.append({"streams": count, "tokens": tokens, "tokens_per_s": tokens / wall, "speedup": tokens / wall / one})
    return rows


def table(spec: dict[str, Any], rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        "| workload | llama-server tok/s | ngram-simple | ÷ (each round) | drafts accepted | same text | ngram-mod "
        "| ÷ (each round) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, modes in spec.items():
        simple, mod = modes["ngram-simple"], modes["ngram-mod"]
        accepted, drafted = simple["drafts"]
        lines.append(
            f"| {name} | {modes['off']['decode_tokens_per_s']:.1f} | {simple['decode_tokens_per_s']:.1f} "
            f"| **{simple['vs_off']:.2f}×** ({spread(simple['vs_off_each_round'])}) | {accepted}/{drafted} "
            f"| {'yes' if simple['same_text'] else 'no'} | {mod['decode_tokens_per_s']:.1f} "
            f"| {mod['vs_off']:.2f}× ({spread(mod['vs_off_each_round'])}) |"
        )
    lines += ["", "| streams | tokens | aggregate tok/s | speedup |", "|---|---|---|---|"]
    lines += [f"| {r['streams']} | {r['tokens']} | {r['tokens_per_s']:.1f} | {r['speedup']:.2f}× |" for r in rows]
    return "\n".join(lines) + (
        f"\n\nllama-server built from the llama.cpp that llama-cpp-python 0.3.36 vendors, {args.model.name}, CPU, "
        f"{args.threads} threads, greedy, the prompt token ids of `speculation.py` ({args.tokens} tokens, median of "
        f"{args.repetitions} rounds, the modes taking turns) and `parallel.py` (128 tokens a stream); decode "
        "tokens/s from the server's timings, aggregate tokens/s over the wall time.\n"
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", type=Path, required=True, help="the llama-server executable")
    parser.add_argument("--model", type=Path, default=None, help="a GGUF (default: the 0.5B test model)")
    parser.add_argument("--tokens", type=int, default=300)
    parser.add_argument("--repetitions", type=int, default=3, help="rounds of the speculation modes")
    parser.add_argument("--threads", type=int, default=usable_cores())
    parser.add_argument("--port", type=int, default=18931)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.model = args.model or fixture_model_path()
    workloads, streams = prompt_tokens(args.model)
    spec, rows = speculation(args, workloads), parallel(args, streams)
    measured = datetime.date.today().isoformat()
    data = {"machine": machine(), "measured": measured, "model": str(args.model), "speculation": spec, "parallel": rows}
    text = table(spec, rows, args)
    save("llama_server", data, text, args.out)
    print(text)
    return data


if __name__ == "__main__":
    main()
