"""The Python API as a desktop app uses it: generate, stream, chat, cancel, threads, errors."""

import json
import threading

import llama_cpp
import pytest
from conftest import GREEDY, LONG_THINKING_PROMPT

from qwq_edge import (
    AnswerDelta,
    Chat,
    ChatFileError,
    ContextOverflowError,
    Done,
    InvalidRequestError,
    SamplingParams,
    ThinkingDelta,
    load,
)
from qwq_edge.reasoning.formats import NONE
from qwq_edge.runtime.prompt import Message


def test_generate_returns_thinking_answer_and_stats(model):
    result = model.generate("How many r in strawberry?", max_thinking_tokens=32, max_answer_tokens=16, **GREEDY)
    assert result.answer
    stats = result.to_dict()
    for key in ("thinking", "answer", "thinking_tokens", "answer_tokens", "prompt_tokens", "finish_reason"):
        assert key in stats
    assert stats["time_to_first_token"] > 0 and stats["decode_tokens_per_s"] > 0
    assert stats["prefill_tokens_per_s"] > 0


def test_stream_yields_typed_events_ending_with_done(model):
    events = list(model.stream("Hi", reasoning_format="think", max_thinking_tokens=8, max_answer_tokens=8, **GREEDY))
    assert isinstance(events[-1], Done)
    assert any(isinstance(e, ThinkingDelta) for e in events)
    answer = "".join(e.text for e in events if isinstance(e, AnswerDelta))
    assert answer == events[-1].result.answer


def test_chat_history_keeps_answers_only_and_reuses_the_kv_cache(model):
    chat = model.chat(reasoning_format="think", max_thinking_tokens=12, max_answer_tokens=12, **GREEDY)
    first = chat.send("Name a color.")
    second = chat.send("Name another one.")
    assert [m.role for m in chat.history] == ["user", "assistant", "user", "assistant"]
    assert chat.history[1].content == first.answer
    assert all(first.thinking not in m.content for m in chat.history if first.thinking)
    # Turn two re-reads only what follows the common prefix (the previous prompt up to its <think>).
    assert second.stats.cached_prompt_tokens >= first.stats.prompt_tokens - 4
    assert second.stats.cached_prompt_tokens < second.stats.prompt_tokens


def test_the_same_seed_gives_the_same_output(model):
    options = {"max_answer_tokens": 40, "temperature": 1.0, "top_k": 0, "top_p": 1.0, "reasoning_format": "none"}
    prompt = "Write a short poem about the sea."
    a = model.generate(prompt, seed=1234, **options)
    b = model.generate(prompt, seed=1234, **options)
    c = model.generate(prompt, seed=4321, **options)
    assert a.answer == b.answer
    assert a.answer != c.answer
    assert a.stats.seed == 1234


def test_sampling_settings_are_checked():
    with pytest.raises(InvalidRequestError):
        SamplingParams(top_p=0)
    with pytest.raises(InvalidRequestError):
        SamplingParams(temperature=-1)


def test_penalties_and_min_p_run_through_the_engine(model):
    result = model.generate(
        "List fruits.",
        reasoning_format="none",
        max_answer_tokens=20,
        temperature=0.7,
        min_p=0.05,
        presence_penalty=1.0,
        repetition_penalty=1.1,
        seed=7,
    )
    assert result.answer


def test_frequency_penalty_breaks_a_repetition_on_the_real_model(model):
    """OpenAI's meaning: each time a token was generated lowers its logit once more, so a
    reply that repeats one word drifts off it sooner than without the penalty."""
    prompt = "Write the word cat 40 times, separated by spaces, and nothing else."
    options = {"reasoning_format": "none", "max_answer_tokens": 40, "temperature": 0.0}
    plain = model.generate(prompt, **options).answer
    penalized = model.generate(prompt, frequency_penalty=1.5, **options).answer
    assert penalized != plain
    assert penalized.lower().count("cat") < plain.lower().count("cat")


