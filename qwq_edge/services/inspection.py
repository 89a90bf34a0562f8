"""What ``qwq-edge info`` and ``qwq-edge doctor`` report: models, this machine, the engines.

Everything here reads files and asks libraries; no model is loaded except the tiny
generated one that the engine smoke tests run.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import platform
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from time import perf_counter
from typing import Any

from ..architecture.shape import KV_ELEMENT_BYTES, ModelShape
from ..catalog.entries import CatalogEntry, Source
from ..catalog.families import family_for
from ..catalog.fits import FORMAT_ENGINES
from ..catalog.planner import fitting_plan, largest_context, memory_budget, model_shape, plan_for
from ..catalog.speed import machine_speed, medium_thought, predict
from ..catalog.store import preferred_format
from ..convert import ConversionSummary, convert_to_gguf, convert_to_mlx
from ..convert.synthetic import make_checkpoint
from ..engines.base import KV_CACHE_TYPES
from ..engines.registry import choose_engine, gather_over_group, spec_for_path, spec_named, specs
from ..errors import DistributedError, QwqEdgeError
from ..reasoning.formats import detect_format
from ..runtime.prompt import describe_template
from ..sampling import SamplingParams
from ..system.bandwidth import measured_speed
from ..system.distributed import launched
from ..system.machine import (
    apple_silicon,
    available_memory,
    cpu_name,
    gpu_offload_supported,
    metal_available,
    total_memory,
)

PACKAGES = ("qwq-edge", "llama-cpp-python", "mlx", "mlx-lm", "gguf", "numpy", "huggingface-hub")


def describe_model(path: str | Path) -> dict[str, Any]:
    """Architecture, size, quantization, context, reasoning format, defaults and engine of a model."""
    path = Path(path)
    shape = model_shape(path)
    facts = spec_for_path(path).facts(path)
    try:
        engine, reason = choose_engine(path)
    except QwqEdgeError as error:
        engine, reason = "none (auto)", str(error)
    family = family_for(shape.name)
    return {
        "path": str(path),
        "name": shape.name,
        "format": facts.format,
        "architecture": facts.architecture,
        "parameters": facts.parameters,
        "quantization": facts.quantization,
        "context_length": shape.trained_context,
        "layers": shape.layers,
        "kv_heads": shape.kv_heads,
        "head_dim": shape.head_dim,
        "reasoning_format": detect_format(facts.chat_template, shape.name).name,
        "prompt_template": describe_template(facts.chat_template),
        "family": family.key,
        "sampling_defaults": _sampling(family.sampling),
        **_no_think_sampling(family.sampling_no_think),
        "files": facts.files,
        "weights_bytes": shape.weights_bytes,
        "engine": engine,
        "engine_reason": reason,
        "speed": predicted_speed(shape, "f16", engine, family.effort),
    }


def predicted_speed(shape: ModelShape, kv_cache: str, engine: str, effort: dict[str, int] | None) -> dict[str, Any]:
    """How fast the model would think here with ``engine`` (see ``catalog/speed.py``), in numbers and words;
    ``None`` figures when this machine's speed cannot be told (a GPU other than Apple's)."""
    machine = None if engine.startswith("none") else machine_speed(engine)  # "none (auto)": no engine runs it
    if machine is None:
        return {"predicted_decode_tokens_per_s": None, "words": "not known on this device (see QWQ_EDGE_BANDWIDTH)"}
    prediction = predict(shape, kv_cache, machine, medium_thought(effort))
    return {**prediction.to_dict(), "words": prediction.describe(), "machine": machine.describe()}


def model_memory(path: str | Path, parallel: int = 1) -> dict[str, Any]:
    """KV-cache cost per token and the longest context per sequence that fits ``parallel``
    sequences, at fp16 and 8-bit (or only the type the engine's pool holds)."""
    path = Path(path)
    shape, budget = model_shape(path), memory_budget()
    only = spec_for_path(path).batch_kv_cache if parallel > 1 else None
    kinds = (only,) if only else KV_CACHE_TYPES
    return {
        "weights_bytes": shape.weights_bytes,
        "budget_bytes": budget,
        "parallel": parallel,
        "kv_bytes_per_token": {kv: shape.kv_bytes_per_token(kv) for kv in kinds},
        "largest_context": {kv: largest_context(shape, kv, budget, parallel) for kv in kinds},
    }


def catalog_memory(entry: CatalogEntry, source: Source, budget: int | None = None) -> dict[str, Any]:
    """A catalog download's numbers before it is pulled: architecture, sampling defaults, the memory
    it needs at its default context with an fp16 and an 8-bit KV cache, and its plan here."""
    budget = memory_budget() if budget is None else budget
    shape = entry.shape(source)
    plan = fitting_plan(shape, budget)
    return {
        "parameters": entry.parameters,
        "layers": entry.layers,
        "kv_heads": entry.kv_heads,
        "head_dim": entry.head_dim,
        "context_length": entry.context_length,
        "sampling_defaults": _sampling(entry.sampling),
        **_no_think_sampling(entry.sampling_no_think),
        "download": f"{source.format}:{source.quant}",
        "weights_bytes": source.size_bytes,
        "default_context": shape.trained_context,
        "needs_bytes": {kv: plan_for(shape, shape.trained_context, kv, budget).total_bytes for kv in KV_ELEMENT_BYTES},
        "budget_bytes": budget,
        "plan": plan.to_dict() if plan else None,
        "speed": predicted_speed(
            shape, plan.kv_cache if plan else "q8_0", FORMAT_ENGINES.get(source.format, "llama.cpp"), entry.effort
        ),
    }


def _sampling(params: SamplingParams) -> dict[str, Any]:
    return {k: v for k, v in asdict(params).items() if k != "seed"}


def _no_think_sampling(params: SamplingParams | None) -> dict[str, Any]:
    """A hybrid model's sampling defaults without thinking, where its card gives other values."""
    return {"sampling_defaults_without_thinking": _sampling(params)} if params else {}


def speed_report(refresh: bool = True) -> dict[str, Any]:
    """``doctor``'s speed facts: the probe, run again (``refresh``), and the figures predictions use here."""
    probe = measured_speed(refresh)
    engine = FORMAT_ENGINES.get(preferred_format(), "llama.cpp")
    machine = machine_speed(engine)
    return {
        "memory_bandwidth_bytes_per_s": probe.bandwidth_bytes_per_s,
        "matmul_flops": probe.matmul_flops,
        "probe_seconds": probe.seconds,
        "measured_at": probe.measured_at,
        "predictions_use": machine.describe() if machine else "no figures for this GPU: set QWQ_EDGE_BANDWIDTH",
    }


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def system_report() -> dict[str, Any]:
    """OS, CPU, memory, accelerators and installed versions."""
    return {
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "ram_total_bytes": total_memory(),
        "ram_available_bytes": available_memory(),
        "model_budget_bytes": memory_budget(),
        "apple_silicon": apple_silicon(),
        "metal": metal_available(),
        "llama_cpp_gpu_offload": gpu_offload_supported(),
        "versions": {package: _version(package) for package in PACKAGES},
    }


#: How ``doctor`` makes a tiny model in an engine's format, from a generated checkpoint.
_SMOKE_CONVERSIONS: dict[str, Callable[[Path, Path], ConversionSummary]] = {
    "gguf": lambda source, folder: convert_to_gguf(source, folder / "tiny.gguf", quant="f16", verify=False),
    "mlx": lambda source, folder: convert_to_mlx(source, folder / "tiny-mlx", bits=16, verify=False),
}


def smoke_engines() -> list[str]:
    """The engines ``doctor`` can check: those whose format the converters write."""
    return [spec.name for spec in specs() if spec.format in _SMOKE_CONVERSIONS]


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # a parent package that is missing or does not import
        return False


def missing_library(engine: str) -> str | None:
    """``not installed: …`` with how to add it, when a module of ``engine``'s library is missing."""
    spec = spec_named(engine)
    missing = [module for module in spec.libraries if not _installed(module)]
    if not missing:
        return None
    return f"not installed (no {', '.join(missing)}): {spec.install_hint}"


def smoke_test(engine: str) -> dict[str, Any]:
    """Convert a tiny generated model for ``engine``, load it there and decode one token
    (an engine whose library is not installed is reported as such, not run)."""
    from ..runtime.model import load

    missing = missing_library(engine)
    if missing:
        return {"engine": engine, "ok": False, "installed": False, "detail": missing}
    start = perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="qwq-edge-doctor-") as temp:
            source = make_checkpoint(Path(temp) / "tiny")
            target = Path(_SMOKE_CONVERSIONS[spec_named(engine).format](source, Path(temp)).output)
            model = load(target, engine=engine, context_length=256)
            result = model.generate("Hi", reasoning_format="none", max_answer_tokens=1, temperature=0.0)
            model.close()
    except Exception as error:  # a broken install shows up here, whatever its kind
        return {"engine": engine, "ok": False, "installed": True, "detail": f"{type(error).__name__}: {error}"}
    detail = f"decoded {result.stats.answer_tokens} token in {perf_counter() - start:.1f} s"
    return {"engine": engine, "ok": True, "installed": True, "detail": detail}


