"""Thinking budgets on the real 0.5B model, which is not a reasoning model and does not cooperate."""

import pytest
from conftest import GREEDY, LONG_THINKING_PROMPT

from qwq_edge import AnswerDelta, Done, Intervention, ThinkingDelta, load
from qwq_edge.reasoning.formats import QWQ_PREVIEW, THINK


def run(model, prompt, **options):
    events = list(model.stream(prompt, **{**GREEDY, **options}))
    assert isinstance(events[-1], Done)
    return events, events[-1].result


@pytest.mark.parametrize("budget", [0, 1, 16, 120])
@pytest.mark.parametrize("fmt", [THINK, QWQ_PREVIEW], ids=lambda f: f.name)
def test_budget_holds_and_an_answer_follows(model, budget, fmt):
    events, result = run(
        model, LONG_THINKING_PROMPT, reasoning_format=fmt.name, max_thinking_tokens=budget, max_answer_tokens=24
    )
    stats = result.stats
    assert stats.thinking_tokens <= budget
    assert stats.thinking_closed_by == "budget"
    assert stats.interventions == {"budget": 1}
    control = model.controllers.control_tokens(fmt)
    close = control.skip if stats.thinking_tokens == 0 else control.close  # nothing kept: nothing to wrap up
    assert stats.forced_text == [model.engine.llama.detokenize(close).decode()]
    assert stats.forced_tokens == len(close)
    assert stats.budget_cut != "none" and stats.thinking_tokens + stats.budget_cut_tokens == budget
    assert result.answer.strip(), "an answer is always produced"
    assert 0 < stats.answer_tokens <= 24
    assert fmt.close_marker not in result.thinking
    interventions = [e for e in events if isinstance(e, Intervention)]
    assert [e.kind for e in interventions] == ["budget"]
    # Event order: thinking, then the intervention, then only answer text.
    kinds = [type(e) for e in events]
    assert kinds.index(Intervention) < kinds.index(AnswerDelta)
    assert ThinkingDelta not in kinds[kinds.index(AnswerDelta) :]
    assert stats.finish_reason in ("budget", "length")


def test_the_budget_counts_only_sampled_thinking_tokens(model):
    events, result = run(
        model, LONG_THINKING_PROMPT, reasoning_format="think", max_thinking_tokens=16, max_answer_tokens=4
    )
    counts = [e.thinking_tokens for e in events if isinstance(e, ThinkingDelta)]
    assert counts == sorted(counts)
    assert 16 - 8 <= result.stats.thinking_tokens <= 16, "a cut at a word end takes back at most 8 tokens"
    assert "".join(e.text for e in events if isinstance(e, ThinkingDelta)) == result.thinking


def test_stopping_while_thinking_forces_the_close_and_the_model_answers(model):
    _, result = run(model, "Say hello.", reasoning_format="think", max_answer_tokens=24)
    assert result.stats.thinking_closed_by == "eos-close"
    assert result.stats.interventions == {"eos-close": 1}
    assert result.thinking.strip() and result.answer.strip()


def test_max_answer_tokens_bounds_the_answer_separately(model):
    _, result = run(model, LONG_THINKING_PROMPT, reasoning_format="think", max_thinking_tokens=8, max_answer_tokens=5)
    assert result.stats.thinking_tokens <= 8
    assert result.stats.answer_tokens == 5
    assert result.stats.finish_reason == "length"


def test_thinking_off_skips_straight_to_the_answer(model):
    _, result = run(model, "What is 2+2?", reasoning_format="think", think=False, max_answer_tokens=16)
    assert result.thinking == "" and result.stats.thinking_tokens == 0
    assert result.stats.thinking_closed_by == "skipped"
    assert result.answer.strip()


def test_a_model_without_a_reasoning_format_only_answers(model):
    _, result = run(model, "What is 2+2?", reasoning_format="none", max_answer_tokens=16)
    assert result.thinking == "" and result.answer.strip()
    assert result.stats.thinking_closed_by == "none"


def test_thinking_is_closed_before_the_context_runs_out(gguf_path):
    with load(gguf_path, context_length=160) as small:
        _, result = run(small, LONG_THINKING_PROMPT, reasoning_format="think")
    assert result.stats.thinking_closed_by == "context-close"
    assert result.answer.strip()
    assert result.stats.prompt_tokens + result.stats.generated_tokens <= 160
