"""Qwen3 (dense and MoE) and its hybrid thinking, on tiny random Qwen3 checkpoints made here.

The converters and the numpy reference on Qwen3's architecture (explicit head size, an RMSNorm
on each query and key head, no attention bias; MoE: stacked experts) with the same bounds as
Qwen2; the converted GGUF on llama.cpp and the MLX folder on mlx-lm under every control; and the
no-think prompt compared token for token with Qwen3's own template rendered by Jinja and
tokenized by ``tokenizers``.
"""

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment
from mlx_lm import load as mlx_load
from test_convert import KL_BOUNDS, MIXED_TEXT, greedy_llama_cpp, greedy_reference
from tokenizers import Tokenizer

from qwq_edge import GenerationOptions, Intervention, load
from qwq_edge.architecture.qwen import QwenConfig
from qwq_edge.catalog.planner import model_shape
from qwq_edge.convert import convert_to_gguf, convert_to_hf, convert_to_mlx
from qwq_edge.convert.checkpoint import Checkpoint
from qwq_edge.convert.safetensors_io import PlannedTensor, SafetensorsWriter
from qwq_edge.convert.synthetic import SyntheticSpec, make_checkpoint, qwen3_chat_template
from qwq_edge.engines.gguf_file import read_gguf_header
from qwq_edge.engines.registry import spec_for_path
from qwq_edge.errors import ConversionError
from qwq_edge.reasoning.controller import ANSWER_NOW_REACH
from qwq_edge.reasoning.effort import EFFORTS
from qwq_edge.reasoning.formats import HYBRID
from qwq_edge.services.testdata import fixture_tokenizer_json

ENGINES = ("llama.cpp", "mlx")
PROMPT = "Let me think step by step about numbers."
#: A Qwen3 whose head size (32) is not hidden ÷ heads (16), as in Qwen3-0.6B (128, not 64).
TINY_QWEN3 = SyntheticSpec(architecture="qwen3", head_dim=32)
#: For the engines: wider, float32 (both engines then agree), named so the catalog's Qwen3-0.6B family applies.
ENGINE_QWEN3 = SyntheticSpec(128, 256, 2, 4, 2, torch_dtype="float32", architecture="qwen3", head_dim=64)
#: Qwen3 MoE: 4 experts, 2 per token; float32, since MLX's CPU backend multiplies experts in float32 only.
TINY_MOE = SyntheticSpec(architecture="qwen3_moe", head_dim=32, torch_dtype="float32")
#: Qwen's ids for <think>, "\n\n" and </think>: the end of the template's no-think block.
THINK_ID, BLANK_LINE_ID, END_THINK_ID, NEWLINE_ID = 151667, 271, 151668, 198


@pytest.fixture(scope="module")
def tiny3(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("qwen3") / "tiny-qwen3", TINY_QWEN3)


@pytest.fixture(scope="module")
def qwen3_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("qwen3-engines")
    return for_both_engines(make_checkpoint(root / "qwen3-0.6b-random", ENGINE_QWEN3), "f32")


def for_both_engines(source: Path, quant: str) -> dict[str, Path]:
    """``source`` and, unverified, its GGUF (``quant``) and its full-precision MLX folder, by engine."""
    paths = {"source": source, "llama.cpp": source.with_name(f"{source.name}.gguf")}
    paths["mlx"] = source.with_name(f"{source.name}-mlx")
    convert_to_gguf(source, paths["llama.cpp"], quant=quant, verify=False)
    convert_to_mlx(source, paths["mlx"], bits=16, verify=False)
    return paths


@pytest.fixture(scope="module", params=ENGINES)
def qwen3(request, qwen3_models):
    """The engines' Qwen3 loaded on each engine."""
    with load(qwen3_models[request.param], engine=request.param, context_length=512) as model:
        yield model


# -- the architecture and the converters ------------------------------------------------------


