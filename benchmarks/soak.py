"""``qwq-edge serve`` soaked: many tiny requests, and the server's memory (RSS) after each batch.

A real server (the 0.5B test model, a 2048-token context) answers R requests one after
another: each a different short question, 1 to 4 tokens, every fourth one streamed, every
tenth one refused (a bad field: the error path allocates too). The server's resident memory
is read from ``/proc/PID/status`` every ``--every`` requests, with its two parts: anonymous
memory (heap, stacks) and the pages of mapped files (the model's weights). Reported: the
growth during the warm-up (the first ``--warmup`` requests) and the slope after it (a
least-squares line through the later samples, in MB per 1,000 requests; ≈ 0 means no leak).

``--varied`` mixes in what builds a cache on first use: a language guard (five languages
in turn), a JSON answer (``response_format``), a tool, an effort preset. Their prompts are
long enough (64 tokens or more) for the prompt cache to keep their states, so the server
runs with a small ``--cache-ram`` (16 MB by default): the cache fills within the warm-up and
then evicts, and what grows after it is what a request leaves behind, not what the cache
may hold by design (by default a quarter of the free memory).

    python benchmarks/soak.py [--model M.gguf] [--requests 1000] [--warmup 150] [--varied] [--cache-ram 16MB]
    python benchmarks/soak.py --quick     # 20 requests, a warm-up of 5
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from qwq_edge.services.testdata import fixture_model_path

try:
    from benchmarks.common import RESULTS, machine, save
except ImportError:  # run as a script from the repository root
    from common import RESULTS, machine, save

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from serving import running_server

MB = 1024 * 1024


#: What ``/proc/PID/status`` says a process holds: all of it, its heap and stacks (anonymous),
#: and the pages of files it maps (the model's weights) that are in memory.
FIELDS = {"VmRSS": "rss", "RssAnon": "anon", "RssFile": "file"}


def memory(pid: int) -> dict[str, int]:
    """The process's resident memory, in bytes, by kind (Linux only)."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in FIELDS:
            found[FIELDS[name]] = int(value.split()[0]) * 1024
    return found


LANGUAGES = ("off", "en", "zh", "fr", "ru", "ja")
TOOL = {"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}


def request_body(i: int, varied: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "messages": [{"role": "user", "content": f"Name a prime number above {i}."}],
        "max_tokens": 1 + i % 4,
        "stream": i % 4 == 3,
    }
    if i % 10 == 9:
        body["temperature"] = "hot"  # refused: 400
    if varied:
        body["language"] = LANGUAGES[i % len(LANGUAGES)]
        body.update({"response_format": {"type": "json_object"}} if i % 7 == 0 else {})
        body.update({"tools": [TOOL]} if i % 11 == 0 else {})
        body.update({"reasoning_effort": "low"} if i % 5 == 0 else {})
    return body


def send(url: str, body: dict[str, Any]) -> int:
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=120)
    try:
        connection.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def slope_mb_per_1000(samples: list[dict[str, int]]) -> float:
    """The least-squares slope of RSS over requests, in MB per 1,000 requests."""
    if len(samples) < 2:
        return 0.0
    xs, ys = [float(s["requests"]) for s in samples], [s["rss"] / MB for s in samples]
    return statistics.linear_regression(xs, ys).slope * 1000


def soak(model: Path, requests: int, every: int, varied: bool, cache_ram: str) -> dict[str, Any]:
    command = [sys.executable, "-m", "qwq_edge"]
    extra = ("--max-queue", "2", "--cache-ram", cache_ram)  # running_server adds a 2048-token context, greedy decoding
    with running_server(command, model, *extra) as server:
        samples = [{"requests": 0, **memory(server.process.pid)}]
        statuses: dict[int, int] = {}
        began = time.perf_counter()
        for i in range(requests):
            status = send(server.url, request_body(i, varied))
            statuses[status] = statuses.get(status, 0) + 1
            if (i + 1) % every == 0:
                samples.append({"requests": i + 1, **memory(server.process.pid)})
        seconds = time.perf_counter() - began
    return {"samples": samples, "statuses": statuses, "seconds": seconds}


def summary(samples: list[dict[str, int]], warmup: int) -> dict[str, float]:
    start, end = samples[0], samples[-1]
    at_warmup = next((s for s in samples if s["requests"] >= warmup), end)
    growth = {f"warmup_growth_{kind}_mb": (at_warmup[kind] - start[kind]) / MB for kind in ("anon", "file")}
    return {
        "rss_start_mb": start["rss"] / MB,
        "warmup_growth_mb": (at_warmup["rss"] - start["rss"]) / MB,
        **growth,
        "after_warmup_growth_mb": (end["rss"] - at_warmup["rss"]) / MB,
        "slope_mb_per_1000_requests": slope_mb_per_1000([s for s in samples if s["requests"] >= warmup]),
        "rss_end_mb": end["rss"] / MB,
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| requests | prompt cache cap | start RSS | growth in warm-up (heap, file pages) | growth after "
        "| slope after warm-up | s/request |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        s = row["summary"]
        lines.append(
            f"| {row['requests']}{', varied' if row['varied'] else ''} (warm-up {row['warmup']}) "
            f"| {row['cache_ram']} "
            f"| {s['rss_start_mb']:.0f} MB | {s['warmup_growth_mb']:+.1f} MB ({s['warmup_growth_anon_mb']:+.1f}, "
            f"{s['warmup_growth_file_mb']:+.1f}) | {s['after_warmup_growth_mb']:+.1f} MB "
            f"| {s['slope_mb_per_1000_requests']:+.2f} MB / 1,000 requests | {row['seconds'] / row['requests']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=150)
    parser.add_argument("--every", type=int, default=10, help="requests between two RSS samples")
    parser.add_argument("--varied", action="store_true", help="languages, JSON answers, tools, efforts in turn")
    parser.add_argument("--cache-ram", default="16MB", help="the server's prompt cache cap (its --cache-ram)")
    parser.add_argument("--quick", action="store_true", help="20 requests, a warm-up of 5")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.warmup, args.every = 20, 5, 5
    result = soak(args.model or fixture_model_path(), args.requests, args.every, args.varied, args.cache_ram)
    row = {
        "varied": args.varied,
        "cache_ram": args.cache_ram,
        "requests": args.requests,
        "warmup": args.warmup,
        **result,
        "summary": summary(result["samples"], args.warmup),
    }
    name = "soak" + ("_varied" if args.varied else "") + ("_quick" if args.quick else "")
    data = {"machine": machine(), "rows": [row]}
    save(name, data, table([row]), args.out)
    print(table([row]))
    return data


if __name__ == "__main__":
    main()
