"""Helpers shared by the benchmark scripts: result files, options, and tables of ``run_bench`` reports."""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from qwq_edge.convert import convert_to_mlx
from qwq_edge.convert.synthetic import SyntheticSpec, make_checkpoint
from qwq_edge.files import write_atomic_with, write_text_atomic
from qwq_edge.services.benchmarking import BenchReport
from qwq_edge.services.benchmarking.suite import RAW
from qwq_edge.services.inspection import system_report as machine
from qwq_edge.services.testdata import fixture_tokenizer_json

RESULTS = Path(__file__).parent / "results"


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def spread(values: Sequence[float]) -> str:
    """``2.31–2.72``: the lowest and highest of ``values`` (the one value when there is one)."""
    low, high = min(values), max(values)
    return f"{low:.2f}" if len(values) == 1 else f"{low:.2f}–{high:.2f}"


def save(name: str, data: dict[str, Any], table: str, out_dir: Path = RESULTS) -> tuple[Path, Path]:
    """Write ``name.json`` (every repetition) and ``name.md`` (the table) atomically."""
    json_path, md_path = out_dir / f"{name}.json", out_dir / f"{name}.md"
    write_text_atomic(json_path, json.dumps(data, indent=2) + "\n")
    write_text_atomic(md_path, table)
    return json_path, md_path


def save_chart(name: str, out_dir: Path, draw: Callable[[Any], Any]) -> Path:
    """``draw(pyplot)`` returns a figure; it is written to ``out_dir/name.png`` atomically."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure = draw(pyplot)
    path = out_dir / f"{name}.png"
    write_atomic_with(path, lambda temp: figure.savefig(temp, format="png"))
    pyplot.close(figure)
    return path


def decode_parser(description: str, tokens: int, repetitions: int) -> argparse.ArgumentParser:
    """The options every decode benchmark takes: --tokens, --repetitions, --quick (16 tokens, 1 run), --out."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--tokens", type=int, default=tokens, help="decoded tokens per repetition")
    parser.add_argument("--repetitions", type=int, default=repetitions)
    parser.add_argument("--quick", action="store_true", help="16 tokens, 1 repetition (what the tests run)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser


def quick(args: argparse.Namespace) -> argparse.Namespace:
    """Apply ``--quick``: 16 tokens, one repetition."""
    if args.quick:
        args.tokens, args.repetitions = 16, 1
    return args


def reports_table(reports: dict[str, BenchReport], footer: str) -> str:
    """One markdown row per sampler setting and variant: time to first token, prefill, decode, ÷ raw."""
    lines = [
        "| sampling | run | time to first token | prefill tokens/s | decode tokens/s | decode ÷ raw |",
        "|---|---|---|---|---|---|",
    ]
    for setting, report in reports.items():
        medians = report.medians()
        ratios = report.ratios()
        for name, m in medians.items():
            label = report.settings["raw_label"] if name == RAW else name
            ratio = "1" if name == RAW else f"**{ratios[f'decode: {name} ÷ {RAW}']:.3f}**"
            lines.append(
                f"| {setting} | {label} | {m['time_to_first_token'] * 1000:.0f} ms | "
                f"{m['prefill_tokens_per_s']:.1f} | {m['decode_tokens_per_s']:.1f} | {ratio} |"
            )
    first = next(iter(reports.values()))
    load, memory = first.load_seconds, first.memory
    return (
        "\n".join(lines) + f"\n\n{footer} Load: qwq-edge {load['qwq-edge']:.2f} s, raw {load.get('raw', 0):.2f} s; "
        f"resident after loading {memory['rss_after_load_bytes'] / 1e6:,.0f} MB, peak (both engines loaded) "
        f"{memory['peak_rss_bytes'] / 1e6:,.0f} MB. Ratios are medians of per-repetition ratios.\n"
    )


def save_reports(name: str, reports: dict[str, BenchReport], footer: str, args: argparse.Namespace) -> dict[str, Any]:
    """Write the reports of an overhead benchmark (``NAME_quick`` in quick mode) and print the table."""
    table = reports_table(reports, footer)
    data = {
        "benchmark": name,
        "machine": machine(),
        "reports": {setting: report.to_dict() for setting, report in reports.items()},
    }
    save(f"{name}_quick" if args.quick else name, data, table, args.out)
    print(table)
    return data


#: The MLX benchmarks' model: a random Qwen2 (hidden 64, 2 layers) with Qwen2.5's own 151,936-token
#: vocabulary and tokenizer, in float16: on a Linux CPU it decodes at tens of tokens per second.
SYNTHETIC_MLX = SyntheticSpec(64, 128, 2, 4, 2, 151_936, 0, False, "float16")
SYNTHETIC_MLX_WORDS = "Random Qwen2 (hidden 64, 2 layers, 151,936-token vocabulary), float16, MLX on the CPU"


def synthetic_mlx_model(folder: Path) -> Path:
    """``SYNTHETIC_MLX`` converted to an MLX folder under ``folder``."""
    source = make_checkpoint(folder / "synthetic", SYNTHETIC_MLX, tokenizer_json=fixture_tokenizer_json())
    convert_to_mlx(source, folder / "synthetic-mlx", bits=16, verify=False)
    return folder / "synthetic-mlx"