def test_a_qwen3_config_as_transformers_writes_it_is_read(tmp_path):
    """transformers 5 nests rope_theta in rope_parameters and names MoE's experts num_local_experts."""
    from transformers import Qwen3Config, Qwen3MoeConfig

    sizes = {"vocab_size": 1024, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2}
    heads = {"num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32}
    dense = QwenConfig.from_dict(Qwen3Config(**sizes, **heads, rope_theta=1e6).to_dict(), "transformers")
    assert (dense.model_type, dense.head_dim, dense.rope_theta, dense.attention_bias) == ("qwen3", 32, 1e6, False)
    assert dense.parameter_count == Checkpoint(make_checkpoint(tmp_path / "same", TINY_QWEN3)).parameter_count
    moe = QwenConfig.from_dict(
        Qwen3MoeConfig(**sizes, **heads, num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32).to_dict(),
        "transformers",
    )
    assert moe.experts is not None and (moe.experts.count, moe.experts.per_token) == (8, 2)
    assert moe.sparse(0) and moe.sparse(1)


@pytest.mark.parametrize("target", ["f16", "q8_0", "q4_k_m", "mlx-16", "mlx-4"])
def test_qwen3_converts_and_verifies_within_qwen2_s_bounds(tiny3, tmp_path, target):
    if target.startswith("mlx"):
        out = tmp_path / "mlx"
        summary = convert_to_mlx(tiny3, out, bits=int(target.split("-")[1]))
        config = json.loads((out / "config.json").read_text())
        assert config["model_type"] == "qwen3" and config["head_dim"] == 32
        model, tokenizer = mlx_load(str(out))
        assert model.model.layers[0].self_attn.q_norm.weight.shape == (32,)
        assert model(mx.array([tokenizer.encode("Hello")])).shape[-1] == 1024
    else:
        out = tmp_path / f"tiny-{target}.gguf"
        summary = convert_to_gguf(tiny3, out, quant=target)
        header = read_gguf_header(out).metadata
        assert header["general.architecture"] == "qwen3" and header["qwen3.attention.key_length"] == 32
        import llama_cpp

        llama = llama_cpp.Llama(str(out), n_ctx=128, verbose=False)
        expected = Tokenizer.from_file(str(tiny3 / "tokenizer.json")).encode(MIXED_TEXT).ids
        assert llama.tokenize(MIXED_TEXT.encode(), add_bos=False, special=True) == expected
        llama.close()
    assert summary.verification["mean_kl"] < KL_BOUNDS[target]


def test_qwen3_gguf_tensors_are_llama_cpp_s_names(tiny3, tmp_path):
    import gguf

    out = tmp_path / "tiny.gguf"
    convert_to_gguf(tiny3, out, quant="f16", verify=False)
    names = {tensor.name: tuple(int(d) for d in tensor.shape) for tensor in gguf.GGUFReader(out).tensors}
    assert names["blk.0.attn_q_norm.weight"] == (32,) and names["blk.1.attn_k_norm.weight"] == (32,)
    assert names["blk.0.attn_q.weight"] == (64, 4 * 32)  # GGUF lists the input dimension first
    assert not [name for name in names if name.endswith(".bias")]


def test_f16_qwen3_gguf_greedy_tokens_equal_the_numpy_reference(tiny3, tmp_path):
    out = tmp_path / "tiny-f16.gguf"
    convert_to_gguf(tiny3, out, quant="f16", verify=False)
    prompt = Tokenizer.from_file(str(tiny3 / "tokenizer.json")).encode("Let me think step by step").ids
    assert greedy_llama_cpp(out, prompt, 32) == greedy_reference(Checkpoint(tiny3), prompt, 32)


def test_qwen3_gguf_to_hf_keeps_every_weight(tiny3, tmp_path):
    """bf16 weights → BF16 GGUF → float32 checkpoint: every value comes back exactly, head size included."""
    gguf_file = tmp_path / "tiny-bf16.gguf"
    convert_to_gguf(tiny3, gguf_file, quant="bf16", verify=False)
    back = tmp_path / "back"
    summary = convert_to_hf(gguf_file, back, dtype="float32")
    assert summary.verification["top1_agreement"] > 0.95
    original, restored = Checkpoint(tiny3), Checkpoint(back)
    assert restored.config.model_type == "qwen3" and restored.config.head_dim == 32
    for name in original.names:
        assert np.array_equal(original.float32(name), restored.float32(name)), name


# -- Qwen3 MoE ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moe(tmp_path_factory) -> dict[str, Path]:
    """A tiny Qwen3 MoE converted by qwq-edge (verified against the numpy reference) to a GGUF and
    an MLX folder, each at full precision and at 4 bits."""
    root = tmp_path_factory.mktemp("moe")
    source = make_checkpoint(root / "tiny-moe", TINY_MOE)
    paths = {"source": source}
    for name, convert in (
        ("f16", lambda out: convert_to_gguf(source, out, quant="f16")),
        ("q4_k_m", lambda out: convert_to_gguf(source, out, quant="q4_k_m")),
        ("mlx-16", lambda out: convert_to_mlx(source, out, bits=16)),
        ("mlx-4", lambda out: convert_to_mlx(source, out, bits=4)),
    ):
        paths[name] = root / (name if name.startswith("mlx") else f"tiny-moe-{name}.gguf")
        summary = convert(paths[name])
        assert summary.verification["mean_kl"] < KL_BOUNDS[name], name
    return paths


def test_qwen3_moe_converts_with_its_experts_stacked(moe):
    header = read_gguf_header(moe["f16"]).metadata
    assert header["general.architecture"] == "qwen3moe"
    assert (header["qwen3moe.expert_count"], header["qwen3moe.expert_used_count"]) == (4, 2)
    config = json.loads((moe["mlx-4"] / "config.json").read_text())
    assert config["quantization"]["model.layers.0.mlp.gate"]["bits"] == 8  # the router, as mlx-lm quantizes it
    assert config["quantization"]["model.layers.0.mlp.switch_mlp.up_proj"]["bits"] == 4
    for converted in (moe["q4_k_m"], moe["mlx-4"]):  # the KV cache's size comes from the explicit head size
        shape = model_shape(converted)
        assert (shape.layers, shape.kv_heads, shape.head_dim) == (2, 2, 32)
        assert shape.kv_bytes_per_token() == 2 * 2 * 32 * 2 * 2


@pytest.mark.parametrize("name", ["f16", "q4_k_m", "mlx-16", "mlx-4"])
def test_qwen3_moe_runs_on_its_engine_with_a_budget_and_thinking_off(moe, name):
    with load(moe[name], engine="mlx" if name.startswith("mlx") else "llama.cpp", context_length=512) as model:
        assert model.reasoning_format is HYBRID
        assert spec_for_path(moe[name]).facts(moe[name]).parameters == Checkpoint(moe["source"]).parameter_count
        budget = model.generate(PROMPT, max_thinking_tokens=6, max_answer_tokens=4, temperature=0)
        assert budget.stats.thinking_closed_by == "budget" and budget.stats.thinking_tokens <= 6
        off = model.generate(PROMPT, think=False, max_answer_tokens=4, temperature=0)
        assert off.stats.thinking_tokens == off.stats.forced_tokens == 0 and off.stats.answer_tokens == 4


def test_qwen3_moe_gguf_back_to_hf_unstacks_every_expert(moe, tmp_path):
    f32 = tmp_path / "moe-f32.gguf"
    convert_to_gguf(moe["source"], f32, quant="f32", verify=False)
    back = Checkpoint(Path(convert_to_hf(f32, tmp_path / "back", dtype="float32").output))
    original = Checkpoint(moe["source"])
    assert back.config.experts == original.config.experts and sorted(back.names) == sorted(original.names)
    for name in original.names:
        assert np.array_equal(original.float32(name), back.float32(name)), name


def test_a_moe_llama_cpp_cannot_express_is_refused_in_one_line(tmp_path):
    source = make_checkpoint(tmp_path / "dense-first", TINY_MOE)
    config = json.loads((source / "config.json").read_text())
    (source / "config.json").write_text(json.dumps({**config, "mlp_only_layers": [0]}))
    make_dense_layer(source)
    assert not Checkpoint(source).config.sparse(0) and Checkpoint(source).config.sparse(1)
    with pytest.raises(ConversionError, match=r"llama\.cpp's qwen3moe needs experts in every layer") as error:
        convert_to_gguf(source, tmp_path / "out.gguf", quant="f16")
    assert "\n" not in str(error.value) and not (tmp_path / "out.gguf").exists()


def make_dense_layer(folder: Path) -> None:
    """Rewrite ``folder``'s weights for its config (layer 0 dense): the tensors it now names."""
    from qwq_edge.architecture.qwen import tensor_shapes

    shapes = tensor_shapes(QwenConfig.from_dict(json.loads((folder / "config.json").read_text()), "test"))
    plan = [PlannedTensor(name, "F32", shape) for name, shape in shapes.items()]
    writer = SafetensorsWriter(folder / "model.safetensors", plan)
    rng = np.random.default_rng(0)
    for tensor in plan:
        writer.write(tensor.name, rng.standard_normal(tensor.shape, dtype=np.float32) * 0.1)
    writer.close()


# -- hybrid thinking: the prompt ------------------------------------------------------------------


@pytest.fixture(scope="module")
def qwen_vocab_models(tmp_path_factory) -> dict[str, Path]:
    """A random Qwen3 with Qwen's own tokenizer (the fixture's, plus Qwen3's four added tokens)
    and the config.json transformers' Qwen3Config writes (rope_theta inside rope_parameters)."""
    from transformers import Qwen3Config

    root = tmp_path_factory.mktemp("qwen-vocab")
    spec = SyntheticSpec(64, 128, 2, 4, 2, 151_936, 0, False, "float16", architecture="qwen3", head_dim=32)
    source = make_checkpoint(root / "qwen3-vocab", spec, tokenizer_json=fixture_tokenizer_json())
    ours = json.loads((source / "config.json").read_text())
    sizes = {key: ours[key] for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers")}
    heads = {key: ours[key] for key in ("num_attention_heads", "num_key_value_heads", "head_dim")}
    ids = {key: ours[key] for key in ("bos_token_id", "eos_token_id", "max_position_embeddings")}
    config = Qwen3Config(**sizes, **heads, **ids, rope_theta=1e6, dtype="float16").to_dict()
    assert "rope_theta" not in config
    (source / "config.json").write_text(json.dumps({**config, "architectures": ["Qwen3ForCausalLM"]}))
    return for_both_engines(source, "f16")


CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "4"},
    {"role": "user", "content": "And 3+3?"},
]