def model_fingerprint(path: str | Path) -> dict[str, Any]:
    """A model's files by name: size and a hash of their first and last MiB (quick, and
    enough to tell a different, truncated or half-copied file)."""
    path = Path(path)
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    found = {}
    for file in files:
        digest = hashlib.sha256()
        with file.open("rb") as handle:
            digest.update(handle.read(2**20))
            handle.seek(max(0, file.stat().st_size - 2**20))
            digest.update(handle.read())
        found[file.name] = f"{file.stat().st_size}:{digest.hexdigest()[:16]}"
    return found


def distributed_report(model: Path | None) -> tuple[int, list[dict[str, Any]]]:
    """Under ``mlx.launch``: this rank, and every rank's host, versions and model files."""
    if not launched():
        raise DistributedError("doctor --distributed runs under mlx.launch: qwq-edge launch -n 2 -- doctor")
    mine = {
        "host": platform.node(),
        "versions": {package: _version(package) for package in ("mlx", "mlx-lm", "qwq-edge")},
        "model": model_fingerprint(model) if model is not None else None,
    }
    return gather_over_group(mine)


def rank_differences(ranks: list[dict[str, Any]]) -> list[str]:
    """What each rank has that rank 0 has not (versions, model files), in words."""
    problems = []
    for rank, facts in enumerate(ranks[1:], start=1):
        for key in ("versions", "model"):
            if facts[key] != ranks[0][key]:
                what = "model files" if key == "model" else "versions"
                problems.append(f"rank {rank} ({facts['host']}) has other {what} than rank 0: {facts[key]}")
    return problems
