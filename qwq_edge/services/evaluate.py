"""Test-time scaling: accuracy against thinking budget on a file of problems.

Each problem is run at each budget (and ``samples`` times with different seeds; with
``votes`` K, each run is K thoughts and their majority answer, beside the single thoughts' accuracy);
every result is appended to a JSONL file as soon as it exists, so an interrupted
run resumes where it stopped and a rerun skips what is done. The summary gives,
per budget, the accuracy, the mean thinking tokens and the mean time per problem.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..architecture.config import json_kind
from ..errors import InvalidRequestError
from ..events import GenerationResult, each_generation
from ..files import write_atomic_with, write_bytes_atomic, write_text_atomic
from ..runtime.model import Model
from ..runtime.options import GenerationOptions
from ..runtime.prompt import check_text
from ..runtime.votes import VoteResult, final_answer
from ..text.answers import answers_match

PROMPT_SUFFIX = "\n\nPlease reason step by step, and put your final answer within \\boxed{}."
SAMPLE_DATA = Path(__file__).parent.parent / "data" / "sample_math.jsonl"


@dataclass(frozen=True)
class Problem:
    id: str
    question: str
    answer: str


@dataclass(frozen=True)
class BudgetSummary:
    budget: int
    runs: int
    accuracy: float
    mean_thinking_tokens: float
    mean_seconds: float
    #: With votes: how many thoughts each run took, and how often one thought alone was right.
    votes: int = 1
    single_accuracy: float | None = None


def _problem(line: bytes, where: str, number: int) -> Problem:
    """One JSONL line as a problem; anything else is a one-line error naming the line."""
    try:
        item = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise InvalidRequestError(f"{where}: not valid UTF-8 (byte 0x{line[error.start]:02x})") from None
    except ValueError as error:
        raise InvalidRequestError(f"{where}: not valid JSON ({error})") from None
    if not isinstance(item, dict):
        raise InvalidRequestError(f"{where}: needs a JSON object with question and answer, not {json_kind(item)}")
    missing = [key for key in ("question", "answer") if not isinstance(item.get(key), str | int | float)]
    if missing:
        raise InvalidRequestError(f"{where}: needs {' and '.join(missing)} as text")
    if not isinstance(item.get("id", ""), str | int):
        raise InvalidRequestError(f"{where}: id must be text or a whole number")
    return Problem(str(item.get("id", number)), str(item["question"]), str(item["answer"]))


def load_problems(path: str | Path, limit: int | None = None) -> list[Problem]:
    """Problems from a JSONL file of ``{"question", "answer"}`` objects (``id`` optional)."""
    try:
        lines = Path(path).read_bytes().splitlines()
    except OSError as error:
        raise InvalidRequestError(f"cannot read {path}: {error.strerror or error}") from None
    problems = [
        _problem(line, f"{path}, line {number}", number) for number, line in enumerate(lines, start=1) if line.strip()
    ]
    if not problems:
        raise InvalidRequestError(f"{path} has no problems")
    for problem in problems:
        check_text(problem.question)
    return problems[:limit]


ROW_KEYS = ("id", "budget", "sample", "correct", "thinking_tokens", "seconds")


def _rows(results: Path) -> list[dict[str, Any]]:
    """The finished results; a line cut short by an interruption, or not a result, is skipped."""
    rows = []
    for line in results.read_bytes().splitlines():
        try:
            row = json.loads(line.decode("utf-8"))
        except ValueError:
            continue
        if isinstance(row, dict) and all(key in row for key in ROW_KEYS) and isinstance(row["budget"], int):
            rows.append(row)
    return rows


def _resume(results: Path) -> set[tuple[str, int, int]]:
    """What is done already; a last line cut short by an interruption is dropped (and run again)."""
    if not results.is_file():
        return set()
    data = results.read_bytes()
    if data and not data.endswith(b"\n"):
        write_bytes_atomic(results, data[: data.rfind(b"\n") + 1])
    return {(str(row["id"]), row["budget"], row["sample"], row.get("votes", 1)) for row in _rows(results)}


def _append(results: Path, row: dict[str, Any]) -> None:
    with results.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _row(problem: Problem, budget: int, sample: int, outcome: GenerationResult) -> dict[str, Any]:
    voted = isinstance(outcome, VoteResult)
    predicted = outcome.majority if voted else final_answer(outcome)
    thoughts = outcome.answers if voted else (predicted,)
    results = each_generation(outcome)  # tokens: a thought's mean
    return {
        "id": problem.id,
        "budget": budget,
        "sample": sample,
        "votes": len(thoughts),
        "expected": problem.answer,
        "predicted": predicted,
        "correct": answers_match(predicted, problem.answer),
        "single_correct": sum(answers_match(answer, problem.answer) for answer in thoughts) / len(thoughts),
        "thinking_tokens": round(sum(r.stats.thinking_tokens for r in results) / len(results)),
        "answer_tokens": round(sum(r.stats.answer_tokens for r in results) / len(results)),
        "seconds": round(outcome.stats.total_seconds, 3),
        "finish_reason": outcome.stats.finish_reason,
        "cut": outcome.stats.budget_cut,
        "cut_tokens": outcome.stats.budget_cut_tokens,
    }


def run_eval(
    model: Model,
    problems: list[Problem],
    budgets: list[int],
    results: Path,
    options: GenerationOptions | None = None,
    *,
    samples: int = 1,
    votes: int = 1,
    on_result: Callable[[dict[str, Any]], None] = lambda row: None,
    stop: Callable[[], bool] = lambda: False,
) -> Iterator[dict[str, Any]]:
    """Run what is not in ``results`` yet; yield each new row (also appended to ``results``).

    Each run uses ``options`` with the budget under test and the seed ``options.seed``
    (0 if unset) plus the sample's number, so a rerun reproduces it; ``votes`` thoughts
    each (``Model.generate(votes=…)``: sample s's thoughts take the seeds from s × votes on,
    so no two samples share one). A cancelled run
    (``model.cancel()``, Ctrl-C) is not a result: it is not recorded, and the eval ends
    there, as it does when ``stop()`` is true; a rerun does that run again."""
    options = options or GenerationOptions()
    seed = options.seed or 0
    for problem, budget, sample in _to_run(problems, budgets, samples, votes, results):
        if stop():
            return
        outcome = model.generate(
            problem.question + PROMPT_SUFFIX, options, votes, max_thinking_tokens=budget, seed=seed + sample * votes
        )
        if any(thought.stats.finish_reason == "cancelled" for thought in each_generation(outcome)):
            return
        row = _row(problem, budget, sample, outcome)
        row["seconds"] = round(getattr(outcome, "seconds", 0.0) or outcome.stats.total_seconds, 3)
        _append(results, row)
        on_result(row)
        yield row


def _to_run(
    problems: list[Problem], budgets: list[int], samples: int, votes: int, results: Path
) -> Iterator[tuple[Problem, int, int]]:
    """Every (problem, budget, sample) not in ``results`` yet with ``votes``, budget by budget."""
    done = _resume(results)
    results.parent.mkdir(parents=True, exist_ok=True)
    for budget in budgets:
        for problem in problems:
            for sample in range(samples):
                if (problem.id, budget, sample, votes) not in done:
                    yield problem, budget, sample


def summarize(results: Path, budgets: list[int], votes: int = 1) -> list[BudgetSummary]:
    """Per budget, the runs with ``votes`` thoughts each."""
    rows = [row for row in _rows(results) if row.get("votes", 1) == votes]
    summary = []
    for budget in budgets:
        mine = [r for r in rows if r["budget"] == budget]
        if mine:
            summary.append(
                BudgetSummary(
                    budget=budget,
                    runs=len(mine),
                    accuracy=sum(r["correct"] for r in mine) / len(mine),
                    mean_thinking_tokens=sum(r["thinking_tokens"] for r in mine) / len(mine),
                    mean_seconds=sum(r["seconds"] for r in mine) / len(mine),
                    votes=votes,
                    single_accuracy=sum(r["single_correct"] for r in mine) / len(mine) if votes > 1 else None,
                )
            )
    return summary


def write_summary(summary: list[BudgetSummary], path: Path, model_name: str) -> None:
    data = {"model": model_name, "budgets": [asdict(s) for s in summary]}
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def plot_summary(summary: list[BudgetSummary], path: Path, model_name: str) -> None:
    """Accuracy against mean thinking tokens, one point per budget, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(6, 4), dpi=120)
    xs = [s.mean_thinking_tokens for s in summary]
    ys = [100 * s.accuracy for s in summary]
    axes.plot(xs, ys, marker="o")
    for s, x, y in zip(summary, xs, ys, strict=True):
        axes.annotate(f"budget {s.budget}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    axes.set_xlabel("mean thinking tokens")
    axes.set_ylabel("accuracy (%)")
    axes.set_ylim(-5, 105)
    axes.set_title(f"What thinking buys: {model_name}", fontsize=10)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    write_atomic_with(path, lambda temp: figure.savefig(temp, format="png"))
    pyplot.close(figure)
