"""Read and write safetensors files tensor by tensor, memory-mapped.

numpy has no bfloat16, and the checkpoints QwQ ships are bfloat16, so this
module reads the format itself: the JSON header, then a memory-mapped view per
tensor, converted to float32/float16 only when asked for. The header is checked
against the file size, so a truncated shard is caught before any tensor is read.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..architecture.safetensors_header import read_header
from ..errors import CheckpointError

#: safetensors dtype → (numpy storage dtype, bytes per element)
STORAGE = {"F32": (np.float32, 4), "F16": (np.float16, 2), "BF16": (np.uint16, 2)}


@dataclass(frozen=True)
class TensorEntry:
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int


#: Rows are converted in blocks of about this many bytes, so a dtype change never
#: holds a float32 copy of a whole tensor beside its result.
CHUNK_BYTES = 32 << 20


def bf16_to_float32(raw: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) to float32: the same bits, shifted up (one allocation)."""
    bits = raw.astype(np.uint32)
    bits <<= 16
    return bits.view(np.float32)


def float32_to_bf16(values: np.ndarray) -> np.ndarray:
    """float32 to bfloat16 bit patterns, rounding to nearest even."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounded = bits + 0x7FFF + ((bits >> 16) & 1)
    return (rounded >> 16).astype(np.uint16)


class SafetensorsFile:
    """One ``.safetensors`` file, its header checked, its tensors memory-mapped on demand."""

    def __init__(self, path: Path) -> None:
        self.path = path
        size = path.stat().st_size
        header, self.data_start = read_header(path)
        self.metadata = header.pop("__metadata__", None) or {}
        self.entries: dict[str, TensorEntry] = {}
        for name, info in header.items():
            dtype = info.get("dtype")
            if dtype not in STORAGE:
                raise CheckpointError(f"{path.name}: tensor {name} has dtype {dtype}; supported: {', '.join(STORAGE)}")
            start, end = info["data_offsets"]
            self.entries[name] = TensorEntry(dtype, tuple(info["shape"]), start, end)
        needed = self.data_start + max((e.end for e in self.entries.values()), default=0)
        if needed > size:
            raise CheckpointError(f"{path} is truncated: its tensors need {needed:,} bytes, the file has {size:,}")

    def raw(self, name: str) -> np.ndarray:
        """The stored values (bfloat16 as uint16 bit patterns), memory-mapped, read-only."""
        entry = self.entries[name]
        dtype, _ = STORAGE[entry.dtype]
        count = int(np.prod(entry.shape, dtype=np.int64))
        data = np.memmap(self.path, dtype=dtype, mode="r", offset=self.data_start + entry.start, shape=(count,))
        return data.reshape(entry.shape)

    def float32(self, name: str) -> np.ndarray:
        return self.converted(name, np.float32)

    def converted(self, name: str, dtype: type[np.floating]) -> np.ndarray:
        """The tensor as ``dtype``, converted block by block of rows into one new array."""
        raw = self.raw(name)
        bf16 = self.entries[name].dtype == "BF16"
        if raw.ndim < 2:
            return (bf16_to_float32(raw) if bf16 else raw).astype(dtype)
        out = np.empty(raw.shape, dtype=dtype)
        rows = max(1, CHUNK_BYTES // (raw[0].size * 4))
        for start in range(0, raw.shape[0], rows):
            block = raw[start : start + rows]
            out[start : start + rows] = bf16_to_float32(block) if bf16 else block
        return out


@dataclass(frozen=True)
class PlannedTensor:
    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * STORAGE[self.dtype][1]


class SafetensorsWriter:
    """Write a safetensors file whose tensors are known in advance, one tensor at a time."""

    def __init__(self, path: Path, plan: Iterable[PlannedTensor], metadata: dict[str, str] | None = None) -> None:
        self.plan = list(plan)
        header: dict[str, object] = {"__metadata__": metadata or {"format": "pt"}}
        offset = 0
        for tensor in self.plan:
            header[tensor.name] = {
                "dtype": tensor.dtype,
                "shape": list(tensor.shape),
                "data_offsets": [offset, offset + tensor.nbytes],
            }
            offset += tensor.nbytes
        encoded = json.dumps(header, separators=(",", ":")).encode()
        encoded += b" " * (-len(encoded) % 8)
        self._handle = path.open("wb")
        self._handle.write(struct.pack("<Q", len(encoded)) + encoded)
        self._next = 0

    def write(self, name: str, values: np.ndarray) -> None:
        """Write the next planned tensor (float arrays are converted to its dtype)."""
        tensor = self.plan[self._next]
        if tensor.name != name:
            raise ValueError(f"expected tensor {tensor.name}, got {name}")
        if tensor.dtype == "BF16":
            data = float32_to_bf16(values) if values.dtype != np.uint16 else values
        else:
            data = np.asarray(values, dtype=STORAGE[tensor.dtype][0])
        if data.shape != tensor.shape:
            raise ValueError(f"{name}: shape {data.shape} is not the planned {tensor.shape}")
        np.ascontiguousarray(data).tofile(self._handle)
        self._next += 1

    def close(self) -> None:
        if self._next != len(self.plan):
            self._handle.close()
            raise ValueError(f"only {self._next} of {len(self.plan)} tensors were written")
        self._handle.close()
