"""Time to first token as a chat grows: KV-cache reuse against re-reading the whole prompt.

A 10-turn chat runs twice on the same model with the same greedy answers: once as
qwq-edge runs it (each turn evaluates only what follows the common prefix), once
with the engine's cache emptied before every turn. The target: turn N's time to
first token with reuse ≤ 1.5 × turn 1's.

    python benchmarks/multiturn.py [--model M.gguf] [--turns 10]
    python benchmarks/multiturn.py --quick     # what the test suite runs
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qwq_edge import load
from qwq_edge.services.testdata import fixture_model_path

try:
    from benchmarks.common import RESULTS, machine, save, save_chart
except ImportError:  # run as a script from the repository root
    from common import RESULTS, machine, save, save_chart

QUESTIONS = [
    "Name a prime number between 10 and 20.",
    "Why is it prime?",
    "Name the next prime after it.",
    "What is their sum?",
    "Is that sum prime?",
    "What is its largest prime factor?",
    "Write the sum in binary.",
    "How many ones does that binary number have?",
    "Is that count even or odd?",
    "Summarize this conversation in one sentence.",
]


def run_chat(model, turns: int, reuse: bool) -> list[dict]:
    chat = model.chat(reasoning_format="none", max_answer_tokens=48, temperature=0.0)
    rows = []
    for turn, question in enumerate(QUESTIONS[:turns]):
        if turn == 0 or not reuse:
            model.engine.rewind(0)  # a first turn starts cold; without reuse, every turn does
        stats = chat.send(question).stats
        rows.append(
            {
                "prompt_tokens": stats.prompt_tokens,
                "cached_prompt_tokens": stats.cached_prompt_tokens,
                "time_to_first_token": stats.time_to_first_token,
            }
        )
    return rows


def chart(reused: list[dict], full: list[dict], title: str) -> Callable[[Any], Any]:
    """Time to first token per turn, with and without the KV-cache reuse."""

    def draw(pyplot: Any) -> Any:
        figure, axes = pyplot.subplots(figsize=(6, 4), dpi=120)
        turns = range(1, len(reused) + 1)
        for rows, label in ((reused, "reusing the KV cache"), (full, "re-reading the whole prompt")):
            axes.plot(turns, [r["time_to_first_token"] * 1000 for r in rows], marker="o", label=label)
        axes.set_xlabel("turn")
        axes.set_ylabel("time to first token, ms")
        axes.set_ylim(bottom=0)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
        axes.set_title(title, fontsize=10)
        figure.tight_layout()
        return figure

    return draw


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="3 turns")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    turns = 3 if args.quick else min(args.turns, len(QUESTIONS))
    model = load(args.model or fixture_model_path(), context_length=8192)
    run_chat(model, 1, reuse=True)  # warm up
    reused, full = run_chat(model, turns, reuse=True), run_chat(model, turns, reuse=False)
    lines = [
        "| turn | prompt tokens | reused from the cache | time to first token, reuse | without reuse |",
        "|---|---|---|---|---|",
    ]
    for turn, (a, b) in enumerate(zip(reused, full, strict=True), start=1):
        lines.append(
            f"| {turn} | {a['prompt_tokens']} | {a['cached_prompt_tokens']} | "
            f"{a['time_to_first_token'] * 1000:.0f} ms | {b['time_to_first_token'] * 1000:.0f} ms |"
        )
    ratio = reused[-1]["time_to_first_token"] / reused[0]["time_to_first_token"]
    footer = (
        f"Turn {turns} ÷ turn 1 with reuse: **{ratio:.2f}** (target ≤ 1.5); without reuse: "
        f"{full[-1]['time_to_first_token'] / full[0]['time_to_first_token']:.2f}. {model.info.model_name}, "
        f"{model.info.engine} on {model.info.device}, greedy answers of at most 48 tokens."
    )
    data = {"benchmark": "multiturn", "machine": machine(), "reuse": reused, "full": full, "ratio": ratio}
    table = "\n".join(lines) + f"\n\n{footer}\n"
    name = "multiturn_quick" if args.quick else "multiturn"
    save(name, data, table, args.out)
    save_chart(name, args.out, chart(reused, full, f"Time to first token as a chat grows: {model.info.model_name}"))
    print(table)
    return data


if __name__ == "__main__":
    main()
