"""A model folder's ``config.json``, read and checked so that a bad one is one clear line.

Valid JSON is not enough: the file must hold an object, and the numbers that size
the model must be there, and be positive whole numbers (a string, a fraction or
zero would otherwise surface later as a crash or a division by zero).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import ModelFormatError, QwqEdgeError

#: The numbers every model-shape reader needs.
REQUIRED_SIZES = ("num_hidden_layers", "num_attention_heads", "hidden_size")
#: Numbers that may be missing (or null), but must be positive whole numbers when given.
OPTIONAL_SIZES = ("num_key_value_heads", "head_dim", "max_position_embeddings", "vocab_size", "intermediate_size")

_JSON_KINDS = {list: "a list", str: "a string", int: "a number", float: "a number", bool: "true or false"}
#: ``config_number``'s default: the key must be there.
REQUIRED = object()


def json_kind(value: object) -> str:
    """How a JSON value reads in a message: ``a list``, ``null``, …"""
    return "null" if value is None else _JSON_KINDS.get(type(value), "an object")


def read_json_object(path: Path, error: type[QwqEdgeError] = ModelFormatError) -> dict[str, Any]:
    """A JSON file that must hold an object."""
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError) as problem:  # UnicodeDecodeError is a ValueError
        reason = problem.strerror if isinstance(problem, OSError) else problem
        raise error(f"cannot read {path}: {reason}") from None
    if not isinstance(data, dict):
        raise error(f"{path} must hold a JSON object, not {json_kind(data)}")
    return data


def config_number(
    config: dict[str, Any],
    key: str,
    source: str,
    *,
    default: Any = REQUIRED,
    kind: type = int,
    error: type[QwqEdgeError] = ModelFormatError,
) -> Any:
    """``config[key]`` as a positive ``kind`` (int or float); ``default`` when missing or null."""
    value = config.get(key)
    if value is None:
        if default is REQUIRED:
            raise error(f"{source}: config.json lacks {key}")
        return default
    whole = isinstance(value, int) and not isinstance(value, bool)
    if not (whole or (kind is float and isinstance(value, float))) or value <= 0:
        wanted = "a positive whole number" if kind is int else "a positive number"
        raise error(f"{source}: config.json's {key} must be {wanted}, not {json.dumps(value)[:40]}")
    return kind(value)


def read_model_config(folder: Path) -> dict[str, Any]:
    """``folder/config.json``: an object whose size numbers are positive whole numbers."""
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ModelFormatError(f"{folder} is not a model folder (no config.json)")
    config = read_json_object(config_path)
    for key in REQUIRED_SIZES:
        config_number(config, key, str(folder))
    for key in OPTIONAL_SIZES:
        config_number(config, key, str(folder), default=None)
    return config
