"""The model catalog: what qwq-edge knows about each model family, as data.

One TOML file per family in ``models/`` (shipped inside the package as
``qwq_edge/catalog/data``): names, hub repositories per format and quantization
with their file names and sizes, the numbers the memory planner needs, context
length, reasoning format, recommended sampling, effort budgets and license.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

import tomllib

from ..architecture.shape import ModelShape, embedding_split, estimated_output_rows
from ..errors import InvalidRequestError, QwqEdgeError
from ..reasoning.formats import FORMATS
from ..sampling import SamplingParams

SOURCE_FORMATS = ("gguf", "mlx", "hf")
#: What a checkpoint becomes when no pre-converted download exists, and its bits per weight.
CONVERTED_QUANTS = {"gguf": "q4_k_m", "mlx": "4bit"}
CONVERTED_BITS = {"gguf": 4.9, "mlx": 4.5}
_REQUIRED = {
    "name": str,
    "display_name": str,
    "architecture": str,
    "parameters": int,
    "layers": int,
    "kv_heads": int,
    "head_dim": int,
    "context_length": int,
    "license": str,
    "reasoning_format": str,
    "chat_template": str,
    "sampling": dict,
    "effort": dict,
    "sources": list,
    "match": list,
}

_OPTIONAL_SOURCE = {"quant": str, "quality": str, "checked": bool}
#: The embedding tables' sizes (config.json's ``vocab_size``, ``hidden_size``, ``tie_word_embeddings``):
#: the speed model leaves an untied input table out of what decoding reads.
_OPTIONAL_ENTRY = {"vocab_size": int, "hidden_size": int, "tied_embeddings": bool}


class CatalogError(QwqEdgeError):
    """A catalog file is malformed, or a name is not in the catalog."""


@dataclass(frozen=True)
class Source:
    format: str
    quant: str
    repo: str
    files: tuple[str, ...]
    size_bytes: int
    #: Set when no pre-converted download exists: this source is the Hugging Face
    #: checkpoint to download and convert (``size_bytes`` is then the converted size).
    convert: bool = False
    #: What this quantization costs in quality: a published perplexity or benchmark figure, or
    #: a statement that none was found.
    quality: str | None = None
    #: Whether the repository and file names were checked against the hub's pages (``false``:
    #: taken on trust, see the TOML's comment).
    checked: bool = True

    @property
    def patterns(self) -> bool:
        """Whether ``files`` are glob patterns (a whole folder) rather than file names."""
        return any("*" in name for name in self.files)


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    display_name: str
    architecture: str
    parameters: int
    layers: int
    kv_heads: int
    head_dim: int
    context_length: int
    license: str
    reasoning_format: str
    chat_template: str
    sampling: SamplingParams
    effort: dict[str, int]
    sources: tuple[Source, ...]
    #: Words that all appear in the names of this model's files (GGUF ``general.name``).
    match: tuple[str, ...] = ()
    system_prompt: str | None = None
    default: bool = False
    rope_scaling: str | None = None
    family_file: str = field(default="", compare=False)
    #: A catalog model (same tokenizer, much smaller) that drafts for this one (``--draft auto``).
    draft: str | None = None
    #: Sampling when it answers without thinking, where the model card gives other values
    #: (a hybrid model's non-thinking mode); ``None``: ``sampling``.
    sampling_no_think: SamplingParams | None = None
    vocab_size: int = 0
    hidden_size: int = 0
    tied_embeddings: bool = False

    def source(self, format: str, quant: str | None = None) -> Source:
        """The download for ``format`` (and ``quant``, else the first listed).

        Without a pre-converted GGUF or MLX download, the Hugging Face checkpoint is
        chosen, to be converted (Q4_K_M for GGUF, 4-bit for MLX).
        """
        for source in self.sources:
            if source.format == format and (quant is None or source.quant == quant):
                return source
        checkpoint = next((s for s in self.sources if s.format == "hf"), None)
        target_quant = CONVERTED_QUANTS.get(format)
        if checkpoint is not None and target_quant and quant in (None, target_quant):
            converted_size = int(self.parameters * CONVERTED_BITS[format] / 8)
            return Source(format, target_quant, checkpoint.repo, checkpoint.files, converted_size, convert=True)
        offered = ", ".join(f"{s.format}:{s.quant}" for s in self.sources)
        wanted = f"{format}:{quant}" if quant else format
        raise CatalogError(f"{self.name} has no {wanted} download; the catalog offers {offered}")

    def shape(self, source: Source) -> ModelShape:
        """What the memory planner needs, from the catalog alone."""
        split = embedding_split(
            source.size_bytes, self.parameters, self.vocab_size, self.hidden_size, self.tied_embeddings
        )
        matmul = split["matmul_parameters"]
        kv_width, dense = self.kv_heads * self.head_dim, not self.architecture.endswith("_moe")
        rows = estimated_output_rows(self.layers, kv_width, self.hidden_size, matmul, self.vocab_size)
        return ModelShape(
            self.display_name,
            self.layers,
            self.kv_heads,
            self.head_dim,
            source.size_bytes,
            min(self.context_length, 32768),
            **split,
            matmul_types=(("Q8_0", matmul),) if source.quant == "q8_0" and matmul else (),
            output_rows=rows if dense else 0,
        )


def _check(data: dict[str, Any], where: str) -> None:
    for key, kind in _REQUIRED.items():
        if not isinstance(data.get(key), kind):
            raise CatalogError(f"{where}: {key} must be a {kind.__name__}")
    for key, kind in _OPTIONAL_ENTRY.items():
        if key in data and not isinstance(data[key], kind):
            raise CatalogError(f"{where}: {key} must be a {kind.__name__}")
    if data["reasoning_format"] not in FORMATS:
        raise CatalogError(f"{where}: unknown reasoning format {data['reasoning_format']}")
    for source in data["sources"]:
        if source.get("format") not in SOURCE_FORMATS or not isinstance(source.get("files"), list):
            raise CatalogError(f"{where}: each source needs a format in {SOURCE_FORMATS} and a list of files")
        if not isinstance(source.get("repo"), str) or not isinstance(source.get("size_bytes"), int):
            raise CatalogError(f"{where}: each source needs a repo and size_bytes")
        for key, kind in _OPTIONAL_SOURCE.items():
            if key in source and not isinstance(source[key], kind):
                raise CatalogError(f"{where}: a source's {key} must be a {kind.__name__}")


def _source(data: dict[str, Any]) -> Source:
    return Source(
        data["format"],
        str(data.get("quant", "default")),
        data["repo"],
        tuple(data["files"]),
        data["size_bytes"],
        quality=data.get("quality"),
        checked=data.get("checked", True),
    )


def _entry(data: dict[str, Any], family_file: str) -> CatalogEntry:
    where = f"{family_file}: {data.get('name', '?')}"
    _check(data, where)
    sampling = _sampling(data["sampling"], where)
    no_think = data.get("sampling_no_think")
    sources = tuple(_source(s) for s in data["sources"])
    fields = {key: data[key] for key in _REQUIRED if key not in ("sampling", "sources", "match")}
    return CatalogEntry(
        **fields,
        sampling=sampling,
        sources=sources,
        match=tuple(word.lower() for word in data["match"]),
        system_prompt=data.get("system_prompt"),
        default=bool(data.get("default", False)),
        rope_scaling=data.get("rope_scaling"),
        family_file=family_file,
        draft=data.get("draft"),
        sampling_no_think=_sampling(no_think, where, "sampling_no_think") if no_think is not None else None,
        **{key: data[key] for key in _OPTIONAL_ENTRY if key in data},
    )


def _sampling(values: Any, where: str, key: str = "sampling") -> SamplingParams:
    if not isinstance(values, dict):
        raise CatalogError(f"{where}: {key} must be a dict")
    try:
        return SamplingParams(**values)
    except (TypeError, InvalidRequestError) as error:
        raise CatalogError(f"{where}: bad {key} ({error})") from None


def _catalog_files() -> list[Any]:
    """The shipped TOML files, then those in ``QWQ_EDGE_CATALOG`` (a folder of your own families)."""
    shipped = sorted(files("qwq_edge").joinpath("catalog", "data").iterdir(), key=lambda p: p.name)
    extra = os.environ.get("QWQ_EDGE_CATALOG")
    return shipped + (sorted(Path(extra).glob("*.toml")) if extra else [])


@cache
def load_catalog() -> tuple[CatalogEntry, ...]:
    """Every catalog entry, from the TOML files shipped with the package (and your own)."""
    entries = []
    for path in _catalog_files():
        if path.name.endswith(".toml"):
            try:
                data = tomllib.loads(path.read_text(encoding="utf-8"))
            except tomllib.TOMLDecodeError as error:
                raise CatalogError(f"{path.name}: {error}") from None
            entries += [_entry(item, path.name) for item in data.get("models", [])]
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        raise CatalogError("the catalog names a model twice")
    if sum(e.default for e in entries) != 1:
        raise CatalogError("the catalog needs exactly one default model")
    return tuple(entries)


def find(name: str) -> CatalogEntry | None:
    return next((e for e in load_catalog() if e.name == name.lower()), None)


def default_entry() -> CatalogEntry:
    return next(e for e in load_catalog() if e.default)


def split_name(spec: str) -> tuple[str, str | None]:
    """``NAME[:QUANT]`` into its parts."""
    name, _, quant = spec.partition(":")
    return name, quant or None
