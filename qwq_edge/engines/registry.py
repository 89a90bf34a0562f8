"""The engine registry: which engine runs a path, and loading it.

The built-in adapters (llama.cpp, MLX) register their specs here at import; an
application or a test adds an engine with ``register(spec)``. Everything that
depends on the engine or the kind of model file asks the registry for a spec and
uses its fields. Importing this module imports no engine library.

``auto`` picks the engine whose kind of file the path is, when that engine runs
well here: llama.cpp for a GGUF file (with every layer offloaded when the build
supports a GPU); MLX for a folder on Apple Silicon with Metal. MLX's CPU backend is
correct but slow, so ``auto`` never picks it; an MLX folder elsewhere needs
``--engine mlx``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..architecture.shape import ModelShape
from ..errors import DistributedError, EngineUnavailableError, ModelFormatError, ModelNotFoundError
from .adapter import EngineOptions, EngineSpec
from .base import Engine
from .llama_cpp.adapter import SPEC as LLAMA_CPP
from .mlx.adapter import SPEC as MLX

_SPECS: dict[str, EngineSpec] = {}


def register(spec: EngineSpec) -> None:
    """Add an engine; its name must be new."""
    if spec.name in _SPECS or spec.name == "auto":
        raise ValueError(f"an engine named {spec.name!r} is already registered")
    _SPECS[spec.name] = spec


def unregister(name: str) -> None:
    """Remove an engine (a test's, or a plugin's)."""
    del _SPECS[name]


def specs() -> tuple[EngineSpec, ...]:
    """The registered engines, in the order they were registered."""
    return tuple(_SPECS.values())


def engine_choices() -> tuple[str, ...]:
    """What ``--engine`` accepts: ``auto`` and every registered engine's name."""
    return ("auto", *sorted(_SPECS))


def spec_named(name: str) -> EngineSpec:
    spec = _SPECS.get(name)
    if spec is None:
        raise EngineUnavailableError(f"unknown engine {name!r}; choose one of {', '.join(engine_choices())}")
    return spec


def spec_for_path(path: Path) -> EngineSpec:
    """The engine whose kind of model ``path`` is."""
    if not path.exists():
        raise ModelNotFoundError(f"model not found: {path}")
    for spec in _SPECS.values():
        if spec.claims(path):
            return spec
    kinds = " nor ".join(f"{spec.describes} ({spec.name})" for spec in _SPECS.values())
    raise ModelFormatError(f"{path} is not {kinds}")


def choose_engine(path: Path, requested: str = "auto") -> tuple[str, str]:
    """The engine to run ``path`` with, and why."""
    wanted = None if requested == "auto" else spec_named(requested)
    spec = spec_for_path(path)
    if wanted is not None:
        if wanted is not spec:
            raise EngineUnavailableError(wanted.mismatch.format(path=path, kind=spec.describes, engine=spec.name))
        return wanted.name, "requested"
    choice = spec.auto()
    if not choice.picked:
        raise EngineUnavailableError(f"{path} is {choice.reason}")
    return spec.name, choice.reason


def preferred_spec(formats: Iterable[str]) -> EngineSpec:
    """Of the engines running one of ``formats``, the one to download a model for on this machine."""
    candidates = [spec for spec in _SPECS.values() if spec.format in formats and spec.auto().picked]
    if not candidates:
        raise EngineUnavailableError(f"no engine for {', '.join(formats)} runs on this machine")
    return max(candidates, key=lambda spec: spec.preference)


def open_engine(
    path: str | Path,
    engine: str = "auto",
    *,
    context_length: int | None = None,
    kv_cache: str = "f16",
    n_threads: int | None = None,
    n_gpu_layers: int | None = None,
    distributed: bool = False,
    rank_timeout: float = 60.0,
    parallel: int = 1,
) -> tuple[Engine, str]:
    """Load ``path`` with the chosen engine; return it and why it was chosen.

    ``n_threads`` and ``n_gpu_layers`` apply to llama.cpp only; ``distributed`` splits
    the model over the ranks ``mlx.launch`` started (engines with a ``shard``).
    """
    name, reason = choose_engine(Path(path), engine)
    spec = _SPECS[name]
    if distributed and spec.shard is None:
        raise DistributedError(f"--distributed runs MLX folders only; {path} runs on {name}")
    options = EngineOptions(context_length, kv_cache, n_threads, n_gpu_layers, distributed, rank_timeout, parallel)
    return spec.open(Path(path), options), reason


def rank_shape(path: str | Path, ranks: int) -> ModelShape:
    """One rank's share of ``path`` split over ``ranks`` (tensor parallelism), for the planner."""
    spec = spec_for_path(Path(path))
    if spec.shard is None:
        raise DistributedError(f"only MLX folders run distributed; {path} is {spec.describes}")
    return spec.shard(Path(path), ranks)


def join_group() -> tuple[int, int]:
    """This process's rank and the group's size, in the group ``mlx.launch`` started (imports MLX)."""
    from .mlx.group import init_group

    group = init_group()
    return group.rank(), group.size()


for _builtin in (LLAMA_CPP, MLX):
    register(_builtin)


def gather_over_group(value: dict[str, Any]) -> tuple[int, list[dict[str, Any]]]:
    """This rank, and every rank's ``value`` (JSON-able) in rank order (imports MLX)."""
    from .mlx.group import Channel, init_group

    group = init_group()
    return group.rank(), Channel(group).gather(value)
