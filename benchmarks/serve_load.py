"""``qwq-edge serve`` under load, and what HTTP costs against the in-process API.

1. In process: ``model.stream`` answers the requests one after another; time to first
   token and decode tokens/s are measured by the caller, from the call to each event.
2. One HTTP client: the same requests, streamed through a real ``qwq-edge serve``
   (uvicorn, a separate process), read by a minimal SSE reader and measured the same
   way (the official client's own parsing would take CPU from the engine on 2 cores);
   in turn with 1., request by request, so that other load on the machine weighs on both.
   Targets: decode tokens/s ≥ 0.97 × in process, added time to first token ≤ 20 ms.
3. Load: C clients × R requests at once (8 × 10, the official OpenAI client); the server
   runs one generation at a time and queues the rest, so time to first token includes
   the wait: p50 / p95, and the total completion tokens/s over the whole run.

Every request asks a different question (a shared prefix, a different end), greedy,
no thinking, a fixed number of answer tokens.

    python benchmarks/serve_load.py [--model M.gguf] [--clients 8] [--requests 10] [--tokens 64]
    python benchmarks/serve_load.py --quick     # 2 clients × 2 requests, 8 tokens
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

from qwq_edge import AnswerDelta, load
from qwq_edge.services.testdata import fixture_model_path

try:
    from benchmarks.common import RESULTS, machine, save
except ImportError:  # run as a script from the repository root
    from common import RESULTS, machine, save

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from serving import running_server

CONTEXT = 2048


def question(i: int) -> str:
    """A request that keeps the 0.5B model writing (so every answer has the asked length)."""
    return f"List the numbers {1 + i} to {500 + i}, each on its own line, with no other text."


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] if ordered else 0.0


def timing(began: float, first: float | None, last: float, tokens: int) -> dict[str, float]:
    """Time to first token, and the decode time: from the first token to the last."""
    first = first or last
    return {"time_to_first_token": first - began, "decode_seconds": last - first, "tokens": tokens}


def in_process(model: Any, i: int, tokens: int) -> dict[str, float]:
    began, first, last = time.perf_counter(), None, 0.0
    stream = model.stream(question(i), reasoning_format="none", max_answer_tokens=tokens, temperature=0.0)
    for event in stream:
        if isinstance(event, AnswerDelta):
            last = time.perf_counter()
            first = first or last
    return timing(began, first, last, event.result.stats.answer_tokens)


Rows = list[dict[str, float]]


def side_by_side(model: Any, url: str, count: int, tokens: int) -> tuple[Rows, Rows]:
    """The same requests in process and through HTTP, alternately, so that whatever else the
    machine does at the time weighs on both alike."""
    inproc: Rows = []
    http_rows: Rows = []
    for i in range(count):
        inproc.append(in_process(model, i, tokens))
        http_rows.append(over_raw_http(url, i, tokens))
    return inproc, http_rows


def over_http(client: Any, i: int, tokens: int) -> dict[str, float]:
    began, first, last, usage = time.perf_counter(), None, 0.0, None
    stream = client.chat.completions.create(
        model="",
        messages=[{"role": "user", "content": question(i)}],
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"max_answer_tokens": tokens, "reasoning_format": "none"},  # as in process
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            last = time.perf_counter()
            first = first or last
        usage = chunk.usage or usage
    return timing(began, first, last, usage.completion_tokens)


def over_raw_http(url: str, i: int, tokens: int) -> dict[str, float]:
    """The same request read by a minimal SSE reader, so that only the server's cost is measured
    (on 2 cores the client's own parsing takes time from the engine's threads too)."""
    body = {
        "messages": [{"role": "user", "content": question(i)}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_answer_tokens": tokens,
        "reasoning_format": "none",
    }
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=600)
    began, first, last, usage = time.perf_counter(), None, 0.0, {}
    connection.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    response = connection.getresponse()
    for line in response:
        if not line.startswith(b"data: {"):
            continue
        if b'"content": "' in line and b'"content": ""' not in line:
            last = time.perf_counter()
            first = first or last
        elif b'"usage"' in line:
            usage = json.loads(line[6:])["usage"]
    connection.close()
    return timing(began, first, last, usage["completion_tokens"])


def under_load(client: Any, clients: int, requests: int, tokens: int) -> tuple[list[dict[str, float]], float]:
    rows: list[dict[str, float]] = []
    lock = threading.Lock()

    def work(c: int) -> None:
        for r in range(requests):
            row = over_http(client, 1000 + c * requests + r, tokens)
            with lock:
                rows.append(row)

    began = time.perf_counter()
    threads = [threading.Thread(target=work, args=(c,)) for c in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return rows, time.perf_counter() - began


def summary(rows: list[dict[str, float]]) -> dict[str, float]:
    """TTFT percentiles; decode tokens/s over all requests (tokens after each first one, over their time)."""
    ttft = [r["time_to_first_token"] for r in rows]
    decoded = sum(r["tokens"] - 1 for r in rows)
    return {
        "requests": len(rows),
        "ttft_p50_ms": percentile(ttft, 50) * 1000,
        "ttft_p95_ms": percentile(ttft, 95) * 1000,
        "decode_tokens_per_s": decoded / max(sum(r["decode_seconds"] for r in rows), 1e-9),
        "tokens_per_request_median": statistics.median(r["tokens"] for r in rows),
    }


def table(data: dict[str, Any]) -> str:
    inproc, single, loaded = data["in_process"], data["http_single"], data["load"]
    s = data["settings"]
    rows = [
        "| run | requests | TTFT p50 | TTFT p95 | decode tokens/s | completion tokens/s (whole run) |",
        "|---|---|---|---|---|---|",
        f"| in process, one at a time | {inproc['requests']} | {inproc['ttft_p50_ms']:.0f} ms | "
        f"{inproc['ttft_p95_ms']:.0f} ms | {inproc['decode_tokens_per_s']:.1f} | |",
        f"| HTTP, one client | {single['requests']} | {single['ttft_p50_ms']:.0f} ms | "
        f"{single['ttft_p95_ms']:.0f} ms | {single['decode_tokens_per_s']:.1f} | |",
        f"| HTTP, {s['clients']} clients × {s['requests']} requests | {loaded['requests']} | "
        f"{loaded['ttft_p50_ms']:.0f} ms | {loaded['ttft_p95_ms']:.0f} ms | "
        f"{loaded['decode_tokens_per_s']:.1f} | {loaded['completion_tokens_per_s']:.1f} |",
    ]
    o = data["overhead"]
    return (
        "\n".join(rows)
        + f"\n\nHTTP against in process (one client): decode × **{o['decode_ratio']:.3f}** (target ≥ 0.97), "
        f"time to first token **{o['added_ttft_ms']:+.1f} ms** (target ≤ 20 ms). {s['tokens']} answer tokens per "
        f"request, greedy, no thinking, context {CONTEXT}; under load the time to first token includes the wait "
        "in the queue (one generation at a time).\n"
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a GGUF file (default: the 0.5B test model)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=10, help="requests per client")
    parser.add_argument("--tokens", type=int, default=64, help="answer tokens per request")
    parser.add_argument("--single", type=int, default=10, help="requests for the in-process and one-client runs")
    parser.add_argument("--quick", action="store_true", help="2 clients × 2 requests, 8 tokens (what the tests run)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.clients, args.requests, args.tokens, args.single = 2, 2, 8, 2
    return run(args)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import openai

    model_path = args.model or fixture_model_path()
    command = [sys.executable, "-m", "qwq_edge"]
    with (
        load(model_path, context_length=CONTEXT) as model,
        running_server(command, model_path, "--max-queue", str(args.clients * args.requests)) as server,
    ):
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0, timeout=600)
        in_process(model, -1, 4)  # warm up both
        over_http(client, -1, 4)
        inproc_rows, single_rows = side_by_side(model, server.url, args.single, args.tokens)
        inproc, single = summary(inproc_rows), summary(single_rows)
        rows, seconds = under_load(client, args.clients, args.requests, args.tokens)
    loaded = {**summary(rows), "seconds": seconds, "completion_tokens_per_s": sum(r["tokens"] for r in rows) / seconds}
    overhead = {
        "decode_ratio": single["decode_tokens_per_s"] / inproc["decode_tokens_per_s"],
        "added_ttft_ms": single["ttft_p50_ms"] - inproc["ttft_p50_ms"],
    }
    settings = {"clients": args.clients, "requests": args.requests, "tokens": args.tokens, "model": str(model_path)}
    data = {"benchmark": "serve_load", "machine": machine(), "settings": settings}
    data.update(in_process=inproc, http_single=single, load=loaded, overhead=overhead)
    text = table(data)
    save("serve_load_quick" if args.quick else "serve_load", data, text, args.out)
    print(text)
    return data


if __name__ == "__main__":
    main()
