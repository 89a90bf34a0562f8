"""Helpers shared by the benchmark scripts: machine facts, medians, result files."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

from qwq_edge.files import write_text_atomic

RESULTS = Path(__file__).parent / "results"


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "versions": {name: version(name) for name in ("qwq-edge", "llama-cpp-python", "numpy")},
    }


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def rate(timestamps: list[float]) -> float:
    """Tokens per second between the first and the last of these token times."""
    if len(timestamps) < 2 or timestamps[-1] <= timestamps[0]:
        return 0.0
    return (len(timestamps) - 1) / (timestamps[-1] - timestamps[0])


def save(name: str, data: dict[str, Any], table: str, out_dir: Path = RESULTS) -> tuple[Path, Path]:
    """Write ``name.json`` (every repetition) and ``name.md`` (the table) atomically."""
    json_path, md_path = out_dir / f"{name}.json", out_dir / f"{name}.md"
    write_text_atomic(json_path, json.dumps(data, indent=2) + "\n")
    write_text_atomic(md_path, table)
    return json_path, md_path


def ab_compare(raw: Callable[[], float], qwq: Callable[[], float], repetitions: int) -> dict[str, Any]:
    """Alternate the raw engine (A) and qwq-edge (B); medians and the median per-pair ratio."""
    pairs = [{"raw": raw(), "qwq": qwq()} for _ in range(repetitions)]
    return {
        "repetitions": pairs,
        "raw_tokens_per_s": median([p["raw"] for p in pairs]),
        "qwq_tokens_per_s": median([p["qwq"] for p in pairs]),
        "ratio": median([p["qwq"] / p["raw"] for p in pairs if p["raw"]]),
    }


def ratio_table(results: dict[str, dict[str, Any]], raw_label: str, qwq_label: str, footer: str) -> str:
    """The markdown table of an A/B comparison, one row per sampler setting."""
    rows = "".join(
        f"| {name} | {r['raw_tokens_per_s']:.1f} | {r['qwq_tokens_per_s']:.1f} | **{r['ratio']:.3f}** |\n"
        for name, r in results.items()
    )
    return (
        f"| sampling | {raw_label}, tokens/s | {qwq_label}, tokens/s | ratio |\n|---|---|---|---|\n{rows}\n{footer}\n"
    )
