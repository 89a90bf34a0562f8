"""The server's request schemas fuzzed with Hypothesis against one real ``qwq-edge serve`` process.

Bodies are built from the request models' own fields (``server/schemas.py``): each field gets
values of its type (extremes included) or any JSON at all, beside bodies that are any JSON
value and paths no client would ask for. Every answer must come within a time bound, be a
2xx or a 4xx (never a 5xx), carry JSON in OpenAI's error shape when it is an error, and keep
``max_completion_tokens``; after each batch the server still answers a normal request.
Seeded (``derandomize``) and bounded (examples, a deadline): the same cases on every run.
"""

from __future__ import annotations

import http.client
import json
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serving import running_server

from qwq_edge.runtime.options import DECLARED, TYPES
from qwq_edge.server.schemas import ChatCompletionRequest, CompletionRequest

#: An answer later than this is a hang.
TIME_BOUND = 60
FUZZ = settings(
    derandomize=True,
    database=None,
    max_examples=40,
    deadline=timedelta(seconds=TIME_BOUND * 1.5),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
#: Every generation is this short (a request's own bound, when it gives a valid one).
MAX_TOKENS = 4


@pytest.fixture(scope="module")
def server(cli_command, gguf_path):
    with running_server(cli_command, gguf_path, "--max-tokens", str(MAX_TOKENS), "--max-queue", "4") as s:
        yield s


def exchange(server, method: str, path: str, body: bytes | None) -> tuple[int, str, bytes]:
    """One request; its status, content type and body (a socket timeout fails the test: a hang)."""
    host, port = server.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=TIME_BOUND)
    try:
        connection.request(method, path, body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, response.getheader("content-type", ""), response.read()
    finally:
        connection.close()


def check_answer(status: int, kind: str, raw: bytes, bound: Any = None) -> None:
    """A 2xx or 4xx, never a 5xx; an error is OpenAI's JSON; a reply keeps its token bound."""
    assert status < 500, (status, raw[:500])
    if status >= 400:
        error = json.loads(raw)["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"], raw[:500]
        return
    if kind.startswith("text/event-stream"):
        assert raw.rstrip().endswith(b"data: [DONE]") or b'"error"' in raw, raw[-500:]
        return
    reply = json.loads(raw)
    if reply.get("object") in ("chat.completion", "text_completion"):
        limit = bound if isinstance(bound, int) and not isinstance(bound, bool) else MAX_TOKENS
        assert reply["usage"]["completion_tokens"] <= limit, reply["usage"]


def still_answers(server) -> None:
    body = {"messages": [{"role": "user", "content": "What is 2+3?"}], "max_tokens": 2}
    status, _, raw = exchange(server, "POST", "/v1/chat/completions", json.dumps(body).encode())
    assert status == 200 and json.loads(raw)["choices"], raw[:500]


# -- strategies -----------------------------------------------------------------------------

SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
ANY_JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
#: Numbers past every range, and past what a C int, a 64-bit int or a float32 holds.
EXTREMES = st.sampled_from([-1, 2**31, 2**63 - 1, -(2**63), 2**64, 10**30, 1e308, -1e-308, 0.5])


def _typed(name: str) -> st.SearchStrategy[Any]:
    """Usual values of an option's own type (its choices, when it has some)."""
    declared, kind = DECLARED[name], str(TYPES[name])
    if declared.choices:
        return st.sampled_from(list(declared.choices))
    if kind.startswith("int"):
        return st.integers(0, 64)
    if kind.startswith("float"):
        return st.floats(0, 2)
    if kind.startswith("bool"):
        return st.booleans()
    return ANY_JSON


#: Fields that are not generation options, with their usual values.
REQUEST_FIELDS = {
    "model": st.just("") | st.text(max_size=5),
    "stream": st.booleans(),
    "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
    "stop": st.text(max_size=3) | st.lists(st.text(max_size=3), max_size=3),
    "n": st.integers(0, 2),
    "logprobs": st.booleans() | st.integers(0, 2),
    "return_token_ids": st.booleans(),
    "return_stats": st.booleans(),
    "keep_alive": st.sampled_from(["5m", "-1", "1h", "forever"]) | st.integers(60, 600),  # 0 would reload each time
    "chat_template_kwargs": st.fixed_dictionaries({"enable_thinking": st.booleans()}),
    "draft": st.sampled_from(["ngram", "off", "model", "/etc/passwd"]),
    "echo": st.booleans(),
    "best_of": st.integers(0, 2),
    "tool_choice": st.sampled_from(["auto", "none", "required"])
    | st.fixed_dictionaries({"type": st.just("function"), "function": st.fixed_dictionaries({"name": st.text()})}),
}


def _usual(name: str) -> st.SearchStrategy[Any]:
    return REQUEST_FIELDS[name] if name in REQUEST_FIELDS else _typed(name)


def _field_values(model: Any, junk: bool) -> dict[str, st.SearchStrategy[Any]]:
    """Every field a request may carry, under each name it is read by: usual values most of the
    time, else extremes (or, with ``junk``, any JSON at all)."""
    values: dict[str, st.SearchStrategy[Any]] = {}
    for name, info in model.model_fields.items():
        if name in ("messages", "prompt", "max_tokens"):
            continue
        for key in getattr(info.validation_alias, "choices", None) or [name]:
            values[str(key)] = st.one_of(_usual(name), _usual(name), EXTREMES, *([ANY_JSON] if junk else []))
    return values


#: The generation bound: small and valid (or the server's), or a value that must be refused.
BOUND = st.one_of(st.integers(1, MAX_TOKENS), st.integers(1, MAX_TOKENS), st.none(), st.integers(-5, 0), ANY_JSON)
SCHEMA = st.fixed_dictionaries(
    {"type": st.sampled_from(["object", "string", "integer", "array", "nonsense"])},
    optional={"properties": st.dictionaries(st.text(max_size=5), ANY_JSON, max_size=3), "required": ANY_JSON},
)
FUNCTION = st.fixed_dictionaries({"name": st.text(max_size=12)}, optional={"parameters": SCHEMA | ANY_JSON})
TOOL = st.fixed_dictionaries({"type": st.sampled_from(["function", "x"]), "function": FUNCTION | ANY_JSON})
SCHEMA_FIELDS = {
    "tools": st.lists(TOOL, max_size=3) | ANY_JSON,
    "response_format": st.fixed_dictionaries(
        {"type": st.sampled_from(["json_object", "json_schema", "text", "xml"])},
        optional={"json_schema": st.fixed_dictionaries({"name": st.text(max_size=5), "schema": SCHEMA})},
    )
    | ANY_JSON,
}
PART = st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url"])}, optional={"text": st.text() | ANY_JSON})
MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "developer", "user", "assistant", "tool", "bot"]) | ANY_JSON},
    optional={
        "content": st.text(max_size=60) | st.lists(PART, max_size=3) | ANY_JSON,
        "tool_calls": st.lists(st.fixed_dictionaries({"function": st.fixed_dictionaries({"name": st.text()})})),
        "tool_call_id": st.text(max_size=8),
    },
)
TURN = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user", "assistant"]), "content": st.text(max_size=40)}
)
MESSAGES = st.one_of(st.lists(TURN, max_size=3), st.lists(MESSAGE, max_size=4), ANY_JSON)
PROMPTS = st.one_of(
    st.text(min_size=1, max_size=60), st.lists(st.integers(0, 151_000), min_size=1, max_size=6), ANY_JSON
)