def test_cancel_from_another_thread_stops_and_the_model_stays_usable(model):
    stream = model.stream(LONG_THINKING_PROMPT, reasoning_format="none", **GREEDY)
    seen = 0
    result = None
    for event in stream:
        if isinstance(event, AnswerDelta):
            seen += 1
            if seen == 5:
                threading.Thread(target=model.cancel).start()
        if isinstance(event, Done):
            result = event.result
    assert result is not None and result.stats.finish_reason == "cancelled"
    assert result.stats.answer_tokens < 60
    after = model.generate("Say OK.", reasoning_format="none", max_answer_tokens=4, **GREEDY)
    assert after.stats.finish_reason in ("stop", "length") and after.answer


def test_threads_share_one_model_one_request_at_a_time(model):
    prompts = ["Name a fruit.", "Name a planet.", "Name a river."]
    expected = [model.generate(p, reasoning_format="none", max_answer_tokens=10, **GREEDY).answer for p in prompts]
    results: dict[int, str] = {}

    def worker(index: int) -> None:
        results[index] = model.generate(prompts[index], reasoning_format="none", max_answer_tokens=10, **GREEDY).answer

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(prompts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert [results[i] for i in range(len(prompts))] == expected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_thinking_tokens": -1}, "max_thinking_tokens"),
        ({"max_answer_tokens": -5}, "max_answer_tokens"),
        ({"reasoning_format": "telepathy"}, "unknown reasoning format"),
        ({"top_p": 2.0}, "top_p"),
    ],
)
def test_bad_requests_raise_before_anything_runs(model, kwargs, message):
    with pytest.raises(InvalidRequestError, match=message):
        model.stream("hi", **kwargs)


def test_empty_prompt_is_rejected(model):
    with pytest.raises(InvalidRequestError, match="empty"):
        model.generate("   ")


def test_a_prompt_longer_than_the_context_is_rejected(gguf_path):
    with load(gguf_path, context_length=64) as small:
        with pytest.raises(ContextOverflowError, match="context"):
            small.generate("word " * 200)
        assert small.generate("Hi", reasoning_format="none", max_answer_tokens=3, **GREEDY).answer


def test_a_chat_saves_and_resumes(model, tmp_path):
    chat = model.chat(system="Be brief.", reasoning_format="none", max_answer_tokens=8, **GREEDY)
    chat.send("Name a color.")
    path = tmp_path / "chat.json"
    chat.save(path)
    data = json.loads(path.read_text())
    assert data["options"]["system"] == "Be brief." and len(data["messages"]) == 2
    resumed = Chat.load(model, path)
    assert resumed.history == chat.history and resumed.options.max_answer_tokens == 8
    resumed.send("Another?")
    assert len(resumed.history) == 4


def test_a_broken_chat_file_is_a_clear_error(model, tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(ChatFileError, match="not a saved qwq-edge chat"):
        Chat.load(model, path)
    with pytest.raises(ChatFileError, match="cannot read"):
        Chat.load(model, tmp_path / "missing.json")


def test_greedy_decoding_matches_llama_cpp_python_token_for_token(model, gguf_path):
    """qwq-edge's greedy fast path (argmax over the logits) against llama-cpp-python's own sampler."""
    prompt = "Write a haiku about autumn."
    tokens = model.prompts.build(model.prompt_messages([Message("user", prompt)]), NONE)
    raw = llama_cpp.Llama(str(gguf_path), n_ctx=1024, n_threads=model.engine.n_threads, verbose=False)
    try:
        expected = raw.create_completion(tokens, max_tokens=32, temperature=0.0)["choices"][0]["text"]
    finally:
        raw.close()
    ours = model.generate(prompt, reasoning_format="none", max_answer_tokens=32, temperature=0.0)
    assert ours.answer == expected.strip()


def test_stopping_at_done_or_closing_a_stream_frees_the_model(model):
    stream = model.stream("Hi", reasoning_format="none", max_answer_tokens=3, **GREEDY)
    for event in stream:
        if isinstance(event, Done):
            break  # the generator is still referenced and suspended
    abandoned = model.stream("Hi", reasoning_format="none", max_answer_tokens=30, **GREEDY)
    next(abandoned)
    abandoned.close()
    finished = threading.Event()
    threading.Thread(target=lambda: (model.generate("Hi", max_answer_tokens=2, **GREEDY), finished.set())).start()
    assert finished.wait(timeout=60), "the model lock was not released"
