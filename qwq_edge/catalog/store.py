"""Models on disk: ``pull`` from the catalog, ``list``, ``rm``, and what ``--model`` names.

Downloads go through ``hub`` into huggingface-hub's cache (one copy on disk; a rerun
keeps the files that finished; checksums verified by huggingface-hub); qwq-edge keeps
a small manifest per pulled model under ``QWQ_EDGE_HOME`` (default: the user's data
folder) saying which files make it up. Offline, a model already in the cache is used from there; one that is
not gives one line naming it and how to get it.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from ..engines.registry import preferred_spec
from ..errors import ModelNotFoundError, QwqEdgeError
from ..files import write_text_atomic
from ..system.hub import download, looks_like_repo_id
from ..system.machine import models_home
from .entries import CONVERTED_QUANTS, SOURCE_FORMATS, CatalogEntry, CatalogError, Source, find, split_name
from .planner import MemoryPlan, memory_budget, plan_memory

#: What a hub repo id given as ``--model`` downloads: a Q4_K_M GGUF if the repo has one, else the folder.
REPO_PATTERNS = ["*.json", "*.safetensors", "merges.txt", "vocab.json", "*[Qq]4_[Kk]_[Mm].gguf"]


class ModelNotPulledError(QwqEdgeError):
    """A catalog model that is not on disk."""


@dataclass(frozen=True)
class Pulled:
    name: str
    format: str
    quant: str
    repo: str
    path: str
    size_bytes: int


def _manifest(name: str, quant: str) -> Path:
    return models_home() / "models" / f"{name}--{quant}.json"


def preferred_format() -> str:
    """The format of the engine that runs best here: MLX 4-bit on Apple Silicon with Metal, GGUF elsewhere."""
    return preferred_spec(SOURCE_FORMATS).format


def choose_source(spec: str, format: str | None = None) -> tuple[CatalogEntry, Source]:
    name, quant = split_name(spec)
    entry = find(name)
    if entry is None:
        raise CatalogError(f"{name} is not in the catalog; `qwq-edge list --catalog` shows what is")
    if quant is not None and format is None:
        converted = {q: f for f, q in CONVERTED_QUANTS.items()}
        format = next((s.format for s in entry.sources if s.quant == quant), converted.get(quant))
        if format is None:
            raise CatalogError(f"{name} has no {quant} download; offered: {', '.join(s.quant for s in entry.sources)}")
    return entry, entry.source(format or preferred_format(), quant)


def check_pull(entry: CatalogEntry, source: Source) -> MemoryPlan:
    """Refuse a download that could not run here; return the plan it would run with."""
    return plan_memory(entry.shape(source), memory_budget())


def _convert(entry: CatalogEntry, source: Source, checkpoint: Path) -> Path:
    """Convert a downloaded checkpoint into the format this machine runs (verified, atomic)."""
    from ..convert import convert_to_gguf, convert_to_mlx

    out = models_home() / "converted" / f"{entry.name}-{source.quant}"
    if source.format == "gguf":
        out = out.with_suffix(".gguf")
        convert_to_gguf(checkpoint, out, quant=source.quant, force=True)
    else:
        convert_to_mlx(checkpoint, out, bits=4, group_size=64, force=True)
    return out


def pull(spec: str, format: str | None = None) -> Pulled:
    """Download a catalog model (only the files of one format and quantization) and record it.

    Without a pre-converted download, the Hugging Face checkpoint is downloaded and converted.
    """
    entry, source = choose_source(spec, format)
    folder = download(source.repo, list(source.files))
    path = folder if source.patterns else folder / source.files[0]
    if not path.exists():
        raise ModelNotFoundError(f"{source.repo} has no {source.files[0]}")
    if source.convert:
        path = _convert(entry, source, folder)
    pulled = Pulled(entry.name, source.format, source.quant, source.repo, str(path), source.size_bytes)
    write_text_atomic(_manifest(entry.name, source.quant), json.dumps(asdict(pulled), indent=2) + "\n")
    return pulled


def installed() -> list[Pulled]:
    """Every pulled model whose files are still there."""
    folder = models_home() / "models"
    pulled = []
    for manifest in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            item = Pulled(**json.loads(manifest.read_text()))
        except (ValueError, TypeError):
            continue
        if Path(item.path).exists():
            pulled.append(item)
    return pulled


def _pulled(spec: str) -> list[Pulled]:
    name, quant = split_name(spec)
    return [p for p in installed() if p.name == name and (quant is None or p.quant == quant)]


def _hub_cache() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` (links and ``..`` resolved) is strictly inside ``folder``."""
    resolved, root = path.resolve(), folder.resolve()
    return resolved != root and resolved.is_relative_to(root)


def _remove_files(item: Pulled, manifest: Path) -> None:
    """Remove a pulled model's files: converted outputs outright, hub downloads from the cache.
    Only inside those two folders: a record pointing elsewhere is refused, and nothing is deleted."""
    path = Path(item.path)
    converted = models_home() / "converted"
    if _inside(path, converted) and not path.is_symlink():
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        path.with_name(path.name + ".verify.json").unlink(missing_ok=True)
    elif _inside(path, _hub_cache()):
        _remove_cached(path)
    else:
        raise QwqEdgeError(
            f"the record {manifest} points to {path}, outside qwq-edge's folders ({converted} and the "
            f"Hugging Face cache {_hub_cache()}); nothing was deleted: check it, then delete the record"
        )


def _remove_cached(path: Path) -> None:
    """Remove files from huggingface-hub's cache: each snapshot link, and the blob it points to
    when that blob is in the cache (nothing outside the cache is touched)."""
    cache = _hub_cache()
    files = [p for p in path.rglob("*") if p.is_file() or p.is_symlink()] if path.is_dir() else [path]
    for file in files:
        if not _inside(file.parent, cache):
            continue
        target = Path(os.path.normpath(file.parent / os.readlink(file))) if file.is_symlink() else None
        file.unlink(missing_ok=True)
        if target is not None and target.parent.name == "blobs" and _inside(target, cache):
            target.unlink(missing_ok=True)


def remove(spec: str) -> list[Pulled]:
    """Delete a pulled model's files and its record."""
    pulled = _pulled(spec)
    if not pulled:
        raise ModelNotFoundError(f"{spec} is not pulled; `qwq-edge list` shows what is")
    for item in pulled:
        manifest = _manifest(item.name, item.quant)
        _remove_files(item, manifest)
        manifest.unlink(missing_ok=True)
    return pulled


def resolve_model(spec: str) -> Path:
    """What ``--model`` names: a local GGUF or folder, a pulled catalog model, or a hub repo id."""
    path = Path(spec).expanduser()
    if path.exists():
        return path
    name, _ = split_name(spec)
    if find(name) is not None:
        pulled = _pulled(spec)
        if not pulled:
            raise ModelNotPulledError(f"{spec} is not downloaded yet: run `qwq-edge pull {spec}`")
        return Path(pulled[0].path)
    if looks_like_repo_id(spec):
        folder = download(spec, REPO_PATTERNS)
        ggufs = sorted(folder.glob("*.gguf"))
        return ggufs[0] if ggufs else folder
    raise ModelNotFoundError(f"model not found: {spec} (not a file, a folder, a catalog name or a hub repo id)")
