"""Helpers shared by the benchmark scripts: machine facts, medians, result files."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
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
