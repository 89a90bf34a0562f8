"""A budget that never hurts: wrap-up wordings compared with the eval harness, and the tables.

Each variant runs ``run_eval`` (what ``qwq-edge eval`` runs) on the sample problems with a
different wrap-up sentence forced at the budget; results go to ``OUT/VARIANT/results.jsonl``
(resumable, like the CLI's). ``--table DIR ...`` only summarizes result folders, also the
CLI's: accuracy, thinking and answer tokens per budget, and where the cuts fell.

    python benchmarks/budget_eval.py --variants bare,finish --budgets 32,64 --limit 8 --samples 2
    python benchmarks/budget_eval.py --table benchmarks/results/budget_eval/before ...
    python benchmarks/budget_eval.py --quick     # what the test suite runs
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

from qwq_edge import Model, load
from qwq_edge.reasoning.controller import Action, Force, ReasoningController
from qwq_edge.reasoning.factory import ControllerFactory
from qwq_edge.reasoning.texts import RuntimeTexts, texts_for
from qwq_edge.runtime.options import GenerationOptions
from qwq_edge.services.evaluate import SAMPLE_DATA, load_problems, run_eval
from qwq_edge.services.testdata import fixture_model_path

try:
    from benchmarks.common import RESULTS
except ImportError:  # run as a script from the repository root
    from common import RESULTS

#: The wrap-up sentences compared (``solve`` is the runtime's own).
VARIANTS = {
    "direct": "Considering the limited time by the user, I have to give the solution based on the thinking "
    "directly now.",
    "bare": "",
    "finish": "I am out of thinking time, so I stop here; in my answer I will briefly finish the reasoning and then "
    "give the final result.",
    "solve": texts_for("en").wrap_up,
}
#: Variants that also force a soft warning once, at the first sentence or line end after
#: 90% of the budget (the issue's optional rule, measured here before it is built).
WARNINGS = {"solve-warn": ("solve", "\n\nI should wrap up soon.\n\n")}
SENTENCE_ENDS = (".", "!", "?", ":", "\n")


class _WarnedController(ReasoningController):
    """The runtime's controller plus the soft warning (this benchmark's variant only)."""

    warning: tuple[int, ...] = ()
    warned = False

    def _next_thinking_action(self, room: int, left: int) -> Action:
        if self._time_to_warn():
            self.warned = True
            return Force(self.warning, "soft-warning")
        return super()._next_thinking_action(room, left)

    def _time_to_warn(self) -> bool:
        budget, block = self.limits.max_thinking_tokens, self._block
        if not budget or self.warned or block is None or not budget > self.counts.thinking_tokens >= 0.9 * budget:
            return False
        return block.raw.rstrip(" ").endswith(SENTENCE_ENDS)


class _WarningFactory(ControllerFactory):
    def __init__(self, warning: tuple[int, ...], *args: Any) -> None:
        super().__init__(*args)
        self._warning = warning

    def new(self, *args: Any, **kwargs: Any) -> ReasoningController:
        plain = super().new(*args, **kwargs)
        controller = _WarnedController(plain.fmt, plain.limits, plain.tokens, plain.tokenize)
        controller.warning = self._warning
        return controller


def _with_variant(model: Model, name: str) -> None:
    """Make ``model``'s controllers force the variant's wrap-up at the budget (and its soft
    warning, if it has one; English texts otherwise)."""
    wrap_up, warning = (VARIANTS[WARNINGS[name][0]], WARNINGS[name][1]) if name in WARNINGS else (VARIANTS[name], "")

    def texts(language: str) -> RuntimeTexts:
        return replace(texts_for(language), wrap_up=wrap_up)

    engine = model.engine
    args = (
        lambda text, special: engine.tokenize(text, special=special),
        engine.token_bytes,
        model.info.vocab_size,
        engine.end_of_generation,
        texts,
    )
    warned = tuple(engine.tokenize(warning, special=False))
    model.controllers = _WarningFactory(warned, *args) if warning else ControllerFactory(*args)


def _cut(row: dict[str, Any]) -> str:
    """Where a run's thinking was cut; rows from before the cut rule: at the budget's token."""
    if row["budget"] == 0:
        return "none"  # nothing to cut
    if "cut" in row:
        return row["cut"]
    return "at the budget's token" if row["thinking_tokens"] >= row["budget"] else "none"


def summarize(folder: Path) -> list[dict[str, Any]]:
    """Per budget: runs, accuracy, mean thinking and answer tokens, and the cuts by kind."""
    rows = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines() if line.strip()]
    table = []
    for budget in sorted({row["budget"] for row in rows}):
        mine = [row for row in rows if row["budget"] == budget]
        cuts = Counter(kind for kind in map(_cut, mine) if kind != "none")
        table.append(
            {
                "budget": budget,
                "runs": len(mine),
                "accuracy": sum(row["correct"] for row in mine) / len(mine),
                "thinking_tokens": sum(row["thinking_tokens"] for row in mine) / len(mine),
                "answer_tokens": sum(row["answer_tokens"] for row in mine) / len(mine),
                "cuts": dict(cuts),
                "cut_tokens": sum(row.get("cut_tokens", 0) for row in mine) / len(mine),
            }
        )
    return table


def markdown(name: str, table: list[dict[str, Any]]) -> str:
    lines = [
        f"**{name}**\n",
        "| budget | runs | accuracy | thinking tokens | answer tokens | where the cuts fell | tokens taken back |",
        "|---:|---:|---:|---:|---:|---|---:|",
    ]
    for row in table:
        cuts = ", ".join(f"{kind} {count}" for kind, count in sorted(row["cuts"].items())) or "—"
        lines.append(
            f"| {row['budget']} | {row['runs']} | {row['accuracy']:.0%} | {row['thinking_tokens']:.0f} "
            f"| {row['answer_tokens']:.0f} | {cuts} | {row['cut_tokens']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def run_variants(args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    problems = load_problems(SAMPLE_DATA, args.limit)
    options = GenerationOptions(
        reasoning_format="think", max_answer_tokens=args.max_answer_tokens, temperature=args.temperature, seed=0
    )
    tables = {}
    with load(args.model or fixture_model_path(), context_length=2048) as model:
        for name in args.variants:
            _with_variant(model, name)
            folder = args.out / name
            for _ in run_eval(model, problems, args.budgets, folder / "results.jsonl", options, samples=args.samples):
                pass
            tables[name] = summarize(folder)
    return tables


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", type=lambda v: v.split(","), default=[*VARIANTS, *WARNINGS])
    parser.add_argument("--budgets", type=lambda v: [int(b) for b in v.split(",")], default=[0, 32, 64, 128, 256])
    parser.add_argument("--limit", type=int, default=10)
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--max-answer-tokens", type=int, default=150)
    parser.add_argument("--temperature", type=float, default=0.6)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--out", type=Path, default=RESULTS / "budget_eval")
    parser.add_argument("--table", type=Path, nargs="*", help="only summarize these result folders")
    parser.add_argument("--quick", action="store_true", help="one problem, budgets 0 and 8, short answers")
    args = parser.parse_args(argv)
    if args.quick:
        args.limit, args.samples, args.budgets, args.max_answer_tokens = 1, 1, [0, 8], 8
        args.variants = args.variants[-1:]
    tables = {path.name: summarize(path) for path in args.table} if args.table else run_variants(args)
    for name, table in tables.items():
        print(markdown(name, table))
    return tables


if __name__ == "__main__":
    main()
