"""The header of a safetensors file: its tensors' names, dtypes, shapes and offsets.

Shared by the converters (which then memory-map the tensors) and by the checks
that look at a model folder without loading it (is it quantized, who saved it).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from ..errors import CheckpointError


def read_header(path: Path) -> tuple[dict, int]:
    """The JSON header of a safetensors file and where its data starts."""
    size = path.stat().st_size
    try:
        with path.open("rb") as handle:
            (header_size,) = struct.unpack("<Q", handle.read(8))
            if header_size > size - 8:
                raise ValueError("header runs past the end of the file")
            return json.loads(handle.read(header_size)), 8 + header_size
    except (struct.error, ValueError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path} is not a valid safetensors file ({error})") from None


def saved_format(path: Path) -> str | None:
    """The ``format`` the writer recorded in the header's metadata (``pt``, ``mlx``, …), if any."""
    return (read_header(path)[0].get("__metadata__") or {}).get("format")
