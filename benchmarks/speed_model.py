"""The speed model (``qwq_edge/catalog/speed.py``) against measurements, here and on Apple Silicon.

Here: the fixture GGUF and random Qwen2 models of 1.5B, 3B and 7B shapes (Q4_K_M, made
with the converters: random weights decode as fast as real ones), and a random 1.5B in
Q8_0, on llama.cpp with every core. For each model the bandwidth probe runs first (so the
prediction sees the machine as loaded as the measurement does), then plain
llama-cpp-python reads a 128-token prompt and decodes greedily (``--tokens``, best of
``--repetitions``); the prediction is for the same positions. The script also prints the
CPU constants that fit best (``LLAMA_CPP_CPU`` is set from them): the prompt's on every
row (the Q8_0 row gives Q8_0's factor), decoding's on the Q4_K_M rows alone, so that the
Q8_0 row's decode checks the fit.

Apple Silicon: the prediction for the 7B Q4_0 speeds of llama.cpp's discussion #4167
(text generation of 128 tokens from an empty context, and a 512-token prompt), from each
chip's bandwidth and GPU cores as the discussion lists them. Target: |error| ≤ 25 % on each row.

    python benchmarks/speed_model.py [--sizes 1.5B,3B,7B,1.5B:q8_0] [--tokens 32] [--repetitions 2]
    python benchmarks/speed_model.py --quick     # the fixture only: what the test suite runs
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from qwq_edge.architecture.shape import ModelShape
from qwq_edge.catalog.planner import model_shape
from qwq_edge.catalog.speed import (
    EFFICIENCY,
    METAL,
    METAL_FLOPS_PER_GPU_CORE,
    Efficiency,
    MachineSpeed,
    decode_tokens_per_s,
    prefill_tokens_per_s,
)
from qwq_edge.convert import convert_to_gguf
from qwq_edge.convert.synthetic import SIZES, SyntheticSpec, make_checkpoint
from qwq_edge.engines.llama_cpp.baseline import RawLlamaCpp
from qwq_edge.sampling import SamplingParams
from qwq_edge.services.benchmarking.measure import FILLER, time_raw
from qwq_edge.services.testdata import fixture_model_path
from qwq_edge.system.bandwidth import run_probe
from qwq_edge.system.machine import usable_cores

try:
    from benchmarks.common import decode_parser, machine, quick, save
except ImportError:  # run as a script from the repository root
    from common import decode_parser, machine, quick, save

GB = 1e9
PROMPT_TOKENS = 128
#: GGUF's 32-weight block types: llama.cpp's CPU code multiplies a prompt by them at speeds of their own.
BLOCK_TYPES = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0")
CPU = EFFICIENCY["llama.cpp", "cpu"]
#: Random Qwen2 models of the catalog's shapes: DeepSeek-R1-Distill-Qwen-1.5B's, Qwen2.5-3B's (tied
#: embeddings) and DeepSeek-R1-Distill-Qwen-7B's (= Qwen2.5-7B's).
SHAPES = {
    "1.5B": SIZES["1.5B"],
    "3B": SyntheticSpec(2048, 11008, 36, 16, 2, 151_936, 4096, True),
    "7B": SyntheticSpec(3584, 18944, 28, 28, 4, 152_064, 4096),
}

#: llama.cpp's discussion #4167, build 8e672ef (2023-11-21): Llama 2 7B Q4_0, chip → (bandwidth GB/s,
#: GPU cores, pp512 tokens/s, tg128 tokens/s), as the discussion's summary table lists them (read from
#: stored copies of the thread; the M3 Max row is the 40-core, 400 GB/s one).
DISCUSSION_4167 = {
    "M1": (68, 8, 117.96, 14.15),
    "M1 Pro": (200, 16, 266.25, 36.41),
    "M1 Max": (400, 32, 530.06, 61.19),
    "M2": (100, 10, 179.57, 21.91),
    "M2 Pro": (200, 16, 294.24, 37.87),
    "M2 Pro (19 GPU cores)": (200, 19, 341.19, 38.86),
    "M2 Max": (400, 30, 537.60, 60.99),
    "M2 Max (38 GPU cores)": (400, 38, 671.31, 65.95),
    "M2 Ultra": (800, 60, 1013.81, 88.64),
    "M2 Ultra (76 GPU cores)": (800, 76, 1238.48, 94.27),
    "M3 Pro": (150, 18, 341.67, 30.74),
    "M3 Max": (400, 40, 759.70, 66.31),
    "M4": (120, 10, 221.29, 24.11),
    "M4 Pro": (273, 20, 439.78, 50.74),
    "M4 Max": (546, 40, 885.68, 83.06),
}
#: Llama 2 7B Q4_0 as llama-bench reports it (3.56 GiB, 6.74 B parameters): 32 layers of 32 KV heads of
#: 128; the 32000 × 4096 input table is Q4_0 (18 bytes per 32 weights); the output table is its own.
LLAMA2_7B_Q4_0 = ModelShape(
    "Llama 2 7B Q4_0",
    32,
    32,
    128,
    int(3.56 * 2**30),
    4096,
    embedding_bytes=32000 * 4096 * 18 // 32,
    matmul_parameters=6_740_000_000 - 2 * 32000 * 4096,
)


def synthetic_gguf(name: str, folder: Path, quant: str = "q4_k_m") -> Path:
    """A random-weight Qwen2 of ``SHAPES[name]``, converted to ``quant`` (the checkpoint is deleted after);
    one already in ``folder`` is used as it is."""
    out = folder / f"synthetic-{name}-{quant}.gguf"
    if out.exists():
        return out
    checkpoint = make_checkpoint(folder / f"checkpoint-{name}", SHAPES[name])
    convert_to_gguf(checkpoint, out, quant=quant, verify=False)
    for file in checkpoint.iterdir():
        file.unlink()
    checkpoint.rmdir()
    return out


def measure(path: Path, tokens: int, repetitions: int) -> dict[str, float]:
    """Best of ``repetitions``: prompt and decode speed of plain llama-cpp-python (greedy, every core)."""
    threads = usable_cores()
    raw = RawLlamaCpp(path, n_ctx=1024, n_threads=threads, n_threads_batch=threads, n_gpu_layers=0)
    text = " ".join([FILLER] * 8).encode()
    prompt = raw.llama.tokenize(text, add_bos=False)[:PROMPT_TOKENS]
    runs = [time_raw(raw, prompt, tokens, SamplingParams(temperature=0.0), seed=0) for _ in range(repetitions)]
    raw.close()
    return {
        "decode_tokens_per_s": max(r.decode_tokens_per_s for r in runs),
        "prefill_tokens_per_s": max(r.prefill_tokens_per_s for r in runs),
        "generated_tokens": min(r.generated_tokens for r in runs),
    }


def wait_for_quiet(most: float, limit_s: float = 1800) -> float:
    """Wait (up to ``limit_s``) until the 1-minute load average is below ``most``: on a machine shared
    with other work the measurement is otherwise of the other work. Returns the load average then."""
    deadline = time.monotonic() + limit_s
    while os.getloadavg()[0] >= most and time.monotonic() < deadline:
        time.sleep(15)
    return os.getloadavg()[0]


def here_row(name: str, path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Probe, measure, predict: one model on this machine (once it is quiet enough, with ``--quiet``)."""
    load = wait_for_quiet(args.quiet) if args.quiet else os.getloadavg()[0]
    probe = run_probe()
    measured = measure(path, args.tokens, args.repetitions)
    shape = model_shape(path)
    row = {
        "model": name,
        "file_bytes": shape.weights_bytes,
        "decode_bytes": shape.decode_bytes,
        "layers": shape.layers,
        "kv_heads": shape.kv_heads,
        "head_dim": shape.head_dim,
        "kv_bytes_per_token": shape.kv_bytes_per_token("f16"),
        "context": PROMPT_TOKENS + measured["generated_tokens"] / 2,
        "matmul_parameters": shape.matmul_parameters,
        "matmul_types": dict(shape.matmul_types),
        "output_rows": shape.output_rows,
        "bandwidth_bytes_per_s": probe.bandwidth_bytes_per_s,
        "matmul_flops": probe.matmul_flops,
        "load_average": load,
        **measured,
    }
    return predicted(row)


