"""GGUF → Hugging Face checkpoint (safetensors, config.json, tokenizer files).

Users who only have a GGUF can still get an MLX model, and the tests get real
weights in Hugging Face layout from the 0.5B fixture. The header is read by
``engines.gguf_file`` (the ``gguf`` package's reader takes ~10 s over a Qwen vocabulary);
each tensor is dequantized with ``gguf.quants.dequantize`` and written before the next is read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGMLQuantizationType
from gguf.quants import dequantize, quant_shape_to_byte_shape

from ..engines.gguf_file import GGUFHeader, GGUFTensor, read_gguf_header
from ..errors import CheckpointError
from .names import to_hf
from .output import Progress
from .safetensors_io import PlannedTensor, SafetensorsWriter
from .vocab import GGUFVocab, tokenizer_from_vocab

HF_DTYPES = {"float16": "F16", "bfloat16": "BF16", "float32": "F32"}
SHARD_BYTES = 2 << 30


def _field(reader: GGUFHeader, key: str, default: Any = None) -> Any:
    return reader.metadata.get(key, default)


#: GGUF architecture → Hugging Face architecture.
HF_ARCHITECTURES = {"qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM", "qwen3moe": "Qwen3MoeForCausalLM"}
#: GGUF architecture → Hugging Face ``model_type``.
MODEL_TYPES = {"qwen2": "qwen2", "qwen3": "qwen3", "qwen3moe": "qwen3_moe"}


def _architecture(reader: GGUFHeader) -> str:
    arch = _field(reader, "general.architecture")
    if arch not in HF_ARCHITECTURES:
        raise CheckpointError(f"GGUF architecture {arch} is not supported; supported: {', '.join(HF_ARCHITECTURES)}")
    return str(arch)


def _config(reader: GGUFHeader, vocab_size: int, tied: bool, dtype: str) -> dict[str, Any]:
    arch = _architecture(reader)

    def key(name: str, default: Any = None) -> Any:
        return _field(reader, f"{arch}.{name}", default)

    config = {
        "_name_or_path": _field(reader, "general.name", ""),
        "architectures": [HF_ARCHITECTURES[arch]],
        "model_type": MODEL_TYPES[arch],
        "vocab_size": vocab_size,
        "hidden_size": key("embedding_length"),
        "intermediate_size": key("feed_forward_length"),
        "num_hidden_layers": key("block_count"),
        "num_attention_heads": key("attention.head_count"),
        "num_key_value_heads": key("attention.head_count_kv"),
        "rms_norm_eps": key("attention.layer_norm_rms_epsilon", 1e-6),
        "rope_theta": key("rope.freq_base", 10000.0),
        "max_position_embeddings": key("context_length", 32768),
        "hidden_act": "silu",
        "tie_word_embeddings": tied,
        "torch_dtype": dtype,
        "bos_token_id": _field(reader, "tokenizer.ggml.bos_token_id"),
        "eos_token_id": _field(reader, "tokenizer.ggml.eos_token_id"),
        "use_sliding_window": False,
    }
    if arch != "qwen2":
        config |= {"head_dim": key("attention.key_length"), "attention_bias": False}
    if arch == "qwen3moe":  # llama.cpp's qwen3moe: experts in every layer, their weights rescaled
        config |= {
            "num_experts": key("expert_count"),
            "num_experts_per_tok": key("expert_used_count"),
            "moe_intermediate_size": key("expert_feed_forward_length"),
            "norm_topk_prob": True,
            "decoder_sparse_step": 1,
            "mlp_only_layers": [],
        }
    if key("rope.scaling.type") == "yarn":
        config["rope_scaling"] = {
            "type": "yarn",
            "factor": key("rope.scaling.factor"),
            "original_max_position_embeddings": key("rope.scaling.original_context_length"),
        }
    return config


def gguf_vocab(reader: GGUFHeader) -> GGUFVocab:
    """The tokenizer a GGUF file carries."""
    if _field(reader, "tokenizer.ggml.model") != "gpt2":
        raise CheckpointError("only GGUF files with a byte-level BPE (gpt2) tokenizer can be converted")
    return GGUFVocab(
        tokens=list(_field(reader, "tokenizer.ggml.tokens")),
        types=[int(t) for t in _field(reader, "tokenizer.ggml.token_type")],
        merges=list(_field(reader, "tokenizer.ggml.merges", [])),
        eos_id=_field(reader, "tokenizer.ggml.eos_token_id"),
        pad_id=_field(reader, "tokenizer.ggml.padding_token_id"),
        bos_id=_field(reader, "tokenizer.ggml.bos_token_id"),
        chat_template=_field(reader, "tokenizer.chat_template"),
    )


def write_tokenizer_files(folder: Path, vocab: GGUFVocab, context_length: int) -> None:
    """tokenizer.json, tokenizer_config.json and generation_config.json for a GGUF vocabulary."""
    tokenizer_from_vocab(vocab).save(str(folder / "tokenizer.json"))

    def text(token_id: int | None) -> str | None:
        return vocab.tokens[token_id] if token_id is not None else None

    tokenizer_config = {
        "tokenizer_class": "Qwen2Tokenizer",
        "eos_token": text(vocab.eos_id),
        "pad_token": text(vocab.pad_id),
        "bos_token": None,
        "add_bos_token": False,
        "model_max_length": context_length,
        "chat_template": vocab.chat_template,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2, ensure_ascii=False))
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": vocab.eos_id}))


def _unstacked(reader: GGUFHeader) -> dict[str, tuple[GGUFTensor, int | None]]:
    """Each Hugging Face tensor's GGUF tensor, and its expert's index in a stack of experts."""
    tensors: dict[str, tuple[GGUFTensor, int | None]] = {}
    for tensor in reader.tensors:
        if tensor.name == "rope_freqs.weight":
            continue
        name = to_hf(tensor.name)
        if ".mlp.experts." not in name:
            tensors[name] = (tensor, None)
            continue
        prefix, projection = name.rsplit(".", 2)[0], name.rsplit(".", 2)[1]
        for expert in range(tensor.dims[-1]):  # GGUF lists dimensions innermost first
            tensors[f"{prefix}.{expert}.{projection}.weight"] = (tensor, expert)
    return tensors


def write_hf(gguf_path: Path, folder: Path, dtype: str, progress: Progress) -> int:
    """Write a Hugging Face checkpoint of a qwen2, qwen3 or qwen3moe GGUF into ``folder`` (a
    stack of experts written back one tensor per expert); return the parameter count."""
    reader = read_gguf_header(gguf_path, arrays=True)
    _architecture(reader)  # before the tensors' names are read
    vocab = gguf_vocab(reader)
    tensors = _unstacked(reader)
    tied = "lm_head.weight" not in tensors
    config = _config(reader, len(vocab.tokens), tied, dtype)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    write_tokenizer_files(folder, vocab, int(config["max_position_embeddings"]))
    storage = HF_DTYPES[dtype]
    shards: list[list[PlannedTensor]] = [[]]
    for name, (tensor, expert) in tensors.items():
        shape = tuple(reversed(tensor.dims))[0 if expert is None else 1 :]
        planned = PlannedTensor(name, "F32" if len(shape) == 1 else storage, shape)
        if shards[-1] and sum(p.nbytes for p in shards[-1]) + planned.nbytes > SHARD_BYTES:
            shards.append([])
        shards[-1].append(planned)
    total, done, weight_map = sum(p.nbytes for shard in shards for p in shard), 0, {}
    values = _Dequantized(np.memmap(gguf_path, dtype=np.uint8, mode="r"))
    for index, shard in enumerate(shards, start=1):
        file_name = f"model-{index:05d}-of-{len(shards):05d}.safetensors"
        writer = SafetensorsWriter(folder / file_name, shard)
        for planned in shard:
            tensor, expert = tensors[planned.name]
            data = values(tensor)
            writer.write(planned.name, (data if expert is None else data[expert]).reshape(planned.shape))
            weight_map[planned.name] = file_name
            done += planned.nbytes
            progress("dequantizing", done, total)
        writer.close()
    index_data = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index_data, indent=2))
    return sum(int(np.prod(p.shape)) for shard in shards for p in shard)


#: Tensor types stored as plain numbers (the rest are blocks of bytes that ``dequantize`` reads).
_PLAIN = {GGMLQuantizationType.F32: np.float32, GGMLQuantizationType.F16: np.float16}


class _Dequantized:
    """A GGUF tensor as float32, the last one kept: a stack's experts are written one after another."""

    def __init__(self, data: np.ndarray) -> None:
        self._data = data  # the whole file, mapped
        self._name: str | None = None
        self._values: np.ndarray | None = None

    def __call__(self, tensor: GGUFTensor) -> np.ndarray:
        if tensor.name != self._name:
            self._values = None  # free the last one first
            shape = tuple(reversed(tensor.dims))
            raw = self._data[tensor.offset : tensor.offset + tensor.nbytes]
            plain = _PLAIN.get(tensor.kind)
            stored = raw.view(plain) if plain else raw.reshape(quant_shape_to_byte_shape(shape, tensor.kind))
            self._values = dequantize(stored, tensor.kind).reshape(shape).astype(np.float32)
            self._name = tensor.name
        assert self._values is not None
        return self._values
