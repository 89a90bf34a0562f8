"""Reasoning controls beyond a budget, on the real 0.5B model (which does not cooperate)."""

import re

import pytest
from conftest import GREEDY

from qwq_edge import Done, Intervention
from qwq_edge.reasoning.texts import TEXTS

CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef\u3000-\u303f]")
LATIN_WORD = re.compile(r"[A-Za-z]{3,}")


def run(model, prompt, **options):
    events = list(model.stream(prompt, **{**GREEDY, **options}))
    assert isinstance(events[-1], Done)
    return events, events[-1].result


@pytest.mark.parametrize("fmt", ["think", "qwq-preview"])
def test_minimum_thinking_holds_past_what_the_model_would_think(model, fmt):
    _, alone = run(model, "What is 2+2?", reasoning_format=fmt, max_answer_tokens=8)
    assert alone.stats.thinking_tokens < 60
    events, result = run(model, "What is 2+2?", reasoning_format=fmt, min_thinking_tokens=60, max_answer_tokens=8)
    assert result.stats.thinking_tokens >= 60
    assert result.stats.wait_extensions >= 1
    assert "Wait," in result.thinking
    assert [e.kind for e in events if isinstance(e, Intervention)].count("wait") == result.stats.wait_extensions
    assert result.answer.strip()


def test_an_early_text_marker_is_taken_back(model):
    """In the qwq-preview format this prompt makes the model write **Final Answer** at once."""
    prompt = "Reply with a heading '**Final Answer**' and then the number 42. Nothing else."
    _, alone = run(model, prompt, reasoning_format="qwq-preview", max_answer_tokens=8)
    assert alone.stats.thinking_closed_by == "model" and alone.stats.thinking_tokens < 30
    _, result = run(model, prompt, reasoning_format="qwq-preview", min_thinking_tokens=30, max_answer_tokens=8)
    assert result.stats.wait_extensions >= 1 and "**Final Answer**" not in result.thinking
    # The minimum holds while each Wait brings new thinking; it ends at one answered with a repeat.
    spans, thinking = result.stats.forced_spans, result.thinking
    last_wait = max(i for i, span in enumerate(spans) if span["kind"] == "wait")
    end = spans[last_wait + 1]["start"] if last_wait + 1 < len(spans) else len(thinking)
    after = " ".join(thinking[spans[last_wait]["end"] : end].lower().split())
    repeated = after in " ".join(thinking[: spans[last_wait]["start"]].lower().split())
    assert result.stats.thinking_tokens >= 30 or repeated, thinking


def test_budget_and_minimum_together(model):
    _, result = run(
        model,
        "What is 2+2?",
        reasoning_format="think",
        min_thinking_tokens=40,
        max_thinking_tokens=50,
        max_answer_tokens=4,
    )
    assert 40 <= result.stats.thinking_tokens <= 50


def test_effort_presets_set_the_budget(model):
    _, result = run(
        model, "List the numbers 1 to 500.", reasoning_format="think", effort="high", max_thinking_tokens=24
    )
    assert 16 <= result.stats.thinking_tokens <= 24  # high's minimum (256) is capped by the explicit budget


def test_the_loop_breaker_fires_on_a_loop(model):
    prompt = "Repeat the sentence 'I need to check the answer again carefully.' thirty times."
    options = {"reasoning_format": "think", "max_thinking_tokens": 160, "max_answer_tokens": 8}
    events, result = run(model, prompt, **options)
    assert result.stats.loop_interventions >= 1
    assert "loop-nudge" in [e.kind for e in events if isinstance(e, Intervention)]
    _, unguarded = run(model, prompt, **options, loop_guard=False)
    assert unguarded.stats.loop_interventions == 0


@pytest.mark.parametrize(
    "prompt",
    [
        "List the numbers 1 to 80, one per line.",
        "Write a Python class Point with getter methods get_x, get_y, get_z, get_w and a __repr__.",
        "Make a markdown table of the squares of the numbers 1 to 20.",
    ],
)
def test_the_loop_breaker_leaves_legitimate_repetition_alone(model, prompt):
    _, result = run(model, prompt, reasoning_format="think", max_thinking_tokens=200, max_answer_tokens=4)
    assert result.stats.loop_interventions == 0


def test_language_guard_keeps_an_english_answer_after_chinese_thinking(model):
    _, free = run(
        model, "请用中文解释什么是递归。", reasoning_format="think", max_thinking_tokens=40, max_answer_tokens=40
    )
    assert CJK.search(free.thinking) and CJK.search(free.answer)  # without the guard: Chinese throughout
    _, guarded = run(
        model,
        "请用中文解释什么是递归。",
        reasoning_format="think",
        max_thinking_tokens=40,
        max_answer_tokens=40,
        language="en",
    )
    assert CJK.search(guarded.thinking), "the thinking is left alone"
    assert guarded.answer.strip() and not CJK.search(guarded.answer)
    assert guarded.stats.language_masked_steps == guarded.stats.answer_tokens


def test_language_guard_the_other_way_and_in_the_thinking(model):
    _, result = run(
        model,
        "Explain what recursion is.",
        reasoning_format="think",
        max_thinking_tokens=30,
        max_answer_tokens=30,
        language="zh",
        language_in_thinking=True,
    )
    assert result.stats.thinking_closed_by == "budget"
    own_thinking, wrap_up = result.thinking.split(TEXTS["zh"].wrap_up)  # the runtime's wrap-up is Chinese too
    assert not wrap_up.strip()
    assert CJK.search(own_thinking) and CJK.search(result.answer)
    words = set(LATIN_WORD.findall(own_thinking + result.answer))
    assert words <= {"Explain", "what", "recursion"}, "only the user's own words"
    stats = result.stats  # every sampled token was masked, those the budget's cut took back too
    assert stats.language_masked_steps == stats.thinking_tokens + stats.budget_cut_tokens + stats.answer_tokens


def test_language_auto_follows_the_last_user_message(model):
    _, result = run(model, "请用中文解释什么是递归。", reasoning_format="none", max_answer_tokens=30, language="auto")
    assert not LATIN_WORD.search(result.answer)
    assert model.controllers.language_ban("en") is model.controllers.language_ban("en"), "computed once per language"
