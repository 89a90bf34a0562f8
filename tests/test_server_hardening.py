"""``qwq-edge serve`` against what a web page, a careless client or an attacker on the same machine
sends: raw HTTP (``Origin``, ``Host``, bodies no SDK would send) to a real server without a key."""

from __future__ import annotations

import re
import socket
import threading
import time
from html.parser import HTMLParser

import openai
import pytest
from conftest import LONG_THINKING_PROMPT
from serving import http, running_server

CHAT = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
FRONT = "https://front.example"


@pytest.fixture(scope="module")
def server(cli_command, gguf_path):
    options = ("--max-queue", "0", "--allowed-host", "my.box", "--cors-origin", FRONT)
    with running_server(cli_command, gguf_path, *options, "--max-prompt-chars", "3000000") as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0, timeout=120)


def chat(server, body=None, **headers):
    return http("POST", f"{server.url}/v1/chat/completions", CHAT if body is None else body, headers=headers)


def error_code(answer) -> str:
    assert set(answer.body["error"]) == {"message", "type", "param", "code"}, answer.body
    return answer.body["error"]["code"]


def _log_lines(server, pattern: str) -> list[str]:
    return [line for line in server.log.splitlines() if re.search(pattern, line)]


def send_raw(server, headers: str, chunks: list[bytes] = ()) -> str:
    """A POST sent by hand: its head, then ``chunks`` until the server answers or hangs up; the answer."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\n{headers}\r\n".encode())
        try:
            for chunk in chunks:
                connection.sendall(chunk)
        except OSError:
            pass  # the server answered and closed before the whole body was sent
        return _read_all(connection)


def _read_all(connection: socket.socket) -> str:
    """The server's whole answer: its head, then ``content-length`` bytes of body."""
    received = b""
    while b"\r\n\r\n" not in received or len(received) < _answer_size(received):
        chunk = connection.recv(65536)
        if not chunk:
            break
        received += chunk
    return received.decode()


def _answer_size(received: bytes) -> int:
    head, _, _ = received.partition(b"\r\n\r\n")
    length = re.search(rb"content-length: (\d+)", head, re.IGNORECASE)
    return len(head) + 4 + (int(length.group(1)) if length else 0)


# -- browser attacks --------------------------------------------------------------------


def test_a_foreign_page_s_simple_post_is_refused_before_its_body_is_read(server):
    """A "simple" request (text/plain, no preflight) from another website: 403, and the body
    (announced as a gigabyte, never sent) is not waited for."""
    attack = "Origin: https://evil.example\r\nContent-Type: text/plain\r\nContent-Length: 1000000000\r\n"
    reply = send_raw(server, attack)
    assert reply.startswith("HTTP/1.1 403") and '"origin_not_allowed"' in reply
    assert error_code(chat(server, **{"Content-Type": "text/plain", "Origin": "https://evil.example"})) == (
        "origin_not_allowed"
    )
    assert error_code(chat(server, Origin="null")) == "origin_not_allowed"  # a sandboxed frame, a file
    assert not _log_lines(server, r"POST /v1/chat/completions 403 prompt=")  # nothing was generated


def test_a_rebound_host_name_is_refused_and_named_hosts_are_served(server):
    port = server.url.rsplit(":", 1)[1]
    evil = http("GET", f"{server.url}/", headers={"Host": f"evil.example:{port}"})
    assert evil.status == 403 and error_code(evil) == "host_not_allowed"
    assert chat(server, Host="evil.example").status == 403
    for name in (f"localhost:{port}", f"my.box:{port}", f"127.0.0.1:{port}"):
        assert http("GET", f"{server.url}/health", headers={"Host": name}).status == 200, name


def test_same_origin_no_origin_and_allowed_origins_are_served(server, client):
    assert chat(server, Origin=server.url).status == 200  # the web page's own requests
    assert chat(server).status == 200  # curl, SDKs: no Origin
    assert client.chat.completions.create(model="", messages=CHAT["messages"], max_tokens=2).choices
    allowed = chat(server, Origin=FRONT)
    assert allowed.status == 200 and allowed.headers["access-control-allow-origin"] == FRONT
    preflight = {"Origin": FRONT, "Access-Control-Request-Method": "POST"}
    assert http("OPTIONS", f"{server.url}/v1/chat/completions", headers=preflight).status == 200
    foreign = {**preflight, "Origin": "https://evil.example"}
    assert http("OPTIONS", f"{server.url}/v1/chat/completions", headers=foreign).status == 403


