"""A sequence's MLX KV cache as bytes and back, for the prompt cache (``engines.prompt_cache``).

The bytes are a NumPy ``.npz`` archive (no compression): each layer's keys and values for the
first ``tokens`` positions, stored as their raw 16- or 32-bit words (NumPy has no bfloat16)
with the MLX dtype's name beside them. Call these on the MLX thread (the engine imports this
module once it has found MLX).
"""

from __future__ import annotations

import io
from typing import Any

import mlx.core as mx
import numpy as np
from mlx_lm.models.cache import KVCache

#: Raw words NumPy can hold for each MLX dtype a KV cache uses.
_WORDS = {"bfloat16": np.uint16, "float16": np.uint16, "float32": np.float32}


def keeps_states(layers: list[Any]) -> bool:
    """Whether a cache of these layers can be saved and restored (plain, unquantized KV caches)."""
    return all(type(layer) is KVCache for layer in layers)


def cache_bytes(layers: list[Any], tokens: int) -> bytes:
    """The keys and values of the first ``tokens`` positions of every layer, as bytes."""
    arrays: dict[str, np.ndarray] = {}
    for index, layer in enumerate(layers):
        keys, values = layer.keys[..., :tokens, :], layer.values[..., :tokens, :]
        arrays[f"k{index}"], arrays[f"v{index}"] = _words(keys), _words(values)
    arrays["dtype"] = np.array(str(layers[0].keys.dtype).removeprefix("mlx.core."))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def cache_from_bytes(state: bytes, layer_count: int) -> list[Any]:
    """``layer_count`` KV caches holding what ``cache_bytes`` saved."""
    with np.load(io.BytesIO(state)) as archive:
        dtype = getattr(mx, str(archive["dtype"]))
        layers = []
        for index in range(layer_count):
            layer = KVCache()
            keys, values = (mx.array(archive[f"{kind}{index}"]).view(dtype) for kind in "kv")
            layer.state = (keys, values, keys.shape[2])
            layers.append(layer)
    mx.eval([layer.keys for layer in layers], [layer.values for layer in layers])
    return layers


def _words(array: Any) -> np.ndarray:
    name = str(array.dtype).removeprefix("mlx.core.")
    return np.array(array.view(mx.uint16) if _WORDS[name] is np.uint16 else array)
