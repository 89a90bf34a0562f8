"""GenerationOptions: one options object, checked once, saved and restored exactly."""

import dataclasses
import json
import threading
import time

import click
import pytest

from qwq_edge import Chat, ChatFileError, Done, GenerationOptions, InvalidRequestError
from qwq_edge.runtime.options import DECLARED, Declared
from qwq_edge.server.errors import APIError
from qwq_edge.server.schemas import ChatCompletionRequest, CompletionRequest, parse

GREEDY_SHORT = {"temperature": 0.0, "reasoning_format": "none", "max_answer_tokens": 3}

#: Every field set to a value other than its default.
EVERY_OPTION = GenerationOptions(
    max_thinking_tokens=300,
    min_thinking_tokens=20,
    max_answer_tokens=40,
    max_tokens=500,
    effort="high",
    think=False,
    loop_guard=False,
    language="zh",
    language_in_thinking=True,
    reasoning_format="qwq-preview",
    system="Answer in verse.",
    temperature=0.3,
    top_p=0.8,
    top_k=7,
    min_p=0.05,
    presence_penalty=1.5,
    frequency_penalty=0.5,
    repetition_penalty=1.1,
    seed=42,
    top_logprobs=3,
    draft="ngram",
    response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "integer"}}},
    tools=[{"type": "function", "function": {"name": "now", "parameters": {"type": "object"}}}],
    tool_choice={"type": "function", "function": {"name": "now"}},
)


def test_every_field_differs_from_its_default_in_the_fixture():
    default = GenerationOptions().to_dict()
    assert all(value != default[name] for name, value in EVERY_OPTION.to_dict().items())


# -- each option declared once: the CLI flag and the HTTP field come from the declaration ----


def _click_params() -> dict[str, click.Option]:
    from qwq_edge.cli import cli

    return {param.name: param for param in cli.commands["run"].params if isinstance(param, click.Option)}


def test_every_option_has_a_cli_flag_or_says_why_not():
    params = _click_params()
    for name, declared in DECLARED.items():
        if declared.flags is None and not declared.negate:
            assert declared.no_flag, f"{name} has no CLI flag and no reason"
            continue
        flags = declared.flags or ((declared.negate,) if declared.negate else ("--" + name.replace("_", "-"),))
        assert name in params, f"the CLI has no flag for {name}"
        assert set(flags) <= set(params[name].opts), (name, params[name].opts)


def test_every_option_has_an_http_field_or_says_why_not():
    chat_fields, completion_fields = ChatCompletionRequest.model_fields, CompletionRequest.model_fields
    for name, declared in DECLARED.items():
        if declared.http is None:
            assert declared.no_http, f"{name} has no HTTP field and no reason"
            assert name not in chat_fields
            continue
        aliases = chat_fields[name].validation_alias
        names = set(getattr(aliases, "choices", None) or [name])
        assert names == set(declared.http or (name,)), (name, names)
        assert (name in completion_fields) is not declared.chat_only


@pytest.mark.parametrize("name", [n for n, d in DECLARED.items() if d.low is not None or d.high is not None])
def test_a_declared_range_holds_on_every_door(name):
    """The same bound refuses a value in the Python API, the CLI's type and the request model."""
    declared = DECLARED[name]
    outside = declared.low - 1 if declared.low is not None else declared.high + 1
    with pytest.raises(InvalidRequestError, match=name):
        GenerationOptions(**{name: outside})
    with pytest.raises(click.BadParameter):
        _click_params()[name].type.convert(outside, None, None)
    http = (declared.http or (name,))[0]
    with pytest.raises(APIError) as refused:
        parse(ChatCompletionRequest, {"messages": [{"role": "user", "content": "hi"}], http: outside})
    assert refused.value.status == 400 and refused.value.param == http


def test_an_option_without_a_declaration_is_refused_at_import():
    """A field added without ``option()`` has no metadata: the table of declarations fails loudly."""
    assert all(isinstance(d, Declared) for d in DECLARED.values())
    assert list(DECLARED) == [f.name for f in dataclasses.fields(GenerationOptions)]


def test_to_dict_and_from_dict_round_trip_through_json():
    restored = GenerationOptions.from_dict(json.loads(json.dumps(EVERY_OPTION.to_dict())))
    assert restored == EVERY_OPTION


def test_replace_changes_fields_and_checks_them():
    options = GenerationOptions().replace(max_thinking_tokens=64, temperature=0)
    assert options.max_thinking_tokens == 64 and options.temperature == 0
    with pytest.raises(InvalidRequestError, match="did you mean 'max_thinking_tokens'"):
        options.replace(max_thinking_token=5)
    with pytest.raises(InvalidRequestError, match="max_thinking_tokens must be >= 0"):
        options.replace(max_thinking_tokens=-1)
    with pytest.raises(InvalidRequestError, match="above max_thinking_tokens"):
        options.replace(min_thinking_tokens=100)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"max_thinking_tokens": "10"}, "must be a whole number, not str"),
        ({"max_thinking_tokens": 1.5}, "must be a whole number"),
        ({"max_thinking_tokens": True}, "must be a whole number, not bool"),
        ({"think": 1}, "must be true or false"),
        ({"think": None}, "must be true or false, not null"),
        ({"temperature": "hot"}, "must be a number"),
        ({"temperature": -1}, "temperature must be >= 0"),
        ({"top_p": 0}, "top_p must be in"),
        ({"language": "klingon"}, "unknown language"),
        ({"language": 7}, "must be a string"),
        ({"effort": "extreme"}, "unknown effort"),
        ({"reasoning_format": "telepathy"}, "unknown reasoning format"),
        ({"budget": 5}, "unknown option 'budget'"),
        ({"sampling": {}}, "unknown option 'sampling'"),
        ({"response_format": "json"}, "must be a JSON object"),
        ({"response_format": {"type": "xml"}}, "type must be one of text, json_object, json_schema"),
        ({"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "strin"}}}}, "Invalid type"),
        ({"tools": [{"type": "function"}]}, r"tools\[0\] must be"),
        ({"tools": [{"type": "function", "function": {"name": "a b"}}]}, "letters, digits"),
        ({"tool_choice": "required"}, "no tools are given"),
        ({"tool_choice": {"type": "function", "function": {"name": "x"}}}, "not one of the tools"),
    ],
)
def test_from_dict_rejects_bad_values_with_the_librarys_error(data, message):
    with pytest.raises(InvalidRequestError, match=message):
        GenerationOptions.from_dict(data)


