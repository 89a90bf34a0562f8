"""Converters on generated tiny Qwen2 checkpoints: both targets, every quantization, verified."""

import json
import struct
import subprocess
import sys
from pathlib import Path

import llama_cpp
import mlx.core as mx
import numpy as np
import pytest
from mlx_lm import load as mlx_load
from tokenizers import Tokenizer

from qwq_edge.convert import convert_to_gguf, convert_to_hf, convert_to_mlx, verify
from qwq_edge.convert.checkpoint import Checkpoint
from qwq_edge.convert.reference import QwenReference
from qwq_edge.convert.synthetic import make_checkpoint
from qwq_edge.engines.gguf_file import read_gguf_header
from qwq_edge.errors import ModelFormatError

MIXED_TEXT = "Hello 世界! def f(x):\n    return x**2  # 平方\n<|im_start|>user\n<think>ok</think><|im_end|>"
#: Bounds on the mean KL divergence from the numpy reference, for random tiny weights
#: (real models quantize far better: the 0.5B round trip below agrees 100% on top-1).
KL_BOUNDS = {
    "f16": 1e-4,
    "bf16": 1e-3,
    "q8_0": 0.02,
    "q4_k_m": 0.15,
    "mlx-16": 0.005,
    "mlx-4": 0.5,
    "mlx-mixed_4_6": 0.5,
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("tiny") / "tiny-qwen2")


def greedy_reference(checkpoint: Checkpoint, prompt: list[int], steps: int) -> list[int]:
    reference, tokens = QwenReference(checkpoint), list(prompt)
    for _ in range(steps):
        tokens.append(int(np.argmax(reference.logits([tokens])[0][-1])))
    return tokens[len(prompt) :]


def greedy_llama_cpp(path: Path, prompt: list[int], steps: int) -> list[int]:
    llama = llama_cpp.Llama(str(path), n_ctx=128, n_gpu_layers=0, verbose=False)
    try:
        return [t for _, t in zip(range(steps), llama.generate(prompt, temp=0.0, top_k=1), strict=False)]
    finally:
        llama.close()


@pytest.mark.parametrize("quant", ["f16", "bf16", "q8_0", "q4_k_m"])
def test_hf_to_gguf_loads_in_llama_cpp_and_matches_the_tokenizer(tiny, tmp_path, quant):
    out = tmp_path / f"tiny-{quant}.gguf"
    summary = convert_to_gguf(tiny, out, quant=quant)
    assert out.is_file() and not out.with_name(out.name + ".partial").exists()
    assert not list(tmp_path.glob("*.f16.partial")), "the intermediate is removed"
    assert summary.verification["mean_kl"] < KL_BOUNDS[quant]
    report = json.loads(out.with_name(out.name + ".verify.json").read_text())
    assert report["verification"]["converted"] == str(out) and report["bits_per_weight"] > 0
    llama = llama_cpp.Llama(str(out), n_ctx=128, verbose=False)
    expected = Tokenizer.from_file(str(tiny / "tokenizer.json")).encode(MIXED_TEXT).ids
    assert llama.tokenize(MIXED_TEXT.encode(), add_bos=False, special=True) == expected
    metadata = llama.metadata
    assert metadata["general.architecture"] == "qwen2" and metadata["tokenizer.ggml.pre"] == "qwen2"
    assert metadata["tokenizer.chat_template"].startswith("{% for message")
    llama.close()


def test_f16_gguf_greedy_tokens_equal_the_numpy_reference(tiny, tmp_path):
    out = tmp_path / "tiny-f16.gguf"
    convert_to_gguf(tiny, out, quant="f16", verify=False)
    prompt = Tokenizer.from_file(str(tiny / "tokenizer.json")).encode("Let me think step by step").ids
    assert greedy_llama_cpp(out, prompt, 32) == greedy_reference(Checkpoint(tiny), prompt, 32)


@pytest.mark.parametrize(("bits", "recipe"), [(16, None), (4, None), (4, "mixed_4_6")])
def test_hf_to_mlx_loads_in_mlx_lm(tiny, tmp_path, bits, recipe):
    out = tmp_path / "mlx"
    summary = convert_to_mlx(tiny, out, bits=bits, recipe=recipe)
    label = f"mlx-{recipe or bits}"
    assert summary.verification["mean_kl"] < KL_BOUNDS[label]
    config = json.loads((out / "config.json").read_text())
    if bits == 16:
        assert "quantization" not in config
    else:
        assert config["quantization"]["group_size"] == 64
        layer = config["quantization"]["model.layers.1.mlp.down_proj"]
        assert layer["bits"] == (6 if recipe else 4)  # mixed_4_6: more bits for the last layers' down_proj
    for name in ("tokenizer.json", "tokenizer_config.json", "model.safetensors.index.json", "verify.json"):
        assert (out / name).is_file()
    model, tokenizer = mlx_load(str(out))
    logits = model(mx.array([tokenizer.encode("Hello")]))
    assert logits.shape[-1] == 1024