def _bodies(model: Any, required: dict[str, st.SearchStrategy[Any]], junk: bool) -> st.SearchStrategy[dict[str, Any]]:
    """A body with its required fields and up to three others."""
    fields = {**_field_values(model, junk), **(SCHEMA_FIELDS if model is ChatCompletionRequest else {})}
    chosen = st.lists(st.sampled_from(sorted(fields)), max_size=3, unique=True)
    others = chosen.flatmap(lambda names: st.fixed_dictionaries({name: fields[name] for name in names}))
    bound = BOUND if junk else st.integers(1, MAX_TOKENS) | st.none()
    base = st.fixed_dictionaries({**required, "max_completion_tokens": bound})
    return st.tuples(base, others).map(lambda pair: {**pair[1], **pair[0]})


#: Any messages and fields (most of these are refused, each at a different check) ...
CHAT_BODIES = _bodies(ChatCompletionRequest, {"messages": MESSAGES}, junk=True)
#: ... and a usual conversation whose fields have their own types (most of these reach the engine).
CONVERSATION = st.lists(TURN, max_size=3).map(lambda turns: [*turns, {"role": "user", "content": "Hi"}])
CHAT_FIELDS = _bodies(ChatCompletionRequest, {"messages": CONVERSATION}, junk=False)
COMPLETION_BODIES = _bodies(CompletionRequest, {"prompt": PROMPTS}, junk=True)


