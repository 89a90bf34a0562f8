"""The generation loop and the reasoning controller through the public API, on the toy engine.

No llama.cpp, no MLX: the toy engine (``toy_engine.py``) is a random tiny numpy
model whose logits a test can steer, so every behaviour is reached on purpose and
the whole file runs in about a second.
"""

import json
import math

import numpy as np
import pytest
from toy_engine import ToyEngine, toy_registered

from qwq_edge import AnswerDelta, Done, EngineUnavailableError, Model, ModelFormatError, ThinkingDelta, load
from qwq_edge.convert.synthetic import qwen3_chat_template
from qwq_edge.engines.registry import choose_engine, engine_choices
from qwq_edge.reasoning.formats import HYBRID, QWQ_PREVIEW, THINK
from qwq_edge.sampling import log_softmax_at, most_likely
from qwq_edge.services.benchmarking.raw import open_raw
from qwq_edge.services.inspection import describe_model

GREEDY = {"temperature": 0.0}


@pytest.fixture
def toy() -> Model:
    return Model(ToyEngine(), reasoning_format="think")


@pytest.fixture(params=["think", "hybrid"])
def either(request) -> Model:
    """The toy as a thinking model, and as a hybrid one with Qwen3's own template."""
    if request.param == "think":
        return Model(ToyEngine(), reasoning_format="think")
    return Model(ToyEngine(chat_template=qwen3_chat_template()))


def cache_bytes(model: Model) -> bytes:
    """The text the engine's cache holds, as bytes (control tokens give none)."""
    return b"".join(model.engine.token_bytes(t) for t in model.engine._tokens)


@pytest.mark.parametrize("budget", [0, 1, 7, 100])
def test_the_budget_is_held_exactly(either, budget):
    result = either.generate("Hi", max_thinking_tokens=budget, max_answer_tokens=3, **GREEDY)
    stats = result.stats
    # The cut may take back the last few tokens (to a word or sentence end), never more than the budget.
    assert stats.thinking_tokens <= budget and stats.thinking_closed_by == "budget"
    assert stats.thinking_tokens == budget - stats.budget_cut_tokens
    assert len(stats.forced_text) == 1 and stats.forced_text[0].endswith("</think>\n\n")
    assert stats.interventions == {"budget": 1}
    assert stats.answer_tokens == 3 and stats.finish_reason == "length"
    closed = len(either.engine.tokenize(stats.forced_text[0], special=True))
    assert either.engine.position == stats.prompt_tokens + stats.thinking_tokens + closed + 3


def test_the_forced_close_comes_between_the_thinking_and_the_answer(toy):
    events = list(toy.stream("Hi", max_thinking_tokens=5, max_answer_tokens=4, **GREEDY))
    kinds = [type(e).__name__ for e in events]
    close = kinds.index("Intervention")
    assert events[close].kind == "budget" and events[close].text.endswith("</think>\n\n")
    answer = kinds.index("AnswerDelta")
    assert set(kinds[:close]) == {"ThinkingDelta"} and close < answer
    assert set(kinds[answer:-1]) == {"AnswerDelta"}  # the wrap-up sentence is thinking, then only answer
    assert isinstance(events[-1], Done)


@pytest.mark.parametrize("max_tokens", [1, 2, 3, 5, 8, 13, 21, 34])
def test_max_tokens_bounds_every_token_the_forced_close_included(toy, max_tokens):
    toy.engine.script = {1: toy.engine.id("<|im_end|>")}  # the model ends while thinking
    result = toy.generate("Hi", max_tokens=max_tokens, **GREEDY)
    stats = result.stats
    assert stats.generated_tokens <= max_tokens and stats.finish_reason == "length"
    assert toy.engine.position == stats.prompt_tokens + stats.generated_tokens  # what was counted was fed
    budgeted = toy.generate("Hi", max_tokens=max_tokens, max_thinking_tokens=2, **GREEDY).stats
    assert budgeted.generated_tokens <= max_tokens


def test_the_minimum_turns_an_early_close_into_wait(either):
    either.engine.script = {2: either.engine.id("</think>")}
    result = either.generate("Hi", min_thinking_tokens=6, max_thinking_tokens=10, max_answer_tokens=2, **GREEDY)
    assert result.stats.wait_extensions == 1 and result.stats.interventions == {"wait": 1, "budget": 1}
    assert result.stats.thinking_tokens == 10 and "Wait," in result.thinking
    assert either.engine._tokens.count(either.engine.id("</think>")) == 1  # only the forced close's