@pytest.mark.parametrize("data", [[1, 2], "text", None, 3])
def test_from_dict_needs_an_object(data):
    with pytest.raises(InvalidRequestError, match="options must be an object"):
        GenerationOptions.from_dict(data)


def test_effort_gives_the_limits_and_explicit_numbers_win():
    assert GenerationOptions(effort="low").thinking_limits().max_thinking_tokens == 512
    limits = GenerationOptions(effort="high", max_thinking_tokens=100).thinking_limits({"high": 9000})
    assert limits.max_thinking_tokens == 100 and limits.min_thinking_tokens == 100
    assert GenerationOptions(effort="medium").thinking_limits({"medium": 3000}).max_thinking_tokens == 3000


def test_stream_takes_options_and_overrides_and_names_unknown_ones(model):
    options = GenerationOptions(**GREEDY_SHORT)
    assert model.generate("Hi", options).stats.answer_tokens <= 3
    assert model.generate("Hi", options, max_answer_tokens=1).stats.answer_tokens <= 1
    with pytest.raises(InvalidRequestError, match="did you mean 'temperature'"):
        model.stream("Hi", options, temprature=0.5)


def test_a_chat_saves_and_restores_every_option(model, tmp_path):
    path = tmp_path / "chat.json"
    Chat(model, EVERY_OPTION).save(path)
    assert Chat.load(model, path).options == EVERY_OPTION


def test_session_changes_are_used_but_not_saved(model, tmp_path):
    path = tmp_path / "chat.json"
    Chat(model, GenerationOptions(**GREEDY_SHORT)).save(path)
    resumed = Chat.load(model, path, seed=7, max_answer_tokens=2)
    assert resumed.effective_options.seed == 7 and resumed.effective_options.max_answer_tokens == 2
    resumed.send("Hi")
    resumed.set(max_thinking_tokens=5)  # the conversation's own change is saved
    resumed.save(path)
    saved = json.loads(path.read_text())["options"]
    assert saved["seed"] is None and saved["max_answer_tokens"] == 3 and saved["max_thinking_tokens"] == 5


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ([1, 2], "options must be an object"),
        ({"budget": 3}, "unknown option 'budget'"),
        ({"max_answer_tokens": "many"}, "must be a whole number"),
        ({"sampling": {"temperature": 0.1}}, "unknown option 'sampling'"),
    ],
)
def test_a_chat_file_with_bad_options_is_a_chat_file_error(model, tmp_path, options, message):
    path = tmp_path / "chat.json"
    path.write_text(json.dumps({"format": "qwq-edge-chat", "version": 1, "options": options, "messages": []}))
    with pytest.raises(ChatFileError, match=message):
        Chat.load(model, path)


def test_the_question_joins_the_history_before_the_answer_is_generated(model):
    chat = Chat(model, GenerationOptions(**GREEDY_SHORT))
    stream = chat.stream("Name a color.")
    assert chat.unanswered == "Name a color."
    stream.close()
    chat.send("Name a fruit.")  # the unanswered question is replaced, not kept twice
    assert [m.role for m in chat.history] == ["user", "assistant"]
    assert chat.history[0].content == "Name a fruit." and chat.unanswered is None


def test_an_abandoned_suspended_stream_does_not_block_the_next_request(model):
    model.scheduler.stale_after = 0.5
    try:
        abandoned = model.stream("Count to 100.", temperature=0.0, reasoning_format="none", max_answer_tokens=200)
        next(abandoned)  # suspended and still referenced: never iterated again, never closed
        finished = threading.Event()
        threading.Thread(target=lambda: (model.generate("Hi", **GREEDY_SHORT), finished.set())).start()
        assert finished.wait(timeout=60), "the abandoned stream blocked the model"
        last = list(abandoned)[-1]  # resumed late, it only finishes up
        assert isinstance(last, Done) and last.result.stats.finish_reason == "cancelled"
    finally:
        model.scheduler.stale_after = 2.0


def test_a_request_waits_for_a_stream_that_keeps_going(model):
    model.scheduler.stale_after = 0.5
    try:
        stream = model.stream("Count to 100.", temperature=0.0, reasoning_format="none", max_answer_tokens=40)
        next(stream)
        waiter = threading.Thread(target=lambda: model.generate("Hi", **GREEDY_SHORT))
        waiter.start()
        events = []
        for event in stream:  # slow but steady: 0.1 s between tokens is not abandonment
            events.append(event)
            time.sleep(0.1)
        waiter.join(timeout=60)
        assert events[-1].result.stats.finish_reason != "cancelled"
    finally:
        model.scheduler.stale_after = 2.0


def test_a_collected_stream_gives_its_turn_back_at_once(model):
    stream = model.stream("Count to 100.", temperature=0.0, reasoning_format="none", max_answer_tokens=200)
    next(stream)
    del stream  # garbage: closed by the interpreter, the turn is released
    assert not model.scheduler.active
