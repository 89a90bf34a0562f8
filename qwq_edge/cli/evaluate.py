"""``qwq-edge eval``: accuracy against thinking budget."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from ..evaluate import SAMPLE_DATA, load_problems, plot_summary, run_eval, summarize, write_summary
from .interrupt import cancel_on_interrupt
from .options import generation_options, load_model, model_options, options_from_params


def _budgets(ctx: click.Context, param: click.Parameter, value: str) -> list[int]:
    try:
        budgets = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of whole numbers") from None
    if not budgets or min(budgets) < 0:
        raise click.BadParameter("give at least one budget, each >= 0")
    return budgets


@click.command(name="eval")
@click.option("--data", type=click.Path(path_type=Path), default=str(SAMPLE_DATA), help="JSONL of question/answer.")
@click.option("--budgets", default="256,1024,4096", show_default=True, callback=_budgets, help="Thinking budgets.")
@click.option(
    "--samples", type=click.IntRange(min=1), default=1, show_default=True, help="Runs per problem and budget."
)
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N problems.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), help="Folder for results (default ./eval-MODEL).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@model_options
@generation_options
def evaluate(
    data: Path, budgets: list[int], samples: int, limit: int | None, out_dir: Path | None, as_json: bool, **params: Any
) -> None:
    """Run each problem at each thinking budget: accuracy, thinking tokens, time; table, JSON and PNG.

    Results are appended per problem to OUT/results.jsonl; a rerun skips what is done.
    """
    problems = load_problems(data, limit)
    model = load_model(params)
    out_dir = out_dir or Path.cwd() / f"eval-{Path(model.info.model_path).stem}"
    results = out_dir / "results.jsonl"
    options = options_from_params(params, model)
    console = Console(stderr=True)
    total = len(problems) * len(budgets) * samples
    with cancel_on_interrupt(model):
        for count, row in enumerate(run_eval(model, problems, budgets, results, options, samples=samples), start=1):
            mark = "✓" if row["correct"] else "✗"
            console.print(
                f"[{count}] budget {row['budget']:>5}  {row['id']:<16} {mark} {row['predicted']}", markup=False
            )
    summary = summarize(results, budgets)
    write_summary(summary, out_dir / "summary.json", model.info.model_name)
    plot_summary(summary, out_dir / "accuracy_vs_thinking.png", model.info.model_name)
    if as_json:
        click.echo(json.dumps({"model": model.info.model_name, "budgets": [s.__dict__ for s in summary]}))
        return
    table = Table(title=f"{model.info.model_name}: {len(problems)} problems × {samples} samples ({total} runs)")
    for column in ("budget", "accuracy", "mean thinking tokens", "mean time per problem"):
        table.add_column(column, justify="right")
    for s in summary:
        table.add_row(str(s.budget), f"{s.accuracy:.1%}", f"{s.mean_thinking_tokens:.0f}", f"{s.mean_seconds:.1f} s")
    Console().print(table)
    console.print(
        f"results: {results}; summary: {out_dir / 'summary.json'}; plot: {out_dir / 'accuracy_vs_thinking.png'}"
    )
