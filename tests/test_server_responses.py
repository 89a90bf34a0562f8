"""OpenAI's Responses API on a real ``qwq-edge serve``, driven by the official ``openai`` SDK."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest
from serving import KEY, http

from qwq_edge.events import AnswerDelta, Done, GenerationResult, GenerationStats, ThinkingDelta
from qwq_edge.runtime.options import GenerationOptions
from qwq_edge.server.openai_responses import ResponsesReply, ResponsesRequest, options_of
from qwq_edge.server.schemas import parse

#: Short generations: a 12-token thinking budget (an extension field) and a small bound on the whole.
SHORT = {"max_thinking_tokens": 12}
RESULT = json.dumps({"celsius": 24, "sky": "clear"})
CELSIUS = {"type": "object", "properties": {"celsius": {"type": "integer"}}, "required": ["celsius"]}
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture(scope="module")
def client(door_server):
    return openai.OpenAI(base_url=f"{door_server.url}/v1", api_key=KEY, max_retries=0, timeout=120)


def ask(client, question="What is 2+3?", effort="low", **extra):
    extra.setdefault("max_output_tokens", 48)
    extra.setdefault("extra_body", SHORT)
    return client.responses.create(model="", input=question, reasoning={"effort": effort}, **extra)


def ours(response) -> dict:
    return response.model_extra["qwq_edge"]


def test_effort_low_gives_a_reasoning_item_then_the_answer(client):
    raw = client.responses.with_raw_response.create(
        model="", input="What is 2+3?", reasoning={"effort": "low"}, max_output_tokens=48, extra_body=SHORT
    )
    response = raw.parse()
    assert raw.headers["x-request-id"] == response.id and response.id.startswith("resp_")
    reasoning, message = response.output[0], response.output[-1]
    assert [item.type for item in response.output] == ["reasoning", "message"]
    assert reasoning.id.startswith("rs_") and reasoning.summary == [] and reasoning.content[0].type == "reasoning_text"
    assert reasoning.content[0].text and 0 < ours(response)["thinking_tokens"] <= 12
    assert message.id.startswith("msg_") and message.role == "assistant" and message.content[0].type == "output_text"
    assert response.output_text == message.content[0].text and response.output_text
    assert response.object == "response" and response.status in ("completed", "incomplete")
    counts, usage = ours(response), response.usage
    assert usage.output_tokens_details.reasoning_tokens == counts["thinking_tokens"] + counts["forced_tokens"]
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens and usage.input_tokens > 10
    assert usage.output_tokens <= 48 and response.max_output_tokens == 48 and response.reasoning.effort == "low"


def test_effort_none_answers_without_a_reasoning_item(client):
    response = ask(client, effort="none", max_output_tokens=24, instructions="Answer briefly.")
    assert [item.type for item in response.output] == ["message"] and response.output_text
    assert response.instructions == "Answer briefly." and response.reasoning.effort == "none"
    assert ours(response)["thinking_tokens"] == 0 and response.usage.output_tokens_details.reasoning_tokens == 0


def test_max_output_tokens_ends_an_incomplete_response(client):
    response = ask(client, "Count from 1 to 50, one number per line.", effort="none", max_output_tokens=8)
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    assert response.usage.output_tokens <= 8 and response.output[-1].status == "incomplete"


def test_the_stream_is_responses_events_in_order_and_sums_to_the_response(client):
    stream = client.responses.create(
        model="",
        input="What is 2+3?",
        reasoning={"effort": "minimal"},
        max_output_tokens=120,
        stream=True,
        extra_body=SHORT,
    )
    events = list(stream)
    kinds = [event.type for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert events[0].response.status == "in_progress" and events[0].response.output == []
    first_text = kinds.index("response.output_text.delta")
    assert kinds.index("response.reasoning_text.delta") < kinds.index("response.reasoning_text.done") < first_text
    final = events[-1].response
    assert [item.type for item in final.output] == ["reasoning", "message"]
    added = [event.output_index for event in events if event.type == "response.output_item.added"]
    assert added == [0, 1] and [e.output_index for e in events if e.type == "response.output_item.done"] == [0, 1]
    thinking = "".join(event.delta for event in events if event.type == "response.reasoning_text.delta")
    answer = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert thinking == final.output[0].content[0].text and answer == final.output_text and answer
    assert final.usage.output_tokens > 0 and final.id == events[0].response.id


def test_the_sdk_s_stream_helper_accumulates_the_final_response(client):
    with client.responses.stream(
        model="", input="Say hi.", reasoning={"effort": "none"}, max_output_tokens=40
    ) as stream:
        texts = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert final.output_text == "".join(texts) and final.output_text and final.status == "completed"


def test_a_function_call_round_trip(client):
    question = {"role": "user", "content": "What is the weather in Paris?"}
    first = client.responses.create(
        model="",
        input=[question],
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
        reasoning={"effort": "low"},
        max_output_tokens=120,
        extra_body=SHORT,
    )
    call = first.output[-1]
    assert [item.type for item in first.output] == ["reasoning", "function_call"]
    assert call.name == "get_weather" and call.id.startswith("fc_") and call.call_id and call.status == "completed"
    assert isinstance(json.loads(call.arguments)["city"], str)
    history = [question, *(item.model_dump(exclude_none=True) for item in first.output)]
    history.append({"type": "function_call_output", "call_id": call.call_id, "output": RESULT})
    second = client.responses.create(  # the answer held to a schema: the 0.5B model is erratic
        model="",
        input=history,
        tools=[WEATHER],
        reasoning={"effort": "none"},
        max_output_tokens=60,
        text={"format": {"type": "json_schema", "name": "reading", "schema": CELSIUS, "strict": True}},
    )
    assert [item.type for item in second.output] == ["message"]
    assert json.loads(second.output_text)["celsius"] == 24  # the tool's result reached the model


def test_a_streamed_function_call_arrives_as_argument_events(client):
    events = list(
        client.responses.create(
            model="",
            input="Weather in Oslo?",
            tools=[WEATHER],
            tool_choice="required",
            reasoning={"effort": "none"},
            max_output_tokens=80,
            stream=True,
        )
    )
    kinds = [event.type for event in events]
    assert "response.function_call_arguments.delta" in kinds and kinds[-1] == "response.completed"
    done = next(event for event in events if event.type == "response.function_call_arguments.done")
    call = events[-1].response.output[-1]
    assert call.type == "function_call" and call.arguments == done.arguments and "city" in json.loads(done.arguments)


def test_a_json_schema_answer_validates(client):
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    response = ask(
        client,
        "Invent a person with a name and an age.",
        max_output_tokens=80,
        text={"format": {"type": "json_schema", "name": "person", "schema": schema, "strict": True}},
    )
    jsonschema.validate(json.loads(response.output_text), schema)
    assert response.text.format.type == "json_schema" and response.output[0].type == "reasoning"


def test_qwq_edge_s_own_options_are_extension_fields(client):
    extra = {"max_thinking_tokens": 40, "min_thinking_tokens": 30, "language": "en"}
    response = ask(client, max_output_tokens=150, extra_body=extra)
    assert ours(response)["interventions"].get("wait", 0) >= 1  # an early close became "Wait"


def test_errors_have_openai_s_shape(door_server, client):
    url = f"{door_server.url}/v1/responses"
    body = {"model": "", "input": "Hi", "max_output_tokens": 8}
    image = {"type": "input_image", "image_url": "data:image/png;base64,AA=="}
    checks = [
        (None, body, 401, None),
        (KEY, {**body, "previous_response_id": "resp_123"}, 400, "previous_response_id"),
        (KEY, {**body, "conversation": "conv_123"}, 400, "conversation"),
        (KEY, {**body, "background": True}, 400, "background"),
        (KEY, {**body, "tools": [{"type": "web_search"}]}, 400, "tools.0.type"),
        (KEY, {**body, "input": [{"role": "user", "content": [image]}]}, 400, "input.0.content"),
        (KEY, {**body, "reasoning": {"effort": "extreme"}}, 400, "reasoning.effort"),
        (KEY, {**body, "input": [{"type": "item_reference", "id": "msg_1"}]}, 400, "input.0.type"),
        (KEY, {**body, "max_output_tokens": "ten"}, 400, "max_output_tokens"),
        (KEY, {**body, "model": "gpt-elsewhere"}, 404, "model"),
    ]
    for key, sent, status, param in checks:
        answer = http("POST", url, sent, key=key, headers={"Content-Type": "application/json"})
        assert answer.status == status, (sent, answer.body)
        error = answer.body["error"]
        assert error["message"] and error["type"] in ("invalid_request_error", "authentication_error"), answer.body
        assert param is None or error["param"] == param, answer.body
    with pytest.raises(openai.BadRequestError, match="stateless"):
        client.responses.create(model="", input="Hi", previous_response_id="resp_123")


def test_the_encoder_streams_the_items_the_whole_response_has():
    """Thinking, text and a call split across deltas: the stream's items, in order, are the whole
    reply's; every event is named and numbered; a failure is one more numbered ``error`` event."""
    body = parse(ResponsesRequest, {"input": "Hi", "tools": [WEATHER], "stream": True})
    reply = ResponsesReply("m", body, options_of(body, GenerationOptions()))
    call = '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>'
    answer = f"Let me check.\n{call}\n"
    result = GenerationResult("Hmm.", answer, GenerationStats(thinking_tokens=2, answer_tokens=20))
    deltas = [
        ThinkingDelta("Hm"),
        ThinkingDelta("m."),
        AnswerDelta(answer[:20]),
        AnswerDelta(answer[20:]),
        Done(result),
    ]
    frames = [*reply.opening(), *(frame for event in deltas for frame in reply.frames(event))]
    events = [json.loads(frame.split("data: ", 1)[1]) for frame in frames]
    assert all(frame.startswith(f"event: {event['type']}\n") for frame, event in zip(frames, events, strict=True))
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    streamed, whole = events[-1]["response"]["output"], reply.whole(result)["output"]

    def shape(item):
        return item["type"], [part["text"] for part in item.get("content", [])], item.get("arguments"), item["status"]

    assert [shape(item) for item in streamed] == [shape(item) for item in whole]
    assert [item["type"] for item in streamed] == ["reasoning", "message", "function_call"]
    assert streamed[1]["content"][0]["text"] == "Let me check." and events[-1]["type"] == "response.completed"
    failure = reply.failure("the server is shutting down", "server_error", "shutting_down")
    assert failure.startswith("event: error\n") and f'"sequence_number": {len(events)}' in failure
