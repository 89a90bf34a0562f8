"""The memory planner: hand-computed figures for QwQ-32B, and the real model files on this machine."""

import json

import pytest

from qwq_edge import load
from qwq_edge.architecture.shape import ModelShape, shape_from_config
from qwq_edge.catalog.planner import MIN_AUTO_CONTEXT, largest_context, memory_budget, model_shape, plan_memory
from qwq_edge.errors import InsufficientMemoryError

GiB = 2**30
#: QwQ-32B-Preview's config.json numbers (../shared/MODELS.md), and its MLX 4-bit size.
QWQ_PREVIEW_CONFIG = {
    "architectures": ["Qwen2ForCausalLM"],
    "hidden_size": 5120,
    "intermediate_size": 27648,
    "num_hidden_layers": 64,
    "num_attention_heads": 40,
    "num_key_value_heads": 8,
    "max_position_embeddings": 32768,
    "vocab_size": 152064,
}
QWQ_MLX_4BIT = shape_from_config("QwQ-32B-Preview", QWQ_PREVIEW_CONFIG, int(18.4e9))
MAC_32GB = int(32 * GiB * 0.75)  # Metal's working-set limit on a 32 GB Mac


def test_kv_cache_per_token_for_qwq_32b():
    assert QWQ_MLX_4BIT.head_dim == 128
    assert QWQ_MLX_4BIT.kv_bytes_per_token("f16") == 256 * 1024  # 64 × 8 × 128 × 2 × 2 bytes
    assert QWQ_MLX_4BIT.kv_bytes_per_token("f16") * 32768 == 8 * GiB
    assert QWQ_MLX_4BIT.kv_bytes_per_token("q8_0") == pytest.approx(256 * 1024 * 8.5 / 16)


def test_qwq_32b_4bit_with_32k_context_fits_a_32gb_mac_with_an_8bit_kv_cache():
    plan = plan_memory(QWQ_MLX_4BIT, MAC_32GB)
    assert (plan.context, plan.kv_cache, plan.fits) == (32768, "q8_0", True)
    assert plan.kv_bytes == int(8 * GiB * 8.5 / 16)
    with pytest.raises(InsufficientMemoryError) as refused:
        plan_memory(QWQ_MLX_4BIT, MAC_32GB, context=32768, kv_cache="f16")
    message = str(refused.value)
    assert "--kv-cache q8_0" in message and "--ctx" in message and "8.6 GB f16 KV cache" in message


def test_auto_shrinks_the_context_when_nothing_else_fits():
    plan = plan_memory(QWQ_MLX_4BIT, int(21 * GiB))
    assert plan.kv_cache == "q8_0" and MIN_AUTO_CONTEXT <= plan.context < 32768 and plan.fits
    assert plan.context == largest_context(QWQ_MLX_4BIT, "q8_0", int(21 * GiB))
    with pytest.raises(InsufficientMemoryError, match="does not fit"):
        plan_memory(QWQ_MLX_4BIT, int(16 * GiB))


def test_the_planner_reads_real_files(gguf_path, tmp_path):
    shape = model_shape(gguf_path)
    assert (shape.layers, shape.kv_heads, shape.head_dim, shape.trained_context) == (24, 2, 64, 32768)
    assert shape.kv_bytes_per_token("f16") == 24 * 2 * 64 * 2 * 2
    folder = tmp_path / "qwq-config-only"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(QWQ_PREVIEW_CONFIG))
    # no weights, but the config gives the weights a prompt token multiplies (all but 2 × 152064 × 5120)
    rows = 64 * (5120 + 2 * 1024 + 5120 + 2 * 27648 + 5120) + 152064  # every matrix's outputs, then the vocabulary
    expected = ModelShape("qwq-config-only", 64, 8, 128, 0, 32768, matmul_parameters=31_206_740_992, output_rows=rows)
    assert model_shape(folder) == expected


def test_load_plans_before_loading(gguf_path):
    with pytest.raises(InsufficientMemoryError, match="it fits with --ctx"):
        load(gguf_path, context_length=50_000_000)
    with load(gguf_path, context_length=1024, kv_cache="q8_0") as model:
        assert model.memory_plan.kv_cache == "q8_0" and model.info.context_length == 1024
    assert memory_budget() > 0
