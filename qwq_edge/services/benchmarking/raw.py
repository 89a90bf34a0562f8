"""The raw engine, run the way its own library streams: the baseline qwq-edge is measured against.

Each engine's spec provides its baseline: a runner that takes prompt token ids and
yields once per generated token, with no chat template, no reasoning controls and
no prefix reuse between calls, loaded with the settings (context, threads, layers
offloaded, KV-cache type) of the qwq-edge engine being compared, so both sides do
the same work.
"""

from __future__ import annotations

from ...engines.adapter import RawRunner
from ...engines.base import Engine
from ...engines.registry import spec_named
from ...errors import EngineUnavailableError

__all__ = ["RawRunner", "open_raw"]


def open_raw(engine: Engine) -> RawRunner:
    """The raw baseline for a loaded qwq-edge engine, on the same model file with the same settings."""
    spec = spec_named(engine.info.engine)
    if spec.raw is None:
        raise EngineUnavailableError(f"the {spec.name} engine has no raw baseline to compare with")
    return spec.raw(engine)
