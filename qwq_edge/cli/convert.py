"""``qwq-edge convert`` and ``qwq-edge verify``."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.filesize import decimal
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.text import Text

from ..convert import ConversionSummary, convert_to_gguf, convert_to_hf, convert_to_mlx, verify
from ..convert.api import MLX_BITS, MLX_GROUP_SIZES
from ..convert.output import STAGE_UNITS
from ..convert.to_gguf import GGUF_QUANTS
from ..convert.to_hf import HF_DTYPES
from ..convert.to_mlx import MLX_RECIPES
from ..files import write_text_atomic


class _AmountColumn(ProgressColumn):
    """``done/total`` in bytes, or in the stage's own unit (tensors, steps)."""

    def render(self, task: Task) -> Text:
        done, total = int(task.completed), int(task.total or 0)
        unit = STAGE_UNITS.get(task.description.strip())
        text = f"{done}/{total} {unit}" if unit else f"{decimal(done)}/{decimal(total)}"
        return Text(text, style="progress.download")


class ConversionProgress:
    """One rich progress bar per stage of a conversion (on stderr)."""

    def __init__(self, console: Console) -> None:
        self._bars = Progress(
            TextColumn("{task.description:<16}"), BarColumn(), _AmountColumn(), TimeRemainingColumn(), console=console
        )
        self._tasks: dict[str, int] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self._tasks:
            self._bars.start()  # only once there is something to show
        if stage not in self._tasks:
            self._tasks[stage] = self._bars.add_task(stage, total=total)
        self._bars.update(self._tasks[stage], completed=done, total=total)

    def __enter__(self) -> ConversionProgress:
        return self

    def __exit__(self, *_: object) -> None:
        if self._tasks:
            self._bars.stop()


def _print_summary(console: Console, summary: ConversionSummary) -> None:
    lines = [
        f"wrote {summary.output} ({summary.target}, {summary.quantization})",
        f"size {decimal(summary.output_bytes)}, {summary.bits_per_weight:.2f} bits per weight, "
        f"{summary.parameters / 1e6:,.1f}M parameters",
        f"time {summary.seconds:.1f} s, peak memory {decimal(summary.peak_rss_bytes)}",
    ]
    if summary.verification:
        v = summary.verification
        lines.append(
            f"verified against {v['reference']}: top-1 agreement {v['top1_agreement']:.1%}, "
            f"mean KL {v['mean_kl']:.5f} over {v['positions']} positions"
        )
    else:
        lines.append("not verified (--no-verify)")
    for line in lines:
        console.print(line, highlight=False, markup=False, soft_wrap=True)


@click.command()
@click.argument("source")
@click.option("--to", "target", type=click.Choice(["gguf", "mlx", "hf"]), required=True, help="Output format.")
@click.option("-o", "--out", type=click.Path(path_type=Path), help="Output file (gguf) or folder (mlx, hf).")
@click.option("--quant", type=click.Choice(list(GGUF_QUANTS)), default="q4_k_m", show_default=True, help="GGUF type.")
@click.option(
    "--bits", type=click.Choice([str(b) for b in MLX_BITS]), default="4", show_default=True, help="MLX bits (16: none)."
)
@click.option("--group-size", type=click.Choice([str(g) for g in MLX_GROUP_SIZES]), default="64", show_default=True)
@click.option("--recipe", type=click.Choice(MLX_RECIPES), help="MLX mixed-precision recipe (mixed_4_6 mirrors Q4_K_M).")
@click.option("--dtype", type=click.Choice(list(HF_DTYPES)), default="float16", show_default=True, help="For --to hf.")
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
@click.option("--no-verify", is_flag=True, help="Skip comparing the output with the source.")
@click.option("--keep-intermediate", is_flag=True, help="Keep the F16 GGUF written before quantizing.")
@click.option("--threads", type=click.IntRange(min=1), help="Quantization threads (default: all cores).")
def convert(
    source: str,
    target: str,
    out: Path | None,
    quant: str,
    bits: str,
    group_size: str,
    recipe: str | None,
    dtype: str,
    force: bool,
    no_verify: bool,
    keep_intermediate: bool,
    threads: int | None,
) -> None:
    """Convert SOURCE (a checkpoint folder, a hub repo id, or a .gguf file) to GGUF, MLX or back to HF."""
    console = Console(stderr=True)
    with ConversionProgress(console) as progress:
        if target == "gguf":
            summary = convert_to_gguf(
                source, out, quant=quant, force=force, verify=not no_verify,
                keep_intermediate=keep_intermediate, threads=threads, progress=progress,
            )  # fmt: skip
        elif target == "mlx":
            summary = convert_to_mlx(
                source, out, bits=int(bits), group_size=int(group_size), recipe=recipe,
                force=force, verify=not no_verify, progress=progress,
            )  # fmt: skip
        else:
            summary = convert_to_hf(source, out, dtype=dtype, force=force, verify=not no_verify, progress=progress)
    _print_summary(console, summary)


@click.command(name="verify")
@click.argument("converted", type=click.Path(exists=True, path_type=Path))
@click.option("--reference", required=True, type=click.Path(exists=True, path_type=Path), help="The source model.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def verify_command(converted: Path, reference: Path, as_json: bool) -> None:
    """Compare a converted model's next-token distributions with its source's."""
    report = verify(converted, reference)
    target = converted / "verify.json" if converted.is_dir() else converted.with_name(converted.name + ".verify.json")
    write_text_atomic(target, json.dumps(report.to_dict(), indent=2) + "\n")
    if as_json:
        click.echo(json.dumps(report.to_dict()))
    else:
        click.echo(
            f"top-1 agreement {report.top1_agreement:.1%}, mean KL {report.mean_kl:.5f}, "
            f"max KL {report.max_kl:.5f} over {report.positions} positions (report: {target})"
        )
