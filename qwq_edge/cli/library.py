"""``qwq-edge pull``, ``list`` and ``rm``, and finding the model ``--model`` names."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.filesize import decimal
from rich.table import Column, Table

from ..catalog.entries import CatalogEntry, Source, load_catalog, split_name
from ..catalog.families import family_for
from ..catalog.fits import FORMAT_ENGINES, Candidate, alternatives, choose, mac_hint, plan_catalog, why
from ..catalog.planner import GB, MemoryPlan, memory_budget, model_shape
from ..catalog.speed import describe_floor, duration, fast_enough, machine_speed, medium_thought, min_speed, predict
from ..catalog.store import ModelNotPulledError, check_pull, choose_source, installed, pull, remove, resolve_model
from ..engines.registry import choose_engine
from ..errors import InsufficientMemoryError, QwqEdgeError
from .tables import Field, fit_widths, print_fitted, room


def confirm_download(description: str, yes: bool) -> None:
    """Ask before a large download; without a terminal, ``--yes`` is required."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise click.UsageError(f"{description}: confirm with --yes")
    if not click.confirm(f"{description}. Download now?", default=True, err=True):
        raise click.Abort()


def _command_prefix() -> str:
    """How the user names a model in the command being run: ``qwq-edge chat --model``, ``qwq-edge pull``."""
    context = click.get_current_context(silent=True)
    name = context.info_name if context else "chat"
    return "qwq-edge pull" if name == "pull" else f"qwq-edge {name} --model"


def _checked_plan(entry: CatalogEntry, source: Source, format: str | None) -> MemoryPlan:
    """The plan a download would run with; refused with what fits instead (and, on a Mac, the wired-limit hint)."""
    try:
        return check_pull(entry, source)
    except InsufficientMemoryError as error:
        raise with_alternatives(error, format or source.format, (entry, source)) from None


class RefusalWithAlternatives(InsufficientMemoryError):
    """A refusal that already says what fits instead."""


def with_alternatives(
    error: InsufficientMemoryError, format: str | None, download: tuple[CatalogEntry, Source] | None = None
) -> InsufficientMemoryError:
    """``error`` followed by what fits instead, as commands (and, on a Mac, the wired-limit hint
    for ``download``, the catalog download that did not fit). A refusal that already says so is
    kept as it is: a catalog download refused before loading reaches the loader's handler too."""
    if isinstance(error, RefusalWithAlternatives):
        return error
    candidates = plan_catalog(format=format)
    needed = next((c.needed for c in candidates if (c.entry, c.source) == download), None)
    hints = [str(error), needed and mac_hint(needed), alternatives(candidates, _command_prefix())]
    return RefusalWithAlternatives("; ".join(h for h in hints if h))


def pull_with_checks(spec: str, format: str | None, yes: bool) -> Path:
    """Plan memory from the catalog, confirm the size, then download; return the local path."""
    entry, source = choose_source(spec, format)
    plan = _checked_plan(entry, source, format)
    machine = machine_speed(FORMAT_ENGINES.get(source.format, "llama.cpp"))
    speed = predict(entry.shape(source), plan.kv_cache, machine, medium_thought(entry.effort)) if machine else None
    thinks = f"; it thinks here at {speed.describe()}" if speed else ""
    click.echo(f"{entry.display_name} {source.quant} ({source.format}) fits: {plan.describe()}{thinks}", err=True)
    if source.convert:
        checkpoint = next(s for s in entry.sources if s.format == "hf")
        description = (
            f"{entry.display_name} has no pre-converted {source.format} download: its checkpoint "
            f"({decimal(checkpoint.size_bytes)} from {source.repo}) is downloaded and converted to {source.quant}"
        )
    else:
        description = f"{entry.display_name} {source.quant} is {decimal(source.size_bytes)} from {source.repo}"
    confirm_download(description, yes)
    return Path(pull(spec, format).path)


def _pulled_specs() -> set[str]:
    return {f"{p.name}:{p.quant}" for p in installed()}


def first_run_spec(floor: float | None = None) -> str:
    """The catalog download a run without ``--model`` uses: the default model if it fits here and thinks
    at or above ``floor`` (see ``qwq_edge.catalog.fits``), else the best that does, saying why in one
    line; one already on disk comes first."""
    candidates = plan_catalog()
    choice = choose(candidates, _pulled_specs(), floor)
    reason = why(choice, candidates, floor)
    if reason:
        hint = mac_hint(candidates[0].needed)
        click.echo(reason + (f"\n({candidates[0].spec}: {hint})" if hint else ""), err=True)
    return choice.spec


def local_path(spec: str, yes: bool) -> Path:
    """The local path of what ``--model`` or ``--draft`` names (a catalog download not on disk is pulled first)."""
    try:
        return resolve_model(spec)
    except ModelNotPulledError:
        return pull_with_checks(spec, None, yes)


def model_path(spec: str | None, yes: bool, speed_floor: float | None = None) -> Path:
    """The path for ``--model``; with none, the first run's choice (``speed_floor``: ``--min-speed``).
    A model named explicitly is never refused for speed: if it thinks below the floor, one warning says so."""
    floor = min_speed(speed_floor)
    if spec is None:
        return local_path(first_run_spec(floor), yes)
    path = local_path(spec, yes)
    warning = slow_warning(path, floor)
    if warning:
        click.echo(f"warning: {warning}", err=True)
    return path


