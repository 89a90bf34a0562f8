"""Helpers shared by the benchmark scripts: machine facts, medians, result files."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from time import perf_counter
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


def qwq_decode_rate(model: Any, prompt: str, n: int, params: Any, language: str = "off") -> float:
    """qwq-edge's decode rate over ``n`` thinking tokens, every control active.

    The prompt runs in a thinking format with a budget counting every token (set
    above ``n``) and the loop guard on; ``language`` turns on the language guard for
    the thinking too. A token whose text is empty yields no event, so tokens are
    counted from the counts the events carry.
    """
    from qwq_edge import Done, ThinkingDelta

    marks: list[tuple[int, float]] = []
    stream = model.stream(
        prompt,
        reasoning_format="think",
        max_thinking_tokens=n + 1,
        sampling=params,
        language=language,
        language_in_thinking=language != "off",
    )
    for event in stream:
        if isinstance(event, ThinkingDelta):
            marks.append((event.thinking_tokens, perf_counter()))
            if event.thinking_tokens >= n:
                model.cancel()
        elif isinstance(event, Done):
            break
    (first_count, first_time), (last_count, last_time) = marks[0], marks[-1]
    return (last_count - first_count) / (last_time - first_time) if last_time > first_time else 0.0


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
