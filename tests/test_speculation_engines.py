"""Speculation on the real engines: the same tokens with and without it, every control on.

llama.cpp on the 0.5B GGUF (n-gram lookup, and the model drafting for itself), MLX on
a tiny converted model (both kinds, token for token). llama.cpp's multi-token pass
rounds differently from its one-token pass; a divergence is allowed only at a near-tie
of the run without speculation (see ``NEAR_TIE``), and each is printed and counted.
"""

import json
import subprocess
from dataclasses import replace

import numpy as np
import pytest

from benchmarks import speculation
from qwq_edge import InvalidRequestError, load
from qwq_edge.convert import convert_to_gguf, convert_to_mlx
from qwq_edge.convert.synthetic import SyntheticSpec, make_checkpoint
from qwq_edge.engines import open_engine
from qwq_edge.reasoning.formats import THINK
from qwq_edge.services.benchmarking.workloads import workload_prompt
from qwq_edge.services.testdata import fixture_model_path
from qwq_edge.speculation.proposers import DraftModelProposer

#: Real engines on both libraries (the 0.5B GGUF, tiny MLX models).
pytestmark = [pytest.mark.engine, pytest.mark.mlx]

#: Every control on: a budget, a minimum, the loop guard, the language guard in the thinking.
CONTROLS = {
    "reasoning_format": "think",
    "temperature": 0.0,
    "max_thinking_tokens": 100,
    "min_thinking_tokens": 40,
    "max_answer_tokens": 20,
    "loop_guard": True,
    "language": "en",
    "language_in_thinking": True,
}
#: llama.cpp's multi-token pass on the CPU is other arithmetic than its one-token pass (raw
#: llama_cpp calls, every setting tried, benchmarks/results/speculation_rounding.md): the same
#: position's logits differ by up to 0.72 (median 0.34), and the top token flipped where the
#: one-token pass's top-2 gap was up to 0.17. A divergence counts as a near-tie below this gap:
NEAR_TIE = 0.5


@pytest.fixture(scope="module")
def qwen():
    model = load(fixture_model_path(), engine="llama.cpp", context_length=2048)
    yield model
    model.close()


def generated(model, prompt: str, **options) -> tuple[list[int], object]:
    """The tokens after the prompt, and the stats."""
    model.engine.rewind(0)
    stats = model.generate(prompt, **options).stats
    return list(model.engine.cached_tokens[stats.prompt_tokens :]), stats


def top2_gap(model, prompt_tokens: list[int], generated: list[int]) -> float:
    """The gap between the two largest logits after ``generated``, computed as the run without
    speculation computed them: the prompt in one pass, then one token per pass."""
    engine = model.engine
    engine.rewind(0)
    engine.prefill(prompt_tokens)
    for token in generated:
        engine.feed((token,))
        engine.evaluate_pending()
    logits = np.sort(np.array(engine.new_sampler(model.sampling, 0)._logits(engine.logits_index(None))))
    return float(logits[-1] - logits[-2])


#: Each workload's run without speculation, made once for the tests that compare with it.
_PLAIN: dict[str, tuple[list[int], object]] = {}


def plain_run(model, workload: str) -> tuple[list[int], object]:
    if workload not in _PLAIN:
        _PLAIN[workload] = generated(model, workload_prompt(workload), draft="off", **CONTROLS)
    return _PLAIN[workload]


def divergence(model, prompt: str, plain: list[int], spec: list[int]) -> int:
    """0 if the runs agree; 1 if they part at a near-tie (anything else fails)."""
    if plain == spec:
        return 0
    at = next(i for i, (a, b) in enumerate(zip(plain, spec, strict=False)) if a != b)
    prompt_tokens = model.prompts.build(model.prompt_messages(prompt), THINK)
    gap = top2_gap(model, prompt_tokens, plain[:at])
    print(f"divergence at generated token {at}: top-2 gap {gap:.5f}")
    assert gap < NEAR_TIE, f"token {at} differs and is no near-tie (top-2 gap {gap})"
    return 1


@pytest.mark.parametrize("workload", ["edit", "reasoning"])
def test_llama_cpp_ngram_gives_the_controller_the_same_tokens(qwen, workload):
    prompt = workload_prompt(workload)
    plain, plain_stats = plain_run(qwen, workload)
    spec, stats = generated(qwen, prompt, draft="ngram", **CONTROLS)
    diverged = divergence(qwen, prompt, plain, spec)
    print(f"{workload}: {stats.draft_accepted}/{stats.draft_proposed} drafts, {diverged} divergence(s)")
    assert diverged == 0 or workload == "reasoning"  # the edit prompt must agree token for token
    if not diverged:
        # The budget, exactly: 100 tokens, less what the cut took back, the same with and without speculation.
        assert stats.thinking_tokens == plain_stats.thinking_tokens == 100 - plain_stats.budget_cut_tokens
        assert stats.budget_cut == plain_stats.budget_cut
        assert stats.interventions == plain_stats.interventions
    if workload == "edit":
        assert stats.draft_accepted > 30 and stats.tokens_per_pass > 1.5


