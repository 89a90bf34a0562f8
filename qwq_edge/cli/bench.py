"""``qwq-edge bench``: how fast a model thinks here, and what qwq-edge costs next to the raw engine."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.filesize import decimal
from rich.table import Table

from ..files import write_text_atomic
from ..runtime.options import GenerationOptions
from ..services.benchmarking import BenchReport, BenchSettings, run_bench
from ..services.benchmarking.parallel import run_parallel, table
from ..services.benchmarking.suite import OFF, RAW
from ..services.benchmarking.workloads import WORKLOADS
from .library import model_path
from .options import draft_path, load_kwargs, model_options


@click.command()
@model_options
@click.option(
    "--prompt-tokens",
    type=click.IntRange(min=16),
    default=512,
    show_default=True,
    help="Prompt length, system prompt and template included.",
)
@click.option("--gen-tokens", type=click.IntRange(min=2), default=128, show_default=True, help="Tokens per run.")
@click.option("--repetitions", type=click.IntRange(min=1), default=3, show_default=True, help="Runs per variant.")
@click.option("--greedy", is_flag=True, help="Greedy decoding instead of the model's sampling defaults.")
@click.option("--no-raw", is_flag=True, help="Skip the raw engine (peak memory is then qwq-edge's alone).")
@click.option(
    "--draft",
    default="off",
    show_default=True,
    metavar="ngram|auto|MODEL|off",
    help="Speculative decoding in the qwq-edge runs (a run without it is added for comparison).",
)
@click.option(
    "--workload",
    type=click.Choice(WORKLOADS),
    default="plain",
    show_default=True,
    help="plain: filler and counting; edit: rewrite a file with one change; reasoning: a math word problem; "
    "story; sort: random numbers (nothing to copy).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report (every repetition) as JSON.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Also write the JSON report here.")
def bench(
    prompt_tokens: int,
    gen_tokens: int,
    repetitions: int,
    greedy: bool,
    no_raw: bool,
    draft: str,
    workload: str,
    as_json: bool,
    out: Path | None,
    **params: Any,
) -> None:
    """Measure load time, time to first token, prefill and decode speed and peak memory.

    The raw engine (plain llama-cpp-python or mlx_lm.stream_generate), qwq-edge with
    every reasoning control off and qwq-edge with all of them on (thinking budget, loop
    guard, language guard) take turns on the same prompt tokens; medians are shown.
    The prompt cache is off unless --cache-ram or --prompt-cache asks for one.
    With --parallel N: N concurrent greedy streams of --gen-tokens against one (aggregate
    tokens/s, each stream's text against its run alone, time to first token under load).
    """
    settings = BenchSettings(
        prompt_tokens=prompt_tokens,
        gen_tokens=gen_tokens,
        repetitions=repetitions,
        raw=not no_raw,
        options=GenerationOptions(temperature=0.0 if greedy else None),
        workload=workload,
    )
    path = model_path(params["model_path"], params["yes"], params["min_speed"])
    if params["parallel"] > 1:
        _bench_parallel(path, params["parallel"], gen_tokens, as_json, out, params)
        return
    settings = _with_draft(settings, draft, params["yes"], path)
    console = Console(stderr=True)
    with console.status("loading the model") as status:
        report = run_bench(path, settings, progress=status.update, **load_kwargs(params))
    if report is None:  # a rank other than 0 of a distributed run: rank 0 reports
        return
    if params["verbose"]:
        _print_engine(console, report.model)
    _emit(report, as_json, out)


def _bench_parallel(path: Path, parallel: int, tokens: int, as_json: bool, out: Path | None, params: dict) -> None:
    """``--parallel N``: N concurrent greedy streams against one (``bench.parallel``)."""
    kwargs = {key: value for key, value in load_kwargs(params).items() if key in ("engine", "kv_cache", "n_threads")}
    with Console(stderr=True).status(f"{parallel} streams against one"):
        result = run_parallel(path, (1, parallel), tokens, **kwargs)
    if out is not None:
        write_text_atomic(out, json.dumps(result, indent=2) + "\n")
    click.echo(json.dumps(result) if as_json else table(result))


def _emit(report: BenchReport, as_json: bool, out: Path | None) -> None:
    """The report as JSON (to ``out`` and/or standard output), or as tables."""
    data = report.to_dict()
    if out is not None:
        write_text_atomic(out, json.dumps(data, indent=2) + "\n")
    if as_json:
        click.echo(json.dumps(data))
    else:
        _print_report(Console(), report)


def _with_draft(settings: BenchSettings, draft: str, yes: bool, path: Path) -> BenchSettings:
    """``settings`` with ``--draft`` resolved to a local path (``auto``: the catalog's for this model)."""
    if draft == "off":
        return settings
    return replace(settings, options=settings.options.replace(draft=draft_path(draft, yes, path.name)))


def _print_engine(console: Console, model: dict[str, Any]) -> None:
    console.print(f"engine: {model['engine']} on {model['device']} ({model['engine_reason']})")
    if model["memory_plan"]:
        console.print(f"memory: {model['memory_plan']}")


def _print_cached(console: Console, report: BenchReport) -> None:
    """Say when runs started from cached prompt tokens (a prompt cache was asked for): their TTFT is not prefill."""
    cached = [r for runs in report.runs.values() for r in runs if r.cached_prompt_tokens]
    if cached:
        sources = sorted({r.cached_prompt_from or "sequence" for r in cached})
        tokens = max(r.cached_prompt_tokens for r in cached)
        console.print(
            f"prompt cache: {len(cached)} run{'s' if len(cached) > 1 else ''} started from up to {tokens} cached "
            f"prompt tokens ({', '.join(sources)}); their time to first token is not a cold prefill",
            highlight=False,
        )


def _print_report(console: Console, report: BenchReport) -> None:
    model, settings = report.model, report.settings
    sampling = "greedy" if settings["sampling"]["temperature"] == 0 else "the model's sampling, seeded"
    caption = (
        f"{settings['prompt_tokens']} prompt tokens, {settings['gen_tokens']} generated; {sampling}; "
        f"median of {settings['repetitions']} run{'s' if settings['repetitions'] > 1 else ''} each"
    )
    if settings["raw_label"]:
        caption += f"; raw engine: {settings['raw_label']}"
    table = Table(
        title=f"{Path(model['path']).name}: {model['engine']} on {model['device']}",
        title_justify="left",
        caption=caption,
        caption_justify="left",
    )
    for column in ("", "load", "TTFT", "prefill tok/s", "decode tok/s", "decode ÷ raw"):
        table.add_column(column, justify="right" if column else "left")
    medians = report.medians()
    raw_decode = medians.get(RAW, {}).get("decode_tokens_per_s")
    for name, m in medians.items():
        table.add_row(
            "raw engine" if name == RAW else name,
            f"{report.load_seconds['raw' if name == RAW else 'qwq-edge']:.2f} s",
            f"{m['time_to_first_token'] * 1000:.0f} ms",
            f"{m['prefill_tokens_per_s']:.1f}",
            f"{m['decode_tokens_per_s']:.1f}",
            f"{m['decode_tokens_per_s'] / raw_decode:.3f}" if raw_decode else "-",
        )
    console.print(table)
    _print_cached(console, report)
    if report.prediction:
        console.print(_predicted_line(report.prediction, medians.get(OFF, {})), highlight=False)
    memory = report.memory
    line = f"memory: {decimal(memory['rss_after_load_bytes'])} resident after loading"
    if "raw_engine_added_rss_bytes" in memory:
        line += f", {decimal(memory['raw_engine_added_rss_bytes'])} more for the raw engine"
    console.print(f"{line}; peak {decimal(memory['peak_rss_bytes'])}")
    if report.ranks:
        _print_ranks(console, report.ranks)
    ratios = report.ratios()
    if ratios:
        console.print("median per-run ratios: " + "; ".join(f"{name} {value:.3f}" for name, value in ratios.items()))


def _predicted_line(prediction: dict[str, Any], measured: dict[str, float]) -> str:
    """``speed model: decode 41.0 tok/s predicted, 39.8 measured (-3%); prefill …; from …`` (measured:
    qwq-edge with the controls off)."""
    parts = []
    for what in ("decode", "prefill"):
        predicted, actual = prediction.get(f"predicted_{what}_tokens_per_s"), measured.get(f"{what}_tokens_per_s")
        if predicted:
            off = f" ({actual / predicted - 1:+.0%})" if actual else ""
            parts.append(f"{what} {predicted:.1f} tok/s predicted, {actual or 0:.1f} measured{off}")
    return f"speed model: {'; '.join(parts)}; from {prediction['machine']}"


def _print_ranks(console: Console, ranks: list[dict[str, Any]]) -> None:
    """Each rank's memory and its own decode speed (tokens fed one at a time ÷ its seconds until their logits)."""
    table = Table(title="ranks", title_justify="left")
    for column in ("rank", "host", "MLX peak memory", "peak RSS", "decode tok/s"):
        table.add_column(column, justify="left" if column == "host" else "right")
    for rank in ranks:
        table.add_row(
            str(rank["rank"]),
            rank["host"],
            decimal(rank["mlx_peak_memory_bytes"]),
            decimal(rank["peak_rss_bytes"]),
            f"{rank['decode_tokens_per_s']:.1f}",
        )
    console.print(table)
