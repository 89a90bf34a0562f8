"""The controls that change the outcome, on the real 0.5B model: where the budget cuts, the loop
breaker's mask, the language guard that spares code and the user's words, the texts in the
guarded language."""

import re

import pytest
from conftest import GREEDY

from qwq_edge import Done, Intervention, ThinkingDelta
from qwq_edge.reasoning.cut import SENTENCE_KINDS
from qwq_edge.reasoning.language import user_terms
from qwq_edge.reasoning.texts import TEXTS

CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff]")
LATIN_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
CODE = re.compile(r"```.*?(?:```|$)|`[^`\n]*`?", re.DOTALL)
WORD_CHAR = re.compile(r"\w")
PROBLEM = "A shop sells pens at 3 dollars each. Tom buys 7 pens and pays with 50 dollars. How much change does he get?"


def run(model, prompt, **options):
    events = list(model.stream(prompt, **{**GREEDY, **options}))
    assert isinstance(events[-1], Done)
    return events, events[-1].result


BUDGET_OPTIONS = {"reasoning_format": "think", "max_answer_tokens": 4}


@pytest.fixture(scope="module")
def free(model):
    """The problem's thinking without a cut (long enough for every budget below), run once."""
    return run(model, PROBLEM, max_thinking_tokens=128, **BUDGET_OPTIONS)[1]


@pytest.mark.parametrize("budget", [40, 64, 100])
def test_the_budget_cut_ends_the_thinking_at_a_sentence_or_word_end(model, free, budget):
    options = BUDGET_OPTIONS
    events, result = run(model, PROBLEM, max_thinking_tokens=budget, **options)
    stats = result.stats
    assert stats.budget_cut != "none" and stats.thinking_tokens + stats.budget_cut_tokens == budget
    kept = result.thinking[: result.thinking.index(TEXTS["en"].wrap_up)].rstrip("\n")
    assert free.thinking.startswith(kept), "the kept thinking is what the model wrote, cut at a boundary"
    follows = free.thinking[len(kept) : len(kept) + 1]
    assert not (WORD_CHAR.match(kept[-1]) and WORD_CHAR.match(follows)), f"a word was split: {kept[-20:]!r}"
    if stats.budget_cut in SENTENCE_KINDS:
        assert stats.thinking_tokens >= budget - budget // 10
    shown = "".join(e.text for e in events if isinstance(e, ThinkingDelta))
    assert shown == result.thinking, "no text that was shown is taken back"
    budget_events = [e for e in events if isinstance(e, Intervention) and e.kind == "budget"]
    assert budget_events[0].detail.startswith("closed at")


def test_after_a_nudge_the_loop_s_ngrams_are_masked(model):
    prompt = "Repeat the sentence 'I need to check the answer again carefully.' thirty times."
    options = {"reasoning_format": "think", "max_thinking_tokens": 200, "min_thinking_tokens": 200}
    events, result = run(model, prompt, max_answer_tokens=4, **options)
    assert result.stats.loop_interventions >= 1 and result.stats.loop_masked_steps > 0
    thinking = "".join(e.text for e in events if isinstance(e, ThinkingDelta))
    after_nudge = thinking.split("let me try a different approach.", 1)[1]
    assert "I need to check the answer again carefully." not in after_nudge[:300]


def test_a_chinese_question_about_code_keeps_ascii_code_and_chinese_prose(model):
    prompt = "请用 Python 写一个列表推导式的例子，计算 1 到 10 的平方，并用中文简单解释。"
    _, result = run(model, prompt, reasoning_format="none", max_answer_tokens=160, language="zh")
    code = "".join(CODE.findall(result.answer))
    assert "```" in result.answer and re.search(r"\bfor\b", code) and re.search(r"\bin\b", code)
    prose = CODE.sub("", result.answer)
    assert CJK.search(prose)
    allowed = user_terms(prompt) | {"x"}  # one-letter math variables are allowed in CJK prose
    assert set(LATIN_WORD.findall(prose)) <= allowed, "the prose stays Chinese but for the user's words"


def test_under_en_chinese_prose_is_refused_but_a_quoted_term_is_allowed(model):
    prompt = 'In Chinese programming books, what does the term "递归" mean? Answer in one English sentence.'
    _, result = run(model, prompt, reasoning_format="none", max_answer_tokens=48, language="en")
    chars = set(CJK.findall(result.answer))
    assert chars <= set("递归"), f"only the quoted term's characters: {result.answer!r}"
    _, unquoted = run(model, "请用中文解释什么是递归。", reasoning_format="none", max_answer_tokens=32, language="en")
    assert unquoted.answer.strip() and not CJK.search(unquoted.answer)


def test_under_a_language_guard_wait_and_nudge_come_in_that_language(model):
    _, waited = run(
        model,
        "2+2等于几？",
        reasoning_format="think",
        min_thinking_tokens=40,
        max_thinking_tokens=60,
        max_answer_tokens=4,
        language="zh",
    )
    assert waited.stats.wait_extensions >= 1 and TEXTS["zh"].wait.strip() in waited.thinking
    assert "Wait," not in waited.thinking
    prompt = "Repeat the sentence 'I need to check the answer again carefully.' thirty times."  # loops
    events, looped = run(
        model, prompt, reasoning_format="think", max_thinking_tokens=200, max_answer_tokens=4, language="ru"
    )
    nudges = [e.text for e in events if isinstance(e, Intervention) and e.kind == "loop-nudge"]
    assert nudges and all(text == TEXTS["ru"].nudge for text in nudges)
    assert TEXTS["ru"].wrap_up in looped.thinking or looped.stats.thinking_closed_by != "budget"
