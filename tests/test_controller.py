"""The reasoning controller on its own: decisions from token counts and text, no engine."""

import pytest

from qwq_edge.errors import InvalidRequestError
from qwq_edge.events import AnswerDelta, Intervention, ThinkingDelta
from qwq_edge.reasoning.controller import (
    ControlTokens,
    Finish,
    Force,
    ReasoningController,
    Rewind,
    Sample,
    ThinkingLimits,
)
from qwq_edge.reasoning.effort import EFFORTS, apply_effort
from qwq_edge.reasoning.formats import HYBRID, NONE, QWQ_PREVIEW, THINK, resolve_format, soft_switch

TOKENS = ControlTokens(close=(1, 2, 3), skip=(4, 5), end_of_generation=frozenset({99}))
ROOM = 10_000


def controller(fmt=THINK, **limits) -> ReasoningController:
    return ReasoningController(fmt, ThinkingLimits(**limits), TOKENS)


def test_budget_forces_the_close_after_exactly_budget_thinking_tokens():
    c = controller(max_thinking_tokens=3)
    for _ in range(3):
        assert c.next_action(ROOM) == Sample()
        c.on_sampled("step ", 101)
    action = c.next_action(ROOM)
    assert action == Force((1, 2, 3), "budget", detail="closed at a word end")
    events = c.on_forced(action, THINK.forced_close_text)
    assert isinstance(events[0], Intervention) and events[0].kind == "budget"
    assert c.phase == "answer"
    assert c.counts.thinking_tokens == 3 and c.counts.forced_tokens == 3
    assert c.counts.thinking_closed_by == "budget"


def test_budget_zero_closes_before_any_thinking():
    c = controller(max_thinking_tokens=0)
    assert isinstance(c.next_action(ROOM), Force)


def test_end_of_generation_while_thinking_forces_the_close_instead_of_ending():
    c = controller()
    c.on_sampled("I think", 102)
    assert not c.review(99)
    assert c.next_action(ROOM) == Force((1, 2, 3), "eos-close")


def test_first_answer_token_cannot_end_the_generation():
    c = controller(fmt=NONE)
    assert c.next_action(ROOM) == Sample(frozenset({99}))
    c.on_sampled("Hi", 103)
    assert c.next_action(ROOM) == Sample()
    assert not c.review(99)
    assert c.next_action(ROOM) == Finish("stop")


def test_answer_bound_and_context_end_finish_with_length():
    c = controller(fmt=NONE, max_answer_tokens=2)
    c.on_sampled("a", 104)
    c.on_sampled("b", 105)
    assert c.next_action(ROOM) == Finish("length")
    assert controller(fmt=NONE).next_action(0) == Finish("length")


def test_thinking_is_closed_before_the_context_runs_out():
    c = controller()
    assert c.next_action(3 + 16) == Force((1, 2, 3), "context-close")


def test_natural_close_splits_thinking_and_answer_text():
    c = controller()
    events = c.on_sampled("Let me see.</thi", 106) + c.on_sampled("nk>\n\n42", 107) + c.finish()
    assert [type(e) for e in events] == [ThinkingDelta, AnswerDelta]
    assert "".join(c.thinking_text) == "Let me see." and "".join(c.answer_text) == "42"
    assert c.counts.thinking_closed_by == "model"


def test_qwq_preview_answer_starts_after_final_answer_marker():
    c = controller(fmt=QWQ_PREVIEW)
    c.on_sampled("2+2 is 4.\n\n**Final", 108)
    c.on_sampled(" Answer**\n\n\\boxed{4}", 109)
    assert "".join(c.answer_text) == "\\boxed{4}"


def test_think_off_forces_the_skip_text_without_an_intervention_event():
    c = controller(think=False)
    action = c.next_action(ROOM)
    assert action == Force((4, 5), "skip")
    assert c.on_forced(action, THINK.skip_text) == []
    assert c.phase == "answer" and c.counts.thinking_closed_by == "skipped"


def test_a_hybrid_format_without_thinking_starts_in_the_answer_with_nothing_forced():
    """Its template closed the thinking in the prompt (enable_thinking=False)."""
    c = controller(HYBRID, think=False, max_thinking_tokens=4, min_thinking_tokens=2)
    assert c.phase == "answer" and c.counts.thinking_closed_by == "skipped"
    assert c.next_action(ROOM) == Sample(frozenset({99}))  # the answer's first token, never the end
    events = c.on_sampled("4", 100)
    assert [type(e) for e in events] == [AnswerDelta] and c.counts.forced_tokens == 0
    thinking = controller(HYBRID)
    assert thinking.phase == "thinking" and thinking.next_action(ROOM) == Sample()