def template_tokens(source: Path, messages: list[dict], **variables) -> list[int]:
    """Qwen3's own template rendered by Jinja (as transformers renders it) and tokenized by ``tokenizers``."""
    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    text = environment.from_string(qwen3_chat_template()).render(
        messages=messages, add_generation_prompt=True, **variables
    )
    return Tokenizer.from_file(str(source / "tokenizer.json")).encode(text).ids


@pytest.mark.parametrize("engine", ENGINES)
def test_the_no_think_prompt_is_the_qwen3_template_s_own_token_for_token(qwen_vocab_models, engine):
    source = qwen_vocab_models["source"]
    with load(qwen_vocab_models[engine], engine=engine, context_length=512) as model:
        assert model.reasoning_format is HYBRID
        off = model.prompt_tokens(CONVERSATION, think=False)
        assert off == template_tokens(source, CONVERSATION, enable_thinking=False)
        assert off[-4:] == [THINK_ID, BLANK_LINE_ID, END_THINK_ID, BLANK_LINE_ID]
        soft = [*CONVERSATION[:-1], {"role": "user", "content": "And 3+3? /no_think"}]
        assert model.prompt_tokens(soft) == template_tokens(source, soft, enable_thinking=False)
        on = model.prompt_tokens(CONVERSATION)  # the template's thinking form, with the thinking opened
        assert on == [*template_tokens(source, CONVERSATION, enable_thinking=True), THINK_ID, NEWLINE_ID]


