"""Engine adapters and the choice between them.

``auto`` picks MLX for an MLX model folder on Apple Silicon with Metal, and
llama.cpp for a GGUF file (with every layer offloaded when the build supports a
GPU). MLX's CPU backend is correct but slow, so ``auto`` never picks it; an MLX
folder elsewhere needs ``--engine mlx``.
"""

from __future__ import annotations

import platform
import sys
from pathlib import Path

from ..errors import EngineUnavailableError, ModelNotFoundError
from .base import Engine

ENGINE_CHOICES = ("auto", "llama.cpp", "mlx")


def apple_silicon() -> bool:
    return sys.platform == "darwin" and platform.machine() == "arm64"


def metal_available() -> bool:
    """Whether MLX imports and has a Metal GPU."""
    try:
        import mlx.core as mx
    except ImportError:
        return False
    return bool(mx.metal.is_available())


def model_kind(path: Path) -> str:
    """``gguf`` for a file, ``mlx`` for a model folder."""
    if not path.exists():
        raise ModelNotFoundError(f"model not found: {path}")
    return "mlx" if path.is_dir() else "gguf"


def choose_engine(path: Path, requested: str = "auto") -> tuple[str, str]:
    """The engine to run ``path`` with, and why."""
    if requested not in ENGINE_CHOICES:
        raise EngineUnavailableError(f"unknown engine {requested!r}; choose one of {', '.join(ENGINE_CHOICES)}")
    kind = model_kind(path)
    if requested == "llama.cpp" and kind != "gguf":
        raise EngineUnavailableError(f"llama.cpp runs GGUF files; {path} is a folder (use --engine mlx)")
    if requested == "mlx" and kind != "mlx":
        raise EngineUnavailableError(
            f"MLX runs model folders; convert the GGUF first: qwq-edge convert {path} --to mlx"
        )
    if requested != "auto":
        return requested, "requested"
    if kind == "gguf":
        from .llama_cpp import gpu_offload_supported

        if gpu_offload_supported():
            return "llama.cpp", "a GGUF file; this llama.cpp build offloads every layer to the GPU"
        return "llama.cpp", "a GGUF file; this llama.cpp build has no GPU offload, so it runs on the CPU"
    if apple_silicon() and metal_available():
        return "mlx", "an MLX folder on Apple Silicon with Metal"
    raise EngineUnavailableError(
        f"{path} is an MLX folder, and MLX has no GPU on this machine (its CPU backend is slow): "
        "pass --engine mlx to run it anyway, or run a GGUF of the model"
    )


def open_engine(
    path: str | Path,
    engine: str = "auto",
    *,
    context_length: int | None = None,
    kv_cache: str = "f16",
    n_threads: int | None = None,
    n_gpu_layers: int | None = None,
) -> tuple[Engine, str]:
    """Load ``path`` with the chosen engine; return it and why it was chosen.

    ``n_threads`` and ``n_gpu_layers`` apply to llama.cpp only.
    """
    name, reason = choose_engine(Path(path), engine)
    if name == "llama.cpp":
        from .llama_cpp import LlamaCppEngine

        loaded: Engine = LlamaCppEngine(
            path, context_length=context_length, n_threads=n_threads, n_gpu_layers=n_gpu_layers, kv_cache=kv_cache
        )
    else:
        from .mlx_engine import MlxEngine

        loaded = MlxEngine(path, context_length=context_length, kv_cache=kv_cache)
    return loaded, reason
