"""The tensors a converter writes: the checkpoint's own, with each MoE layer's experts stacked.

A Hugging Face Qwen3 MoE checkpoint holds one 2-D tensor per expert and projection
(``model.layers.N.mlp.experts.E.gate_proj.weight``); llama.cpp and mlx-lm keep the experts
of one projection in one 3-D tensor (expert × out × in). Every converter walks this plan,
so the stacking is decided once; the stacked tensor is named
``model.layers.N.mlp.experts.gate_proj.weight`` (no expert number).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .checkpoint import Checkpoint

_EXPERT = re.compile(r"(model\.layers\.\d+\.mlp\.experts)\.\d+\.(\w+\.weight)")


@dataclass(frozen=True)
class Planned:
    """One tensor to write: ``sources`` (checkpoint names) stacked along a new first axis, or one as it is."""

    name: str
    sources: tuple[str, ...]
    shape: tuple[int, ...]

    @property
    def stacked(self) -> bool:
        return self.sources != (self.name,)


def tensor_plan(checkpoint: Checkpoint) -> list[Planned]:
    """Every tensor to write, in file order (a stack where its first expert was)."""
    groups: dict[str, list[str]] = {}
    for name in checkpoint.names:
        match = _EXPERT.fullmatch(name)
        groups.setdefault(f"{match[1]}.{match[2]}" if match else name, []).append(name)
    return [Planned(name, tuple(sources), _shape(checkpoint, name, sources)) for name, sources in groups.items()]


def _shape(checkpoint: Checkpoint, name: str, sources: list[str]) -> tuple[int, ...]:
    one = checkpoint.shape(sources[0])
    return one if sources == [name] else (len(sources), *one)


def stacked(planned: Planned, read: Callable[[str], np.ndarray]) -> np.ndarray:
    """The tensor's data: ``read`` of its source, or of each source, stacked."""
    if not planned.stacked:
        return read(planned.sources[0])
    return np.stack([read(source) for source in planned.sources])
