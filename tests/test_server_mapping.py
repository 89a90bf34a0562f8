"""The server's pure parts, without a model: request → options field by field, events →
chunks, stop strings, request validation, the queue, the bind warning."""

from __future__ import annotations

import asyncio
import time

import pytest

from qwq_edge import (
    AnswerDelta,
    Done,
    GenerationOptions,
    GenerationResult,
    GenerationStats,
    Intervention,
    InvalidRequestError,
    ThinkingDelta,
)
from qwq_edge.cli.serve import bind_warning
from qwq_edge.server.errors import APIError, QueueFullError, ShuttingDownError
from qwq_edge.server.mapping import (
    Reply,
    chat_chunk,
    chat_response,
    completion_chunk,
    messages_from_request,
    options_from_request,
    usage,
)
from qwq_edge.server.queue import Runner
from qwq_edge.server.schemas import ChatCompletionRequest, CompletionRequest, parse
from qwq_edge.text.stops import stop_at

HI = [{"role": "user", "content": "Hi"}]


def chat(**fields) -> ChatCompletionRequest:
    return parse(ChatCompletionRequest, {"messages": HI, **fields})


# -- request → GenerationOptions, field by field ---------------------------------------


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, {}),
        ({"max_tokens": 100}, {"max_tokens": 100}),
        ({"max_completion_tokens": 50}, {"max_tokens": 50}),
        ({"max_tokens": 100, "max_completion_tokens": 50}, {"max_tokens": 50}),
        ({"temperature": 0.2}, {"temperature": 0.2}),
        ({"temperature": 1}, {"temperature": 1.0}),
        ({"top_p": 0.9}, {"top_p": 0.9}),
        ({"seed": 7}, {"seed": 7}),
        ({"presence_penalty": 1.5}, {"presence_penalty": 1.5}),
        ({"repetition_penalty": 1.1}, {"repetition_penalty": 1.1}),
        ({"top_k": 20}, {"top_k": 20}),
        ({"min_p": 0.05}, {"min_p": 0.05}),
        ({"max_thinking_tokens": 64}, {"max_thinking_tokens": 64}),
        ({"thinking_budget_tokens": 64}, {"max_thinking_tokens": 64}),
        ({"min_thinking_tokens": 8}, {"min_thinking_tokens": 8}),
        ({"max_answer_tokens": 30}, {"max_answer_tokens": 30}),
        ({"reasoning_effort": "low"}, {"effort": "low"}),
        ({"reasoning_effort": "minimal"}, {"effort": "minimal"}),
        ({"reasoning_effort": "xhigh"}, {"effort": "max"}),
        ({"reasoning_effort": "none"}, {"think": False}),
        ({"language": "zh"}, {"language": "zh"}),
        ({"language_in_thinking": True}, {"language_in_thinking": True}),
        ({"loop_guard": False}, {"loop_guard": False}),
        ({"think": False}, {"think": False}),
        ({"chat_template_kwargs": {"enable_thinking": False}}, {"think": False}),
        ({"chat_template_kwargs": {"enable_thinking": False}, "think": True}, {"think": True}),
        ({"reasoning_format": "none"}, {"reasoning_format": "none"}),
        ({"frequency_penalty": 0.5}, {"frequency_penalty": 0.5}),
        ({"user": "me", "stop": "x"}, {}),
        ({"draft": "ngram"}, {"draft": "ngram"}),
        ({"draft": "off"}, {"draft": "off"}),
    ],
)
def test_each_request_field_becomes_its_option(fields, expected):
    assert options_from_request(chat(**fields), GenerationOptions()) == GenerationOptions(**expected)


def test_request_fields_change_the_server_defaults_and_effort_replaces_their_numbers():
    defaults = GenerationOptions(max_thinking_tokens=512, min_thinking_tokens=16, temperature=0.6, language="en")
    assert options_from_request(chat(temperature=0), defaults) == defaults.replace(temperature=0.0)
    high = options_from_request(chat(reasoning_effort="high"), defaults)
    assert (high.effort, high.max_thinking_tokens, high.min_thinking_tokens) == ("high", None, None)
    mixed = options_from_request(chat(reasoning_effort="high", max_thinking_tokens=100), defaults)
    assert (mixed.max_thinking_tokens, mixed.min_thinking_tokens) == (100, None)


