"""A server that loads models on demand, keeps them while they are used, and unloads them when
idle: two real models (the fixture GGUF, a tiny random Qwen3 converted to GGUF) in a folder
served with ``--models``, the memory measured as the server process's resident set."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import anthropic
import openai
import pexpect
import pytest
from conftest import CODER, LONG_THINKING_PROMPT, TINY
from prometheus_client.parser import text_string_to_metric_families
from serving import http, running_server
from test_cli import close_with_ctrl_d

from qwq_edge.runtime.model import plan_load
from qwq_edge.runtime.options import GenerationOptions
from qwq_edge.server.errors import APIError
from qwq_edge.server.models import ModelHost

#: Both models' settings: a short context and no prompt cache in memory, so plans stay small and exact.
SMALL = ("--ctx", "512", "--cache-ram", "0", "--max-tokens", "8")
MB = 1e6


def rss(server) -> float:
    """The server process's resident memory, in bytes."""
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def listed(server) -> dict[str, bool]:
    """``/v1/models``: every servable model, and whether it is loaded."""
    return {card["id"]: card["qwq_edge"]["loaded"] for card in http("GET", f"{server.url}/v1/models").body["data"]}


def ask(server, model: str, **extra) -> str:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0)
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=4, extra_body=extra
    )
    assert reply.model == model
    return reply.choices[0].message.content


def changes(server) -> dict[tuple[str, str], float]:
    """``qwq_edge_model_changes_total`` by (model, change), from ``/metrics`` as Prometheus parses it."""
    text = http("GET", f"{server.url}/metrics").body
    return {
        (sample.labels["model"], sample.labels["change"]): sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "qwq_edge_model_changes"
        for sample in family.samples
        if sample.name.endswith("_total")
    }


def test_models_load_on_demand_and_the_idle_one_gives_way_under_a_budget(cli_command, models_dir, monkeypatch):
    """A budget that holds either model but not both: each request for the other model unloads the
    idle one first, and the process's memory falls with it; concurrent requests share one load."""
    plans = [plan_load(models_dir / f"{name}.gguf", context_length=512) for name in (CODER, TINY)]
    budget = max(p.total_bytes for p in plans) + min(p.total_bytes for p in plans) // 2
    monkeypatch.setenv("QWQ_EDGE_MEMORY_BUDGET", str(budget))
    with running_server(cli_command, None, "--models", str(models_dir), *SMALL, "--metrics-public") as server:
        assert listed(server) == {CODER: False, TINY: False}
        before = rss(server)
        threads = [threading.Thread(target=ask, args=(server, CODER)) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert listed(server) == {CODER: True, TINY: False} and changes(server) == {(CODER, "load"): 1}
        with_coder = rss(server)
        assert with_coder - before > 250 * MB  # the GGUF's weights, mapped and read
        ask(server, TINY)
        assert listed(server) == {CODER: False, TINY: True}
        assert rss(server) < with_coder - 250 * MB
        ask(server, CODER)
        assert listed(server) == {CODER: True, TINY: False}
        assert changes(server) == {(CODER, "load"): 2, (CODER, "unload"): 1, (TINY, "load"): 1, (TINY, "unload"): 1}
        missing = http(
            "POST",
            f"{server.url}/v1/chat/completions",
            {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]},
        )
        assert missing.status == 404 and CODER in missing.body["error"]["message"]


def test_a_model_that_cannot_fit_is_refused_in_the_door_s_shape(cli_command, models_dir, monkeypatch):
    monkeypatch.setenv("QWQ_EDGE_MEMORY_BUDGET", "600MB")
    with running_server(cli_command, None, "--models", str(models_dir), *SMALL) as server:
        client = anthropic.Anthropic(base_url=server.url, api_key="none", max_retries=0)
        with pytest.raises(anthropic.APIStatusError) as refused:
            client.messages.create(model=CODER, max_tokens=8, messages=[{"role": "user", "content": "Hi"}])
        assert refused.value.status_code == 507
        assert "GB usable" in refused.value.body["error"]["message"]  # the planner's line
        assert listed(server) == {CODER: False, TINY: False}