def row_shape(row: dict[str, Any]) -> ModelShape:
    """The shape a saved row stands for (its decode bytes as its weights)."""
    return ModelShape(
        row["model"],
        row["layers"],
        row["kv_heads"],
        row["head_dim"],
        row["decode_bytes"],
        4096,
        matmul_parameters=row["matmul_parameters"],
        matmul_types=tuple(row["matmul_types"].items()),
        output_rows=row["output_rows"],
    )


def predicted(row: dict[str, Any], efficiency: Efficiency = CPU) -> dict[str, Any]:
    """``row`` with the speed model's figures for what was measured, and their errors."""
    flops = row["matmul_flops"] * efficiency.compute_fraction
    here = MachineSpeed("llama.cpp", "cpu", row["bandwidth_bytes_per_s"], efficiency, "the probe", flops)
    shape = row_shape(row)
    decode = decode_tokens_per_s(here, shape, "f16", row["context"])
    prefill = prefill_tokens_per_s(here, shape)
    return {
        **row,
        "predicted_decode_tokens_per_s": decode,
        "decode_error": decode / row["decode_tokens_per_s"] - 1,
        "predicted_prefill_tokens_per_s": prefill,
        "prefill_error": prefill / row["prefill_tokens_per_s"] - 1,
    }


def apple_rows(efficiency: Efficiency = METAL) -> list[dict[str, Any]]:
    """The prediction for each row of discussion #4167."""
    shape = LLAMA2_7B_Q4_0
    rows = []
    for chip, (bandwidth, cores, pp, tg) in DISCUSSION_4167.items():
        flops = cores * METAL_FLOPS_PER_GPU_CORE[chip.split()[0]]
        metal = MachineSpeed("llama.cpp", "metal", bandwidth * GB, efficiency, chip, flops)
        predicted = decode_tokens_per_s(metal, shape, "f16", 64)
        predicted_pp = prefill_tokens_per_s(metal, shape)
        rows.append(
            {
                "chip": chip,
                "bandwidth_gb_per_s": bandwidth,
                "gpu_cores": cores,
                "tg128": tg,
                "predicted_tg128": predicted,
                "decode_error": predicted / tg - 1,
                "pp512": pp,
                "predicted_pp512": predicted_pp,
                "prefill_error": predicted_pp / pp - 1,
            }
        )
    return rows


