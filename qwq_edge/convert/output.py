"""What every conversion shares: atomic outputs, the disk check, progress and the summary."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import ConversionError, QwqEdgeWarning
from ..system.machine import models_home

#: ``progress(stage, done, total)``: called as work advances. Stages count bytes,
#: except those named here.
Progress = Callable[[str, int, int], None]
STAGE_UNITS = {"quantizing": "tensors", "verifying": "steps"}


def no_progress(stage: str, done: int, total: int) -> None:
    """The default progress callback: the API prints nothing."""


def path_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def ensure_disk_space(directory: Path, needed: int) -> None:
    """Refuse to start when the output (and any intermediate) cannot fit."""
    directory.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(directory).free
    if free < needed:
        raise ConversionError(
            f"not enough disk space in {directory}: the conversion needs about {needed / 1e9:.2f} GB, "
            f"{free / 1e9:.2f} GB are free"
        )


@contextmanager
def atomic_output(out: Path, *, force: bool) -> Iterator[Path]:
    """Yield ``OUT.partial`` to write into; it becomes ``OUT`` only if the block succeeds.

    A leftover ``OUT.partial`` from an interrupted run is removed first, so a rerun
    starts cleanly; a killed conversion never leaves anything named ``OUT``.
    """
    if out.exists() and not force:
        raise ConversionError(f"{out} already exists; pass --force (force=True) to replace it")
    partial = out.with_name(out.name + ".partial")
    _remove(partial)
    try:
        yield partial
    except BaseException:
        _remove(partial)
        raise
    _remove(out)
    os.replace(partial, out)


def scratch_paths(out: Path) -> list[Path]:
    """Every file or folder a conversion to ``out`` writes before it is done."""
    return [
        out.with_name(out.name + ".partial"),
        out.with_name(out.name + ".f16.partial"),
        out.with_name(f".{out.name}.source.partial"),
    ]


def _records() -> Path:
    return models_home() / "conversions-in-progress"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def sweep_leftovers() -> list[tuple[Path, int]]:
    """Remove what conversions killed before they could clean up left behind (each running
    conversion keeps a record of its scratch paths); return what was removed and its size."""
    removed = []
    for record in sorted(_records().glob("*.json")) if _records().is_dir() else []:
        try:
            data = json.loads(record.read_text(encoding="utf-8"))
            pid, paths = int(data["pid"]), [Path(p) for p in data["paths"]]
        except (OSError, ValueError, KeyError, TypeError):
            record.unlink(missing_ok=True)
            continue
        if _alive(pid):
            continue
        for path in paths:
            if path.exists() and path.name.endswith(".partial"):
                removed.append((path, path_size(path)))
                _remove(path)
        record.unlink(missing_ok=True)
    return removed


@contextmanager
def tracked_conversion(out: Path) -> Iterator[None]:
    """Clean up after earlier killed conversions (saying so), then record this one's scratch
    paths until it ends, so that a kill now is cleaned up at the next start."""
    for path, size in sweep_leftovers():
        message = f"removed {path} ({size / 1e9:.2f} GB), left by a conversion that was killed"
        warnings.warn(message, QwqEdgeWarning, stacklevel=3)
    record = _records() / f"{os.getpid()}-{abs(hash(str(out.resolve())))}.json"
    data = {"pid": os.getpid(), "output": str(out.resolve()), "paths": [str(p.resolve()) for p in scratch_paths(out)]}
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(data), encoding="utf-8")
    except OSError:
        pass  # the record only helps a later cleanup; the conversion does not need it
    try:
        yield
    finally:
        record.unlink(missing_ok=True)


@dataclass
class ConversionSummary:
    """What a conversion produced."""

    output: str
    target: str
    quantization: str
    output_bytes: int
    parameters: int
    seconds: float
    peak_rss_bytes: int
    verification: dict[str, Any] | None = None

    @property
    def bits_per_weight(self) -> float:
        return 8 * self.output_bytes / self.parameters if self.parameters else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "bits_per_weight": round(self.bits_per_weight, 3)}
