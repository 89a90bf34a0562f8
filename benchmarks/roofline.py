"""How close llama.cpp decoding comes to this machine's memory-bandwidth limit.

Decoding one token reads every weight once (except the token-embedding table, of
which one row is read) plus the KV cache so far, so tokens/s × bytes per token is the
memory traffic achieved. The limit is measured here: several threads (one per core)
each sum a slice of a 1 GiB array, best of five. The fraction of the limit is the
figure of merit (target ≥ 60% for the 0.5B Q4_K_M model).

    python benchmarks/roofline.py [--model M.gguf] [--threads N]
    python benchmarks/roofline.py --quick     # what the test suite runs
"""

from __future__ import annotations

import argparse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from time import perf_counter

import numpy as np

from qwq_edge import SamplingParams
from qwq_edge.bench.measure import time_raw
from qwq_edge.bench.raw import RawLlamaCpp
from qwq_edge.engines.gguf_file import read_gguf_header
from qwq_edge.engines.llama_cpp import default_threads
from qwq_edge.planner import model_shape
from qwq_edge.testdata import fixture_model_path

try:
    from benchmarks.common import decode_parser, machine, median, quick, save
except ImportError:  # run as a script from the repository root
    from common import decode_parser, machine, median, quick, save

GB = 1e9


def memory_bandwidth(threads: int, size_bytes: int = 1 << 30, tries: int = 5) -> float:
    """Bytes per second read by ``threads`` threads summing slices of one array (numpy releases the GIL)."""
    data = np.ones(size_bytes // 4, dtype=np.float32)
    slices = np.array_split(data, threads)
    best = 0.0
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(tries):
            start = perf_counter()
            list(pool.map(np.sum, slices))
            best = max(best, data.nbytes / (perf_counter() - start))
    return best


def bytes_per_token(path: Path, position: int) -> float:
    """Weights read per decoded token (one embedding row, not the table) plus the KV cache read."""
    header = read_gguf_header(path)
    weights = sum(size for name, size in header.tensor_bytes.items() if name != "token_embd.weight")
    embedding_row = header.tensor_bytes.get("token_embd.weight", 0) / max(
        1, header.metadata.get("tokenizer.ggml.tokens", 1)
    )
    return weights + embedding_row + model_shape(path).kv_bytes_per_token("f16") * position


def decode_rate(path: Path, threads: int, tokens: int, mmap: bool) -> tuple[float, int]:
    """Greedy decode speed of plain llama-cpp-python, and the mean position of the decoded tokens."""
    raw = RawLlamaCpp(path, n_ctx=1024, n_threads=threads, n_threads_batch=threads, n_gpu_layers=0, use_mmap=mmap)
    prompt = raw.llama.tokenize(b"List the numbers 1 to 500, each on its own line.", add_bos=False)
    run = time_raw(raw, prompt, tokens, SamplingParams(temperature=0.0), seed=0)
    raw.close()
    return run.decode_tokens_per_s, len(prompt) + tokens // 2


def measure(path: Path, threads: int, mmap: bool, args: argparse.Namespace, bandwidth: float) -> dict:
    runs = [decode_rate(path, threads, args.tokens, mmap) for _ in range(args.repetitions)]
    tokens_per_s = median([r[0] for r in runs])
    traffic = bytes_per_token(path, runs[0][1])
    return {
        "threads": threads,
        "mmap": mmap,
        "bandwidth_bytes_per_s": bandwidth,
        "bytes_per_token": traffic,
        "decode_tokens_per_s": tokens_per_s,
        "roofline_tokens_per_s": bandwidth / traffic,
        "fraction_of_limit": tokens_per_s * traffic / bandwidth,
        "repetitions": [r[0] for r in runs],
    }


def main(argv: list[str] | None = None) -> dict:
    parser = decode_parser(__doc__.splitlines()[0], tokens=128, repetitions=5)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--threads", default=f"1,{default_threads()}", help="comma-separated thread counts")
    args = quick(parser.parse_args(argv))
    path = args.model or fixture_model_path()
    threads = sorted({int(t) for t in args.threads.split(",")})
    size = (1 << 28) if args.quick else (1 << 30)
    mmaps = [True] if args.quick else [True, False]
    rows = []
    for n in threads:
        bandwidth = memory_bandwidth(n, size)
        rows += [measure(path, n, mmap, args, bandwidth) for mmap in mmaps]
    lines = [
        "| threads | weights | measured bandwidth | bytes per token | decode tokens/s | limit tokens/s "
        "| fraction of the limit |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['threads']} | {'mmap' if r['mmap'] else 'read into memory'} | "
            f"{r['bandwidth_bytes_per_s'] / GB:.1f} GB/s | {r['bytes_per_token'] / 1e6:.0f} MB | "
            f"{r['decode_tokens_per_s']:.1f} | {r['roofline_tokens_per_s']:.1f} | **{r['fraction_of_limit']:.0%}** |"
        )
    footer = f"{path.name}, llama.cpp on the CPU; median of {args.repetitions} runs of {args.tokens} tokens."
    table = "\n".join(lines) + f"\n\n{footer}\n"
    data = {"benchmark": "roofline", "machine": machine(), "settings": {"model": path.name}, "rows": rows}
    save("roofline_quick" if args.quick else "roofline", data, table, args.out)
    print(table)
    return data


if __name__ == "__main__":
    main()