def test_a_request_names_the_server_s_draft_model_never_a_path():
    served = GenerationOptions(draft="/models/draft.gguf")
    assert options_from_request(chat(draft="model"), served).draft == "/models/draft.gguf"
    assert options_from_request(chat(draft="off"), served).draft == "off"
    assert options_from_request(chat(), served).draft == "/models/draft.gguf"
    for draft, defaults, message in (
        ("/etc/passwd", served, "draft must be one of ngram, off, model"),
        ("model", GenerationOptions(draft="ngram"), "no draft model"),
    ):
        with pytest.raises(APIError, match=message) as error:
            options_from_request(chat(draft=draft), defaults)
        assert error.value.status == 400 and error.value.body()["error"]["param"] == "draft"


def test_a_completion_request_maps_the_same_way():
    body = parse(CompletionRequest, {"prompt": "x", "max_tokens": 5, "top_k": 3})
    assert options_from_request(body, GenerationOptions()) == GenerationOptions(max_tokens=5, top_k=3)


def test_values_the_options_refuse_are_the_library_s_error():
    with pytest.raises(InvalidRequestError, match="effort"):
        options_from_request(chat(reasoning_effort="extreme"), GenerationOptions())
    with pytest.raises(InvalidRequestError, match="language"):
        options_from_request(chat(language="klingon"), GenerationOptions())


def test_messages_join_text_parts_map_developer_and_drop_earlier_thinking():
    body = chat(
        messages=[
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": "<think>\nhmm\n</think>\n\nFour.", "reasoning_content": "hmm"},
            {"role": "user", "content": "And 3+3?"},
        ]
    )
    assert messages_from_request(body) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "ab"},
        {"role": "assistant", "content": "Four."},
        {"role": "user", "content": "And 3+3?"},
    ]
    with pytest.raises(APIError, match="only text"):
        messages_from_request(chat(messages=[{"role": "user", "content": [{"type": "image_url"}]}]))


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": "Hi"}, "messages"),
        ({"messages": [{"role": "robot", "content": "Hi"}]}, "messages.0.role"),
        ({"messages": HI, "temperature": "warm"}, "temperature"),
        ({"messages": HI, "max_tokens": 0}, "max_tokens"),
        ({"messages": HI, "stream": "yes"}, "stream"),
        ({"messages": HI, "n": 9}, "n"),
        ({"messages": HI, "tools": "get_weather"}, "tools"),
        ({"messages": HI, "thinking_budget_tokens": -1}, "thinking_budget_tokens"),
        ({}, "messages"),
    ],
)
def test_bad_bodies_are_400_naming_the_field(body, param):
    with pytest.raises(APIError) as error:
        parse(ChatCompletionRequest, body)
    assert error.value.status == 400 and error.value.param == param
    assert set(error.value.body()["error"]) == {"message", "type", "param", "code"}


# -- events → chunks -------------------------------------------------------------------

STATS = GenerationStats(thinking_tokens=5, answer_tokens=3, forced_tokens=2, prompt_tokens=20, finish_reason="budget")
RESULT = GenerationResult("thought", "answer", STATS)
REPLY = Reply("m", "chat", id="chatcmpl-1", created=1)