# -- hybrid thinking: every control on each engine -------------------------------------------------


def test_thinking_off_starts_in_the_answer_with_nothing_forced_on_each_engine(qwen3):
    result = qwen3.generate(PROMPT, think=False, max_answer_tokens=4, temperature=0)
    stats = result.stats
    assert stats.thinking_tokens == stats.forced_tokens == 0 and stats.thinking_closed_by == "skipped"
    assert stats.answer_tokens == 4 and result.thinking == ""
    block = qwen3.engine.tokenize("<think>\n\n</think>\n\n", special=True)
    assert qwen3.engine.cached_tokens[: stats.prompt_tokens][-len(block) :] == block


def test_answer_now_closes_the_thinking_on_each_engine(qwen3):
    """Mid-thought, through the Python API: the thinking closes within the reach (a random model
    writes no sentence ends), the wrap-up is written, and the answer follows; the minimum gives way."""
    stream = qwen3.stream(PROMPT, min_thinking_tokens=300, max_answer_tokens=3, temperature=1.0, seed=5)
    said = None
    for event in stream:
        if said is None and getattr(event, "thinking_tokens", 0) >= 4:
            said = stream.answer_now()
        result = getattr(event, "result", None)
    stats = result.stats
    assert (
        said is True
        and stats.thinking_closed_by == "answer-now"
        and stats.thinking_tokens < 4 + 2 * ANSWER_NOW_REACH + 2
    )
    assert [span["kind"] for span in stats.forced_spans] == ["answer-now"] and stats.answer_tokens >= 1
    assert stream.answer_now() is False