# -- the fuzz -------------------------------------------------------------------------------


def _post(server, path: str, body: dict[str, Any]) -> None:
    status, kind, raw = exchange(server, "POST", path, json.dumps(body).encode())
    check_answer(status, kind, raw, body.get("max_completion_tokens"))


#: Body strategies per endpoint, and how many examples each gets.
POSTS = {
    "chat, any fields": ("/v1/chat/completions", CHAT_BODIES, 30),
    "chat, fields of their own types": ("/v1/chat/completions", CHAT_FIELDS, 30),
    "completion": ("/v1/completions", COMPLETION_BODIES, 20),
}


@pytest.mark.parametrize("kind", POSTS)
def test_fuzz_request_bodies(server, kind):
    path, bodies, count = POSTS[kind]

    @settings(FUZZ, max_examples=count)
    @given(bodies)
    def case(body: dict[str, Any]) -> None:
        _post(server, path, body)

    case()
    still_answers(server)


#: Cases that once gave a 500 (issue 25), tried on every run.
HI = [{"role": "user", "content": "Hi"}]
KNOWN = [
    {"messages": HI, "seed": -1, "temperature": 0.9},
    {"messages": HI, "seed": 2**64 - 1, "temperature": 0.9},
    {"messages": [{"role": "system", "content": "Greet."}]},
    {"messages": HI, "top_k": 2**31 - 1, "repetition_penalty": 1e308, "temperature": 1e308},
    {"messages": HI, "min_thinking_tokens": 2**31 - 1, "max_completion_tokens": 3},
]


@pytest.mark.parametrize("body", KNOWN)
def test_known_cases(server, body):
    _post(server, "/v1/chat/completions", body)


def test_fuzz_bodies_that_are_any_json_or_bytes(server):
    @settings(FUZZ, max_examples=30)
    @given(ANY_JSON.map(lambda value: json.dumps(value).encode()) | st.binary(max_size=200))
    def case(raw: bytes) -> None:
        for path in ("/v1/chat/completions", "/v1/completions"):
            status, kind, answer = exchange(server, "POST", path, raw)
            check_answer(status, kind, answer)

    case()
    still_answers(server)


PATHS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789/._-%?=&", max_size=30)


def test_fuzz_paths_and_methods(server):
    @settings(FUZZ, max_examples=30)
    @given(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]), PATHS)
    def case(method: str, path: str) -> None:
        for prefix in ("/", "/v1/", "/v1/models/", "/static/"):
            status, kind, answer = exchange(server, method, prefix + path, b"{}" if method != "GET" else None)
            assert status < 500, (method, prefix + path, status)
            if status >= 400 and method != "HEAD" and kind.startswith("application/json"):
                check_answer(status, kind, answer)

    case()
    still_answers(server)
