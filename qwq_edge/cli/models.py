"""``qwq-edge pull``, ``list`` and ``rm``, and finding the model ``--model`` names."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console
from rich.filesize import decimal
from rich.table import Column, Table

from ..catalog import default_entry, load_catalog, split_name
from ..store import ModelNotPulledError, check_pull, choose_source, installed, pull, remove, resolve_model


def confirm_download(description: str, yes: bool) -> None:
    """Ask before a large download; without a terminal, ``--yes`` is required."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise click.UsageError(f"{description}: confirm with --yes")
    if not click.confirm(f"{description}. Download now?", default=True, err=True):
        raise click.Abort()


def pull_with_checks(spec: str, format: str | None, yes: bool) -> Path:
    """Plan memory from the catalog, confirm the size, then download; return the local path."""
    entry, source = choose_source(spec, format)
    plan = check_pull(entry, source)
    click.echo(f"{entry.display_name} {source.quant} ({source.format}) fits: {plan.describe()}", err=True)
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


def model_path(spec: str | None, yes: bool) -> Path:
    """The path for ``--model``; the default catalog model (pulled first if needed) when none is given."""
    spec = spec or default_entry().name
    try:
        return resolve_model(spec)
    except ModelNotPulledError:
        return pull_with_checks(spec, None, yes)


@click.command(name="pull")
@click.argument("spec", metavar="NAME[:QUANT]")
@click.option("--format", "format_", type=click.Choice(["gguf", "mlx", "hf"]), help="Default: what this machine runs.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before downloading.")
def pull_command(spec: str, format_: str | None, yes: bool) -> None:
    """Download a catalog model (only one format and quantization)."""
    path = pull_with_checks(spec, format_, yes)
    click.echo(f"{split_name(spec)[0]} is ready: {path}")


@click.command(name="list")
@click.option("--catalog", is_flag=True, help="List the catalog instead of what is on disk.")
def list_command(catalog: bool) -> None:
    """Models on disk (or, with --catalog, every model qwq-edge knows)."""
    console = Console()
    if catalog:
        table = Table(Column("name", no_wrap=True), Column("downloads", overflow="fold"), "reasoning", "context")
        for entry in load_catalog():
            sources = ", ".join(f"{s.format}:{s.quant} ({decimal(s.size_bytes)})" for s in entry.sources)
            name = entry.name + (" (default)" if entry.default else "")
            table.add_row(name, sources, entry.reasoning_format, str(entry.context_length))
        console.print(table)
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