@pytest.mark.parametrize(
    ("texts", "expected"),
    [
        (["What is 2+2? /no_think"], False),
        (["/no_think", "What is 2+2? /think"], True),  # the most recent one wins
        (["/think first, then /no_think"], False),
        (["What is 2+2?"], None),
        (["see http://example.com/think", "a/no_think", "/thinking"], None),  # not switches
    ],
)
def test_soft_switches_follow_the_last_one_written(texts, expected):
    assert soft_switch(texts) is expected


def test_held_back_text_is_released_at_the_end():
    c = controller()
    events = c.on_sampled("almost </th", 110) + c.finish()
    assert "".join(e.text for e in events) == "almost </th"


@pytest.mark.parametrize("field", ["max_thinking_tokens", "max_answer_tokens"])
def test_negative_limits_are_rejected(field):
    with pytest.raises(InvalidRequestError):
        ThinkingLimits(**{field: -1})


def test_every_forced_close_text_ends_its_thinking():
    for fmt in (THINK, HYBRID, QWQ_PREVIEW):
        assert fmt.close_marker in fmt.forced_close_text
        assert fmt.close_marker in fmt.skip_text
    assert HYBRID.open_text + HYBRID.skip_text == "<think>\n\n</think>\n\n"  # Qwen3's own no-think block


@pytest.mark.parametrize(
    ("template", "name", "expected"),
    [
        ("{{ '<|im_start|>assistant\\n<think>\\n' }}", "QwQ 32B", THINK),
        ("{% if x %}</think>{% endif %}", "DeepSeek R1 Distill Qwen 7B", THINK),
        ("You are Qwen developed by Alibaba. You should think step-by-step.", "anything", QWQ_PREVIEW),
        (None, "QwQ 32B Preview", QWQ_PREVIEW),
        (None, "QwQ 32B", THINK),
        ("<|im_start|>", "Qwen2.5 Coder 0.5B Instruct", NONE),
        ("{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>{% endif %}", "x", HYBRID),
        ("{% if '</think>' in content %}{% endif %}{{ '<｜Assistant｜>' }}", "DeepSeek R1 0528 Qwen3 8B", THINK),
    ],
)
def test_auto_detects_the_reasoning_format(template, name, expected):
    assert resolve_format("auto", template, name) is expected


def test_end_of_generation_below_the_minimum_becomes_wait():
    c = controller(min_thinking_tokens=3)
    c.on_sampled("Hmm", 10)
    assert not c.review(99)
    action = c.next_action(ROOM)
    assert action.kind == "wait"
    c.on_forced(action, "\n\nWait,")
    assert c.counts.wait_extensions == 1  # counted when done
    for position in range(11, 13):
        c.on_sampled(" more", position)
    assert not c.review(99)
    assert c.next_action(ROOM).kind == "eos-close"  # the minimum is reached: now it may close


def test_a_one_token_end_marker_below_the_minimum_is_refused():
    tokens = ControlTokens(close=(1,), skip=(4,), end_of_generation=frozenset({99}), wait=(7,), close_token=50)
    c = ReasoningController(THINK, ThinkingLimits(min_thinking_tokens=2), tokens)
    assert not c.review(50)
    assert c.next_action(ROOM) == Force((7,), "wait")
    c.on_sampled("a", 1)
    c.on_sampled("b", 2)
    assert c.review(50)  # at the minimum, the model may close


def test_a_text_end_marker_below_the_minimum_is_rewound_to_its_first_token():
    c = controller(fmt=QWQ_PREVIEW, min_thinking_tokens=10)
    c.tokenize = lambda text: tuple(ord(char) for char in text)  # the rewind re-creates "So " as tokens
    c.on_sampled("The sum is 4. ", 20)
    c.on_sampled("So **Fin", 21)
    events = c.on_sampled("al Answer**", 22)
    assert "".join(e.text for e in events) == ""
    action = c.next_action(ROOM)
    assert isinstance(action, Rewind) and action.position == 21
    assert action.then.tokens[:3] == (ord("S"), ord("o"), ord(" ")) and action.then.shown == "\n\nWait,"
    assert action.then.kind == "wait" and c.counts.thinking_tokens == 1 and c.phase == "thinking"
    assert "".join(c.thinking_text) == "The sum is 4. So "


