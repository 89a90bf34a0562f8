"""``qwq-edge serve`` soaked: many tiny requests, and the server's memory (RSS) after each batch.

A real server (the 0.5B test model, a 2048-token context) answers R requests one after
another: each a different short question, 1 to 4 tokens, every fourth one streamed, every
tenth one refused (a bad field: the error path allocates too). The server's resident memory
is read from ``/proc/PID/status`` every ``--every`` requests, with its two parts: anonymous
memory (heap, stacks) and the pages of mapped files (the model's weights). Reported: the
growth during the warm-up (the first ``--warmup`` requests) and the slope after it (a
least-squares line through the later samples, in MB per 1,000 requests; ≈ 0 means no leak).

``--arena-max N`` runs the server with ``MALLOC_ARENA_MAX=N`` (glibc's limit on malloc
arenas), to see how much of the warm-up growth is arenas made for new threads.

    python benchmarks/soak.py [--model M.gguf] [--requests 1000] [--warmup 150] [--arena-max N]
    python benchmarks/soak.py --quick     # 40 requests, a warm-up of 10
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
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


def request_body(i: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "messages": [{"role": "user", "content": f"Name a prime number above {i}."}],
        "max_tokens": 1 + i % 4,
        "stream": i % 4 == 3,
    }
    if i % 10 == 9:
        body["temperature"] = "hot"  # refused: 400
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


def soak(model: Path, requests: int, every: int) -> dict[str, Any]:
    command = [sys.executable, "-m", "qwq_edge"]
    extra = ("--max-queue", "2")  # running_server adds a 2048-token context, greedy decoding
    with running_server(command, model, *extra) as server:
        samples = [{"requests": 0, **memory(server.process.pid)}]
        statuses: dict[int, int] = {}
        began = time.perf_counter()
        for i in range(requests):
            status = send(server.url, request_body(i))
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
        "| MALLOC_ARENA_MAX | requests | start RSS | growth in warm-up (heap, file pages) | growth after "
        "| slope after warm-up | s/request |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        s = row["summary"]
        lines.append(
            f"| {row['arena_max'] or 'glibc default'} | {row['requests']} (warm-up {row['warmup']}) "
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
    parser.add_argument("--arena-max", type=int, default=None, help="run the server with MALLOC_ARENA_MAX=N")
    parser.add_argument("--quick", action="store_true", help="40 requests, a warm-up of 10")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.warmup, args.every = 40, 10, 5
    if args.arena_max is not None:
        os.environ["MALLOC_ARENA_MAX"] = str(args.arena_max)  # the server process inherits it
    result = soak(args.model or fixture_model_path(), args.requests, args.every)
    row = {
        "arena_max": args.arena_max,
        "requests": args.requests,
        "warmup": args.warmup,
        **result,
        "summary": summary(result["samples"], args.warmup),
    }
    name = "soak" + ("_quick" if args.quick else f"_arena{args.arena_max}" if args.arena_max else "")
    data = {"machine": machine(), "rows": [row]}
    save(name, data, table([row]), args.out)
    print(table([row]))
    return data


if __name__ == "__main__":
    main()
