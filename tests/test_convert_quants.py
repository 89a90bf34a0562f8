"""The smaller quantizations, converted from tiny checkpoints and verified against the numpy reference.

llama.cpp's K-quants store rows in blocks of 256 values: a tensor whose rows are narrower
(the 64-wide tiny checkpoint's) gets a fallback type instead (Q5_0 for Q4_K, for example).
So the GGUF types are tested on a checkpoint 256 wide with a 512-wide MLP, where every
matrix is a real K-quant, and the test reads the tensor types from the file to be sure.
"""

import json
import subprocess
from collections import Counter
from pathlib import Path

import gguf
import pytest

from qwq_edge.convert import convert_to_gguf, convert_to_mlx
from qwq_edge.convert.synthetic import SyntheticSpec, make_checkpoint
from qwq_edge.engines.gguf_file import read_gguf_header

#: Hidden size and MLP width multiples of 256, so that every matrix row is a whole number of K-quant blocks.
K_WIDE = SyntheticSpec(hidden_size=256, intermediate_size=512, num_attention_heads=4, num_key_value_heads=2)
#: The file type each quantization writes, and the K-quant most of its matrices get.
GGUF_TYPES = {
    "q2_k": (gguf.LlamaFileType.MOSTLY_Q2_K, gguf.GGMLQuantizationType.Q2_K),
    "q3_k_m": (gguf.LlamaFileType.MOSTLY_Q3_K_M, gguf.GGMLQuantizationType.Q3_K),
    "q5_k_m": (gguf.LlamaFileType.MOSTLY_Q5_K_M, gguf.GGMLQuantizationType.Q5_K),
    "q6_k": (gguf.LlamaFileType.MOSTLY_Q6_K, gguf.GGMLQuantizationType.Q6_K),
}
#: Bounds on the mean KL divergence from the reference and on the top-1 agreement, for random
#: weights (fewer bits, more loss; measured: Q2_K 1.56 and 23%, Q3_K_M 0.39 and 57%, Q5_K_M 0.035
#: and 91%, Q6_K 0.010 and 90%; MLX 3-bit 1.25 and 40%, mixed_3_6 0.94 and 49%). A different
#: model agrees on 0% with a KL of 11.7.
KL_BOUNDS = {"q2_k": 2.0, "q3_k_m": 0.6, "q5_k_m": 0.1, "q6_k": 0.05, "mlx-3": 1.8, "mlx-mixed_3_6": 1.4}
AGREEMENT = {"q2_k": 0.15, "q3_k_m": 0.4, "q5_k_m": 0.8, "q6_k": 0.8, "mlx-3": 0.3, "mlx-mixed_3_6": 0.3}


@pytest.fixture(scope="module")
def wide(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("wide") / "wide-qwen2", K_WIDE)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("tiny") / "tiny-qwen2")


def matrix_types(path: Path) -> Counter:
    """How many 2-D tensors of the file are stored in each type."""
    reader = gguf.GGUFReader(path)
    return Counter(t.tensor_type for t in reader.tensors if len(t.shape) == 2)


@pytest.mark.parametrize("quant", list(GGUF_TYPES))
def test_k_quants_convert_and_verify(wide, tmp_path, quant):
    out = tmp_path / f"wide-{quant}.gguf"
    summary = convert_to_gguf(wide, out, quant=quant)
    file_type, main_type = GGUF_TYPES[quant]
    assert read_gguf_header(out).metadata["general.file_type"] == file_type
    types = matrix_types(out)
    assert types.most_common(1)[0][0] == main_type, types
    assert summary.verification["top1_agreement"] >= AGREEMENT[quant]
    assert summary.verification["mean_kl"] < KL_BOUNDS[quant]
    assert json.loads(out.with_name(out.name + ".verify.json").read_text())["quantization"] == quant


def test_fewer_bits_make_smaller_files(wide, tmp_path):
    sizes = {q: convert_to_gguf(wide, tmp_path / f"{q}.gguf", quant=q, verify=False).output_bytes for q in GGUF_TYPES}
    assert sizes["q2_k"] < sizes["q3_k_m"] < sizes["q5_k_m"] < sizes["q6_k"]


@pytest.mark.parametrize(("bits", "recipe"), [(3, None), (3, "mixed_3_6")])
def test_mlx_3_bit_and_mixed_3_6_convert_and_verify(tiny, tmp_path, bits, recipe):
    out = tmp_path / "mlx"
    summary = convert_to_mlx(tiny, out, bits=bits, recipe=recipe)
    label = f"mlx-{recipe or bits}"
    assert summary.verification["top1_agreement"] >= AGREEMENT[label]
    assert summary.verification["mean_kl"] < KL_BOUNDS[label]
    quantization = json.loads((out / "config.json").read_text())["quantization"]
    layer_bits = {v["bits"] for v in quantization.values() if isinstance(v, dict)}
    assert layer_bits == ({3, 6} if recipe else {3})  # mixed_3_6: 6 bits for the sensitive layers


def test_the_cli_offers_and_makes_the_new_types(cli_command, tiny, tmp_path):
    help_text = subprocess.run([*cli_command, "convert", "--help"], capture_output=True, text=True).stdout
    assert all(quant in help_text for quant in GGUF_TYPES) and "mixed_3_6" in help_text
    out = tmp_path / "tiny-q3.gguf"
    proc = subprocess.run(
        [*cli_command, "convert", str(tiny), "--to", "gguf", "--quant", "q3_k_m", "-o", str(out)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "verified against" in proc.stderr and read_gguf_header(out).metadata["general.file_type"] == 12