def _least_squares(design: list[list[float]], seconds: list[float]) -> np.ndarray:
    """The coefficients that fit ``seconds`` best in relative error."""
    weights = 1 / np.array(seconds)
    solution, *_ = np.linalg.lstsq(np.array(design) * weights[:, None], np.array(seconds) * weights, rcond=None)
    return solution


def fit_cpu(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The CPU constants that fit best: the prompt's (compute fraction, and how many times slower each
    32-weight block type present multiplies) on every row, then decoding's (fraction of the bandwidth,
    operations per output row at that compute rate) on the Q4_K_M rows alone: the others check it."""
    kinds = sorted({kind for r in rows for kind in r["matmul_types"] if kind in BLOCK_TYPES})
    prompt = [[2 * r["matmul_parameters"]] + [2 * r["matmul_types"].get(k, 0) for k in kinds] for r in rows]
    inverse_compute, *slower = _least_squares(prompt, [r["matmul_flops"] / r["prefill_tokens_per_s"] for r in rows])
    compute = 1 / inverse_compute
    q4_k_m = [r for r in rows if r["model"].endswith("Q4_K_M")]
    decode = [
        [
            (r["decode_bytes"] + r["kv_bytes_per_token"] * r["context"]) / r["bandwidth_bytes_per_s"],
            r["output_rows"] / (r["matmul_flops"] * compute),
        ]
        for r in q4_k_m
    ]
    inverse_fraction, row_operations = _least_squares(decode, [1 / r["decode_tokens_per_s"] for r in q4_k_m])
    return {
        "fraction": float(1 / inverse_fraction),
        "row_operations": float(row_operations),
        "compute_fraction": float(compute),
        "prompt_type_factors": {k: float(1 + x * compute) for k, x in zip(kinds, slower, strict=True)},
    }


def here_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| model | bytes read per token | layers | probe: bandwidth | decode measured | predicted | error "
        "| prompt measured | predicted | error | load average |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['decode_bytes'] / 1e6:,.0f} MB | {r['layers']} | "
            f"{r['bandwidth_bytes_per_s'] / GB:.1f} GB/s | {r['decode_tokens_per_s']:.1f} | "
            f"{r['predicted_decode_tokens_per_s']:.1f} | **{r['decode_error']:+.0%}** | "
            f"{r['prefill_tokens_per_s']:.1f} | {r['predicted_prefill_tokens_per_s']:.1f} | "
            f"{r['prefill_error']:+.0%} | {r.get('load_average', float('nan')):.1f} |"
        )
    return lines


def apple_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| chip | bandwidth | GPU cores | tg128 published | predicted | error | pp512 published | predicted | error |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['chip']} | {r['bandwidth_gb_per_s']} GB/s | {r['gpu_cores']} | {r['tg128']:.1f} | "
            f"{r['predicted_tg128']:.1f} | **{r['decode_error']:+.0%}** | {r['pp512']:.0f} | "
            f"{r['predicted_pp512']:.0f} | {r['prefill_error']:+.0%} |"
        )
    return lines


def measure_here(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The fixture, then each random model (made, measured, deleted in turn)."""
    sizes = [] if args.quick else [s for s in args.sizes.split(",") if s]
    rows = [here_row("fixture: Qwen2.5-Coder-0.5B Q4_K_M", fixture_model_path(), args)]
    with tempfile.TemporaryDirectory(prefix="qwq-edge-speed-") as temp:
        folder = args.keep or Path(temp)
        folder.mkdir(parents=True, exist_ok=True)
        for spec in sizes:
            size, _, quant = spec.partition(":")
            path = synthetic_gguf(size, folder, quant or "q4_k_m")
            rows.append(here_row(f"random {size} {(quant or 'q4_k_m').upper()}", path, args))
            if args.keep is None:
                path.unlink()
    return rows


