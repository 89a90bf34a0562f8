"""The server's checks before any work, as functions: which ``Host`` and ``Origin`` pass, and what
a body may hold (the real server is tested with raw HTTP in ``test_server_hardening.py``)."""

from __future__ import annotations

import json

import pytest
from starlette.datastructures import Headers

from qwq_edge.server.errors import APIError
from qwq_edge.server.guard import Hosts, RequestGuard, host_name
from qwq_edge.server.limits import Limits, check_prompt, decode_json
from qwq_edge.server.mapping import engine_seed
from qwq_edge.server.schemas import ChatCompletionRequest, CompletionRequest, parse


@pytest.mark.parametrize(
    ("host", "name"),
    [("127.0.0.1:8000", "127.0.0.1"), ("[::1]:80", "::1"), ("::1", "::1"), ("Evil.Example.:80", "evil.example")],
)
def test_host_names_lose_their_port_brackets_case_and_final_dot(host, name):
    assert host_name(host) == name


def test_a_loopback_bind_serves_loopback_names_and_the_allowed_ones_only():
    hosts = Hosts("127.0.0.1", ["my.box"])
    for host in ("127.0.0.1:8000", "localhost:1", "LOCALHOST", "[::1]:5", "my.box:9"):
        assert hosts.admits(host), host
    for host in ("evil.example", "10.0.0.1", "127.0.0.1.evil.example", "localhost.evil.example"):
        assert not hosts.admits(host), host
    assert Hosts("127.0.0.1", ["*"]).admits("anything.example")


def test_an_any_address_bind_serves_every_address_but_not_every_name():
    hosts = Hosts("0.0.0.0")
    assert hosts.admits("10.0.0.5:8000") and hosts.admits("[fe80::1]:8000")
    assert not hosts.admits("evil.example")


def refusal(origin: str | None, host: str = "127.0.0.1:8000", origins: tuple[str, ...] = ()) -> str | None:
    guard = RequestGuard(lambda *_: None, Hosts("127.0.0.1"), origins)
    headers = {"host": host, **({"origin": origin} if origin is not None else {})}
    found = guard.refusal(Headers(headers))
    return found[0] if found else None


def test_only_the_server_s_own_origin_and_the_allowed_ones_pass():
    assert refusal(None) is None  # not a browser
    assert refusal("http://127.0.0.1:8000") is None
    assert refusal("http://127.0.0.1:9000") == "origin_not_allowed"  # another port is another origin
    assert refusal("https://evil.example") == "origin_not_allowed"
    assert refusal("null") == "origin_not_allowed"
    assert refusal("https://front.example/", origins=("https://front.example",)) is None
    assert refusal("https://evil.example", origins=("*",)) is None
    assert refusal("http://evil.example:8000", host="evil.example:8000") == "host_not_allowed"


@pytest.mark.parametrize(
    "raw",
    [b"{", b'{"a": NaN}', b'{"a": Infinity}', b'{"a": -Infinity}', b'{"a": 1e400}', b"[" * 5000 + b"]" * 5000],
)
def test_what_is_not_strict_json_is_a_400(raw):
    with pytest.raises(APIError) as refused:
        decode_json(raw)
    assert refused.value.status == 400 and refused.value.code == "invalid_json"


def test_depth_and_lone_surrogates_are_checked_without_recursion():
    assert decode_json(json.dumps({"a": [[[1]]]}).encode(), max_depth=4) == {"a": [[[1]]]}
    with pytest.raises(APIError, match="nested more than 3"):
        decode_json(json.dumps({"a": [[[1]]]}).encode(), max_depth=3)
    with pytest.raises(APIError, match="surrogate"):
        decode_json(b'{"\\udfff": 1}')


def test_message_count_and_characters_are_bounded():
    limits = Limits(max_prompt_chars=10, max_messages=2)
    chat = parse(ChatCompletionRequest, {"messages": [{"role": "user", "content": "12345"}] * 2})
    check_prompt(chat, limits)
    with pytest.raises(APIError) as many:
        check_prompt(parse(ChatCompletionRequest, {"messages": [{"role": "user", "content": "1"}] * 3}), limits)
    assert many.value.code == "too_many_messages"
    with pytest.raises(APIError) as long:
        check_prompt(parse(ChatCompletionRequest, {"messages": [{"role": "user", "content": "x" * 11}]}), limits)
    assert long.value.param == "messages.0.content" and long.value.code == "context_length_exceeded"
    with pytest.raises(APIError) as total:
        check_prompt(parse(ChatCompletionRequest, {"messages": [{"role": "user", "content": "123456"}] * 2}), limits)
    assert total.value.param == "messages"
    with pytest.raises(APIError):
        check_prompt(parse(CompletionRequest, {"prompt": "x" * 11}), limits)


def test_every_64_bit_seed_becomes_an_unsigned_engine_seed():
    assert engine_seed(-1) == 2**64 - 1 and engine_seed(-(2**63)) == 2**63 and engine_seed(5) == 5
    with pytest.raises(APIError) as big:
        parse(ChatCompletionRequest, {"messages": [{"role": "user", "content": "Hi"}], "seed": 2**64})
    assert big.value.param == "seed"
