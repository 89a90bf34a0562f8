"""``qwq-edge info`` and ``qwq-edge doctor``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.filesize import decimal
from rich.table import Table
from rich.text import Text

from ..catalog.entries import find, split_name
from ..catalog.planner import GB, MIN_FIT_CONTEXT, rank_plan
from ..catalog.store import ModelNotPulledError, choose_source, resolve_model
from ..engines.registry import rank_shape
from ..services.inspection import (
    catalog_memory,
    describe_model,
    distributed_report,
    model_memory,
    rank_differences,
    smoke_engines,
    smoke_test,
    speed_report,
    system_report,
)

GiB = 2**30


def plain(value: Any) -> str:
    """A value in words, not as Python writes it: lists joined with ", ", dicts as "key: value",
    yes/no for booleans and "-" for nothing."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None or value in ({}, [], ()):
        return "-"
    if isinstance(value, dict):
        return ", ".join(f"{key}: {plain(item)}" for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(plain(item) for item in value)
    return str(value)


def _table(title: str, rows: dict[str, Any]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left", title_style="bold")
    for key, value in rows.items():
        label = key.removesuffix("_bytes").replace("_", " ")  # the values say their unit
        table.add_row(label, Text(plain(value)))  # plain text: "[mlx]" in a value is not markup
    return table


def _catalog_details(spec: str) -> dict[str, Any] | None:
    """A catalog model's entry, and the local model's description if it is pulled."""
    entry = find(split_name(spec)[0])
    if entry is None:
        return None
    details: dict[str, Any] = {
        "catalog": entry.name,
        "display_name": entry.display_name,
        "license": entry.license,
        "chat_template": entry.chat_template,
        "rope_scaling": entry.rope_scaling,
        "effort_budgets": entry.effort,
        "downloads": [f"{s.format}:{s.quant} {s.repo} ({decimal(s.size_bytes)})" for s in entry.sources],
        **catalog_memory(entry, choose_source(spec)[1]),
    }
    try:
        details.update(describe_model(resolve_model(spec)))
    except ModelNotPulledError:
        details["pulled"] = False
    return details


def _readable_plan(details: dict[str, Any]) -> dict[str, str]:
    """A catalog model's memory needs and plan here, in words."""
    needs = ", ".join(f"{total / GB:.1f} GB with {kv} KV cache" for kv, total in details["needs_bytes"].items())
    plan = details["plan"]
    verdict = f"does not fit (with {MIN_FIT_CONTEXT} tokens or more)"
    if plan is not None:
        verdict = f"fits: {plan['context']} tokens with {plan['kv_cache']} KV cache, {plan['total_bytes'] / GB:.1f} GB"
    return {
        "needs_bytes": f"{needs} at {details['default_context']} tokens",
        "budget_bytes": f"{details['budget_bytes'] / GB:.1f} GB",
        "plan": verdict,
    }


def _readable(details: dict[str, Any]) -> dict[str, Any]:
    """``info``'s details with sizes, sampling and plans in words."""
    shown = {k: v for k, v in details.items() if k != "files"}
    shown["parameters"] = f"{details['parameters'] / 1e9:.2f}B"
    shown["weights_bytes"] = decimal(details["weights_bytes"])
    if "plan" in details:
        shown.update(_readable_plan(details))
    if "memory" in details:
        memory = details["memory"]
        fits = memory["largest_context"].items()
        shown["memory"] = ", ".join(f"{memory['parallel']} × {n} tokens with {kv} KV cache" for kv, n in fits)
    if "files" in details:
        shown["files"] = ", ".join(f"{name} ({decimal(size)})" for name, size in details["files"].items())
    if "speed" in details:
        speed = details["speed"]
        prefill = speed.get("predicted_prefill_tokens_per_s")
        reads = f"; reads a prompt at ~{prefill:,.0f} tokens/s" if prefill else ""
        shown["speed"] = f"{speed['words']}{reads}" + (f" ({speed['machine']})" if "machine" in speed else "")
    return shown


def _local_path(model: str) -> Path:
    path = Path(model)
    return path if path.exists() else resolve_model(model)


def _show_ranks(model: str, ranks: int, memory: float | None, as_json: bool) -> None:
    """Whether ``ranks`` machines of ``memory`` GB each hold MODEL split over them."""
    report = rank_plan(rank_shape(_local_path(model), ranks), ranks, None if memory is None else int(memory * GiB))
    if as_json:
        click.echo(json.dumps(report))
    else:
        _print_ranks(model, ranks, memory, report)
    if not report["fits"]:
        raise SystemExit(1)


def _print_ranks(model: str, ranks: int, memory: float | None, report: dict[str, Any]) -> None:
    rows = {
        "usable memory per rank": decimal(report["budget_per_rank_bytes"]),
        "weights per rank": decimal(report["weights_per_rank_bytes"]),
    }
    for kv, per_token in report["kv_bytes_per_token_per_rank"].items():
        fitting = report["largest_context"][kv]
        rows[f"KV cache {kv} per rank"] = f"{per_token / 1024:.1f} KiB per token; fits {fitting} tokens"
    rows["verdict"] = report["verdict"]
    where = f"{memory:g} GB" if memory is not None else "this machine's memory"
    Console().print(_table(f"{model} over {ranks} machines of {where}", rows))


@click.command()
@click.argument("model")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--ranks", type=click.IntRange(min=1), help="Plan the model split over N machines (MLX folders).")
@click.option(
    "--memory",
    type=click.FloatRange(min=1),
    help="With --ranks: each machine's memory in GB (Apple's GB, 2^30 bytes); default: this machine's.",
)
@click.option(
    "--parallel",
    type=click.IntRange(min=1),
    help="A local model: the longest context per sequence with N sequences at once (--parallel N).",
)
def info(model: str, as_json: bool, ranks: int | None, memory: float | None, parallel: int | None) -> None:
    """Describe MODEL (a GGUF file, an MLX folder or a catalog name) without loading it."""
    if ranks is not None:
        _show_ranks(model, ranks, memory, as_json)
        return
    details = _catalog_details(model) if not Path(model).exists() else None
    details = details or describe_model(Path(model))
    if parallel is not None and Path(model).exists():
        details["memory"] = model_memory(Path(model), parallel)
    if as_json:
        click.echo(json.dumps(details))
    else:
        Console().print(_table(details.get("name") or details["display_name"], _readable(details)))


@click.command()
@click.option("--model", "-m", type=click.Path(path_type=Path), help="Also plan memory for this model.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option(
    "--distributed",
    is_flag=True,
    help="Under mlx.launch: check that every rank has the same MLX and qwq-edge versions and model files.",
)
@click.option(
    "--parallel",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="With --model: plan the KV cache for this many sequences at once.",
)
def doctor(model: Path | None, as_json: bool, distributed: bool, parallel: int) -> None:
    """Check this machine: OS, CPU, memory, GPU, the engines (a real one-token run each), versions."""
    if distributed:
        _doctor_ranks(model, as_json)
        return
    report: dict[str, Any] = {"system": system_report(), "speed": speed_report()}
    report["engines"] = [smoke_test(engine) for engine in smoke_engines()]
    if model is not None:
        report["model"] = {**describe_model(model), "memory": model_memory(model, parallel)}
    if as_json:
        click.echo(json.dumps(report))
    else:
        _print_doctor(Console(), report)
    if not any(engine["ok"] for engine in report["engines"]):
        raise SystemExit(1)


def _engine_status(result: dict[str, Any]) -> str:
    """``ok: …``, ``FAILED: …``, or the detail alone for an engine that is not installed (not a failure)."""
    if not result["installed"]:
        return result["detail"]
    return ("ok: " if result["ok"] else "FAILED: ") + result["detail"]


def _print_doctor(console: Console, report: dict[str, Any]) -> None:
    system = dict(report["system"])
    for key in ("ram_total_bytes", "ram_available_bytes", "model_budget_bytes"):
        system[key.removesuffix("_bytes")] = decimal(system.pop(key))
    versions = system.pop("versions")
    console.print(_table("System", system))
    speed = report["speed"]
    probe = (
        f"{speed['memory_bandwidth_bytes_per_s'] / GB:.1f} GB/s memory bandwidth, "
        f"{speed['matmul_flops'] / GB:.0f} GFLOP/s float32 matrix products (measured in {speed['probe_seconds']:.1f} s)"
    )
    console.print(_table("Speed", {"this CPU": probe, "predictions use": speed["predictions_use"]}))
    engines = {e["engine"]: _engine_status(e) for e in report["engines"]}
    console.print(_table("Engines (one-token run on a generated tiny model)", engines))
    console.print(_table("Versions", {k: v or "not installed" for k, v in versions.items()}))
    if "model" in report:
        model, memory = report["model"], report["model"]["memory"]
        rows = {
            "engine": f"{model['engine']} ({model['engine_reason']})",
            "weights": decimal(memory["weights_bytes"]),
            "usable memory": decimal(memory["budget_bytes"]),
            "speed": model["speed"]["words"],
        }
        sequences = f" for each of {memory['parallel']} sequences" if memory["parallel"] > 1 else ""
        for kv, per_token in memory["kv_bytes_per_token"].items():
            rows[f"KV cache {kv}"] = (
                f"{per_token / 1024:.1f} KiB per token; fits {memory['largest_context'][kv]} tokens{sequences}"
            )
        console.print(_table(model["name"], rows))


def _doctor_ranks(model: Path | None, as_json: bool) -> None:
    """Rank 0 shows every rank's versions and model files; the other ranks say nothing."""
    rank, ranks = distributed_report(model)
    if rank != 0:
        return
    problems = rank_differences(ranks)
    if as_json:
        click.echo(json.dumps({"ranks": ranks, "problems": problems}))
    else:
        table = Table(title=f"{len(ranks)} ranks", title_justify="left", title_style="bold")
        for column in ("rank", "host", "mlx", "mlx-lm", "qwq-edge", "model files"):
            table.add_column(column)
        for index, facts in enumerate(ranks):
            versions = facts["versions"]
            files = (
                "-"
                if facts["model"] is None
                else ("same as rank 0" if facts["model"] == ranks[0]["model"] else "DIFFERENT")
            )
            table.add_row(str(index), facts["host"], *(str(versions[p]) for p in ("mlx", "mlx-lm", "qwq-edge")), files)
        console = Console()
        console.print(table)
        for problem in problems:
            console.print(f"problem: {problem}", style="red", markup=False, highlight=False)
    if problems:
        raise SystemExit(1)
