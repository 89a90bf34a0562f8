"""What ``qwq-edge info`` and ``qwq-edge doctor`` report: models, this machine, the engines.

Everything here reads files and asks libraries; no model is loaded except the tiny
generated one that the engine smoke tests run.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
from dataclasses import asdict
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from time import perf_counter
from typing import Any

from gguf import LlamaFileType

from .convert.checkpoint import Qwen2Config
from .engines import apple_silicon, choose_engine, metal_available, model_kind
from .engines.gguf_file import read_gguf_header
from .errors import QwqEdgeError
from .families import family_for
from .model_config import read_json_object, read_model_config
from .planner import available_memory, largest_context, memory_budget, model_shape, total_memory
from .prompt import describe_template
from .reasoning.formats import detect_format

PACKAGES = ("qwq-edge", "llama-cpp-python", "mlx", "mlx-lm", "gguf", "numpy", "huggingface-hub")


def _parameters(config: dict[str, Any], path: Path) -> int:
    """Parameters of a Qwen2 model folder, from its config (quantized weights hide the count)."""
    return Qwen2Config.from_dict({"architectures": ["Qwen2ForCausalLM"], **config}, str(path)).parameter_count


def _folder_quantization(config: dict[str, Any]) -> str:
    block = config.get("quantization")
    if not block:
        return str(config.get("torch_dtype", "unquantized"))
    if not isinstance(block, dict) or "bits" not in block:
        return "unknown (config.json's quantization block has no bits)"
    widths = {entry.get("bits") for entry in block.values() if isinstance(entry, dict)} | {block["bits"]}
    return f"{'/'.join(sorted(map(str, widths)))}-bit, group {block.get('group_size', '?')}"


def _gguf_quantization(file_type: object) -> str:
    try:
        return LlamaFileType(file_type).name.replace("MOSTLY_", "")
    except ValueError:
        return "unknown"


def _format_details(path: Path) -> tuple[dict[str, Any], dict[str, int], str | None, str]:
    """Format, architecture and parameters; the files; the chat template; the quantization."""
    if model_kind(path) == "gguf":
        header = read_gguf_header(path)
        template = header.metadata.get("tokenizer.chat_template")
        quantization = _gguf_quantization(header.metadata.get("general.file_type"))
        details = {"format": "gguf", "architecture": header.architecture, "parameters": header.parameter_count}
        files = {path.name: header.file_size}
    else:
        config = read_model_config(path)
        tokenizer_config = path / "tokenizer_config.json"
        template = read_json_object(tokenizer_config).get("chat_template") if tokenizer_config.is_file() else None
        quantization = _folder_quantization(config)
        details = {"format": "mlx", "architecture": config.get("model_type"), "parameters": _parameters(config, path)}
        files = {p.name: p.stat().st_size for p in sorted(path.iterdir()) if p.is_file()}
    return details, files, template if isinstance(template, str) else None, quantization


def describe_model(path: str | Path) -> dict[str, Any]:
    """Architecture, size, quantization, context, reasoning format, defaults and engine of a model."""
    path = Path(path)
    shape = model_shape(path)
    details, files, template, quantization = _format_details(path)
    try:
        engine, reason = choose_engine(path)
    except QwqEdgeError as error:
        engine, reason = "none (auto)", str(error)
    family = family_for(shape.name)
    return {
        "path": str(path),
        "name": shape.name,
        **details,
        "quantization": quantization,
        "context_length": shape.trained_context,
        "layers": shape.layers,
        "kv_heads": shape.kv_heads,
        "head_dim": shape.head_dim,
        "reasoning_format": detect_format(template, shape.name).name,
        "prompt_template": describe_template(template),
        "family": family.key,
        "sampling_defaults": {k: v for k, v in asdict(family.sampling).items() if k != "seed"},
        "files": files,
        "weights_bytes": shape.weights_bytes,
        "engine": engine,
        "engine_reason": reason,
    }


def model_memory(path: str | Path) -> dict[str, Any]:
    """KV-cache cost per token and the longest context that fits, at fp16 and 8-bit."""
    shape, budget = model_shape(path), memory_budget()
    return {
        "weights_bytes": shape.weights_bytes,
        "budget_bytes": budget,
        "kv_bytes_per_token": {kv: shape.kv_bytes_per_token(kv) for kv in ("f16", "q8_0")},
        "largest_context": {kv: largest_context(shape, kv, budget) for kv in ("f16", "q8_0")},
    }


def _cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def system_report() -> dict[str, Any]:
    """OS, CPU, memory, accelerators and installed versions."""
    try:
        from .engines.llama_cpp import gpu_offload_supported

        offload = gpu_offload_supported()
    except QwqEdgeError:
        offload = False
    return {
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "ram_total_bytes": total_memory(),
        "ram_available_bytes": available_memory(),
        "model_budget_bytes": memory_budget(),
        "apple_silicon": apple_silicon(),
        "metal": metal_available(),
        "llama_cpp_gpu_offload": offload,
        "versions": {package: _version(package) for package in PACKAGES},
    }


def smoke_test(engine: str) -> dict[str, Any]:
    """Convert a tiny generated model for ``engine``, load it there and decode one token."""
    from .convert import convert_to_gguf, convert_to_mlx
    from .convert.synthetic import make_checkpoint
    from .model import load

    start = perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="qwq-edge-doctor-") as temp:
            source = make_checkpoint(Path(temp) / "tiny")
            if engine == "llama.cpp":
                target = Path(temp) / "tiny.gguf"
                convert_to_gguf(source, target, quant="f16", verify=False)
            else:
                target = Path(temp) / "tiny-mlx"
                convert_to_mlx(source, target, bits=16, verify=False)
            model = load(target, engine=engine, context_length=256)
            result = model.generate("Hi", reasoning_format="none", max_answer_tokens=1, temperature=0.0)
            model.close()
    except Exception as error:  # a broken install shows up here, whatever its kind
        return {"engine": engine, "ok": False, "detail": f"{type(error).__name__}: {error}"}
    detail = f"decoded {result.stats.answer_tokens} token in {perf_counter() - start:.1f} s"
    return {"engine": engine, "ok": True, "detail": detail}