def earlier_rows(path: Path) -> list[dict[str, Any]]:
    """An earlier run's rows, which must carry what the fit needs (runs saved before 2026-12-05 do not)."""
    rows = json.loads(path.read_text())["rows"]
    missing = {"kv_heads", "head_dim", "matmul_types", "output_rows"} - set(rows[0]) if rows else set()
    if missing:
        raise SystemExit(f"error: {path} was saved without {', '.join(sorted(missing))}: measure it again")
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = decode_parser(__doc__.splitlines()[0], tokens=32, repetitions=2)
    parser.add_argument(
        "--sizes",
        default="1.5B,3B,7B,1.5B:q8_0",
        help="random models to make and measure: SHAPES' names, each with :QUANT if not Q4_K_M",
    )
    parser.add_argument("--keep", type=Path, help="keep the random models in this folder (and use those found there)")
    parser.add_argument(
        "--quiet",
        type=float,
        metavar="LOAD",
        help="before each model, wait (up to 30 min) until the 1-minute load average is below LOAD",
    )
    parser.add_argument(
        "--again",
        action="store_true",
        help="no measuring: predict the saved measurements (results/speed_model.json) again with the code's constants",
    )
    parser.add_argument(
        "--fit-with",
        type=Path,
        action="append",
        default=[],
        metavar="JSON",
        help="an earlier run's results: its rows join the fit, and the footer gives its errors (repeatable)",
    )
    args = quick(parser.parse_args(argv))
    if args.again:
        saved = json.loads((args.out / "speed_model.json").read_text())
        rows, settings = [predicted(row) for row in saved["rows"]], saved["settings"]
    else:
        rows = measure_here(args)
        settings = {
            "tokens": args.tokens,
            "repetitions": args.repetitions,
            "sizes": args.sizes.split(","),
            "quiet": args.quiet,
        }
    apple = apple_rows()
    earlier = {path.name: earlier_rows(path) for path in args.fit_with}
    pooled = rows + [r for runs in earlier.values() for r in runs]
    fit = fit_cpu(pooled) if sum(r["model"].endswith("Q4_K_M") for r in pooled) > 2 else {}
    code = (
        f"the code's: fraction {CPU.fraction}, {CPU.row_operations:,.0f} operations per row, compute fraction "
        f"{CPU.compute_fraction}, prompt types {dict(CPU.prompt_type_factors)}"
    )
    fitted = (
        f"Best fit on this run{''.join(f', {name}' for name in earlier)}: fraction {fit['fraction']:.2f}, "
        f"{fit['row_operations']:,.0f} operations per row, compute "
        f"fraction {fit['compute_fraction']:.2f}, prompt types "
        f"{ {k: round(v, 2) for k, v in fit['prompt_type_factors'].items()} } ({code})."
        if fit
        else f"({code}.)"
    )
    for name, runs in earlier.items():
        errors = ", ".join(f"{predicted(r)['decode_error']:+.0%}" for r in runs)
        fitted += f" The code's decode errors on {name}: {errors}."
    quiet = f", once the 1-minute load average was below {settings['quiet']}" if settings.get("quiet") else ""
    footer = (
        f"llama.cpp on the CPU, {usable_cores()} threads; best of {settings['repetitions']} runs of "
        f"{settings['tokens']} greedy tokens after a {PROMPT_TOKENS}-token prompt; the probe ran just before each "
        f"model{quiet}. {fitted}"
    )
    table = (
        "\n".join(here_table(rows))
        + f"\n\n{footer}\n\n"
        + "\n".join(apple_table(apple))
        + "\n\nApple Silicon: llama.cpp discussion #4167 (Llama 2 7B Q4_0, build 8e672ef) against the speed "
        f"model's Metal constants ({METAL.fraction} of the bandwidth, {METAL.layer_seconds * 1e3:g} ms per layer; "
        "prompt: GPU cores × the generation's operations per core).\n"
    )
    data = {
        "benchmark": "speed_model",
        "machine": saved["machine"] if args.again else machine(),
        "settings": settings,
        "rows": rows,
        "apple": apple,
        "fit": fit,
    }
    save("speed_model_quick" if args.quick else "speed_model", data, table, args.out)
    print(table)
    return data


if __name__ == "__main__":
    main()