@pytest.mark.parametrize("ending", ["</think>", "<|im_end|>"])
def test_a_model_that_answers_every_wait_with_the_same_paragraph_is_caught_within_two_repeats(either, ending):
    paragraph = "Let me add the numbers again. Two plus two is four. So the answer is four."
    draws = len(either.engine.vocab.encode(paragraph, special=False)) + 1
    for repeat in range(8):  # the paragraph, then an attempt to end; again after every Wait
        either.engine.say(repeat * draws, paragraph + ending)
    result = either.generate("Hi", min_thinking_tokens=2000, max_thinking_tokens=3000, max_answer_tokens=2, **GREEDY)
    assert 1 <= result.stats.wait_extensions <= 2
    assert result.thinking.count("Two plus two is four.") <= 3 and result.stats.thinking_tokens < 2000


def _answer_now_after(model: Model, tokens: int, **options) -> tuple[list, bool, bool]:
    """Stream with a minimum and no budget; ask "answer now" once ``tokens`` thinking tokens are out.
    The events, what the call said mid-thought, and what it says once the stream is over."""
    stream = model.stream("Hi", min_thinking_tokens=1000, max_answer_tokens=3, **GREEDY, **options)
    events, said = [], None
    for event in stream:
        events.append(event)
        if said is None and isinstance(event, ThinkingDelta) and event.thinking_tokens >= tokens:
            said = stream.answer_now()
    return events, bool(said), stream.answer_now()


def test_answer_now_closes_the_thinking_at_the_next_sentence_end_whatever_the_minimum(either):
    either.engine.say(20, "so that is it. ")
    events, said, after = _answer_now_after(either, 5)
    result = events[-1].result
    stats = result.stats
    assert said and not after  # once the thinking is over it is a no-op that says so
    assert stats.thinking_closed_by == "answer-now" and stats.interventions == {"answer-now": 1}
    assert stats.wait_extensions == 0 and stats.answer_tokens == 3 and result.answer
    (span,) = stats.forced_spans
    assert span["kind"] == "answer-now" and result.thinking[: span["start"]].rstrip().endswith("so that is it.")
    assert result.thinking[span["start"] :].lstrip().startswith("Thinking time is up.")


def test_answer_now_without_a_sentence_end_closes_at_a_word_end_within_its_reach(toy):
    from qwq_edge.reasoning.controller import ANSWER_NOW_REACH

    toy.engine.say(5 + ANSWER_NOW_REACH + 2, "abc, ")  # the toy writes letters, no sentence end
    events, said, _ = _answer_now_after(toy, 5)
    stats = events[-1].result.stats
    assert said and stats.thinking_closed_by == "answer-now"
    assert 5 + ANSWER_NOW_REACH <= stats.thinking_tokens <= 5 + ANSWER_NOW_REACH + 8
    thinking = events[-1].result.thinking
    assert thinking[: stats.forced_spans[0]["start"]].rstrip().endswith("abc,")  # at a word end


def test_answer_now_is_a_no_op_where_nothing_thinks(toy):
    stream = toy.complete("Hi", max_tokens=3, **GREEDY)
    assert stream.answer_now() is False
    assert list(stream)[-1].result.stats.interventions == {}


def test_the_runtime_s_words_are_marked_in_the_stream_and_in_the_stats(either):
    """The Wait a minimum forces and the budget's wrap-up are deltas of their own, named, and
    the stats say where they are in the thinking; the thinking stays the whole text."""
    either.engine.script = {2: either.engine.id("</think>")}
    events = list(either.stream("Hi", min_thinking_tokens=6, max_thinking_tokens=10, max_answer_tokens=2, **GREEDY))
    result = events[-1].result
    deltas = [e for e in events if isinstance(e, ThinkingDelta)]
    assert "".join(d.text for d in deltas) == result.thinking
    spans = result.stats.forced_spans
    assert [s["kind"] for s in spans] == ["wait", "budget"]
    for span in spans:
        marked = "".join(d.text for d in deltas if d.forced == span["kind"])
        assert result.thinking[span["start"] : span["end"]] == marked
    assert "Wait," in result.thinking[spans[0]["start"] : spans[0]["end"]]
    assert result.thinking[spans[1]["start"] :].lstrip().startswith("Thinking time is up")
    model_text = "".join(d.text for d in deltas if not d.forced)
    assert "Wait" not in model_text and "Thinking time" not in model_text


def test_a_close_above_the_minimum_is_the_models_own(either):
    either.engine.script = {8: either.engine.id("</think>")}
    result = either.generate("Hi", min_thinking_tokens=6, max_answer_tokens=2, **GREEDY)
    # The model's own end marker counts as its last thinking token.
    assert result.stats.thinking_tokens == 9 and result.stats.thinking_closed_by == "model"
    assert result.stats.interventions == {}


