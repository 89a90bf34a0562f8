"""``qwq-edge eval``: accuracy against thinking budget."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from ..services.evaluate import (
    SAMPLE_DATA,
    BudgetSummary,
    load_problems,
    plot_summary,
    run_eval,
    summarize,
    write_summary,
)
from .interrupt import cancel_on_interrupt
from .options import (
    generation_options,
    load_model,
    model_options,
    options_from_params,
    parallel_for_votes,
    votes_option,
)


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
@votes_option
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N problems.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), help="Folder for results (default ./eval-MODEL).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@model_options
@generation_options
def evaluate(
    data: Path,
    budgets: list[int],
    samples: int,
    votes: int,
    limit: int | None,
    out_dir: Path | None,
    as_json: bool,
    **params: Any,
) -> None:
    """Run each problem at each thinking budget: accuracy, thinking tokens, time; table, JSON and PNG.

    Results are appended per problem to OUT/results.jsonl; a rerun skips what is done. With
    --votes K each run is K thoughts and their majority answer, beside one thought's accuracy.
    """
    problems = load_problems(data, limit)
    model = load_model(parallel_for_votes(params, votes))
    out_dir = out_dir or Path.cwd() / f"eval-{Path(model.info.model_path).stem}"
    results = out_dir / "results.jsonl"
    options = options_from_params(params, model)
    console = Console(stderr=True)
    total = len(problems) * len(budgets) * samples
    with cancel_on_interrupt(model) as interrupt:
        rows = run_eval(
            model, problems, budgets, results, options, samples=samples, votes=votes, stop=lambda: interrupt.requested
        )
        for count, row in enumerate(rows, start=1):
            mark = "✓" if row["correct"] else "✗"
            console.print(
                f"[{count}] budget {row['budget']:>5}  {row['id']:<16} {mark} {row['predicted']}", markup=False
            )
    if interrupt.requested:
        click.echo(f"interrupted: the finished runs are kept in {results}; run the same command to go on", err=True)
        sys.exit(130)
    each = f", {votes} votes each" if votes > 1 else ""
    _report(
        model.info.model_name,
        summarize(results, budgets, votes),
        out_dir,
        f"{len(problems)} problems × {samples} samples ({total} runs{each})",
        as_json,
    )


def _report(model_name: str, summary: list[BudgetSummary], out_dir: Path, title: str, as_json: bool) -> None:
    """Write the summary and the plot; print the table (or JSON)."""
    write_summary(summary, out_dir / "summary.json", model_name)
    plot_summary(summary, out_dir / "accuracy_vs_thinking.png", model_name)
    if as_json:
        click.echo(json.dumps({"model": model_name, "budgets": [s.__dict__ for s in summary]}))
        return
    table = Table(title=f"{model_name}: {title}")
    voted = any(s.single_accuracy is not None for s in summary)
    columns = ("budget", "accuracy, voted" if voted else "accuracy", *(("one thought",) if voted else ()))
    for column in (*columns, "mean thinking tokens", "mean time per problem"):
        table.add_column(column, justify="right")
    for s in summary:
        single = (f"{s.single_accuracy:.1%}",) if voted and s.single_accuracy is not None else ()
        table.add_row(
            str(s.budget), f"{s.accuracy:.1%}", *single, f"{s.mean_thinking_tokens:.0f}", f"{s.mean_seconds:.1f} s"
        )
    Console().print(table)
    Console(stderr=True).print(
        f"results: {out_dir / 'results.jsonl'}; summary: {out_dir / 'summary.json'}; "
        f"plot: {out_dir / 'accuracy_vs_thinking.png'}"
    )
