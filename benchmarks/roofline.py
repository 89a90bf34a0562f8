"""How close llama.cpp decoding comes to this machine's memory-bandwidth limit.

Decoding one token reads every weight once (except the token-embedding table, of
which one row is read) plus the KV cache so far, so tokens/s × bytes per token is the
memory traffic achieved. The limit is measured here: for each thread count, the
threads each reduce a slice of a 1 GiB array (a float32 sum and a 64-bit max; the
faster sets the limit), best of ten. The fraction of the limit is the figure of merit
(target ≥ 60% for the 0.5B Q4_K_M model). Each row also gives llama.cpp's own timing
of its forward passes, which leaves out Python and sampling.

    python benchmarks/roofline.py [--model M.gguf] [--threads 1,2]
    python benchmarks/roofline.py --synthetic 1.5B   # a random model, converted first (see SYNTHETIC)
    python benchmarks/roofline.py --quick     # what the test suite runs
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path

import llama_cpp

from qwq_edge import SamplingParams
from qwq_edge.catalog.planner import model_shape
from qwq_edge.convert import convert_to_gguf
from qwq_edge.convert.output import no_progress
from qwq_edge.convert.quantize import quantize_gguf
from qwq_edge.convert.synthetic import SIZES, make_checkpoint
from qwq_edge.engines.gguf_file import read_gguf_header
from qwq_edge.engines.llama_cpp.baseline import RawLlamaCpp
from qwq_edge.services.benchmarking.measure import time_raw
from qwq_edge.services.testdata import fixture_model_path
from qwq_edge.system.bandwidth import read_bandwidth
from qwq_edge.system.machine import usable_cores

try:
    from benchmarks.common import decode_parser, machine, median, quick, save
except ImportError:  # run as a script from the repository root
    from common import decode_parser, machine, median, quick, save

GB = 1e9


def bytes_per_token(path: Path, position: int) -> float:
    """Weights read per decoded token (one embedding row, not the table) plus the KV cache read."""
    header = read_gguf_header(path)
    weights = sum(size for name, size in header.tensor_bytes.items() if name != "token_embd.weight")
    embedding_row = header.tensor_bytes.get("token_embd.weight", 0) / max(
        1, header.metadata.get("tokenizer.ggml.tokens", 1)
    )
    return weights + embedding_row + model_shape(path).kv_bytes_per_token("f16") * position


def decode_rate(path: Path, threads: int, tokens: int, mmap: bool) -> tuple[float, float, int]:
    """Greedy decode speed of plain llama-cpp-python; the same from llama.cpp's own timer of its
    forward passes (no Python, no sampling); the mean position of the decoded tokens."""
    raw = RawLlamaCpp(path, n_ctx=1024, n_threads=threads, n_threads_batch=threads, n_gpu_layers=0, use_mmap=mmap)
    prompt = raw.llama.tokenize(b"List the numbers 1 to 500, each on its own line.", add_bos=False)
    llama_cpp.llama_perf_context_reset(raw.llama.ctx)
    run = time_raw(raw, prompt, tokens, SamplingParams(temperature=0.0), seed=0)
    perf = llama_cpp.llama_perf_context(raw.llama.ctx)
    raw.close()
    forward = 1000 * perf.n_eval / perf.t_eval_ms if perf.t_eval_ms > 0 else 0.0
    return run.decode_tokens_per_s, forward, len(prompt) + tokens // 2


def measure(path: Path, threads: int, mmap: bool, args: argparse.Namespace, kernels: dict[str, float]) -> dict:
    runs = [decode_rate(path, threads, args.tokens, mmap) for _ in range(args.repetitions)]
    tokens_per_s = median([r[0] for r in runs])
    forward_tokens_per_s = median([r[1] for r in runs])
    traffic = bytes_per_token(path, runs[0][2])
    bandwidth = max(kernels.values())
    return {
        "threads": threads,
        "mmap": mmap,
        "bandwidth_bytes_per_s": bandwidth,
        "bandwidth_by_kernel": kernels,
        "bytes_per_token": traffic,
        "decode_tokens_per_s": tokens_per_s,
        "roofline_tokens_per_s": bandwidth / traffic,
        "achieved_bytes_per_s": tokens_per_s * traffic,
        "fraction_of_limit": tokens_per_s * traffic / bandwidth,
        "forward_pass_tokens_per_s": forward_tokens_per_s,
        "forward_pass_fraction_of_limit": forward_tokens_per_s * traffic / bandwidth,
        "repetitions": [r[0] for r in runs],
    }


#: Random Qwen2 models to compare with the test model, and the llama.cpp file type of each. The
#: 0.5B's rows are 896 wide, not a multiple of 256, so llama.cpp stores most of its Q4_K_M
#: tensors as Q5_0; these are 1536 wide: K-quants throughout, then 8 layers (about the 0.5B's
#: bytes per token), then those 8 layers as Q5_0.
SYNTHETIC = {
    "1.5B": (SIZES["1.5B"], llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M),
    "1.5B-8-layers": (replace(SIZES["1.5B"], num_hidden_layers=8), llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M),
    "1.5B-8-layers-q5_0": (replace(SIZES["1.5B"], num_hidden_layers=8), llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_0),
}


def synthetic_gguf(name: str, folder: Path) -> Path:
    """A random-weight Qwen2, written as F16 and quantized by libllama: random weights decode as fast as real ones."""
    spec, ftype = SYNTHETIC[name]
    f16 = folder / "f16.gguf"
    convert_to_gguf(make_checkpoint(folder / "checkpoint", spec), f16, quant="f16", verify=False)
    out = folder / f"synthetic-{name}.gguf"
    quantize_gguf(f16, out, ftype, usable_cores(), no_progress)
    return out


def measure_all(path: Path, args: argparse.Namespace) -> list[dict]:
    """For each thread count: the bandwidth test, then decoding with the weights mapped and read in."""
    size = (1 << 28) if args.quick else (1 << 30)
    rows = []
    for threads in sorted({int(t) for t in args.threads.split(",")}):
        kernels = read_bandwidth(threads, size, tries=10)  # the probe's kernels, on more memory
        rows += [measure(path, threads, mmap, args, kernels) for mmap in ([True] if args.quick else [True, False])]
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = decode_parser(__doc__.splitlines()[0], tokens=128, repetitions=5)
    parser.add_argument("--model", type=Path)
    parser.add_argument(
        "--synthetic", choices=list(SYNTHETIC), help="a random Qwen2 of these shapes, converted to Q4_K_M"
    )
    parser.add_argument("--threads", default=f"1,{usable_cores()}", help="comma-separated thread counts")
    args = quick(parser.parse_args(argv))
    with tempfile.TemporaryDirectory(prefix="qwq-edge-roofline-") as temp:
        path = synthetic_gguf(args.synthetic, Path(temp)) if args.synthetic else args.model or fixture_model_path()
        rows = measure_all(path, args)
    name = "roofline_quick" if args.quick else f"roofline-{args.synthetic}" if args.synthetic else "roofline"
    lines = [
        "| threads | weights | measured bandwidth | bytes per token | limit tokens/s | decode tokens/s | achieved "
        "| fraction of the limit | forward passes alone, tokens/s | fraction |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['threads']} | {'mmap' if r['mmap'] else 'read into memory'} | "
            f"{r['bandwidth_bytes_per_s'] / GB:.1f} GB/s | {r['bytes_per_token'] / 1e6:.0f} MB | "
            f"{r['roofline_tokens_per_s']:.1f} | {r['decode_tokens_per_s']:.1f} | "
            f"{r['achieved_bytes_per_s'] / GB:.1f} GB/s | **{r['fraction_of_limit']:.0%}** | "
            f"{r['forward_pass_tokens_per_s']:.1f} | {r['forward_pass_fraction_of_limit']:.0%} |"
        )
    kernels = "; ".join(
        f"{r['threads']} thread{'s' if r['threads'] > 1 else ''}: "
        + ", ".join(f"{k} {v / GB:.1f} GB/s" for k, v in r["bandwidth_by_kernel"].items())
        for r in rows
        if r["mmap"]
    )
    footer = (
        f"{path.name}, llama.cpp on the CPU; median of {args.repetitions} runs of {args.tokens} greedy tokens. "
        f"Bandwidth by read kernel: {kernels}."
    )
    table = "\n".join(lines) + f"\n\n{footer}\n"
    data = {"benchmark": "roofline", "machine": machine(), "settings": {"model": path.name}, "rows": rows}
    save(name, data, table, args.out)
    print(table)
    return data


if __name__ == "__main__":
    main()
