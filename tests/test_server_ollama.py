"""Ollama's API on a real ``qwq-edge serve``, driven by the official ``ollama`` client."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import ollama
import pytest
from serving import KEY, http, running_server
from test_models import FIXTURE_REPO, cache_file

import qwq_edge
from qwq_edge.events import AnswerDelta, Done, GenerationResult, GenerationStats, ThinkingDelta
from qwq_edge.server.ollama_api import ChatRequest, OllamaReply
from qwq_edge.server.schemas import parse

QUESTION = [{"role": "user", "content": "What is 2+3?"}]
#: Short generations: a thinking budget of a dozen tokens, the runtime's wrap-up (28 tokens), a short answer.
SHORT = {"max_thinking_tokens": 12, "num_predict": 80}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
CELSIUS = {"type": "object", "properties": {"celsius": {"type": "integer"}}, "required": ["celsius"]}


@pytest.fixture(scope="module")
def client(door_server):
    return ollama.Client(host=door_server.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=120)


@pytest.fixture(scope="module")
def name(client):
    return client.list().models[0].model


def chat_json(server, **body) -> dict:
    """One ``/api/chat`` reply as JSON (Ollama's client drops what it does not know: ``qwq_edge``)."""
    answer = http("POST", f"{server.url}/api/chat", {"stream": False, **body}, key=KEY)
    assert answer.status == 200, answer.body
    return answer.body


def test_think_true_gives_the_thinking_and_the_answer(client, name):
    reply = client.chat(model=name, messages=QUESTION, think=True, options=SHORT)
    assert reply.message.thinking and reply.message.content and reply.message.role == "assistant"
    assert reply.done and reply.done_reason in ("stop", "length") and reply.model == name
    assert reply.prompt_eval_count > 10 and reply.total_duration >= reply.eval_duration > 0
    assert reply.load_duration == 0 and reply.prompt_eval_duration > 0 and 0 < reply.eval_count <= 80


def test_think_false_answers_without_thinking(client, name):
    reply = client.chat(model=name, messages=QUESTION, think=False, options={"num_predict": 20})
    assert reply.message.thinking is None and reply.message.content


def test_a_stream_is_thinking_chunks_then_answer_chunks_then_the_counts(client, name):
    parts = list(client.chat(model=name, messages=QUESTION, think=True, stream=True, options=SHORT))
    last, chunks = parts[-1], parts[:-1]
    assert last.done and not any(part.done for part in chunks) and last.eval_count > 0
    thinking = [bool(part.message.thinking) for part in chunks]
    answering = [bool(part.message.content) for part in chunks]
    assert sum(thinking) >= 2 and sum(answering) >= 2, [part.message for part in chunks]
    assert thinking.index(False) == answering.index(True) and not any(thinking[answering.index(True) :])
    assert all(part.created_at.endswith("Z") for part in parts)


def test_a_think_level_qwq_edge_s_options_and_its_account(door_server, name):
    """A level is an effort preset; an explicit budget in ``options`` wins over it; qwq-edge's
    options go by their names, Ollama's load-time ones are accepted and ignored; the last
    object carries qwq-edge's account, which adds up to Ollama's counts."""
    options = {**SHORT, "seed": 7, "temperature": 0.4, "num_ctx": 1024, "num_thread": 4, "mirostat": 1}
    options |= {"min_thinking_tokens": 0, "language": "en", "loop_guard": False, "max_thinking_tokens": 8}
    reply = chat_json(door_server, model=name, messages=QUESTION, think="low", options=options, keep_alive="-1")
    counts = reply["qwq_edge"]
    assert reply["message"]["thinking"] and counts["thinking_tokens"] <= 8
    assert reply["eval_count"] == counts["thinking_tokens"] + counts["forced_tokens"] + counts["answer_tokens"]
    skipped = chat_json(door_server, model=name, messages=QUESTION, think=False, options={"num_predict": 20})
    assert "thinking" not in skipped["message"] and skipped["qwq_edge"]["thinking_closed_by"] == "skipped"


def test_num_predict_and_stop(client, name):
    cut = client.chat(model=name, messages=[{"role": "user", "content": "Count from 1 to 50."}], think=False,
                      options={"num_predict": 10})  # fmt: skip
    assert cut.done_reason == "length" and cut.eval_count <= 10
    question = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
    stopped = client.chat(model=name, messages=question, think=False, options={"stop": ["France"], "num_predict": 30})
    assert "capital of" in stopped.message.content and "France" not in stopped.message.content


def test_generate_raw_and_templated(client, name):
    raw = client.generate(model=name, prompt="The capital of France is", raw=True, options={"num_predict": 5})
    assert "Paris" in raw.response and raw.thinking is None and raw.done_reason == "length"
    templated = client.generate(model=name, prompt="What is 2+3?", system="Be brief.", options=SHORT)
    assert templated.thinking and templated.response and templated.eval_count <= 80
    parts = list(client.generate(model=name, prompt="What is 2+3?", think=False, stream=True, options=SHORT))
    assert len(parts) > 2 and parts[-1].done and "".join(part.response for part in parts).strip()


def test_format_json_and_a_schema(client, name):
    ask = [{"role": "user", "content": "Give a JSON object with the key a set to 1."}]
    plain = client.chat(model=name, messages=ask, think=False, format="json", options={"num_predict": 30})
    assert isinstance(json.loads(plain.message.content), dict)
    ask = [{"role": "user", "content": "The temperature in Paris, as JSON."}]
    held = client.chat(model=name, messages=ask, think=False, format=CELSIUS, options={"num_predict": 30})
    assert isinstance(json.loads(held.message.content)["celsius"], int)


def test_a_tool_call_round_trip(client, name):
    """The call comes back as ``tool_calls`` with its arguments as an object; the call and the
    tool's result sent back (as Ollama's client sends them) reach the model."""
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    forced = {"tool_choice": "required", "num_predict": 60}  # qwq-edge's option: the 0.5B model is erratic
    first = client.chat(model=name, messages=ask, tools=[WEATHER], think=False, options=forced)
    call = first.message.tool_calls[0].function
    assert call.name == "get_weather" and isinstance(call.arguments["city"], str)
    result = {"role": "tool", "tool_name": "get_weather", "content": json.dumps({"celsius": 24, "sky": "clear"})}
    history = [*ask, first.message, result]
    second = client.chat(model=name, messages=history, tools=[WEATHER], think=False, format=CELSIUS,
                         options={"num_predict": 30})  # fmt: skip
    assert json.loads(second.message.content)["celsius"] == 24
    parts = list(client.chat(model=name, messages=ask, tools=[WEATHER], think=False, stream=True, options=forced))
    calls = [call for part in parts for call in part.message.tool_calls or ()]
    assert [call.function.name for call in calls] == ["get_weather"] and parts[-1].done


def test_logprobs(client, name):
    reply = client.chat(model=name, messages=QUESTION, think=False, logprobs=True, top_logprobs=2,
                        options={"num_predict": 12})  # fmt: skip
    assert 0 < len(reply.logprobs) <= 12
    assert all(entry.logprob <= 0 and len(entry.top_logprobs) == 2 for entry in reply.logprobs)


def test_list_show_ps_and_version(door_server, client, name, gguf_path):
    listed = client.list().models
    assert len(listed) == 1 and name == gguf_path.stem and listed[0].size == gguf_path.stat().st_size
    details = listed[0].details
    assert (details.format, details.family, details.quantization_level) == ("gguf", "qwen2", "Q4_K_M")
    assert details.parameter_size.endswith("M") and len(listed[0].digest) == 64
    modified = datetime.fromtimestamp(gguf_path.stat().st_mtime, timezone.utc)
    assert abs((listed[0].modified_at - modified).total_seconds()) < 0.001
    shown = client.show(f"{name}:latest")
    assert shown.capabilities == ["completion", "thinking", "tools"] and "<|im_start|>" in shown.template
    assert shown.modelinfo["general.architecture"] == "qwen2" and shown.modelinfo["qwen2.context_length"] == 32768
    parameters = dict(line.split() for line in shown.parameters.splitlines())
    assert parameters["temperature"] == "0.0" and parameters["num_ctx"] == "2048" and parameters["num_predict"] == "200"
    assert shown.details == details
    client.generate(model=name, prompt="", keep_alive=-1)  # kept loaded for ever
    loaded = client.ps().models
    assert len(loaded) == 1 and loaded[0].name == name and loaded[0].context_length == 2048
    assert loaded[0].size > listed[0].size and loaded[0].size_vram in (0, loaded[0].size)
    assert loaded[0].expires_at.year == 9999
    client.generate(model=name, prompt="", keep_alive="1h")
    expires = client.ps().models[0].expires_at
    assert 3590 < (expires - datetime.now(timezone.utc)).total_seconds() <= 3600
    client.generate(model=name, prompt="", keep_alive=-1)
    assert http("GET", f"{door_server.url}/api/version").body == {"version": qwq_edge.__version__}  # no key


def test_a_request_with_nothing_to_answer_says_the_model_is_loaded(client, name):
    assert client.chat(model=name, messages=[]).done_reason == "load"
    assert client.generate(model=name, prompt="").done_reason == "load"


def test_bad_input_gets_ollama_s_error_shape(door_server, client, name):
    with pytest.raises(ollama.ResponseError) as missing:
        client.chat(model="llama3.2", messages=QUESTION)
    assert missing.value.status_code == 404 and missing.value.error == "model 'llama3.2' not found"
    image = [{"role": "user", "content": "What is this?", "images": [b"\x89PNG"]}]
    refused = [
        ({"messages": QUESTION, "options": {"temperature": "hot"}}, "options.temperature"),
        ({"messages": QUESTION, "options": {"num_ctx": 100_000}}, "options.num_ctx"),
        ({"messages": QUESTION, "options": {"num_predict": 0}}, "options.num_predict"),
        ({"messages": QUESTION, "think": "extreme"}, "think"),
        ({"messages": QUESTION, "top_logprobs": 2}, "top_logprobs"),
        ({"messages": image}, "images"),
    ]
    for fields, words in refused:
        with pytest.raises(ollama.ResponseError) as error:
            client.chat(model=name, **fields)
        assert error.value.status_code == 400 and words in error.value.error, (fields, error.value.error)
    url = door_server.url
    checks = [
        (None, "/api/chat", {"model": name, "messages": QUESTION}, 401),
        (None, "/api/tags", None, 401),
        (KEY, "/api/chat", b"{not json", 400),
        (KEY, "/api/chat", {"model": name, "messages": QUESTION, "format": "yaml"}, 400),
        (KEY, "/api/generate", {"model": name, "prompt": "def f(", "suffix": "return 1"}, 400),
        (KEY, "/api/generate", {"model": name, "prompt": "Hi", "images": ["AA=="]}, 400),
        (KEY, "/api/show", {"model": "llama3.2"}, 404),
        (KEY, "/api/embed", {"model": name, "input": "Hi"}, 404),
    ]
    for key, path, body, status in checks:
        answer = http("GET" if body is None else "POST", url + path, body, key=key)
        assert answer.status == status and list(answer.body) == ["error"] and answer.body["error"], (path, answer.body)


def test_the_encoder_streams_what_the_whole_reply_holds():
    """Thinking, text and a call split across deltas: the streamed chunks add up to the whole reply."""
    body = parse(ChatRequest, {"model": "m", "messages": QUESTION, "tools": [WEATHER]})
    reply = OllamaReply("m", body, chat=True, tools=True)
    pieces = ["Let me check.<tool_", 'call>{"name": "get_weather", ', '"arguments": {"city": "Oslo"}}</tool_call>']
    result = GenerationResult("Hmm.", "".join(pieces), GenerationStats(thinking_tokens=2, answer_tokens=20))
    events = [ThinkingDelta("Hm"), ThinkingDelta("m."), *map(AnswerDelta, pieces), Done(result)]
    chunks = [json.loads(line) for event in events for line in reply.frames(event)]
    assert body.stream and reply.media_type == "application/x-ndjson"
    assert [chunk["done"] for chunk in chunks] == [False] * (len(chunks) - 1) + [True]
    messages = [chunk["message"] for chunk in chunks]
    whole = OllamaReply("m", body, chat=True, tools=True).whole(result)["message"]
    assert "".join(m.get("thinking", "") for m in messages) == whole["thinking"] == "Hmm."
    assert "".join(m["content"] for m in messages) == whole["content"] == "Let me check."
    streamed = [c for m in messages for c in m.get("tool_calls", ())]
    assert [c["function"] for c in streamed] == [c["function"] for c in whole["tool_calls"]]
    assert whole["tool_calls"][0]["function"]["arguments"] == {"city": "Oslo"}
    assert json.loads(reply.failure("the server is shutting down", "server_error", None)) == {
        "error": "the server is shutting down"
    }


def test_pull_streams_ollama_s_progress_offline(cli_command, gguf_path, tmp_path, monkeypatch):
    """A server started offline with a catalog model in the hub cache: it serves it under its
    catalog name; pulling it again is Ollama's progress stream; a model missing from the cache
    fails inside the stream; a name the catalog lacks is a 404 before any stream."""
    cache_file(tmp_path / "hub", FIXTURE_REPO, "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", gguf_path)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("QWQ_EDGE_HOME", str(tmp_path / "home"))
    with running_server(cli_command, "qwen2.5-coder-0.5b", "--yes", "--max-tokens", "16") as server:
        client = ollama.Client(host=server.url, timeout=120)
        assert [model.model for model in client.list().models] == ["qwen2.5-coder-0.5b:q4_k_m"]
        assert client.generate(model="qwen2.5-coder-0.5b", prompt="Hi", think=False).response
        progress = list(client.pull("qwen2.5-coder-0.5b", stream=True))
        statuses = [part.status for part in progress]
        assert statuses[0] == "pulling manifest" and statuses[-3:] == ["verifying sha256 digest", "writing manifest",
                                                                       "success"]  # fmt: skip
        layers = [part for part in progress if part.digest]
        assert layers and layers[-1].completed == layers[-1].total == 491_400_064
        assert layers[-1].status == "pulling qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
        assert client.pull("qwen2.5-coder-0.5b:latest").status == "success"
        seen = []
        with pytest.raises(ollama.ResponseError, match="not in the local Hugging Face cache"):
            for part in client.pull("deepseek-r1-distill-qwen-1.5b", stream=True):
                seen.append(part.status)
        assert seen[0] == "pulling manifest" and "success" not in seen
        with pytest.raises(ollama.ResponseError) as unknown:
            list(client.pull("gpt-17", stream=True))
        assert unknown.value.status_code == 404 and "not in the catalog" in unknown.value.error
