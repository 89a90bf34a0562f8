"""The controls that change the outcome, engine-free: where a budget cuts, how the loop breaker
steers, where the language guard spares Latin, and the runtime's texts in each language."""

from dataclasses import replace

import pytest

from qwq_edge.events import Intervention, ThinkingDelta
from qwq_edge.reasoning.controller import ControlTokens, Force, ReasoningController, Rewind, Sample, ThinkingLimits
from qwq_edge.reasoning.cut import boundary_kind
from qwq_edge.reasoning.factory import ControllerFactory
from qwq_edge.reasoning.formats import NONE, THINK
from qwq_edge.reasoning.language import LANGUAGE_SCRIPTS, LanguageBans, detect_language, user_terms
from qwq_edge.reasoning.spans import SpanScanner
from qwq_edge.reasoning.texts import TEXTS

TOKENS = ControlTokens(close=(1, 2, 3), skip=(4, 5), end_of_generation=frozenset({99}), wait=(7,), nudge=(8, 9, 16))
ROOM = 10_000


def controller(fmt=THINK, tokens=TOKENS, **limits) -> ReasoningController:
    return ReasoningController(fmt, ThinkingLimits(**limits), tokens)


def feed(c: ReasoningController, pieces, start=100, wholes=None) -> list:
    """Sample ``pieces`` (token id = position), as the loop would, until the controller acts."""
    events = []
    for index, piece in enumerate(pieces):
        action = c.next_action(ROOM)
        assert isinstance(action, Sample), f"piece {index}: {action}"
        whole = True if wholes is None else wholes[index]
        events += c.on_sampled(piece, start + index, start + index, whole)
    return events


def shown(events) -> str:
    return "".join(e.text for e in events if isinstance(e, ThinkingDelta))


# -- the budget cut -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "offset", "kind"),
    [
        ("The sum is 4. Next", 14, "sentence"),
        ("The sum is 4.", 13, None),  # nothing after it yet: 4.5 is still possible
        ("The sum is 4.5", 13, None),
        ("x is 3.14", 7, None),
        ("1. ", 3, "word"),  # a list number is no sentence end
        ("Hello world", 5, "word"),
        ("Hello world", 3, None),
        ("Step one\n\nStep", 10, "paragraph"),
        ("Step one\nStep", 9, "line"),
        ("我们知道答案。然后", 7, "sentence"),
        ("我们知道", 2, "word"),
        ("don't", 4, None),
        ("", 0, None),
    ],
)
def test_boundary_kinds(text, offset, kind):
    assert boundary_kind(text, offset) == kind


def test_the_budget_cuts_at_the_last_sentence_end_within_its_last_tenth():
    words = ["Let", " me", " think"] + [" more"] * 14 + ["."]  # 18 tokens, a sentence end after the 18th
    c = controller(max_thinking_tokens=20)
    events = feed(c, [*words, " Next", " we"])
    action = c.next_action(ROOM)
    assert isinstance(action, Rewind) and action.position == 118  # " Next" and " we" are taken back
    assert action.then == Force((1, 2, 3), "budget", detail="closed at a sentence end, 2 tokens taken back")
    events += c.on_forced(action.then, THINK.forced_close_text)
    assert c.counts.thinking_tokens == 18 and c.counts.budget_cut == "sentence" and c.counts.budget_cut_tokens == 2
    assert shown(events).startswith("Let me think more") and "Next" not in shown(events)
    assert shown(events) == "".join(c.thinking_text), "nothing shown was taken back"
    assert [e.detail for e in events if isinstance(e, Intervention)] == [action.then.detail]


def test_without_a_sentence_end_the_budget_cuts_at_a_word_end():
    c = controller(max_thinking_tokens=10)
    events = feed(c, ["Let", " me", ".", " The", " answer", " is", " large", " and", " gro", "wing"])
    assert "gro" not in shown(events), "a partial word is held back while a cut can still drop it"
    action = c.next_action(ROOM)
    assert isinstance(action, Rewind) and action.position == 108
    events += c.on_forced(action.then, THINK.forced_close_text)
    assert c.counts.budget_cut == "word" and c.counts.thinking_tokens == 8
    assert "".join(c.thinking_text).startswith("Let me. The answer is large and\n\n")


def test_a_budget_that_ends_at_a_sentence_end_takes_nothing_back():
    c = controller(max_thinking_tokens=4)
    feed(c, ["One", " two", " three", ". "])
    assert c.next_action(ROOM) == Force((1, 2, 3), "budget", detail="closed at a sentence end")


def test_the_budget_cut_never_splits_a_utf8_character():
    c = controller(max_thinking_tokens=4)
    # "好" whole, then a character split over two tokens, the last one incomplete again.
    feed(c, ["好", "", "的", ""], wholes=[True, False, True, False])
    action = c.next_action(ROOM)
    assert isinstance(action, Rewind) and action.position == 103  # the last, incomplete token goes
    assert c.counts.thinking_tokens == 3


def test_budget_zero_closes_bare_and_a_second_thinking_block_counts_against_the_budget():
    c = controller(max_thinking_tokens=0)
    assert c.next_action(ROOM) == Force((4, 5), "budget", detail="closed at a token boundary")
    c = controller(max_thinking_tokens=6)
    feed(c, ["Two", " plus", " two.", "</think>", "4", " <think>"])
    assert c.phase == "thinking" and c.counts.thinking_tokens == 4 and c.counts.answer_tokens == 2
    feed(c, ["More", " words"], start=200)
    assert isinstance(c.next_action(ROOM), Force | Rewind), "the turn's sixth thinking token spends the budget"


# -- the loop breaker ----------------------------------------------------------------------

