"""The conversions as functions: ``convert_to_gguf``, ``convert_to_mlx``, ``convert_to_hf``.

Each one resolves its source, checks the free disk space, writes into
``OUT.partial``, verifies the result against the source, and only then renames it
to ``OUT``; a report with the summary and the verification is written beside it.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from time import perf_counter

from ..engines.gguf_file import read_gguf_header
from ..errors import ConversionError
from ..files import write_text_atomic
from ..resources import peak_rss_bytes
from ..system.machine import usable_cores
from .checkpoint import Checkpoint, source_name
from .output import (
    ConversionSummary,
    Progress,
    atomic_output,
    ensure_disk_space,
    no_progress,
    path_size,
    tracked_conversion,
)
from .source import resolve_source
from .to_gguf import GGUF_QUANTS, write_gguf
from .to_hf import HF_DTYPES, write_hf
from .to_mlx import MLX_RECIPES, write_mlx
from .verify import VerifyReport, judge, verify

MLX_BITS = (2, 3, 4, 5, 6, 8, 16)
MLX_GROUP_SIZES = (32, 64, 128)
#: MLX recipes whose base width is below 4 bits.
_LOW_RECIPES = ("mixed_2_", "mixed_3_")
_SLACK = 64 << 20


def agreement_level(bits: float, quantized: bool = True) -> str:
    """How closely a conversion to ``bits`` bits per weight must agree with its source:
    ``full``, ``quantized`` or ``low`` (below 4 bits per weight), the level ``judge`` applies."""
    if not quantized:
        return "full"
    return "low" if bits < 4 else "quantized"


def _report_path(out: Path) -> Path:
    return out / "verify.json" if out.is_dir() else out.with_name(out.name + ".verify.json")


def _verified(converted: Path, reference: Path, level: str, progress: Progress) -> VerifyReport:
    progress("verifying", 0, 1)
    report = verify(converted, reference)
    progress("verifying", 1, 1)
    problem = judge(report, level)
    if problem:
        raise ConversionError(f"verification failed: {problem}; the output was not kept")
    return report


def _finish(
    out: Path,
    source: Path,
    target: str,
    quantization: str,
    parameters: int,
    start: float,
    report: VerifyReport | None,
) -> ConversionSummary:
    """The summary of a finished conversion, also written as a report beside the output."""
    verification = {**report.to_dict(), "converted": str(out), "reference": str(source)} if report else None
    summary = ConversionSummary(
        output=str(out),
        target=target,
        quantization=quantization,
        output_bytes=path_size(out),
        parameters=parameters,
        seconds=perf_counter() - start,
        peak_rss_bytes=peak_rss_bytes(),
        verification=verification,
    )
    write_text_atomic(_report_path(out), json.dumps(summary.to_dict(), indent=2) + "\n")
    return summary


def _hf_checkpoint(source: Path) -> Checkpoint:
    if source.is_file():
        raise ConversionError(f"{source} is a file; this conversion needs a Hugging Face checkpoint folder")
    return Checkpoint(source)


def convert_to_gguf(
    source: str | Path,
    out: str | Path | None = None,
    *,
    quant: str = "q4_k_m",
    force: bool = False,
    verify: bool = True,
    keep_intermediate: bool = False,
    threads: int | None = None,
    progress: Progress = no_progress,
) -> ConversionSummary:
    """A Hugging Face Qwen2 or Qwen3 checkpoint (folder or hub id) → one GGUF file."""
    if quant not in GGUF_QUANTS:
        raise ConversionError(f"unknown GGUF quantization {quant}; choose one of {', '.join(GGUF_QUANTS)}")
    spec = GGUF_QUANTS[quant]
    checkpoint = _hf_checkpoint(resolve_source(source))
    out = Path(out) if out else Path.cwd() / f"{checkpoint.name}-{quant}.gguf"
    params = checkpoint.parameter_count
    intermediate_bytes = params * 2 if spec.llama_ftype is not None else 0
    ensure_disk_space(out.parent, int(params * spec.bits_estimate / 8 + intermediate_bytes) + _SLACK)
    start = perf_counter()
    with tracked_conversion(out), atomic_output(out, force=force) as partial:
        if spec.llama_ftype is None:
            write_gguf(checkpoint, partial, spec, progress)
        else:
            from .quantize import quantize_gguf  # needs llama-cpp-python

            intermediate = out.with_name(out.name + ".f16.partial")
            try:
                write_gguf(checkpoint, intermediate, spec, progress)
                quantize_gguf(intermediate, partial, spec.llama_ftype, threads or usable_cores(), progress)
            finally:
                _keep_or_remove(intermediate, out.with_name(f"{out.stem}-f16.gguf"), keep_intermediate)
        level = agreement_level(spec.bits_estimate, spec.llama_ftype is not None)
        report = _verified(partial, checkpoint.folder, level, progress) if verify else None
    return _finish(out, checkpoint.folder, "gguf", quant, params, start, report)


def _keep_or_remove(intermediate: Path, kept: Path, keep: bool) -> None:
    if keep and intermediate.exists():
        os.replace(intermediate, kept)
    else:
        intermediate.unlink(missing_ok=True)


def convert_to_mlx(
    source: str | Path,
    out: str | Path | None = None,
    *,
    bits: int = 4,
    group_size: int = 64,
    recipe: str | None = None,
    force: bool = False,
    verify: bool = True,
    progress: Progress = no_progress,
) -> ConversionSummary:
    """A Hugging Face checkpoint (folder or hub id) or a GGUF file → an MLX model folder.

    ``bits=16`` keeps full precision; ``recipe`` (e.g. ``mixed_4_6``) mixes bit widths.
    """
    if bits not in MLX_BITS or group_size not in MLX_GROUP_SIZES:
        raise ConversionError(f"MLX needs bits in {MLX_BITS} and group size in {MLX_GROUP_SIZES}")
    if recipe is not None and recipe not in MLX_RECIPES:
        raise ConversionError(f"unknown MLX recipe {recipe}; choose one of {', '.join(MLX_RECIPES)}")
    source_path = resolve_source(source)
    label = recipe or ("full" if bits == 16 else f"{bits}bit")
    out = Path(out) if out else Path.cwd() / f"{source_name(source_path)}-mlx-{label}"

    def convert(checkpoint: Checkpoint, partial: Path) -> int:
        params = checkpoint.parameter_count
        ensure_disk_space(out.parent, int(params * (bits + 1) / 8) + _SLACK)
        write_mlx(checkpoint, partial, bits=bits, group_size=group_size, recipe=recipe, progress=progress)
        return params

    low_recipe = recipe is not None and recipe.startswith(_LOW_RECIPES)
    level = agreement_level(3 if low_recipe else bits, bits < 16 or recipe is not None)
    return _from_checkpoint(source_path, out, "mlx", label, force, verify, level, convert, progress)


def _from_checkpoint(
    source: Path,
    out: Path,
    target: str,
    label: str,
    force: bool,
    verify: bool,
    level: str,
    convert: Callable[[Checkpoint, Path], int],
    progress: Progress,
) -> ConversionSummary:
    """Run ``convert`` on a checkpoint, dequantizing a GGUF source into a temporary one first."""
    start = perf_counter()
    temporary = out.with_name(f".{out.name}.source.partial")
    checkpoint_folder = source
    with tracked_conversion(out):
        try:
            if source.is_file():
                shutil.rmtree(temporary, ignore_errors=True)
                write_hf(source, temporary, "float16", progress)
                checkpoint_folder = temporary
            with atomic_output(out, force=force) as partial:
                params = convert(Checkpoint(checkpoint_folder), partial)
                report = _verified(partial, checkpoint_folder, level, progress) if verify else None
        finally:
            shutil.rmtree(temporary, ignore_errors=True)
    return _finish(out, source, target, label, params, start, report)


def convert_to_hf(
    source: str | Path,
    out: str | Path | None = None,
    *,
    dtype: str = "float16",
    force: bool = False,
    verify: bool = True,
    progress: Progress = no_progress,
) -> ConversionSummary:
    """A qwen2 or qwen3 GGUF file → a Hugging Face checkpoint folder (dequantized to ``dtype``)."""
    if dtype not in HF_DTYPES:
        raise ConversionError(f"unknown dtype {dtype}; choose one of {', '.join(HF_DTYPES)}")
    gguf_path = resolve_source(source)
    if not gguf_path.is_file():
        raise ConversionError(f"{gguf_path} is not a GGUF file; --to hf converts a GGUF back to a checkpoint")
    header = read_gguf_header(gguf_path)
    out = Path(out) if out else Path.cwd() / f"{source_name(gguf_path)}-hf"
    ensure_disk_space(out.parent, header.file_size * 8 + _SLACK)
    start = perf_counter()
    with tracked_conversion(out), atomic_output(out, force=force) as partial:
        params = write_hf(gguf_path, partial, dtype, progress)
        report = _verified(partial, gguf_path, "full", progress) if verify else None
    return _finish(out, gguf_path, "hf", dtype, params, start, report)
