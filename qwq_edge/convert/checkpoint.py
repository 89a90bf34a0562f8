"""A Hugging Face checkpoint folder: config, tokenizer files and safetensors shards.

Only the headers are read up front; tensors are memory-mapped one at a time when a
converter asks for them, so nothing here grows with the model's size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..architecture.config import read_json_object
from ..architecture.qwen import QwenConfig, tensor_names
from ..errors import CheckpointError
from .safetensors_io import SafetensorsFile

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "generation_config.json",
)


def source_name(path: Path) -> str:
    """A model's name from its location: the repo's name for a huggingface-hub cache snapshot
    (whose folder is named by a commit hash), else the file or folder name."""
    if path.parent.name == "snapshots" and path.parent.parent.name.startswith("models--"):
        return path.parent.parent.name.split("--")[-1]
    return path.stem if path.is_file() else path.name


def _read_json(path: Path) -> dict[str, Any]:
    return read_json_object(path, CheckpointError)


class Checkpoint:
    """A local Hugging Face checkpoint folder of a supported architecture."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise CheckpointError(f"{self.folder} is not a checkpoint folder")
        config_path = self.folder / "config.json"
        if not config_path.is_file():
            raise CheckpointError(f"{self.folder} has no config.json")
        self.config = QwenConfig.from_dict(_read_json(config_path), str(self.folder))
        if not (self.folder / "tokenizer.json").is_file():
            raise CheckpointError(f"{self.folder} has no tokenizer.json (the tokenizer is needed for the conversion)")
        self.tokenizer = _read_json(self.folder / "tokenizer.json")
        config_file = self.folder / "tokenizer_config.json"
        self.tokenizer_config = _read_json(config_file) if config_file.is_file() else {}
        self._files = self._open_shards()
        self._check_tensors()

    def _open_shards(self) -> dict[str, SafetensorsFile]:
        index = self.folder / "model.safetensors.index.json"
        if index.is_file():
            shard_names = sorted(set(_read_json(index).get("weight_map", {}).values()))
        else:
            shard_names = sorted(p.name for p in self.folder.glob("*.safetensors"))
        if not shard_names:
            raise CheckpointError(f"{self.folder} has no .safetensors weights")
        files: dict[str, SafetensorsFile] = {}
        for shard_name in shard_names:
            path = self.folder / shard_name
            if not path.is_file():
                raise CheckpointError(f"{self.folder} is missing the shard {shard_name}")
            shard = SafetensorsFile(path)
            files.update(dict.fromkeys(shard.entries, shard))
        return files

    def _check_tensors(self) -> None:
        expected = tensor_names(self.config)
        missing = [name for name in expected if name not in self._files]
        if missing:
            raise CheckpointError(f"{self.folder}: {len(missing)} tensors are missing, e.g. {missing[0]}")

    @property
    def name(self) -> str:
        """The model's name: ``_name_or_path`` from its config, else where it lives."""
        configured = self.config.raw.get("_name_or_path")
        return Path(configured).name if configured else source_name(self.folder)

    @property
    def names(self) -> list[str]:
        return tensor_names(self.config)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._files[name].entries[name].shape

    def dtype(self, name: str) -> str:
        return self._files[name].entries[name].dtype

    def float32(self, name: str) -> np.ndarray:
        return self._files[name].float32(name)

    def converted(self, name: str, dtype: type[np.floating]) -> np.ndarray:
        """The tensor as float16 or float32, without a whole-tensor float32 intermediate."""
        return self._files[name].converted(name, dtype)

    def raw(self, name: str) -> np.ndarray:
        return self._files[name].raw(name)

    def nbytes(self, name: str) -> int:
        entry = self._files[name].entries[name]
        return entry.end - entry.start

    @property
    def parameter_count(self) -> int:
        return sum(int(np.prod(self.shape(name))) for name in self.names)

    @property
    def largest_tensor_bytes(self) -> int:
        return max(self.nbytes(name) for name in self.names)

    def token_id(self, key: str) -> int | None:
        """The id of a special token named in tokenizer_config.json (``eos_token``, …)."""
        value = self.tokenizer_config.get(key)
        if isinstance(value, dict):
            value = value.get("content")
        if not value:
            return None
        for added in self.tokenizer.get("added_tokens", []):
            if added["content"] == value:
                return int(added["id"])
        return self.tokenizer.get("model", {}).get("vocab", {}).get(value)
