"""Engine adapters and the choice between them."""

from __future__ import annotations

import importlib
from pathlib import Path

from ..errors import EngineUnavailableError, ModelNotFoundError
from .base import Engine

#: Adapter classes by engine name, imported only when used.
ADAPTERS = {"llama.cpp": ("qwq_edge.engines.llama_cpp", "LlamaCppEngine")}
ENGINE_CHOICES = ("auto", *ADAPTERS)


def choose_engine(path: Path, requested: str = "auto") -> tuple[str, str]:
    """The engine to run ``path`` with, and why."""
    if requested not in ENGINE_CHOICES:
        raise EngineUnavailableError(f"unknown engine {requested!r}; choose one of {', '.join(ENGINE_CHOICES)}")
    if not path.exists():
        raise ModelNotFoundError(f"model not found: {path}")
    if path.is_dir():
        raise EngineUnavailableError(
            f"{path} is a folder; this version runs GGUF files only (MLX folders need the MLX engine)"
        )
    if requested == "llama.cpp":
        return "llama.cpp", "requested"
    return "llama.cpp", "the model is a GGUF file"


def open_engine(path: str | Path, engine: str = "auto", **options: object) -> tuple[Engine, str]:
    """Load ``path`` with the chosen engine (``options`` go to the adapter); return it and why."""
    name, reason = choose_engine(Path(path), engine)
    module, cls = ADAPTERS[name]
    return getattr(importlib.import_module(module), cls)(path, **options), reason