def test_loops_get_a_nudge_then_a_close():
    c = controller()
    sentence = "I need to check the answer again carefully. "
    position = 0
    for _ in range(3):
        position += 1
        c.on_sampled(sentence, position)
    nudge = c.next_action(ROOM)
    assert nudge.kind == "loop-nudge"
    c.on_forced(nudge, "\n\nI keep repeating myself; let me try a different approach.\n\n")
    for _ in range(3):
        position += 1
        c.on_sampled(sentence, position)
    close = c.next_action(ROOM)
    assert close.kind == "loop-close"
    c.on_forced(close, THINK.forced_close_text)
    assert c.counts.loop_interventions == 2 and c.counts.thinking_closed_by == "loop-close"


def test_the_loop_guard_can_be_switched_off():
    c = controller(loop_guard=False)
    for position in range(6):
        c.on_sampled("I need to check the answer again carefully. ", position)
    assert c.next_action(ROOM) == Sample()


def test_language_mask_counts_its_steps():
    tokens = ControlTokens(close=(1,), skip=(4,), end_of_generation=frozenset({99}), language_ban=frozenset({5, 6}))
    c = ReasoningController(NONE, ThinkingLimits(), tokens)
    assert c.next_action(ROOM).banned == frozenset({5, 6, 99})
    c.on_sampled("Hi", 1)
    assert c.next_action(ROOM).banned == frozenset({5, 6})
    assert c.counts.language_masked_steps == 2


def test_effort_presets_and_explicit_numbers():
    assert apply_effort("low", None, None) == (EFFORTS["low"].max_thinking_tokens, 0)
    assert apply_effort("high", None, None) == (8192, 256)
    assert apply_effort("max", None, None) == (None, 1024)
    assert apply_effort("high", 100, None) == (100, 100)  # an explicit budget wins over the preset's minimum
    assert apply_effort("low", None, 50) == (512, 50)
    assert apply_effort(None, 30, None) == (30, 0)
    with pytest.raises(InvalidRequestError):
        apply_effort("extreme", None, None)
    with pytest.raises(InvalidRequestError, match="above max_thinking_tokens"):
        ThinkingLimits(max_thinking_tokens=10, min_thinking_tokens=20)


def test_a_model_s_own_effort_budgets_replace_the_presets():
    assert apply_effort("low", None, None, {"low": 256}) == (256, 0)
    assert apply_effort("high", None, None, {"low": 256}) == (8192, 256)


def test_max_tokens_closes_the_thinking_in_time_for_a_short_answer():
    c = controller(max_tokens=3 + 16 + 2)
    for _ in range(2):
        assert c.next_action(ROOM) == Sample()
        c.on_sampled("step ", 101)
    assert c.next_action(ROOM) == Force((1, 2, 3), "max-tokens")
    c.on_forced(Force((1, 2, 3), "max-tokens"), THINK.forced_close_text)
    assert c.counts.thinking_closed_by == "max-tokens"
    for _ in range(16):
        assert isinstance(c.next_action(ROOM), Sample)
        c.on_sampled("a", 105)
    assert c.next_action(ROOM) == Finish("length")
    assert c.counts.thinking_tokens + c.counts.forced_tokens + c.counts.answer_tokens == 3 + 16 + 2


def test_a_max_tokens_too_small_for_the_close_ends_in_the_thinking():
    c = controller(max_tokens=2)
    for _ in range(2):
        assert c.next_action(ROOM) == Sample()
        c.on_sampled("step ", 101)
    assert c.next_action(ROOM) == Finish("length")
    n = controller(fmt=NONE, max_tokens=1)
    n.on_sampled("a", 104)
    assert n.next_action(ROOM) == Finish("length")


def test_a_close_that_max_tokens_cannot_hold_forces_the_end_marker_alone():
    c = controller(max_tokens=3)  # the close is 3 tokens, the end marker alone 2
    c.on_sampled("I think", 101)
    assert not c.review(99)  # the model ends while thinking, with 2 tokens left
    action = c.next_action(ROOM)
    assert action == Force((4, 5), "eos-close")
    c.on_forced(action, "\n</think>\n\n")
    assert c.counts.thinking_closed_by == "eos-close" and c.counts.interventions == {"eos-close": 1}
    assert c.next_action(ROOM) == Finish("length")
    assert c.counts.thinking_tokens + c.counts.forced_tokens == 3


