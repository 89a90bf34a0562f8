"""``qwq-edge info`` and ``qwq-edge doctor``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.filesize import decimal
from rich.table import Table

from ..catalog import find, split_name
from ..inspection import catalog_memory, describe_model, model_memory, smoke_engines, smoke_test, system_report
from ..planner import GB, MIN_FIT_CONTEXT
from ..store import ModelNotPulledError, choose_source, resolve_model


def _table(title: str, rows: dict[str, Any]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left", title_style="bold")
    for key, value in rows.items():
        table.add_row(key, str(value))
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
    shown["sampling_defaults"] = ", ".join(f"{k}={v}" for k, v in details["sampling_defaults"].items())
    if "plan" in details:
        shown.update(_readable_plan(details))
    if "files" in details:
        shown["files"] = ", ".join(f"{name} ({decimal(size)})" for name, size in details["files"].items())
    return shown


@click.command()
@click.argument("model")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info(model: str, as_json: bool) -> None:
    """Describe MODEL (a GGUF file, an MLX folder or a catalog name) without loading it."""
    details = _catalog_details(model) if not Path(model).exists() else None
    details = details or describe_model(Path(model))
    if as_json:
        click.echo(json.dumps(details))
    else:
        Console().print(_table(details.get("name") or details["display_name"], _readable(details)))


@click.command()
@click.option("--model", "-m", type=click.Path(path_type=Path), help="Also plan memory for this model.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def doctor(model: Path | None, as_json: bool) -> None:
    """Check this machine: OS, CPU, memory, GPU, the engines (a real one-token run each), versions."""
    report: dict[str, Any] = {"system": system_report()}
    report["engines"] = [smoke_test(engine) for engine in smoke_engines()]
    if model is not None:
        report["model"] = {**describe_model(model), "memory": model_memory(model)}
    if as_json:
        click.echo(json.dumps(report))
    else:
        _print_doctor(Console(), report)
    if not any(engine["ok"] for engine in report["engines"]):
        raise SystemExit(1)


def _print_doctor(console: Console, report: dict[str, Any]) -> None:
    system = dict(report["system"])
    for key in ("ram_total_bytes", "ram_available_bytes", "model_budget_bytes"):
        system[key.removesuffix("_bytes")] = decimal(system.pop(key))
    versions = system.pop("versions")
    console.print(_table("System", system))
    engines = {e["engine"]: ("ok: " if e["ok"] else "FAILED: ") + e["detail"] for e in report["engines"]}
    console.print(_table("Engines (one-token run on a generated tiny model)", engines))
    console.print(_table("Versions", {k: v or "not installed" for k, v in versions.items()}))
    if "model" in report:
        model, memory = report["model"], report["model"]["memory"]
        rows = {
            "engine": f"{model['engine']} ({model['engine_reason']})",
            "weights": decimal(memory["weights_bytes"]),
            "usable memory": decimal(memory["budget_bytes"]),
        }
        for kv, per_token in memory["kv_bytes_per_token"].items():
            rows[f"KV cache {kv}"] = (
                f"{per_token / 1024:.1f} KiB per token; fits {memory['largest_context'][kv]} tokens"
            )
        console.print(_table(model["name"], rows))