def slow_warning(path: Path, floor: float | None) -> str | None:
    """What to say when the model at ``path`` would think below ``floor`` here (``None`` if it would not,
    or if its speed cannot be told)."""
    try:
        shape = model_shape(path)
        machine = machine_speed(choose_engine(path)[0])
    except QwqEdgeError:
        return None  # loading says what is wrong
    if machine is None:
        return None
    speed = predict(shape, "f16", machine, medium_thought(family_for(shape.name).effort))
    if fast_enough(speed, floor):
        return None
    return (
        f"{shape.name} thinks here at {speed.describe()}, below {describe_floor(speed, floor)}; "
        "`qwq-edge list --catalog --fits` shows what thinks faster"
    )


@click.command(name="pull")
@click.argument("spec", metavar="NAME[:QUANT]")
@click.option("--format", "format_", type=click.Choice(["gguf", "mlx", "hf"]), help="Default: what this machine runs.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before downloading.")
def pull_command(spec: str, format_: str | None, yes: bool) -> None:
    """Download a catalog model (only one format and quantization)."""
    path = pull_with_checks(spec, format_, yes)
    click.echo(f"{split_name(spec)[0]} is ready: {path}")


#: ``list --fits``'s columns; on a narrow terminal the repository goes first, then the size, then the context
#: and a thought's time (the predicted speed stays).
FITS_FIELDS = (
    Field("#"),
    Field("download", wraps=True),
    Field("size", drop=2),
    Field("plan", wraps=True),
    Field("context", drop=3),
    Field("needs"),
    Field("tok/s"),
    Field("thought", drop=4),
    Field("repository", drop=1),
)


CATALOG_FIELDS = (Field("name", wraps=True), Field("downloads", wraps=True), Field("reasoning"), Field("context"))


def _catalog_row(entry: CatalogEntry) -> list[str]:
    sources = ", ".join(f"{s.format}:{s.quant} ({decimal(s.size_bytes)})" for s in entry.sources)
    name = entry.name + (" (default)" if entry.default else "")
    return [name, sources, entry.reasoning_format, str(entry.context_length)]


def _fits_row(rank: int, c: Candidate) -> list[str]:
    """One download's row of ``list --fits``, in the order of ``FITS_FIELDS``."""
    return [
        str(rank),
        c.spec + ("" if c.reasoning else " (not reasoning)"),
        f"{c.source.size_bytes / GB:.1f} GB",
        c.verdict,
        str(c.plan.context) if c.plan else "-",
        f"{(c.plan or c.needed).total_bytes / GB:.1f} GB",
        _tokens_per_s(c.speed.decode_tokens_per_s) if c.speed else "-",
        duration(c.speed.thought_seconds) if c.speed else "-",
        c.source.repo,
    ]


def _tokens_per_s(rate: float) -> str:
    return f"{rate:.1f}" if rate < 100 else f"{rate:.0f}"


def first_run_choice(candidates: list[Candidate]) -> Candidate | None:
    """What a first run would take (``None``: no reasoning model fits)."""
    try:
        return choose(candidates, _pulled_specs(), min_speed())
    except InsufficientMemoryError:
        return None


def _print_fits(console: Console, candidates: list[Candidate], chosen: Candidate | None) -> None:
    budget = memory_budget()
    rows = [_fits_row(rank, c) for rank, c in enumerate(candidates, 1)]
    print_fitted(console, FITS_FIELDS, rows)
    first = f"a first run takes {chosen.spec}" if chosen else "no reasoning model fits"
    if chosen and chosen.speed:
        first += f" ({chosen.speed.describe()})"
    console.print(f"{budget / GB:.1f} GB usable; {first}.", highlight=False)
    machine = machine_speed(FORMAT_ENGINES.get(candidates[0].source.format, "llama.cpp")) if candidates else None
    if machine is not None:
        thought = candidates[0].speed.thought_tokens if candidates[0].speed else 2048
        shown = [FITS_FIELDS[i].header for i in fit_widths(FITS_FIELDS, rows, room(console))]
        time = "; thought: how long it takes" if "thought" in shown else ""
        console.print(
            f"tok/s: the predicted decoding speed over a medium thought (~{thought:,} tokens){time}; "
            f"from {machine.describe()}.",
            highlight=False,
        )


@click.command(name="list")
@click.option("--catalog", is_flag=True, help="List the catalog instead of what is on disk.")
@click.option("--fits", is_flag=True, help="With --catalog: every download's plan on this machine, best first.")
@click.option("--format", "format_", type=click.Choice(["gguf", "mlx"]), help="With --fits: plan this format.")
@click.option("--json", "as_json", is_flag=True, help="With --fits: print JSON.")
def list_command(catalog: bool, fits: bool, format_: str | None, as_json: bool) -> None:
    """Models on disk (or, with --catalog, every model qwq-edge knows; --fits: what fits here)."""
    console = Console()
    if fits:
        candidates = plan_catalog(format=format_)
        chosen = first_run_choice(candidates)
        if as_json:
            downloads = [{**c.to_dict(), "first_run": c is chosen} for c in candidates]
            click.echo(json.dumps({"budget_bytes": memory_budget(), "downloads": downloads}))
        else:
            _print_fits(console, candidates, chosen)
        return
    if catalog:
        print_fitted(console, CATALOG_FIELDS, [_catalog_row(entry) for entry in load_catalog()])
        return
    pulled = installed()
    if not pulled:
        console.print("no models yet: `qwq-edge pull NAME` downloads one (`qwq-edge list --catalog` shows names)")
        return
    table = Table(Column("name", no_wrap=True), "format", "quant", "size", Column("path", overflow="fold"))
    for item in pulled:
        table.add_row(item.name, item.format, item.quant, decimal(item.size_bytes), item.path)
    console.print(table)


@click.command(name="rm")
@click.argument("spec", metavar="NAME[:QUANT]")
def rm_command(spec: str) -> None:
    """Delete a pulled model's files."""
    for item in remove(spec):
        click.echo(f"removed {item.name}:{item.quant} ({item.path})")
