"""Giving a loaded model its prompt cache: the memory cap from the plan, the disk folder and
the identity that keys its files (``engines.prompt_cache`` does the caching)."""

from __future__ import annotations

import dataclasses
import importlib.metadata
from pathlib import Path
from typing import Any

from ..catalog.planner import GB, MemoryPlan
from ..engines.prompt_cache import DiskCache, PromptCache
from ..system.machine import models_home

#: The share of what the memory plan leaves free that the prompt cache may take by default.
FREE_SHARE = 4
#: At most this much by default, however much is free.
DEFAULT_CAP = 8 * GB
#: The disk cache's cap.
DISK_CAP = 20 * GB


def default_cache_bytes(plan: MemoryPlan) -> int:
    """A quarter of what the plan leaves free (at most ``DEFAULT_CAP``)."""
    return max(0, min(DEFAULT_CAP, (plan.budget_bytes - plan.total_bytes) // FREE_SHARE))


def attach_prompt_cache(
    engine: Any, plan: MemoryPlan, cache_ram: int | None, folder: str | Path | bool | None
) -> MemoryPlan:
    """Give ``engine``'s pool a prompt cache if it keeps one (``folder``: False for no disk
    cache, None for the default); the plan with the cache's cap in it."""
    pool = getattr(engine, "pool", engine)
    if not hasattr(pool, "prompt_cache"):
        return plan
    cap = default_cache_bytes(plan) if cache_ram is None else cache_ram
    disk = None
    if folder is not False:
        where = Path(folder) if folder else models_home() / "prompt-cache"
        disk = DiskCache(where, cache_identity(engine.info, plan.kv_cache), DISK_CAP)
    if cap > 0 or disk is not None:
        pool.prompt_cache = PromptCache(cap, disk)
    return dataclasses.replace(plan, prompt_cache_bytes=cap)


def cache_identity(info: Any, kv_cache: str) -> dict[str, Any]:
    """What a cached state depends on: the model file (path, size, time), the engine, its
    library's and qwq-edge's versions, the KV cache type."""
    path = Path(info.model_path).resolve()
    stat = path.stat()
    library = "llama-cpp-python" if info.engine == "llama.cpp" else "mlx"
    return {
        "model": str(path),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "engine": info.engine,
        "library": importlib.metadata.version(library),
        "qwq_edge": importlib.metadata.version("qwq-edge"),
        "kv_cache": kv_cache,
    }
