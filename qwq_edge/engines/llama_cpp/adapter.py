"""The llama.cpp adapter's spec: GGUF files, read here without llama.cpp; run by ``engine``.

llama-cpp-python is imported only when a model is opened, a baseline is run or
logits are asked for.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from gguf import LlamaFileType

from ...architecture.shape import ModelShape, embedding_split
from ...system.machine import gpu_offload_supported
from ..adapter import AutoChoice, EngineOptions, EngineSpec, ModelFacts, RawRunner
from ..base import Engine
from ..gguf_file import GGUFHeader, read_gguf_header

_MAGIC = b"GGUF"


def _claims(path: Path) -> bool:
    """A ``.gguf`` file, or any file that starts with the GGUF magic."""
    if not path.is_file():
        return False
    if path.suffix.lower() == ".gguf":
        return True
    with path.open("rb") as handle:
        return handle.read(len(_MAGIC)) == _MAGIC


def _embedding(header: GGUFHeader) -> dict[str, int]:
    """What decoding skips of the token-embedding table (all but a row, when the output layer
    is a tensor of its own) and the parameters a prompt token is multiplied by."""
    vocab = int(header.metadata.get("tokenizer.ggml.tokens", 0))
    hidden = int(header.metadata.get(f"{header.architecture}.embedding_length", 0))
    tied = "output.weight" not in header.tensor_bytes
    split = embedding_split(header.file_size, header.parameter_count, vocab, hidden, tied)
    return {**split, "embedding_bytes": 0 if tied else header.tensor_bytes.get("token_embd.weight", 0)}


def _matrices(header: GGUFHeader) -> dict[str, Any]:
    """``output_rows`` and ``matmul_types`` from the tensor table: a layer matrix's rows are its
    second dimension; an expert tensor (``*_exps``) runs the experts a token is routed to, another
    three-dimensional one each of its slices; the token-embedding table counts only when it is
    also the output layer, and neither table is among the weights a prompt token is multiplied by."""
    experts = int(header.metadata.get(f"{header.architecture}.expert_used_count", 1))
    tied = "output.weight" not in header.tensor_bytes
    output = "token_embd.weight" if tied else "output.weight"
    rows, types = 0, Counter[str]()
    for tensor in header.tensors:
        if len(tensor.dims) < 2 or not (tensor.name.startswith("blk.") or tensor.name == output):
            continue
        slices = 1 if len(tensor.dims) == 2 else experts if "_exps" in tensor.name else math.prod(tensor.dims[2:])
        rows += tensor.dims[1] * slices
        if tensor.name != output:
            types[tensor.kind.name] += math.prod(tensor.dims)
    return {"output_rows": rows, "matmul_types": tuple(sorted(types.items()))}


def _shape(path: Path) -> ModelShape:
    header = read_gguf_header(path)
    meta, arch = header.metadata, header.architecture
    heads = int(meta.get(f"{arch}.attention.head_count", 1))
    head_dim = int(meta.get(f"{arch}.attention.key_length", int(meta.get(f"{arch}.embedding_length", 0)) // heads))
    return ModelShape(
        name=header.name,
        layers=int(meta.get(f"{arch}.block_count", 0)),
        kv_heads=int(meta.get(f"{arch}.attention.head_count_kv", heads)),
        head_dim=head_dim,
        weights_bytes=header.file_size,
        trained_context=header.context_length or 4096,
        **_embedding(header),
        **_matrices(header),
    )


def _quantization(file_type: object) -> str:
    try:
        return LlamaFileType(file_type).name.replace("MOSTLY_", "")
    except ValueError:
        return "unknown"


def _facts(path: Path) -> ModelFacts:
    header = read_gguf_header(path)
    template = header.metadata.get("tokenizer.chat_template")
    return ModelFacts(
        format="gguf",
        architecture=header.architecture,
        parameters=header.parameter_count,
        quantization=_quantization(header.metadata.get("general.file_type")),
        chat_template=template if isinstance(template, str) else None,
        files={path.name: header.file_size},
    )


def _auto() -> AutoChoice:
    if gpu_offload_supported():
        return AutoChoice(True, "a GGUF file; this llama.cpp build offloads every layer to the GPU")
    return AutoChoice(True, "a GGUF file; this llama.cpp build has no GPU offload, so it runs on the CPU")


def _open(path: Path, options: EngineOptions) -> Engine:
    from .pool import LlamaCppEngine, LlamaCppPool

    settings = {
        "context_length": options.context_length,
        "n_threads": options.n_threads,
        "n_gpu_layers": options.n_gpu_layers,
        "kv_cache": options.kv_cache,
    }
    if options.parallel > 1:
        return LlamaCppPool(path, parallel=options.parallel, **settings)  # type: ignore[return-value]
    return LlamaCppEngine(path, **settings)


def _raw(engine: Engine) -> RawRunner:
    from .baseline import RawLlamaCpp

    return RawLlamaCpp.like(engine.info.model_path, engine.llama)  # type: ignore[attr-defined]


def _logits(path: Path, sequences: Sequence[Sequence[int]]) -> list[np.ndarray]:
    from .baseline import llama_cpp_logits

    return llama_cpp_logits(path, sequences)


SPEC = EngineSpec(
    name="llama.cpp",
    format="gguf",
    describes="a GGUF file",
    claims=_claims,
    shape=_shape,
    facts=_facts,
    auto=_auto,
    open=_open,
    mismatch="llama.cpp runs GGUF files; {path} is {kind} (use --engine {engine})",
    libraries=("llama_cpp",),
    install_hint="it is a dependency of qwq-edge; reinstall qwq-edge to add it",
    raw=_raw,
    logits=_logits,
    batches=True,
)