def test_soft_switches_on_each_engine(qwen3):
    def closed_by(messages, **options):
        result = qwen3.generate(messages, max_thinking_tokens=4, max_answer_tokens=2, temperature=0, **options)
        return result.stats.thinking_closed_by

    assert closed_by([{"role": "user", "content": f"{PROMPT} /no_think"}]) == "skipped"
    turned_back_on = [{"role": "system", "content": "/no_think"}, {"role": "user", "content": f"/think {PROMPT}"}]
    assert closed_by(turned_back_on) == "budget"
    assert closed_by([{"role": "user", "content": f"/think {PROMPT}"}], think=False) == "skipped"


def test_an_answer_follows_when_the_context_runs_out_on_each_engine(qwen3_models, qwen3):
    engine = qwen3.info.engine
    context = len(qwen3.prompt_tokens(PROMPT)) + len(qwen3.controllers.control_tokens(HYBRID).close) + 40
    with load(qwen3_models[engine], engine=engine, context_length=context) as small:
        result = small.generate(PROMPT, temperature=0)
        assert result.stats.thinking_closed_by == "context-close" and result.stats.answer_tokens > 0
        assert result.stats.prompt_tokens + result.stats.generated_tokens <= context


@pytest.mark.parametrize("budget", [0, 8])
def test_a_budget_closes_the_thinking_on_each_engine(qwen3, budget):
    events = list(qwen3.stream(PROMPT, max_thinking_tokens=budget, max_answer_tokens=4, temperature=0))
    stats = events[-1].result.stats
    assert stats.thinking_closed_by == "budget" and stats.thinking_tokens <= budget and stats.answer_tokens == 4
    assert [e.kind for e in events if isinstance(e, Intervention)] == ["budget"]


def test_effort_and_language_on_each_engine(qwen3):
    assert qwen3.family.key == "qwen3-0.6b"  # the catalog's budgets for Qwen3
    levels = {level: GenerationOptions(effort=level).thinking_limits(qwen3.family.effort) for level in EFFORTS}
    assert [levels[level].max_thinking_tokens for level in EFFORTS] == [128, 1024, 4096, 16384, None]
    result = qwen3.generate(
        PROMPT, effort="high", max_thinking_tokens=12, max_answer_tokens=8, language="en", temperature=1.0, seed=3
    )
    assert result.stats.thinking_closed_by == "budget" and result.stats.thinking_tokens <= 12
    assert result.stats.language_masked_steps == result.stats.answer_tokens
    answer_tokens = qwen3.engine.cached_tokens[-result.stats.answer_tokens :]
    assert not set(answer_tokens) & qwen3.controllers.language_ban("en")


def test_each_mode_samples_with_its_card_s_defaults(qwen3):
    thinking, answering = qwen3.default_sampling(HYBRID), qwen3.default_sampling(HYBRID, think=False)
    assert (thinking.temperature, thinking.top_p, thinking.top_k) == (0.6, 0.95, 20)
    assert (answering.temperature, answering.top_p, answering.top_k) == (0.7, 0.8, 20)