class _Inline(HTMLParser):
    """What in a page would need ``unsafe-inline``: a script without ``src``, a style element or
    attribute, an event-handler attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        if (tag == "script" and "src" not in names) or tag == "style" or "style" in names:
            self.found.append(tag)
        self.found += [name for name in names if name.startswith("on")]


def test_the_page_runs_only_its_own_files_and_cannot_be_framed(server):
    page = http("GET", f"{server.url}/")
    policy = page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy and "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert page.headers["x-content-type-options"] == "nosniff" and page.headers["x-frame-options"] == "DENY"
    parser = _Inline()
    parser.feed(page.body)
    assert "<script" in page.body and parser.found == []
    assert http("GET", f"{server.url}/v1/models").headers["x-content-type-options"] == "nosniff"


# -- limits before work ---------------------------------------------------------------


def test_bodies_too_large_too_deep_or_not_strict_json_are_refused_as_json(server):
    announced = send_raw(server, "Content-Length: 17000000\r\n")  # refused before the body is sent
    assert announced.startswith("HTTP/1.1 413") and '"request_too_large"' in announced
    chunk = b"x" * 1024 * 1024
    streamed = send_raw(server, "Transfer-Encoding: chunked\r\n", [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * 17)
    assert streamed.startswith("HTTP/1.1 413") and '"request_too_large"' in streamed  # counted as it arrives
    raw = b'{"messages": [{"role": "user", "content": "Hi"}], "temperature": %s}'
    for value in (b"Infinity", b"NaN", b"-Infinity", b"1e999"):
        answer = chat(server, raw % value)
        assert answer.status == 400 and error_code(answer) == "invalid_json", value
    deep = chat(server, b"[" * 100_000 + b"]" * 100_000)
    assert deep.status == 400 and "nested" in deep.body["error"]["message"]
    surrogate = chat(server, b'{"messages": [{"role": "user", "content": "\\ud800"}]}')
    assert surrogate.status == 400


def test_too_many_messages_or_characters_are_refused_before_tokenizing(server):
    many = chat(server, {"messages": [{"role": "user", "content": "a"}] * 40_001})
    assert many.status == 400 and error_code(many) == "too_many_messages"
    huge = chat(server, {"messages": [{"role": "user", "content": "word " * 700_000}]})
    assert huge.status == 400 and error_code(huge) == "context_length_exceeded"
    assert huge.body["error"]["param"] == "messages.0.content" and "--max-prompt-chars" in huge.body["error"]["message"]


def test_a_big_prompt_waits_for_a_place_in_the_queue_and_is_refused_by_429_like_any_other(server, client):
    """Tokenizing runs inside the queue: with every place taken, a prompt that takes seconds to
    tokenize is refused at once instead of being tokenized first."""
    big = {"messages": [{"role": "user", "content": "word " * 500_000}]}
    began = time.monotonic()
    assert error_code(chat(server, big)) == "context_length_exceeded"  # tokenized, then too long for the context
    tokenizing = time.monotonic() - began
    stream = client.chat.completions.create(
        model="", messages=[{"role": "user", "content": LONG_THINKING_PROMPT}], stream=True, max_tokens=2000
    )
    next(iter(stream))  # it holds the one place (--max-queue 0)
    began = time.monotonic()
    full = chat(server, big)
    refused = time.monotonic() - began
    stream.close()
    assert full.status == 429 and error_code(full) == "queue_full" and int(full.headers["retry-after"]) >= 1
    assert refused < tokenizing / 3, (refused, tokenizing)


# -- values checked where they enter --------------------------------------------------------


def test_every_64_bit_seed_is_a_seed_and_larger_ones_are_400(server):
    for seed in (-1, -(2**63), 2**63 - 1, 2**64 - 1):
        assert chat(server, {**CHAT, "seed": seed, "temperature": 0.8}).status == 200, seed
    too_big = chat(server, {**CHAT, "seed": 2**64})
    assert too_big.status == 400 and too_big.body["error"]["param"] == "seed"
    assert chat(server, {**CHAT, "top_k": 2**40}).status == 400  # beyond what the engines take


def test_a_tool_schema_is_compiled_even_when_no_call_is_forced(server):
    bad = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "minProperties": "x"}}}
    for choice in ("auto", "none", None):
        body = {**CHAT, "tools": [bad], **({"tool_choice": choice} if choice else {})}
        answer = chat(server, body)
        assert answer.status == 400 and "parameters" in answer.body["error"]["message"], choice


def test_a_system_only_chat_is_answered(server):
    answer = chat(server, {"messages": [{"role": "system", "content": "Say hello."}], "max_tokens": 2})
    assert answer.status == 200 and answer.body["usage"]["completion_tokens"] <= 2


# -- quiet on client faults ------------------------------------------------------------


def test_clients_that_leave_mid_body_are_one_499_line_each_and_no_traceback(server):
    host, port = server.url.removeprefix("http://").split(":")
    before = len(_log_lines(server, r" 499 .*\(client disconnected\)"))
    head = f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5000\r\n\r\n"

    def leave() -> None:
        with socket.create_connection((host, int(port))) as gone:
            gone.sendall(head.encode() + b'{"messages": [')
            time.sleep(0.1)

    clients = [threading.Thread(target=leave) for _ in range(20)]
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join()
    deadline = time.monotonic() + 10
    while len(_log_lines(server, r" 499 .*\(client disconnected\)")) < before + 20:
        assert time.monotonic() < deadline, server.log[-2000:]
        time.sleep(0.05)
    assert "Traceback" not in server.log and " 500 " not in server.log
    assert chat(server).status == 200