def test_a_model_taken_while_another_makes_room_is_a_503_not_an_error(models_dir, monkeypatch):
    """The idle model a load would unload is taken by a request at that moment (``_unload`` leaves
    a held model): the load that cannot fit then says to try again (503), as for busy models."""
    plans = [plan_load(models_dir / f"{name}.gguf", context_length=512) for name in (CODER, TINY)]
    monkeypatch.setenv("QWQ_EDGE_MEMORY_BUDGET", str(max(p.total_bytes for p in plans) + 1_000_000))
    paths = {name: models_dir / f"{name}.gguf" for name in (CODER, TINY)}
    host = ModelHost(lambda: paths, {"context_length": 512, "cache_ram": 0}, lambda model: GenerationOptions())
    original = ModelHost._unload

    async def taken_meanwhile(self, loaded):
        self.hold(loaded)  # a request takes it just as the other load would unload it
        await original(self, loaded)

    async def scenario():
        await host.get(TINY)
        monkeypatch.setattr(ModelHost, "_unload", taken_meanwhile)
        with pytest.raises(APIError) as busy:
            await host.get(CODER)
        assert busy.value.status == 503 and busy.value.headers == {"Retry-After": "5"}
        assert list(host.loaded) == [TINY]

    try:
        asyncio.run(scenario())
    finally:
        host.close()


def test_keep_alive_unloads_an_idle_model_and_a_request_can_keep_it(cli_command, models_dir):
    with running_server(cli_command, None, "--models", str(models_dir), *SMALL, "--keep-alive", "1s") as server:
        idle = rss(server)
        ask(server, CODER)
        loaded = rss(server)
        time.sleep(2.5)
        assert listed(server)[CODER] is False and rss(server) < loaded - 250 * MB
        ask(server, CODER, keep_alive=-1)  # the extension field: kept from now on
        time.sleep(2.5)
        assert listed(server)[CODER] is True and rss(server) > idle + 250 * MB
        bad = http(
            "POST",
            f"{server.url}/v1/chat/completions",
            {"model": CODER, "keep_alive": "soon", "messages": [{"role": "user", "content": "Hi"}]},
        )
        assert bad.status == 400 and "keep_alive" in bad.body["error"]["message"]


def test_ps_and_stop_never_unload_a_model_under_a_running_stream(cli_command, models_dir):
    """``stop`` during a stream: the stream ends as it would have, then the model unloads."""
    with running_server(cli_command, None, "--models", str(models_dir), "--ctx", "512", "--cache-ram", "0") as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0)
        question = [{"role": "user", "content": "List the numbers 1 to 50, one per line."}]
        stream = client.chat.completions.create(model=CODER, messages=question, max_tokens=120, stream=True)
        chunks = iter(stream)
        next(chunks)
        shown = subprocess.run([*cli_command, "ps", "--server", server.url], capture_output=True, text=True, timeout=60)
        assert shown.returncode == 0 and CODER in shown.stdout and "in use" in shown.stdout
        stopped = subprocess.run(
            [*cli_command, "stop", CODER, "--server", server.url], capture_output=True, text=True, timeout=60
        )
        assert stopped.returncode == 0 and "once its requests end" in stopped.stdout
        finish = [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices]
        assert finish[-1] == "length"
        time.sleep(0.5)
        assert listed(server)[CODER] is False
        shown = subprocess.run([*cli_command, "ps", "--server", server.url], capture_output=True, text=True, timeout=60)
        assert "no model is loaded" in shown.stdout
        unknown = subprocess.run(
            [*cli_command, "stop", "nope", "--server", server.url], capture_output=True, text=True, timeout=60
        )
        assert unknown.returncode == 1 and unknown.stderr.count("\n") == 1 and "does not exist" in unknown.stderr