def test_events_become_chat_chunks():
    thinking = chat_chunk(ThinkingDelta("hm", 4), REPLY)
    assert thinking["object"] == "chat.completion.chunk" and thinking["id"] == "chatcmpl-1"
    assert thinking["choices"][0]["delta"] == {"reasoning_content": "hm", "reasoning": "hm"}
    assert thinking["choices"][0]["qwq_edge"] == {"thinking_tokens": 4}
    wait = chat_chunk(ThinkingDelta("\n\nWait,", 4, forced="wait"), REPLY)["choices"][0]
    assert wait["delta"]["reasoning_content"] == "\n\nWait," and wait["qwq_edge"]["forced"] == "wait"
    assert chat_chunk(AnswerDelta("Hi"), REPLY)["choices"][0]["delta"] == {"content": "Hi"}
    assert chat_chunk(AnswerDelta(""), REPLY) is None
    steer = chat_chunk(Intervention("budget", "…"), REPLY)["choices"][0]
    assert steer["delta"] == {} and steer["qwq_edge"]["intervention"]["kind"] == "budget"
    end = chat_chunk(Done(RESULT), REPLY)["choices"][0]
    assert end["finish_reason"] == "stop" and end["qwq_edge"]["finish_reason"] == "budget"


def test_a_result_becomes_a_response_with_usage():
    body = chat_response(RESULT, REPLY)
    message = body["choices"][0]["message"]
    assert (message["content"], message["reasoning_content"], message["reasoning"]) == ("answer", "thought", "thought")
    assert usage(STATS) == body["usage"]
    assert body["usage"]["completion_tokens"] == 10 and body["usage"]["total_tokens"] == 30
    assert body["usage"]["completion_tokens_details"] == {"reasoning_tokens": 5 + 2}  # the forced close is thinking
    skipped = GenerationStats(answer_tokens=3, forced_tokens=2, thinking_closed_by="skipped")
    assert usage(skipped)["completion_tokens_details"] == {"reasoning_tokens": 0}  # an empty thinking is none
    length = GenerationResult("", "a", GenerationStats(finish_reason="length"))
    assert chat_response(length, REPLY)["choices"][0]["finish_reason"] == "length"


def test_completion_chunks_carry_thinking_and_answer_as_one_text():
    reply = Reply("m", "completion")
    assert reply.id.startswith("cmpl-")
    assert completion_chunk(ThinkingDelta("a"), reply)["choices"][0]["text"] == "a"
    assert completion_chunk(AnswerDelta("b"), reply)["object"] == "text_completion"
    assert completion_chunk(Intervention("budget", "x"), reply) is None


# -- stop strings ----------------------------------------------------------------------


def _run_stops(pieces: list[str], stops: list[str]) -> tuple[str, str, int]:
    cancelled = []
    events = [ThinkingDelta("END in thinking"), *(AnswerDelta(p) for p in pieces)]
    events.append(Done(GenerationResult("END in thinking", "".join(pieces), GenerationStats(finish_reason="length"))))
    out = list(stop_at(iter(events), stops, lambda: cancelled.append(1)))
    shown = "".join(e.text for e in out if isinstance(e, AnswerDelta))
    done = out[-1].result
    assert done.answer == shown
    return shown, done.stats.finish_reason, len(cancelled)


def test_stop_strings_end_the_answer_across_pieces():
    assert _run_stops(["one\ntwo", " EN", "D three"], ["END"]) == ("one\ntwo ", "stop", 1)
    assert _run_stops(["a", "b", "c"], ["x", "bc"]) == ("a", "stop", 1)
    assert _run_stops(["ab", "E"], ["END"]) == ("abE", "length", 0)  # a held-back prefix is released at the end
    assert _run_stops(["abc"], []) == ("abc", "length", 0)


# -- the queue -------------------------------------------------------------------------


def _events(n: int, log: list[str], name: str):
    for i in range(n):
        log.append(name)
        if n > 100:
            time.sleep(0.001)  # a long generation: still running when its consumer goes
        yield AnswerDelta(str(i))


async def _consume(runner: Runner, name: str, log: list[str], n: int = 3, places: int = 1) -> str:
    admission = runner.admit(places)
    return "".join([e.text async for e in runner.events(admission, lambda: _events(n, log, name), lambda: None)])


