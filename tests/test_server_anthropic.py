"""Anthropic's Messages API on a real ``qwq-edge serve``, driven by the official ``anthropic`` SDK."""

from __future__ import annotations

import json

import anthropic
import pytest
from serving import KEY, http

RESULT = json.dumps({"celsius": 24, "sky": "clear"})
CELSIUS = {"type": "object", "properties": {"celsius": {"type": "integer"}}, "required": ["celsius"]}
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture(scope="module")
def client(door_server):
    return anthropic.Anthropic(base_url=door_server.url, api_key=KEY, max_retries=0, timeout=120)


def ask(client, text="What is 2+3?", **extra):
    extra.setdefault("max_tokens", 60)
    return client.messages.create(model="", messages=[{"role": "user", "content": text}], **extra)


def test_thinking_with_a_budget_stays_within_it_then_a_text_block(client):
    reply = ask(client, thinking={"type": "enabled", "budget_tokens": 16})
    thinking, text = reply.content[0], reply.content[-1]
    assert thinking.type == "thinking" and thinking.thinking and thinking.signature
    assert text.type == "text" and text.text
    ours = reply.model_extra["qwq_edge"]
    assert ours["thinking_tokens"] <= 16 and ours["thinking_closed_by"] in ("budget", "model")
    assert (
        reply.usage.input_tokens > 10
        and reply.usage.output_tokens == ours["thinking_tokens"] + ours["forced_tokens"] + ours["answer_tokens"]
    )
    assert reply.stop_reason in ("end_turn", "max_tokens") and reply.role == "assistant"


def test_thinking_disabled_answers_without_a_thinking_block(client):
    reply = ask(client, thinking={"type": "disabled"}, max_tokens=20)
    assert [block.type for block in reply.content] == ["text"]
    assert reply.model_extra["qwq_edge"]["thinking_tokens"] == 0


def test_max_tokens_and_stop_sequences_give_anthropic_s_stop_reasons(client):
    cut = ask(client, "Count from 1 to 50, one number per line.", thinking={"type": "disabled"}, max_tokens=8)
    assert cut.stop_reason == "max_tokens" and cut.usage.output_tokens <= 8
    question = "What is the capital of France? Answer in one sentence."
    stopped = ask(client, question, thinking={"type": "disabled"}, stop_sequences=["zzz", "France"])
    assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == "France", stopped
    assert "capital of" in stopped.content[0].text and "France" not in stopped.content[0].text


def test_the_stream_is_anthropic_s_events_and_sums_to_the_message(client):
    with client.messages.stream(
        model="",
        max_tokens=60,
        thinking={"type": "enabled", "budget_tokens": 12},
        system="Answer briefly.",
        messages=[{"role": "user", "content": "Name a colour."}],
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop" and "message_delta" in kinds
    assert kinds.count("content_block_start") == kinds.count("content_block_stop") == 2
    assert "thinking" in kinds and "text" in kinds  # the SDK's own events for thinking and text deltas
    assert [block.type for block in final.content] == ["thinking", "text"]
    assert final.content[0].signature and final.content[1].text and final.usage.output_tokens > 0
    assert final.usage.input_tokens > 10


def test_a_tool_use_round_trip_with_the_thinking_block_sent_back(client):
    first = ask(
        client,
        "What is the weather in Paris?",
        tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather"},
        thinking={"type": "enabled", "budget_tokens": 12},
        max_tokens=120,
    )
    call = first.content[-1]
    assert first.stop_reason == "tool_use" and call.type == "tool_use" and call.name == "get_weather"
    assert isinstance(call.input, dict) and isinstance(call.input.get("city"), str)
    history = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": RESULT}]},
    ]
    second = client.messages.create(  # the answer held to a schema (an extension field): the 0.5B model is erratic
        model="",
        max_tokens=80,
        tools=[WEATHER],
        thinking={"type": "disabled"},
        messages=history,
        extra_body={"response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": CELSIUS}}},
    )
    assert second.stop_reason == "end_turn" and [block.type for block in second.content] == ["text"]
    assert json.loads(second.content[0].text)["celsius"] == 24  # the tool's result reached the model


def test_a_streamed_tool_use_arrives_as_input_json(client):
    with client.messages.stream(
        model="",
        max_tokens=120,
        tools=[WEATHER],
        tool_choice={"type": "any"},
        thinking={"type": "disabled"},
        messages=[{"role": "user", "content": "Weather in Oslo?"}],
    ) as stream:
        final = stream.get_final_message()
    call = final.content[-1]
    assert final.stop_reason == "tool_use" and call.type == "tool_use" and "city" in call.input


def test_count_tokens_is_the_prompt_the_model_reads(client):
    short = client.messages.count_tokens(model="", messages=[{"role": "user", "content": "Hi"}])
    longer = client.messages.count_tokens(model="", messages=[{"role": "user", "content": "Hi there, how are you?"}])
    assert 5 < short.input_tokens < longer.input_tokens
    assert ask(client, "Hi", thinking={"type": "disabled"}, max_tokens=4).usage.input_tokens >= short.input_tokens - 8


def test_qwq_edge_s_own_options_are_extension_fields(client):
    budget = {"type": "enabled", "budget_tokens": 40}
    reply = ask(client, thinking=budget, max_tokens=150, extra_body={"min_thinking_tokens": 30, "language": "en"})
    assert reply.model_extra["qwq_edge"]["interventions"].get("wait", 0) >= 1  # an early close became "Wait"


def test_errors_have_anthropic_s_shape(door_server):
    url = f"{door_server.url}/v1/messages"
    body = {"model": "", "max_tokens": 10, "messages": [{"role": "user", "content": "Hi"}]}
    checks = [
        ({}, None, 401, "authentication_error"),
        ({"x-api-key": "wrong"}, body, 401, "authentication_error"),
        ({"x-api-key": KEY}, {**body, "max_tokens": "ten"}, 400, "invalid_request_error"),
        ({"x-api-key": KEY}, {"model": "", "messages": body["messages"]}, 400, "invalid_request_error"),
        ({"x-api-key": KEY}, {**body, "model": "claude-elsewhere"}, 404, "not_found_error"),
        ({"x-api-key": KEY}, {**body, "thinking": {"type": "enabled"}}, 400, "invalid_request_error"),
        ({"x-api-key": KEY}, {**body, "top_p": 3}, 400, "invalid_request_error"),
    ]
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA=="}}
    checks.append(({"x-api-key": KEY}, {**body, "messages": [{"role": "user", "content": [image]}]}, 400, None))
    for headers, sent, status, kind in checks:
        answer = http(
            "POST", url, sent if sent is not None else body, headers={"Content-Type": "application/json", **headers}
        )
        assert answer.status == status, (sent, answer.body)
        assert answer.body["type"] == "error" and answer.body["error"]["message"], answer.body
        assert kind is None or answer.body["error"]["type"] == kind, answer.body
    with pytest.raises(anthropic.NotFoundError):
        anthropic.Anthropic(base_url=door_server.url, api_key=KEY, max_retries=0).messages.create(
            model="nope", max_tokens=5, messages=[{"role": "user", "content": "Hi"}]
        )