@pytest.fixture(scope="module")
def eager(qwen3_models, tmp_path_factory) -> dict[str, Path]:
    """The engines' Qwen3 made to close its thinking early: every embedding gets a constant
    component and ``</think>``'s output row reads it, so ``</think>`` is likely at every step."""
    root = tmp_path_factory.mktemp("eager")
    source = qwen3_models["source"]
    close = Tokenizer.from_file(str(source / "tokenizer.json")).token_to_id("</think>")
    folder = root / "qwen3-0.6b-eager"
    folder.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        (folder / name).write_bytes((source / name).read_bytes())
    checkpoint = Checkpoint(source)
    writer = SafetensorsWriter(
        folder / "model.safetensors", [PlannedTensor(n, "F32", checkpoint.shape(n)) for n in checkpoint.names]
    )
    for name in checkpoint.names:
        values = checkpoint.float32(name).copy()
        if name == "model.embed_tokens.weight":
            values[:, 0] += 20.0
        elif name == "lm_head.weight":
            values[close, 0] += 1.5  # measured: its first token closes; held, it thinks 32 to 225 tokens
        writer.write(name, values)
    writer.close()
    return for_both_engines(folder, "f32")


@pytest.mark.parametrize("engine", ENGINES)
def test_a_minimum_turns_an_early_close_into_wait_on_each_engine(eager, engine):
    """Qwen3's own template on both engines: the model's early close becomes "Wait,"; the
    minimum goes on only while each Wait brings new text (a random model soon writes none)."""
    with load(eager[engine], engine=engine, context_length=512) as model:
        sampled = {"max_answer_tokens": 2, "temperature": 1.0, "seed": 11}
        alone = model.generate(PROMPT, **sampled)
        assert alone.stats.thinking_closed_by == "model" and alone.stats.thinking_tokens < 24
        held = model.generate(PROMPT, min_thinking_tokens=24, **sampled)
        assert held.stats.wait_extensions >= 1 and "Wait," in held.thinking
        assert held.stats.thinking_closed_by == "model" and "</think>" not in held.thinking


#: The sentence the looping model writes again and again.
LOOP_SENTENCE = "Let me check this answer again.\n"


@pytest.fixture(scope="module")
def looping(qwen3_models, tmp_path_factory) -> dict[str, Path]:
    """The engines' Qwen3 made to repeat one sentence: its layers write nothing to the residual
    (``o_proj`` and ``down_proj`` zeroed), so the last hidden state is the current token's
    embedding, and each of the sentence's tokens' output row is its predecessor's embedding (as the
    final norm scales it), so greedy decoding cycles through the sentence from the prompt's "\\n"."""
    root = tmp_path_factory.mktemp("looping")
    source = qwen3_models["source"]
    ids = Tokenizer.from_file(str(source / "tokenizer.json")).encode(LOOP_SENTENCE).ids
    successors = dict(zip([NEWLINE_ID, *ids[:-1]], ids, strict=True)) | {ids[-1]: ids[0]}
    checkpoint = Checkpoint(source)
    values = {name: checkpoint.float32(name).copy() for name in checkpoint.names}
    for name in values:
        if name.endswith(("o_proj.weight", "down_proj.weight")):
            values[name][:] = 0.0
    embeddings, final_norm = values["model.embed_tokens.weight"], values["model.norm.weight"]
    for token, successor in successors.items():
        direction = embeddings[token] * final_norm
        values["lm_head.weight"][successor] = 50.0 * direction / np.linalg.norm(direction)
    folder = root / "qwen3-0.6b-looping"
    folder.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        (folder / name).write_bytes((source / name).read_bytes())
    writer = SafetensorsWriter(
        folder / "model.safetensors", [PlannedTensor(n, "F32", checkpoint.shape(n)) for n in checkpoint.names]
    )
    for name in checkpoint.names:
        writer.write(name, values[name])
    writer.close()
    return for_both_engines(folder, "f32")


@pytest.mark.parametrize("engine", ENGINES)
def test_the_loop_breaker_steers_then_closes_a_looping_thought_on_each_engine(looping, engine):
    with load(looping[engine], engine=engine, context_length=512) as model:
        greedy = {"max_thinking_tokens": 200, "max_answer_tokens": 1, "temperature": 0}
        unguarded = model.generate(PROMPT, loop_guard=False, **greedy)
        assert unguarded.thinking.startswith(LOOP_SENTENCE * 16) and unguarded.stats.thinking_closed_by == "budget"
        guarded = model.generate(PROMPT, **greedy)
        stats = guarded.stats
        assert stats.thinking_closed_by == "loop-close" and stats.loop_interventions == 2
        assert [span["kind"] for span in stats.forced_spans] == ["loop-nudge", "loop-close"]
        assert guarded.thinking.count(LOOP_SENTENCE) <= 6