def test_gguf_to_hf_round_trip_keeps_weights_and_tokenizer(tiny, tmp_path):
    """bf16 weights → BF16 GGUF → float32 checkpoint: every value comes back exactly."""
    gguf_file = tmp_path / "tiny-bf16.gguf"
    convert_to_gguf(tiny, gguf_file, quant="bf16", verify=False)
    back = tmp_path / "back"
    summary = convert_to_hf(gguf_file, back, dtype="float32")
    assert summary.verification["top1_agreement"] > 0.95  # llama.cpp computes BF16 matmuls in reduced precision
    original, restored = Checkpoint(tiny), Checkpoint(back)
    for name in original.names:
        assert np.array_equal(original.float32(name), restored.float32(name)), name
    a = Tokenizer.from_file(str(tiny / "tokenizer.json"))
    b = Tokenizer.from_file(str(back / "tokenizer.json"))
    assert a.encode(MIXED_TEXT).ids == b.encode(MIXED_TEXT).ids


def test_gguf_source_converts_to_mlx(tiny, tmp_path):
    gguf_file = tmp_path / "tiny-q8.gguf"
    convert_to_gguf(tiny, gguf_file, quant="q8_0", verify=False)
    summary = convert_to_mlx(gguf_file, tmp_path / "from-gguf", bits=16)
    assert summary.verification["top1_agreement"] > 0.95
    assert not list(tmp_path.glob(".*partial")), "the temporary checkpoint is removed"


def test_verify_reports_a_wrong_model(tiny, tmp_path):
    other = make_checkpoint(tmp_path / "other", seed=1)
    report = verify(other, tiny)
    assert report.top1_agreement < 0.2 and report.mean_kl > 1.0


def test_yarn_rope_scaling_reaches_the_gguf_metadata(tmp_path):
    source = make_checkpoint(tmp_path / "yarn")
    config = json.loads((source / "config.json").read_text())
    config["rope_scaling"] = {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}
    (source / "config.json").write_text(json.dumps(config))
    out = tmp_path / "yarn.gguf"
    convert_to_gguf(source, out, quant="f16", verify=False)
    metadata = read_gguf_header(out).metadata
    assert metadata["qwen2.rope.scaling.type"] == "yarn"
    assert metadata["qwen2.rope.scaling.factor"] == 4.0
    assert metadata["qwen2.rope.scaling.original_context_length"] == 32768
    assert metadata["general.file_type"] == 1  # F16


def test_the_converter_scripts_run_for_people_who_cloned_the_repo(tiny, tmp_path):
    root = Path(__file__).resolve().parent.parent
    out = tmp_path / "script.gguf"
    proc = subprocess.run(
        [sys.executable, str(root / "converters" / "hf_to_gguf.py"), str(tiny), "-o", str(out), "--quant", "q8_0"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert read_gguf_header(out).metadata["general.file_type"] == 7  # Q8_0
    proc = subprocess.run(
        [sys.executable, str(root / "converters" / "gguf_to_hf.py"), str(out), "-o", str(tmp_path / "hf")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "hf" / "config.json").is_file()


def _gguf_with(path: Path, key: str, kind: int, value: bytes) -> Path:
    """A GGUF v3 file with no tensors and one metadata entry (``kind``: GGUF's value type)."""
    name = key.encode()
    entry = struct.pack("<Q", len(name)) + name + struct.pack("<I", kind) + value
    header = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + entry
    path.write_bytes(header + bytes(-len(header) % 32))  # padded to where tensors' data would start
    return path


def test_a_gguf_header_with_a_bad_alignment_or_broken_strings_is_a_format_error(tmp_path):
    zero = _gguf_with(tmp_path / "zero.gguf", "general.alignment", 4, struct.pack("<I", 0))
    with pytest.raises(ModelFormatError, match="power of two"):
        read_gguf_header(zero)
    broken = b"\xff\xfe"  # a string array of one string that is not UTF-8
    strings = _gguf_with(
        tmp_path / "strings.gguf", "tokenizer.ggml.tokens", 9, struct.pack("<IQQ", 8, 1, len(broken)) + broken
    )
    assert read_gguf_header(strings).metadata["tokenizer.ggml.tokens"] == 1  # its length only
    with pytest.raises(ModelFormatError, match="corrupt"):
        read_gguf_header(strings, arrays=True)  # read whole, for a tokenizer: it must be text