def test_run_through_a_running_server_answers_as_in_process_and_loads_once(cli_command, models_dir):
    """``run --server``: the same answer (greedy) as a run that loads the model itself, the same
    ``--json`` fields, and the second run finds the model loaded."""
    asked = ["run", "--temperature", "0", "--reasoning-format", "think", "--budget", "8", "--max-tokens", "60"]
    question = "What is 2+3?"
    local = subprocess.run(
        [*cli_command, *asked, "-m", str(models_dir / f"{CODER}.gguf"), "--ctx", "512", "--json", question],
        capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    expected = json.loads(local.stdout)
    with running_server(cli_command, None, "--models", str(models_dir), "--ctx", "512", "--metrics-public") as server:
        runs = [
            subprocess.run([*cli_command, *asked, "-m", CODER, "--server", server.url, "--json", question],
                           capture_output=True, text=True, timeout=300, check=True)
            for _ in range(2)
        ]  # fmt: skip
        remote = [json.loads(done.stdout) for done in runs]
        assert changes(server) == {(CODER, "load"): 1}
        plain = subprocess.run([*cli_command, *asked, "-m", CODER, question], capture_output=True, text=True,
                               timeout=300, env={**os.environ, "QWQ_EDGE_SERVER": server.url})  # fmt: skip
    for reply in remote:
        assert (reply["thinking"], reply["answer"]) == (expected["thinking"], expected["answer"])
        assert reply["thinking_closed_by"] == expected["thinking_closed_by"] == "budget"
        assert reply["prompt_tokens"] == expected["prompt_tokens"] and reply["decode_tokens_per_s"] > 0
    assert remote[1]["cached_prompt_tokens"] > 0  # the server's prompt cache, warm from the first run
    assert plain.returncode == 0 and plain.stdout.strip() == expected["answer"].strip()
    assert "Thinking" in plain.stderr


def test_run_names_a_server_that_is_not_there_in_one_line(cli_command):
    done = subprocess.run(
        [*cli_command, "run", "--server", "http://127.0.0.1:9", "Hi"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "no qwq-edge server answers" in done.stderr


def test_chat_through_a_running_server_answers_now_steers_and_stops(cli_command, models_dir):
    """The terminal chat on a server's model: the banner, Ctrl-C once answers now (the server closes
    the thinking), a slash command's budget reaches the server, Ctrl-C twice stops."""
    with running_server(cli_command, None, "--models", str(models_dir), "--ctx", "2048") as server:
        args = [*cli_command[1:], "chat", "-m", CODER, "--server", server.url, "--temperature", "0"]
        args += ["--reasoning-format", "think", "--min-thinking-tokens", "1500", "--max-answer-tokens", "30"]
        child = pexpect.spawn(cli_command[0], args, encoding="utf-8", timeout=120, dimensions=(50, 200))
        child.expect(">>> ")
        assert server.url.split("//")[1] in child.before  # the banner names the server
        child.sendline(LONG_THINKING_PROMPT)
        child.expect("Thinking…")
        time.sleep(2)
        child.sendintr()
        child.expect(r"answer now: the thinking closes at its next sentence end")
        child.expect(r"thought for (\d+) tokens")
        assert int(child.match.group(1)) < 1500
        child.expect(">>> ")
        assert "cancelled" not in child.before
        child.sendline("/min off")
        child.expect("minimum thinking off")
        child.sendline("/budget 2")
        child.expect("thinking budget 2")
        child.sendline("Say OK.")
        child.expect(r"thought for (\d+) tokens")
        assert int(child.match.group(1)) <= 2
        child.expect(">>> ")
        child.sendline(LONG_THINKING_PROMPT)
        child.expect("Thinking…")
        time.sleep(1)
        child.sendintr()
        time.sleep(0.2)
        child.sendintr()
        child.expect(r"\[stopped: cancelled\]")
        child.expect(">>> ")
        close_with_ctrl_d(child)
        assert http("GET", f"{server.url}/health").body["busy"] is False  # the server saw the client leave