def test_the_runner_runs_one_at_a_time_in_order_and_refuses_past_its_queue():
    async def scenario():
        runner = Runner(max_queue=1)
        log: list[str] = []
        first, second = asyncio.ensure_future(_consume(runner, "a", log)), None
        await asyncio.sleep(0)
        second = asyncio.ensure_future(_consume(runner, "b", log))
        await asyncio.sleep(0)
        with pytest.raises(QueueFullError) as full:
            runner.admit()
        assert full.value.status == 429 and "Retry-After" in full.value.headers
        assert await first == "012" and await second == "012"
        assert log == ["a"] * 3 + ["b"] * 3 and not runner.busy and runner.waiting == 0

    asyncio.run(scenario())


def test_a_parallel_runner_runs_that_many_at_once_and_queues_the_rest():
    async def scenario():
        runner = Runner(max_queue=1, parallel=2)
        log: list[str] = []
        runs = [asyncio.ensure_future(_consume(runner, name, log, 200)) for name in "abc"]
        await asyncio.sleep(0)
        with pytest.raises(QueueFullError):
            runner.admit()
        assert [len(text) for text in await asyncio.gather(*runs)] == [490] * 3
        assert set(log[:100]) == {"a", "b"} and log.index("c") >= 200  # a and b together, c after one of them
        assert not runner.busy and runner.waiting == 0

    asyncio.run(scenario())


def test_a_request_with_n_choices_takes_n_places():
    """Two places: a request of two choices runs alone, the next waits for both to be free; one of
    three choices (more than the runner has) is admitted and runs alone once nothing runs."""

    async def scenario():
        runner = Runner(max_queue=2, parallel=2)
        log: list[str] = []
        wide = asyncio.ensure_future(_consume(runner, "n2", log, 200, places=2))
        await asyncio.sleep(0)
        single = asyncio.ensure_future(_consume(runner, "one", log, 3))
        await asyncio.sleep(0)
        assert runner.running == 2 and runner.waiting == 1
        with pytest.raises(QueueFullError):
            runner.admit(2)  # two more places would be three waiting
        await asyncio.gather(wide, single)
        assert log.index("one") >= 200  # it waited for both places
        assert await _consume(runner, "n3", log, 3, places=3) == "012"
        assert not runner.busy and runner.waiting == 0

    asyncio.run(scenario())


def test_an_abandoned_consumer_stops_its_generation_and_frees_the_runner():
    async def scenario():
        stops: list[int] = []
        runner = Runner(max_queue=0)
        log: list[str] = []
        run = runner.events(runner.admit(), lambda: _events(10_000, log, "long"), lambda: stops.append(1))
        await run.__anext__()
        await run.aclose()
        assert stops and len(log) < 10_000 and not runner.busy
        assert await _consume(runner, "next", log) == "012"

    asyncio.run(scenario())


def test_shutdown_ends_waiting_requests_and_refuses_new_ones():
    async def scenario():
        runner = Runner(max_queue=2)
        running = runner.events(runner.admit(), lambda: _events(10_000, [], "long"), lambda: None)
        await running.__anext__()
        waiting = asyncio.ensure_future(_consume(runner, "w", []))
        await asyncio.sleep(0)
        runner.shutdown()
        with pytest.raises(ShuttingDownError):
            await waiting
        with pytest.raises(ShuttingDownError):
            async for _ in running:
                pass
        with pytest.raises(ShuttingDownError):
            runner.admit()

    asyncio.run(scenario())


def test_binding_beyond_loopback_without_a_key_warns():
    assert bind_warning("127.0.0.1", None) is None and bind_warning("localhost", None) is None
    assert bind_warning("::1", None) is None and bind_warning("0.0.0.0", "key") is None
    assert "without an API key" in bind_warning("0.0.0.0", None)


def test_serve_takes_the_server_options_and_every_generation_option_of_run():
    from click.testing import CliRunner

    from qwq_edge.cli import cli

    helptext = CliRunner().invoke(cli, ["serve", "--help"]).output
    run_help = CliRunner().invoke(cli, ["run", "--help"]).output
    for option in ("--host", "--port", "--api-key", "--max-queue", "--cors-origin", "--model-id"):
        assert option in helptext
    for option in ("--budget", "--min-thinking-tokens", "--effort", "--language", "--max-tokens", "--ctx", "--engine"):
        assert option in helptext and option in run_help