LOOP = [(10, "I"), (11, " need"), (12, " to"), (13, " check"), (14, " again."), (15, " ")]


def loop_into_nudge() -> ReasoningController:
    c = controller(min_thinking_tokens=500)
    position = 0
    for _ in range(3):
        for token, text in LOOP:
            assert c.next_action(ROOM) == Sample()
            c.on_sampled(text, position, token)
            position += 1
    nudge = c.next_action(ROOM)
    assert nudge.kind == "loop-nudge"
    c.on_forced(nudge, "\n\nI keep repeating myself; let me try a different approach.\n\n")
    return c


def test_after_a_nudge_the_loop_cannot_start_or_continue_its_ngrams():
    c = loop_into_nudge()
    assert 10 in c.next_action(ROOM).banned, "the looped sentence's first token is masked at a sentence start"
    c.on_sampled("We", 50, 20)
    assert c.next_action(ROOM) == Sample(), "other text is free"
    c.on_sampled(" need", 51, 11)
    c.on_sampled(" to", 52, 12)
    assert c.next_action(ROOM).banned == frozenset({13}), "need to → check is the loop's n-gram"
    assert c.counts.loop_masked_steps == 2
    c.on_sampled("\n\nI", 53, 8)
    c.on_sampled(" keep", 54, 9)
    assert 16 in c.next_action(ROOM).banned, "the nudge (8, 9, 16) is not parroted either"


def test_the_mask_is_released_after_its_stretch():
    c = loop_into_nudge()
    for position in range(64):
        c.on_sampled(" word", 50 + position, 30 + position)
    c.on_sampled(". ", 200, 300)
    assert c.next_action(ROOM) == Sample()


# -- the language guard --------------------------------------------------------------------


def spans_after(text: str, pieces: int = 1) -> bool:
    scanner = SpanScanner()
    step = max(1, len(text) // pieces)
    for start in range(0, len(text), step):
        scanner.feed(text[start : start + step])
    return scanner.in_code


@pytest.mark.parametrize("pieces", [1, 3, 100])
@pytest.mark.parametrize(
    ("text", "in_code"),
    [
        ("用列表推导式：\n```python\nsquares = [x", True),
        ("```python\nx = 1\n```\n这是", False),
        ("变量 `my_list", True),
        ("变量 `my_list` 是", False),
        ("变量 ``a`b", True),
        ("公式 $x^2", True),
        ("公式 $x^2$ 和", False),
        ("$$\\sum_i a$$ 和", False),
        ("\\(a + b", True),
        ("\\(a + b\\) 和", False),
        ("见 https://docs.python", True),
        ("见 https://docs.python.org 和", False),
        ("见 htt", True),
        ("普通文字", False),
    ],
)
def test_the_span_scanner_follows_code_math_and_urls(text, in_code, pieces):
    assert spans_after(text, pieces) is in_code


def test_the_guard_spares_latin_inside_code_only():
    tokens = replace(TOKENS, language_ban=frozenset({5, 6}), code_ban=frozenset({6}))
    c = controller(fmt=NONE, tokens=tokens)
    assert c.next_action(ROOM).banned == frozenset({5, 6, 99})
    c.on_sampled("例子：\n```py", 1)
    assert c.next_action(ROOM).banned == frozenset({6})
    c.on_sampled("\nx = 1\n```\n", 2)
    assert c.next_action(ROOM).banned == frozenset({5, 6})


def test_user_terms_are_words_of_spaced_scripts_and_quoted_spans():
    assert user_terms("请用Python写一个“列表推导式”的例子，用 list。") == {"Python", "列表推导式", "list"}
    assert user_terms("请用中文解释什么是递归。") == set(), "unquoted Chinese is not split into terms"
    assert user_terms('What does "递归" mean in my_code?') == {"What", "does", "递归", "mean", "in", "my_code"}


def test_the_user_s_words_are_allowed_in_prose_and_code():
    bans = LanguageBans(prose=frozenset({5, 6, 7}), code=frozenset({7}))
    assert bans.allowing(frozenset({6, 7})) == LanguageBans(frozenset({5}), frozenset())
    assert bans.allowing(frozenset({8})) is bans


# -- the runtime's texts -------------------------------------------------------------------


def test_every_guarded_language_has_its_own_texts():
    assert set(TEXTS) == set(LANGUAGE_SCRIPTS)
    for language, texts in TEXTS.items():
        for text in (texts.wrap_up, texts.wait, texts.nudge):
            if language in ("zh", "ja", "ko", "ru"):
                assert detect_language(text) == language, (language, text)
            if language != "en":
                assert text not in (TEXTS["en"].wrap_up, TEXTS["en"].wait, TEXTS["en"].nudge)


def test_the_factory_forces_the_guarded_language_s_texts():
    vocabulary: dict[str, int] = {}

    def tokenize(text: str, special: bool) -> list[int]:
        return [vocabulary.setdefault(char, len(vocabulary)) for char in text]

    factory = ControllerFactory(tokenize, lambda token: b"a", 8, frozenset({99}))
    c = factory.new(THINK, ThinkingLimits(), "zh")
    english = factory.new(THINK, ThinkingLimits())
    decode = {token: char for char, token in vocabulary.items()}
    assert "".join(decode[t] for t in c.tokens.close) == THINK.forced_close(TEXTS["zh"].wrap_up)
    assert "".join(decode[t] for t in c.tokens.wait) == TEXTS["zh"].wait
    assert "".join(decode[t] for t in c.tokens.nudge) == TEXTS["zh"].nudge
    assert "".join(decode[t] for t in english.tokens.wait) == "\n\nWait,"