def test_llama_cpp_draft_model_gives_the_same_tokens(qwen):
    draft, _ = open_engine(fixture_model_path(), "llama.cpp", context_length=2048)
    try:
        prompt = workload_prompt("edit")
        plain, _ = plain_run(qwen, "edit")
        qwen.drafts.proposer = lambda name, history, **_: DraftModelProposer(draft, history, 0.0, 16)
        spec, stats = generated(qwen, prompt, draft="itself", **CONTROLS)
    finally:
        del qwen.drafts.proposer
        draft.close()
    assert divergence(qwen, prompt, plain, spec) == 0
    assert stats.draft == qwen.info.model_name and stats.draft_accepted > 20


def test_a_draft_model_with_another_tokenizer_is_refused(qwen, tmp_path):
    spec = SyntheticSpec(hidden_size=64, intermediate_size=128, num_attention_heads=2, num_key_value_heads=1)
    source = make_checkpoint(tmp_path / "tiny", replace(spec, torch_dtype="float32"))
    convert_to_gguf(source, tmp_path / "tiny.gguf", quant="f32", verify=False)
    with pytest.raises(InvalidRequestError, match="another tokenizer than"):
        qwen.generate("Hi", draft=str(tmp_path / "tiny.gguf"), max_answer_tokens=2)
    with pytest.raises(InvalidRequestError, match="does not exist"):
        qwen.generate("Hi", draft=str(tmp_path / "missing.gguf"), max_answer_tokens=2)


def test_mlx_gives_the_same_greedy_tokens_with_both_kinds_of_draft(tmp_path):
    spec = SyntheticSpec(hidden_size=128, intermediate_size=256, num_attention_heads=2, num_key_value_heads=1)
    source = make_checkpoint(tmp_path / "tiny", replace(spec, torch_dtype="float32"))
    folder = tmp_path / "tiny-mlx"
    convert_to_mlx(source, folder, bits=16, verify=False)
    model = load(folder, engine="mlx", context_length=1024)
    try:
        prompt = "Let me think step by step. " * 6
        options = {**CONTROLS, "language": "off", "min_thinking_tokens": 0}
        plain, _ = generated(model, prompt, draft="off", **options)
        ngram, ngram_stats = generated(model, prompt, draft="ngram", **options)
        generated(model, "Hi", draft=str(folder), max_answer_tokens=2)  # loads it, checks the tokenizer
        engine, _ = model.drafts._loaded[str(folder)]
        model.drafts._loaded[str(folder)] = engine, 0.0  # drafting for itself: make drafting look free
        drafted, draft_stats = generated(model, prompt, draft=str(folder), **options)
    finally:
        model.close()
    assert ngram == plain and drafted == plain
    assert ngram_stats.draft == "ngram" and draft_stats.draft_proposed > 0


def test_run_with_draft_ngram_reports_the_drafts_in_json(cli_command, gguf_path):
    proc = subprocess.run(
        [*cli_command, "run", "-m", str(gguf_path), "--temperature", "0", "--ctx", "2048", "--json",
         "--reasoning-format", "none", "--max-answer-tokens", "60", "--draft", "ngram", workload_prompt("edit")],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["draft"] == "ngram" and data["draft_proposed"] >= data["draft_accepted"] > 0
    assert data["tokens_per_pass"] > 1 and 0 < data["draft_acceptance_rate"] <= 1


def test_the_speculation_benchmark_quick_mode(tmp_path):
    data = speculation.main(["--quick", "--workloads", "edit", "--out", str(tmp_path)])
    edit = data["workloads"]["edit"]
    assert edit["identical_with_and_without_speculation"] and edit["decode_tokens_per_s"]["raw"] > 0
    assert "llama-server" in (tmp_path / "speculation_quick.md").read_text()


def test_an_mlx_pool_drafts_for_a_generation_alone_with_the_same_text(tmp_path):
    """Alone in an MLX pool, a generation's drafts are verified in multi-row passes of its
    row (every control on): the text is the one without drafts, and drafts were accepted
    (the model drafts for itself, its cost made to look free so that it drafts)."""
    spec = SyntheticSpec(hidden_size=128, intermediate_size=256, num_attention_heads=2, num_key_value_heads=1)
    source = make_checkpoint(tmp_path / "tiny", replace(spec, torch_dtype="float32"))
    folder = tmp_path / "tiny-mlx"
    convert_to_mlx(source, folder, bits=16, verify=False)
    prompt, options = "Let me think step by step. " * 6, {**CONTROLS, "language": "off", "min_thinking_tokens": 0}
    with load(folder, engine="mlx", context_length=1024, parallel=2) as pooled:
        plain = pooled.generate(prompt, draft="off", **options)
        pooled.generate("Hi", draft=str(folder), max_answer_tokens=2)  # loads the draft model
        engine, _ = pooled.drafts._loaded[str(folder)]
        pooled.drafts._loaded[str(folder)] = engine, 0.0
        drafted = pooled.generate(prompt, draft=str(folder), **options)
    assert drafted.thinking == plain.thinking and drafted.answer == plain.answer
    assert drafted.stats.draft_accepted > 0
