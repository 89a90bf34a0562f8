"""Check a GGUF file before handing it to llama.cpp.

llama.cpp can crash on a truncated or corrupt file, so the header is read here
first: magic, version, metadata, tensor table, and whether the file is long
enough for every tensor. ``gguf.GGUFReader`` does the same but builds a Python
object for each part of each of the ~300k tokenizer strings (10 s for a Qwen vocabulary);
this scanner skips string arrays and reads a header in a fraction of a second, or reads
them whole (``arrays=True``, for the GGUF → Hugging Face converter) in about half a second.
Layouts and sizes come from the ``gguf`` package's constants.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gguf import GGML_QUANT_SIZES, GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GGMLQuantizationType, GGUFValueType

from ..errors import ModelFormatError, ModelNotFoundError

_SCALARS: dict[GGUFValueType, str] = {
    GGUFValueType.UINT8: "<B",
    GGUFValueType.INT8: "<b",
    GGUFValueType.UINT16: "<H",
    GGUFValueType.INT16: "<h",
    GGUFValueType.UINT32: "<I",
    GGUFValueType.INT32: "<i",
    GGUFValueType.FLOAT32: "<f",
    GGUFValueType.BOOL: "<?",
    GGUFValueType.UINT64: "<Q",
    GGUFValueType.INT64: "<q",
    GGUFValueType.FLOAT64: "<d",
}


@dataclass(frozen=True)
class GGUFTensor:
    """One tensor of the table: ``dims`` innermost first (GGUF's order), where its bytes are in the file."""

    name: str
    dims: tuple[int, ...]
    kind: GGMLQuantizationType
    offset: int
    nbytes: int


@dataclass(frozen=True)
class GGUFHeader:
    """What the header says. Arrays in ``metadata`` are given by their length only, unless
    read with ``arrays=True`` (then as lists)."""

    path: Path
    version: int
    metadata: dict[str, Any]
    tensor_count: int
    data_end: int
    file_size: int
    tensors: tuple[GGUFTensor, ...] = field(default=(), repr=False)

    @property
    def parameter_count(self) -> int:
        return sum(_elements(list(tensor.dims)) for tensor in self.tensors)

    @property
    def tensor_bytes(self) -> dict[str, int]:
        """Each tensor's size in the file, by name."""
        return {tensor.name: tensor.nbytes for tensor in self.tensors}

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", "unknown"))

    @property
    def name(self) -> str:
        return str(self.metadata.get("general.name", self.path.stem))

    @property
    def context_length(self) -> int:
        return int(self.metadata.get(f"{self.architecture}.context_length", 0))


class _Cursor:
    def __init__(self, data: mmap.mmap, arrays: bool = False) -> None:
        self.data = data
        self.pos = 0
        self.arrays = arrays

    def scalar(self, fmt: str) -> Any:
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        length = self.scalar("<Q")
        raw = self.data[self.pos : self.pos + length]
        if len(raw) != length:
            raise ValueError("string runs past the end of the file")
        self.pos += length
        # Read whole (the converter's tokenizer), a string must be UTF-8: two broken ones would
        # otherwise become the same text.
        return raw.decode("utf-8", errors="strict" if self.arrays else "replace")

    def skip_strings(self, count: int) -> None:
        for _ in range(count):
            (length,) = struct.unpack_from("<Q", self.data, self.pos)
            self.pos += 8 + length

    def scalars(self, fmt: str, count: int) -> list[Any]:
        size = struct.calcsize(fmt)
        values = [value for (value,) in struct.iter_unpack(fmt, self.data[self.pos : self.pos + count * size])]
        if len(values) != count:
            raise ValueError("an array runs past the end of the file")
        self.pos += count * size
        return values

    def value(self, kind: GGUFValueType) -> Any:
        if kind == GGUFValueType.STRING:
            return self.string()
        if kind != GGUFValueType.ARRAY:
            return self.scalar(_SCALARS[kind])
        item_kind = GGUFValueType(self.scalar("<I"))
        count = self.scalar("<Q")
        if self.arrays:
            if item_kind in _SCALARS:
                return self.scalars(_SCALARS[item_kind], count)
            return [self.value(item_kind) for _ in range(count)]
        if item_kind == GGUFValueType.STRING:
            self.skip_strings(count)
        elif item_kind in _SCALARS:
            self.pos += count * struct.calcsize(_SCALARS[item_kind])
        else:
            for _ in range(count):
                self.value(item_kind)
        return count


def _elements(dims: list[int]) -> int:
    elements = 1
    for dim in dims:
        elements *= dim
    return elements


def _tensor_bytes(dims: list[int], kind: int) -> int:
    block_size, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(kind)]
    return _elements(dims) // block_size * type_size


def _parse(data: mmap.mmap, path: Path, file_size: int, arrays: bool) -> GGUFHeader:
    cursor = _Cursor(data, arrays)
    if cursor.scalar("<I") != GGUF_MAGIC:
        raise ModelFormatError(f"{path} is not a GGUF file (bad magic bytes)")
    version = cursor.scalar("<I")
    if version not in (2, 3):
        raise ModelFormatError(f"{path}: unsupported GGUF version {version}")
    tensor_count, kv_count = cursor.scalar("<Q"), cursor.scalar("<Q")
    metadata = {}
    for _ in range(kv_count):
        key = cursor.string()
        metadata[key] = cursor.value(GGUFValueType(cursor.scalar("<I")))
    table = []
    for _ in range(tensor_count):
        name = cursor.string()
        dims = [cursor.scalar("<Q") for _ in range(cursor.scalar("<I"))]
        kind, offset = cursor.scalar("<I"), cursor.scalar("<Q")
        table.append((name, dims, kind, offset))
    alignment = metadata.get("general.alignment", GGUF_DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise ModelFormatError(f"{path}: general.alignment must be a power of two, not {alignment!r}")
    data_start = -(-cursor.pos // alignment) * alignment
    tensors = tuple(
        GGUFTensor(name, tuple(dims), GGMLQuantizationType(kind), data_start + offset, _tensor_bytes(dims, kind))
        for name, dims, kind, offset in table
    )
    data_end = max((tensor.offset + tensor.nbytes for tensor in tensors), default=data_start)
    return GGUFHeader(path, version, metadata, tensor_count, data_end, file_size, tensors)


def read_gguf_header(path: str | Path, arrays: bool = False) -> GGUFHeader:
    """Read and check a GGUF header; raise a one-line error for any bad file. ``arrays``: read
    metadata arrays whole (the tokenizer's strings) rather than their lengths."""
    path = Path(path)
    if not path.exists():
        raise ModelNotFoundError(f"model file not found: {path}")
    if not path.is_file():
        raise ModelFormatError(f"{path} is not a GGUF file")
    file_size = path.stat().st_size
    if file_size < 24:
        raise ModelFormatError(f"{path} is not a GGUF file (only {file_size} bytes)")
    try:
        with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            header = _parse(data, path, file_size, arrays)
    except ModelFormatError:
        raise
    except (ValueError, KeyError, struct.error, UnicodeDecodeError, OverflowError) as error:
        raise ModelFormatError(f"{path} is a corrupt or truncated GGUF file ({error})") from None
    if header.data_end > file_size:
        raise ModelFormatError(
            f"{path} is truncated: its tensors need {header.data_end:,} bytes, the file has {file_size:,}"
        )
    return header
