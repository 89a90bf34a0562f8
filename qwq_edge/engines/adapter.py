"""What an engine adapter tells the rest of qwq-edge about itself: one ``EngineSpec``.

Every question that depends on the engine or on the kind of model file (which
paths it runs, the model's shape for the memory planner, what ``info`` shows,
whether ``auto`` picks it here, how to load it, the raw baseline of ``bench``, the
logits ``verify`` compares) is answered by a spec's fields, so adding an engine
means writing one adapter module and registering its spec; no ``if`` elsewhere.

A spec's callables import the engine's library only when they are called:
reading a spec (and so importing the registry) loads no engine library.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..architecture.shape import ModelShape
from ..sampling import SamplingParams
from .base import Engine


@dataclass(frozen=True)
class EngineOptions:
    """How to load a model; ``n_threads`` and ``n_gpu_layers`` mean something to llama.cpp only."""

    context_length: int | None = None
    kv_cache: str = "f16"
    n_threads: int | None = None
    n_gpu_layers: int | None = None
    #: Split the model tensor-parallel over the ranks ``mlx.launch`` started (engines with ``shard``).
    distributed: bool = False
    #: Seconds a distributed operation may wait for the other ranks before the run stops.
    rank_timeout: float = 60.0
    #: Sequences to hold at once (engines with ``batches``: an ``EnginePool``); others serve one at a time.
    parallel: int = 1


@dataclass(frozen=True)
class ModelFacts:
    """What ``info`` shows of a model's files, read without loading it."""

    format: str
    architecture: str | None
    parameters: int
    quantization: str
    chat_template: str | None
    files: dict[str, int]


@dataclass(frozen=True)
class AutoChoice:
    """Whether ``--engine auto`` runs this engine's models on this machine, and why (or why not).

    ``reason`` completes "PATH is …" (e.g. "a GGUF file; this llama.cpp build runs on the CPU").
    """

    picked: bool
    reason: str


class RawRunner(Protocol):
    """An engine's library used plainly, as its own docs stream: the baseline ``bench`` compares with."""

    #: What the baseline is, in words (e.g. "llama-cpp-python streaming completion").
    label: str

    def stream(self, prompt_tokens: Sequence[int], n: int, params: SamplingParams, seed: int) -> Iterator[Any]:
        """Generate at most ``n`` tokens from the whole prompt, yielding once per token."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class EngineSpec:
    """One engine, as the registry knows it."""

    #: The name ``--engine`` takes and ``EngineInfo.engine`` reports ("llama.cpp").
    name: str
    #: The kind of model file it runs ("gguf"), as ``info`` and the catalog name it.
    format: str
    #: That kind in words, completing "PATH is …" ("a GGUF file").
    describes: str
    #: Whether a path is this engine's kind of model; cheap, reads at most a few bytes.
    claims: Callable[[Path], bool]
    #: The model's shape for the memory planner, read from its files.
    shape: Callable[[Path], ModelShape]
    #: What ``info`` shows of the files.
    facts: Callable[[Path], ModelFacts]
    #: Whether ``auto`` picks this engine for its models on this machine.
    auto: Callable[[], AutoChoice]
    #: Load a model.
    open: Callable[[Path, EngineOptions], Engine]
    #: Why this engine refuses a path of another kind; formatted with ``path``, ``kind``
    #: (that path's kind in words) and ``engine`` (the engine that runs it).
    mismatch: str
    #: When several engines would run a model here, the one ``pull`` downloads for ranks highest.
    preference: int = 0
    #: The top-level modules of the engine's library; ``doctor`` says "not installed" when one is missing.
    libraries: tuple[str, ...] = ()
    #: How to add that library, completing "not installed: …" ("an optional extra: pip install …").
    install_hint: str = ""
    #: Whether ``open`` with ``parallel`` > 1 gives an ``EnginePool`` that batches its sequences.
    batches: bool = False
    #: The one KV-cache type such a pool holds (None: any of ``KV_CACHE_TYPES``); the planner keeps to it.
    batch_kv_cache: str | None = None
    #: The raw baseline of ``bench``, loaded like the given engine (None: no baseline).
    raw: Callable[[Engine], RawRunner] | None = None
    #: ``verify``'s logits: one array (tokens × vocabulary) per token sequence (None: not offered).
    logits: Callable[[Path, Sequence[Sequence[int]]], list[np.ndarray]] | None = None
    #: One rank's shape when the model is split tensor-parallel over N ranks, for the
    #: planner (None: this engine does not run distributed); raises if N does not divide it.
    shard: Callable[[Path, int], ModelShape] | None = None
