"""Several generations at once on the real 0.5B GGUF: ``load(parallel=N)`` (one llama.cpp KV
cache with N sequences, one ``llama_decode`` per step) and ``serve --parallel``."""

import time

import openai
import pytest
from conftest import in_threads
from serving import running_server

from qwq_edge import ContextOverflowError, load
from qwq_edge.catalog.planner import BUDGET_ENV
from qwq_edge.errors import InsufficientMemoryError

OPTIONS = {"temperature": 0.0, "think": False, "max_answer_tokens": 24}
PROMPTS = ["Name three fruits.", "What is the capital of France?", "Count from one to five."]


@pytest.fixture(scope="module")
def pooled(gguf_path):
    with load(gguf_path, context_length=512, parallel=3) as model:
        yield model


def together(model, prompts, cancel_after=None, **options):
    """Each prompt's stream read in its own thread (the last one cancelled after
    ``cancel_after`` events, if given); the last events (``Done``), in order."""
    streams = [model.stream(prompt, **{**OPTIONS, **options}) for prompt in prompts]
    last = [None] * len(prompts)

    def read(index):
        for count, event in enumerate(streams[index]):
            if index == len(prompts) - 1 and count == cancel_after:
                streams[index].cancel()
            last[index] = event

    in_threads(read, len(prompts), timeout=120)
    return last


def test_concurrent_streams_each_answer_its_own_prompt(pooled, model):
    """Each stream's text is its own prompt's (identical to alone up to where batched arithmetic
    rounds differently: ``benchmarks/parallel.py`` counts that; the tiny f32 model in
    ``test_engines`` checks exact equality)."""
    alone = [model.generate(prompt, **OPTIONS).answer for prompt in PROMPTS]
    done = together(pooled, PROMPTS)
    for event, text in zip(done, alone, strict=True):
        assert event.result.answer.split()[:3] == text.split()[:3]
    assert pooled.parallel == 3 and not pooled.scheduler.active


def test_cancelling_one_stream_leaves_the_others_untouched(pooled, model):
    long = {"max_answer_tokens": 40}
    alone = [model.generate(prompt, **{**OPTIONS, **long}).answer for prompt in PROMPTS[:2]]
    done = together(pooled, [*PROMPTS[:2], "Write a long story about a ship."], cancel_after=3, **long)
    for event, text in zip(done[:2], alone, strict=True):
        assert event.result.answer.split()[:3] == text.split()[:3]
        assert event.result.stats.finish_reason in ("stop", "length")
    assert done[2].result.stats.finish_reason == "cancelled" and done[2].result.stats.answer_tokens < 10


def test_an_oversized_request_gets_the_context_error_and_the_others_go_on(pooled):
    with pytest.raises(ContextOverflowError):
        pooled.generate("word " * 600, **OPTIONS)
    assert pooled.generate(PROMPTS[1], **OPTIONS).stats.finish_reason in ("stop", "length")


def test_the_planner_refuses_sequences_that_do_not_fit_and_names_the_options(gguf_path, monkeypatch):
    monkeypatch.setenv(BUDGET_ENV, "2GB")
    with pytest.raises(InsufficientMemoryError) as refused:
        load(gguf_path, context_length=32768, kv_cache="f16", parallel=8)
    message = str(refused.value)
    assert "8 × 32768 tokens" in message and "--parallel" in message and "--ctx" in message


def test_the_server_answers_concurrent_requests_together(cli_command, gguf_path):
    with running_server(cli_command, gguf_path, "--parallel", "2", "--max-tokens", "64") as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0, timeout=120)
        body = {"max_answer_tokens": 24, "think": False}

        def ask(index):
            began = time.monotonic()
            messages = [{"role": "user", "content": PROMPTS[index]}]
            reply = client.chat.completions.create(model="", messages=messages, extra_body=body)
            return reply.choices[0].message.content, (began, time.monotonic())

        answers, spans = zip(*in_threads(ask, 2, timeout=120), strict=True)
        assert all(answers)
        assert spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1]  # they ran at the same time