def test_end_of_generation_while_thinking_closes_the_thinking(either):
    end = either.engine.id("<|im_end|>")
    either.engine.script = {3: end, 7: end}
    result = either.generate("Hi", **GREEDY)
    stats = result.stats
    assert stats.thinking_tokens == 3 and stats.thinking_closed_by == "eos-close"
    assert stats.answer_tokens == 3 and stats.finish_reason == "stop" and result.answer


def test_a_hybrid_model_without_thinking_answers_after_its_template_s_own_block(either):
    result = either.generate("Hi", think=False, max_answer_tokens=5, **GREEDY)
    stats = result.stats
    assert stats.answer_tokens == 5 and stats.thinking_tokens == 0 and stats.thinking_closed_by == "skipped"
    # the prompt's text (control tokens have none)
    prompt = b"".join(map(either.engine.token_bytes, either.engine._tokens[: stats.prompt_tokens])).decode()
    if either.reasoning_format is HYBRID:  # the template closed the thinking: nothing forced
        assert stats.forced_text == [] and prompt.endswith("assistant\n<think>\n\n</think>\n\n")
    else:
        assert stats.forced_text == [THINK.skip_text] and prompt.endswith("assistant\n<think>\n")


def test_the_answer_bound_and_no_thinking(toy):
    result = toy.generate("Hi", think=False, max_answer_tokens=5, **GREEDY)
    stats = result.stats
    assert stats.answer_tokens == 5 and stats.finish_reason == "length"
    assert result.thinking == "" and stats.thinking_tokens == 0 and stats.thinking_closed_by == "skipped"
    assert stats.forced_text == [THINK.skip_text] and stats.interventions == {}


def test_cancel_stops_at_the_next_token_and_the_model_stays_usable(toy):
    stream = toy.stream("Hi", **GREEDY)
    next(stream)
    toy.cancel()
    done = list(stream)[-1]
    assert isinstance(done, Done) and done.result.stats.finish_reason == "cancelled"
    assert toy.generate("Hi", max_thinking_tokens=2, max_answer_tokens=1, **GREEDY).stats.answer_tokens == 1


def test_a_multi_token_close_marker_below_the_minimum_is_rewound(toy):
    toy.engine.say(3, "**Final Answer**")
    result = toy.generate(
        "Hi",
        reasoning_format="qwq-preview",
        min_thinking_tokens=40,
        max_thinking_tokens=45,
        max_answer_tokens=2,
        **GREEDY,
    )
    assert result.stats.wait_extensions == 1 and result.stats.thinking_tokens == 45
    assert "**Final Answer**" not in result.thinking and "Wait," in result.thinking
    # The rewind took the marker out of the cache: only the forced close's copy is there.
    assert cache_bytes(toy).count(b"**Final Answer**") == 1
    assert result.stats.forced_text[-1] == QWQ_PREVIEW.forced_close_text


def test_the_loop_guard_nudges_a_repeated_sentence_only_when_on(either):
    either.engine.say(0, "the cat sat down. " * 3)
    guarded = either.generate("Hi", max_thinking_tokens=80, max_answer_tokens=1, **GREEDY)
    assert guarded.stats.interventions.get("loop-nudge") == 1
    unguarded = either.generate("Hi", max_thinking_tokens=80, max_answer_tokens=1, loop_guard=False, **GREEDY)
    assert "loop-nudge" not in unguarded.stats.interventions


def test_the_language_mask_keeps_the_answer_in_english(toy):
    chinese = {toy.engine.id("你"), toy.engine.id("好")}
    toy.engine.bias[list(chinese)] = 40.0  # the model would rather answer in Chinese
    free = toy.generate("Hi", think=False, max_answer_tokens=6, **GREEDY)
    assert free.answer and set(free.answer) <= {"你", "好"}
    guarded = toy.generate("Hi", think=False, max_answer_tokens=6, language="en", **GREEDY)
    answer_tokens = toy.engine._tokens[-6:]
    assert not set(answer_tokens) & toy.controllers.language_ban("en") and not chinese & set(answer_tokens)
    assert guarded.stats.language_masked_steps == guarded.stats.answer_tokens == 6


def test_seeds_are_reproducible_and_greedy_reuses_the_prompt(toy):
    def run(seed):
        result = toy.generate("Hi", max_thinking_tokens=12, max_answer_tokens=6, temperature=1.0, seed=seed)
        return result.thinking, result.answer, result.stats

    first, again, other = run(11), run(11), run(12)
    assert first[:2] == again[:2] and first[:2] != other[:2] and first[2].seed == 11
    assert again[2].cached_prompt_tokens == again[2].prompt_tokens - 1  # the prompt stayed in the cache


