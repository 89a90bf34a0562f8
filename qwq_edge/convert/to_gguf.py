"""Hugging Face Qwen2 / Qwen3 / Qwen3 MoE checkpoint → GGUF (F16/BF16, then Q8_0 or a K-quant through libllama).

The F16/BF16 file is written tensor by tensor from the memory-mapped shards with
``gguf.GGUFWriter``'s streaming calls (header, metadata, tensor table, then each
tensor's data), so memory holds one tensor at a time. Quantization then runs
in-process with libllama (``quantize``, which imports llama-cpp-python).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from ..errors import ConversionError
from .checkpoint import Checkpoint
from .layout import stacked, tensor_plan
from .names import ROUTER, to_gguf
from .output import Progress
from .safetensors_io import float32_to_bf16
from .vocab import vocab_from_checkpoint


@dataclass(frozen=True)
class GGUFQuant:
    storage: str  # what the written file stores for 2-D tensors: F32, F16 or BF16
    file_type: int  # GGUF general.file_type of the written file
    llama_ftype: int | None  # libllama ftype to quantize to, or None to keep the written file
    bits_estimate: float


#: ``model_type`` → llama.cpp's architecture name.
GGUF_ARCHITECTURES = {"qwen2": "qwen2", "qwen3": "qwen3", "qwen3_moe": "qwen3moe"}
GGUF_QUANTS = {
    "f32": GGUFQuant("F32", gguf.LlamaFileType.ALL_F32, None, 32.0),
    "f16": GGUFQuant("F16", gguf.LlamaFileType.MOSTLY_F16, None, 16.0),
    "bf16": GGUFQuant("BF16", gguf.LlamaFileType.MOSTLY_BF16, None, 16.0),
    "q8_0": GGUFQuant("F16", gguf.LlamaFileType.MOSTLY_F16, int(gguf.LlamaFileType.MOSTLY_Q8_0), 8.5),
    "q6_k": GGUFQuant("F16", gguf.LlamaFileType.MOSTLY_F16, int(gguf.LlamaFileType.MOSTLY_Q6_K), 6.6),
    "q5_k_m": GGUFQuant("F16", gguf.LlamaFileType.MOSTLY_F16, int(gguf.LlamaFileType.MOSTLY_Q5_K_M), 5.7),
    "q4_k_m": GGUFQuant("F16", gguf.LlamaFileType.MOSTLY_F16, int(gguf.LlamaFileType.MOSTLY_Q4_K_M), 4.9),
    "q3_k_m": GGUFQuant("F16", gguf.LlamaFileType.MOSTLY_F16, int(gguf.LlamaFileType.MOSTLY_Q3_K_M), 3.9),
    "q2_k": GGUFQuant("F16", gguf.LlamaFileType.MOSTLY_F16, int(gguf.LlamaFileType.MOSTLY_Q2_K), 3.0),
}


def _add_metadata(writer: gguf.GGUFWriter, checkpoint: Checkpoint, file_type: int) -> None:
    c = checkpoint.config
    writer.add_name(checkpoint.name)
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_block_count(c.num_hidden_layers)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    writer.add_rope_freq_base(c.rope_theta)
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    if c.model_type != "qwen2":  # an explicit head size, as llama.cpp's converter writes it
        writer.add_key_length(c.head_dim)
        writer.add_value_length(c.head_dim)
    if c.experts is not None:
        writer.add_expert_count(c.experts.count)
        writer.add_expert_used_count(c.experts.per_token)
        writer.add_expert_feed_forward_length(c.experts.intermediate_size)
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    scaling = c.rope_scaling or {}
    if scaling.get("type", scaling.get("rope_type")) == "yarn":
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(float(scaling["factor"]))
        writer.add_rope_scaling_orig_ctx_len(int(scaling["original_max_position_embeddings"]))


def _add_vocab(writer: gguf.GGUFWriter, checkpoint: Checkpoint) -> None:
    vocab = vocab_from_checkpoint(checkpoint)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    writer.add_token_merges(vocab.merges)
    for add, value in (
        (writer.add_bos_token_id, vocab.bos_id),
        (writer.add_eos_token_id, vocab.eos_id),
        (writer.add_pad_token_id, vocab.pad_id),
    ):
        if value is not None:
            add(int(value))
    writer.add_add_bos_token(False)
    if vocab.chat_template:
        writer.add_chat_template(vocab.chat_template)


def _in_f32(name: str, shape: tuple[int, ...], storage: str) -> bool:
    """1-D tensors and a MoE router stay F32, as llama.cpp's converter keeps them."""
    return len(shape) == 1 or storage == "F32" or name.endswith(ROUTER)


def _stored(checkpoint: Checkpoint, name: str, storage: str) -> np.ndarray:
    """A tensor as the GGUF stores it: F32 (see ``_in_f32``), the rest in F16 or BF16."""
    if _in_f32(name, checkpoint.shape(name), storage):
        return checkpoint.float32(name)
    if storage == "BF16":
        return checkpoint.raw(name) if checkpoint.dtype(name) == "BF16" else float32_to_bf16(checkpoint.float32(name))
    return checkpoint.converted(name, np.float16)


def write_gguf(checkpoint: Checkpoint, path: Path, quant: GGUFQuant, progress: Progress) -> None:
    """Write an F16/BF16 GGUF of ``checkpoint`` to ``path``, one tensor (one stack of experts) in memory at a time."""
    check_gguf_experts(checkpoint)
    writer = gguf.GGUFWriter(None, GGUF_ARCHITECTURES[checkpoint.config.model_type])
    _add_metadata(writer, checkpoint, quant.file_type)
    _add_vocab(writer, checkpoint)
    raw_dtype = gguf.GGMLQuantizationType.BF16 if quant.storage == "BF16" else None
    plan, total = tensor_plan(checkpoint), 0
    for planned in plan:
        f32 = _in_f32(planned.name, planned.shape, quant.storage)
        dtype = np.dtype(np.float32 if f32 else (np.uint16 if raw_dtype else np.float16))
        nbytes = int(np.prod(planned.shape)) * dtype.itemsize
        raw = None if f32 else raw_dtype
        writer.add_tensor_info(to_gguf(planned.name), planned.shape, dtype, nbytes, raw_dtype=raw)
        total += nbytes
    writer.write_header_to_file(path)
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    done = 0
    for planned in plan:
        data = stacked(planned, lambda name: _stored(checkpoint, name, quant.storage))
        writer.write_tensor_data(data)
        done += data.nbytes
        progress(f"writing {quant.storage}", done, total)
    writer.close()


def check_gguf_experts(checkpoint: Checkpoint) -> None:
    """llama.cpp's qwen3moe has experts in every layer and rescales the chosen experts' weights."""
    experts = checkpoint.config.experts
    if experts is not None and (experts.dense_layers or not experts.normalize):
        raise ConversionError(
            f"{checkpoint.folder}: llama.cpp's qwen3moe needs experts in every layer and norm_topk_prob true; "
            "this checkpoint has dense layers or unnormalized expert weights (convert it to MLX instead)"
        )
