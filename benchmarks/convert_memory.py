"""Peak memory and time of conversions on synthetic Qwen2 checkpoints of growing size.

For each size (random weights, Qwen2.5-like shapes, bfloat16) it runs, each in a
fresh process so that the peak resident memory is that conversion's alone:

- qwq-edge HF → GGUF Q4_K_M (F16 written tensor by tensor, then libllama's quantizer),
- qwq-edge HF → MLX 4-bit, group 64 (tensor by tensor with ``mx.quantize``),
- plain ``mlx_lm.convert`` with the same settings, for comparison.

Verification is switched off here (it is measured by the test suite); the figure of
merit is peak RSS ÷ the largest tensor, and the goal for GGUF is
peak RSS ≤ 3 × largest tensor + 500 MB whatever the model size.

    python benchmarks/convert_memory.py               # 0.1B, 0.5B, 1.5B (several minutes, ~15 GB of disk)
    python benchmarks/convert_memory.py --quick       # a tiny checkpoint; what the test suite runs
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from time import perf_counter
from typing import Any

from qwq_edge.convert.checkpoint import Checkpoint
from qwq_edge.convert.synthetic import SIZES, TINY, make_checkpoint
from qwq_edge.resources import peak_rss_bytes

try:
    from benchmarks.common import RESULTS, machine, save, save_chart
except ImportError:  # run as a script from the repository root
    from common import RESULTS, machine, save, save_chart

CONVERSIONS = ("qwq-edge gguf q4_k_m", "qwq-edge mlx 4-bit", "mlx_lm.convert 4-bit")
MB = 1_000_000


def run_one(kind: str, source: str, out: str) -> dict:
    """One conversion in this process; returns its time and this process's peak RSS."""
    start = perf_counter()
    if kind == "qwq-edge gguf q4_k_m":
        from qwq_edge.convert import convert_to_gguf

        convert_to_gguf(source, out, quant="q4_k_m", verify=False)
    elif kind == "qwq-edge mlx 4-bit":
        from qwq_edge.convert import convert_to_mlx

        convert_to_mlx(source, out, bits=4, group_size=64, verify=False)
    else:
        from mlx_lm import convert

        convert(hf_path=source, mlx_path=out, quantize=True, q_bits=4, q_group_size=64)
    return {"seconds": perf_counter() - start, "peak_rss_bytes": peak_rss_bytes()}


def measure(kind: str, source: Path, out: Path) -> dict:
    command = [sys.executable, __file__, "--child", kind, str(source), str(out)]
    proc = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def goal_bytes(largest: int) -> int:
    return 3 * largest + 500 * MB


def chart(rows: list[dict]) -> Callable[[Any], Any]:
    """Peak RSS and time against model size, one line per conversion, with the GGUF goal."""

    def draw(pyplot: Any) -> Any:
        figure, (memory, time) = pyplot.subplots(1, 2, figsize=(10, 4), dpi=120)
        for kind in CONVERSIONS:
            points = [r for r in rows if r["conversion"] == kind]
            sizes = [r["parameters"] / 1e9 for r in points]
            memory.plot(sizes, [r["peak_rss_bytes"] / MB for r in points], marker="o", label=kind)
            time.plot(sizes, [r["seconds"] for r in points], marker="o", label=kind)
        goal = sorted({(r["parameters"] / 1e9, goal_bytes(r["largest_tensor_bytes"]) / MB) for r in rows})
        memory.plot([g[0] for g in goal], [g[1] for g in goal], linestyle="--", color="grey", label="GGUF goal")
        for axes, label in ((memory, "peak RSS, MB"), (time, "time, s")):
            axes.set_xlabel("parameters, billions")
            axes.set_ylabel(label)
            axes.grid(alpha=0.3)
        memory.legend(fontsize=8)
        figure.suptitle("Conversion of synthetic bfloat16 Qwen2 checkpoints", fontsize=10)
        figure.tight_layout()
        return figure

    return draw


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one tiny checkpoint")
    parser.add_argument("--sizes", default=",".join(SIZES), help="comma-separated, from: " + ", ".join(SIZES))
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child", nargs=3, metavar=("KIND", "SOURCE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run_one(*args.child)))
        return {}
    specs = {"tiny": TINY} if args.quick else {name: SIZES[name] for name in args.sizes.split(",")}
    work = Path(args.work or tempfile.mkdtemp(prefix="qwq-edge-bench-"))
    rows = []
    try:
        for name, spec in specs.items():
            source = make_checkpoint(work / f"synthetic-{name}", spec)
            checkpoint = Checkpoint(source)
            largest, params = checkpoint.largest_tensor_bytes, checkpoint.parameter_count
            for kind in CONVERSIONS:
                out = work / f"{name}-{kind.replace(' ', '-')}"
                result = measure(kind, source, out)
                row = {"size": name, "parameters": params, "largest_tensor_bytes": largest, "conversion": kind}
                rows.append({**row, **result})
                for path in (out, out.with_name(out.name + ".verify.json")):
                    shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
            shutil.rmtree(source)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    table = [
        "| checkpoint | conversion | time, s | peak RSS, MB | largest tensor, MB | RSS ÷ largest "
        "| ≤ 3×largest + 500 MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ok = "yes" if r["peak_rss_bytes"] <= goal_bytes(r["largest_tensor_bytes"]) else "no"
        table.append(
            f"| {r['size']} ({r['parameters'] / 1e9:.2f}B) | {r['conversion']} | {r['seconds']:.1f} | "
            f"{r['peak_rss_bytes'] / MB:,.0f} | {r['largest_tensor_bytes'] / MB:,.0f} | "
            f"{r['peak_rss_bytes'] / r['largest_tensor_bytes']:.1f} | {ok} |"
        )
    markdown = "\n".join(table) + "\n\nSynthetic bfloat16 Qwen2 checkpoints (random weights), verification off.\n"
    data = {"benchmark": "convert_memory", "machine": machine(), "rows": rows}
    name = "convert_memory_quick" if args.quick else "convert_memory"
    save(name, data, markdown, args.out)
    save_chart(name, args.out, chart(rows))
    print(markdown)
    return data


if __name__ == "__main__":
    main()