def test_an_engine_is_one_spec_in_the_registry(tmp_path):
    path = tmp_path / "tiny.toy"
    path.write_text(json.dumps({"seed": 1, "dim": 8, "context_length": 256}))
    with toy_registered():
        assert "toy" in engine_choices()
        assert choose_engine(path) == ("toy", "a toy model file (numpy, for tests)")
        with pytest.raises(EngineUnavailableError, match="GGUF"):
            choose_engine(path, "llama.cpp")
        assert describe_model(path)["format"] == "toy" and describe_model(path)["engine"] == "toy"
        with load(path) as model:
            assert model.info.engine == "toy" and model.memory_plan.context == 256
            result = model.generate(
                "Hi", reasoning_format="think", max_thinking_tokens=4, max_answer_tokens=2, **GREEDY
            )
            assert result.stats.thinking_tokens == 4 and result.stats.answer_tokens == 2
            with pytest.raises(EngineUnavailableError, match="no raw baseline"):
                open_raw(model.engine)
    assert "toy" not in engine_choices()
    with pytest.raises(ModelFormatError, match="is not a GGUF file"):
        load(path)


def test_the_first_answer_token_is_never_the_end(toy):
    toy.engine.script = {0: toy.engine.id("<|im_end|>")}
    result = toy.generate("Hi", think=False, max_answer_tokens=2, **GREEDY)
    assert result.stats.answer_tokens == 2 and result.stats.finish_reason == "length"


def test_the_terminal_shows_the_runtime_s_words_in_a_style_of_their_own(toy):
    """The model's thinking is dim; the Wait and the wrap-up the runtime wrote are italic yellow."""
    import io

    from rich.console import Console

    from qwq_edge.cli.render import EventRenderer

    toy.engine.script = {2: toy.engine.id("</think>")}
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, color_system="standard", width=200)
    EventRenderer(console, answer=io.StringIO()).render(
        toy.stream("Hi", min_thinking_tokens=6, max_thinking_tokens=10, max_answer_tokens=2, **GREEDY)
    )
    shown = screen.getvalue()
    italic_yellow, dim = "\x1b[3;33m", "\x1b[2m"
    assert f"{italic_yellow}Wait," in shown and f"{italic_yellow}Thinking time is up." in shown
    assert f"{dim}n" in shown  # the model's own first token


@pytest.mark.parametrize("sampling", [GREEDY, {"temperature": 0.8, "seed": 3}])
def test_logprobs_come_with_each_sampled_token_and_the_most_likely_ones(toy, sampling):
    events = list(toy.stream("Hi", max_thinking_tokens=9, max_answer_tokens=6, top_logprobs=4, **sampling))
    result = events[-1].result
    deltas = [e for e in events if isinstance(e, (ThinkingDelta, AnswerDelta))]
    assert [entry for e in deltas for entry in e.logprobs] == list(result.logprobs)  # each once, in order
    assert all(not e.logprobs for e in deltas if getattr(e, "forced", ""))  # the runtime's words have none
    thinking = [entry for entry in result.logprobs if entry.thinking]
    answer = [entry for entry in result.logprobs if not entry.thinking]
    assert len(thinking) == result.stats.thinking_tokens and len(answer) == result.stats.answer_tokens
    assert b"".join(entry.bytes for entry in answer).decode().strip() == result.answer.strip()
    for entry in result.logprobs:
        assert len(entry.top) == 4 and [c.logprob for c in entry.top] == sorted(
            (c.logprob for c in entry.top), reverse=True
        )
        assert sum(math.exp(c.logprob) for c in entry.top) <= 1 + 1e-9 and entry.logprob <= 0
        assert entry.logprob >= entry.top[-1].logprob or entry.token not in {c.token for c in entry.top}
        if sampling is GREEDY:
            assert entry.token == entry.top[0].token and entry.logprob == entry.top[0].logprob
    assert all(not e.logprobs for e in toy.stream("Hi", max_thinking_tokens=3, **GREEDY) if hasattr(e, "logprobs"))


def test_a_logprob_is_the_log_softmax_of_the_row_with_the_masks():
    row = np.array([2.0, 1.0, -np.inf, 0.5])
    expected = row - np.log(np.exp(row[[0, 1, 3]]).sum())
    assert log_softmax_at(row, [0, 1, 3]) == pytest.approx(expected[[0, 1, 3]])
    assert most_likely(row, 3) == [0, 1, 3] and most_likely(row, 9) == [0, 1, 3]