def test_a_budget_close_fits_max_tokens_too():
    c = controller(max_thinking_tokens=1, max_tokens=3)
    c.on_sampled("step ", 101)
    assert c.next_action(ROOM) == Force((4, 5), "budget", detail="closed at a word end")


def test_where_not_even_the_end_marker_fits_the_generation_ends_and_nothing_is_counted_as_done():
    c = controller(max_tokens=2)
    c.on_sampled("I think", 101)
    assert not c.review(99)
    assert c.next_action(ROOM) == Finish("length")
    assert c.counts.thinking_closed_by == "none" and c.counts.interventions == {}
    assert controller(think=False, max_tokens=1).next_action(ROOM) == Finish("length")  # the skip is 2 tokens


def test_the_minimum_gives_way_when_max_tokens_leaves_only_room_to_close():
    c = controller(min_thinking_tokens=100, max_tokens=3 + 16 + 2)
    for _ in range(2):
        c.on_sampled("step ", 101)
    assert not c.review(99)  # below the minimum, but "Wait" would pass the bound
    assert c.next_action(ROOM).kind == "eos-close"


PARAGRAPH = "Let me add the numbers again. Two plus two is four. So the answer is four."


def answer_every_wait_with(c: ReasoningController, thoughts: list[str]) -> list[str]:
    """The model writes each thought, then tries to close (end of generation), in the generation
    loop's order; what the controller forced, until it ended the thinking."""
    did = []
    for position, thought in enumerate(thoughts, start=1):
        c.on_sampled(thought, position)
        action = c.next_action(ROOM)
        if isinstance(action, Sample) and not c.review(99):
            action = c.next_action(ROOM)
        did.append(action.kind)
        if action.kind not in ("wait", "loop-nudge"):
            break
        c.on_forced(action, "\n\nWait," if action.kind == "wait" else "\n\nI keep repeating myself.\n\n")
    return did


def test_a_minimum_forces_no_wait_that_brings_the_same_thought_again():
    c = controller(min_thinking_tokens=1000)
    assert answer_every_wait_with(c, [PARAGRAPH] * 5) == ["wait", "eos-close"]
    assert c.counts.wait_extensions == 1 and c.counts.loop_interventions == 0


def test_a_minimum_forces_no_wait_that_brings_the_same_thought_again_even_without_the_loop_guard():
    c = controller(min_thinking_tokens=1000, loop_guard=False)
    assert answer_every_wait_with(c, [PARAGRAPH] * 5) == ["wait", "eos-close"]


def test_new_thinking_after_each_wait_earns_the_next_one():
    c = controller(min_thinking_tokens=1000)
    thoughts = [f"Let me try the case where n is {word} and see what happens." for word in ("one", "two", "three")]
    assert answer_every_wait_with(c, thoughts) == ["wait", "wait", "wait"]


def test_a_thought_repeated_after_a_wait_is_a_loop_that_ends_the_minimum():
    """Each return brings one new sentence (so each Wait is earned) but repeats the paragraph:
    the second repeat is a loop (a nudge, and the minimum forces no more Wait), the next a close."""
    c = controller(min_thinking_tokens=1000)
    thoughts = [f"{PARAGRAPH} Attempt number {word} is done." for word in ("one", "two", "three", "four")]
    did = answer_every_wait_with(c, thoughts)
    assert did[:2] == ["wait", "wait"] and "loop-nudge" in did[2:], did
    assert c.counts.loop_interventions >= 1 and did[-1] in ("eos-close", "loop-close")
    assert c.counts.wait_extensions == 2


def test_before_any_wait_a_loop_below_the_minimum_is_nudged_again_not_closed():
    c = controller(min_thinking_tokens=1000)
    sentence = "I need to check the answer again carefully. "
    kinds = []
    for position in range(12):
        c.on_sampled(sentence, position)
        action = c.next_action(ROOM)
        if isinstance(action, Force):
            kinds.append(action.kind)
            c.on_forced(action, "\n\nI keep repeating myself.\n\n")
    assert kinds and set(kinds) == {"loop-nudge"}
