"""One model over several processes: 2 ranks on localhost (ring backend) against one process.

Each ``qwq-edge launch`` starts two real ranks with ``mlx.launch``, so the checks are
grouped per launch: a ``run`` whose thinking is bounded and rewound, a two-turn chat,
``bench``, ``doctor``, ``serve`` over HTTP, and a rank killed or stopped mid-generation. The tiny model is float32
(greedy argmaxes do not flip on the different summation order of the split layers),
and its output head is edited so that it closes the thinking early: with a minimum
that close is taken back (a rewind on every rank).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path

import openai
import pytest
from serving import running_server

from qwq_edge import load
from qwq_edge.convert import convert_to_mlx
from qwq_edge.convert.synthetic import TINY, make_checkpoint
from qwq_edge.system.distributed import LaunchLog, LaunchPlan, launch_command

BOUNDED = ["--temperature", "0", "--max-thinking-tokens", "40", "--min-thinking-tokens", "12"]
MODEL_FLAGS = ["--engine", "mlx", "--ctx", "512", "--max-answer-tokens", "12"]
CHAT_INPUT = "Hello there\n/budget 24\nAnd then?\n/exit\n"


def _make_close_early(folder: Path, prompt: str) -> None:
    """Make ``</think>`` win wherever the model's second thinking token would."""
    import mlx.core as mx

    model = load(folder, engine="mlx", context_length=512)
    prompt_length = len(model.prompts.build(model.prompt_messages(prompt), model.reasoning_format))
    model.generate(prompt, temperature=0.0, max_thinking_tokens=4, max_answer_tokens=1)
    second, close = model.engine.cached_tokens[prompt_length + 1], model.engine.tokenize("</think>", special=True)[0]
    model.close()
    (weights_file,) = folder.glob("*.safetensors")
    weights = dict(mx.load(str(weights_file)))
    head = weights["lm_head.weight"]
    head[close] = head[second] * 1.05
    mx.save_safetensors(str(weights_file), {**weights, "lm_head.weight": head}, metadata={"format": "mlx"})


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("distributed") / "tiny", replace(TINY, torch_dtype="float32"))


@pytest.fixture(scope="module")
def tiny(tiny_checkpoint) -> Path:
    """The tiny model, made to close its thinking early (so that a minimum forces "Wait")."""
    folder = Path(convert_to_mlx(tiny_checkpoint, tiny_checkpoint.parent / "tiny-mlx", bits=16, verify=False).output)
    _make_close_early(folder, "Hello there")
    return folder


@pytest.fixture(scope="module")
def long_thinker(tiny_checkpoint) -> Path:
    """The tiny model as it is: greedy, it thinks until the budget (with no loop guard)."""
    target = tiny_checkpoint.parent / "long-thinker-mlx"
    return Path(convert_to_mlx(tiny_checkpoint, target, bits=16, verify=False).output)


@pytest.fixture
def marked_env() -> dict[str, str]:
    """The environment, with a mark that finds this test's ranks among the machine's processes."""
    return {**os.environ, "QWQ_EDGE_TEST_MARK": uuid.uuid4().hex, "COLUMNS": "100"}


def processes_marked(env: dict[str, str]) -> dict[int, dict[str, str]]:
    """Live processes carrying this test's mark, with their environment."""
    mark = f"QWQ_EDGE_TEST_MARK={env['QWQ_EDGE_TEST_MARK']}".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            raw = (entry / "environ").read_bytes()
        except (OSError, ValueError):
            continue
        if mark in raw.split(b"\0"):
            found[int(entry.name)] = dict(v.decode(errors="replace").partition("=")[::2] for v in raw.split(b"\0") if v)
    return found


def launch(cli_command, env, *args: str, stdin: str = "", timeout: float = 60) -> subprocess.CompletedProcess:
    """``qwq-edge launch -n 2 -- ARGS`` with ``stdin`` written but left open, as a terminal would."""
    command = [*cli_command, "launch", "-n", "2", "--", *args]
    with subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True
    ) as process:
        process.stdin.write(stdin)
        process.stdin.flush()
        out, err = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def test_run_with_a_budget_and_a_rewind_matches_one_process(cli_command, tiny, marked_env):
    with load(tiny, engine="mlx", context_length=512) as single:
        expected = single.generate(
            "Hello there", temperature=0.0, max_thinking_tokens=40, min_thinking_tokens=12, max_answer_tokens=12
        )
    assert expected.stats.wait_extensions >= 1 and expected.stats.thinking_closed_by == "budget"
    proc = launch(cli_command, marked_env, "run", "-m", str(tiny), *MODEL_FLAGS, *BOUNDED, "--json", "Hello there")
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert (got["thinking"], got["answer"]) == (expected.thinking, expected.answer)
    for key in ("thinking_tokens", "answer_tokens", "forced_text", "wait_extensions", "interventions"):
        assert got[key] == getattr(expected.stats, key), key


def test_a_two_turn_chat_matches_one_process(cli_command, tiny, marked_env):
    args = ["chat", "-m", str(tiny), *MODEL_FLAGS, *BOUNDED]
    single = subprocess.run(
        [*cli_command, *args], input=CHAT_INPUT, capture_output=True, text=True, env=marked_env, timeout=60
    )
    assert single.returncode == 0 and "Wait" in single.stdout, single.stderr
    proc = launch(cli_command, marked_env, *args, stdin=CHAT_INPUT)
    assert proc.returncode == 0, proc.stderr
    assert without_timings(proc.stdout) == without_timings(single.stdout)


def without_timings(text: str) -> str:
    """Rendered output with its seconds and speeds blanked: everything else must match."""
    return re.sub(r"\d+(\.\d+)? (s|tok/s)\b", "_", text)


def test_bench_reports_every_rank_and_doctor_checks_them(cli_command, tiny, marked_env):
    quick = ["--prompt-tokens", "100", "--gen-tokens", "8", "--repetitions", "1", "--greedy", "--json"]
    proc = launch(cli_command, marked_env, "bench", "-m", str(tiny), "--engine", "mlx", "--ctx", "512", *quick)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert [rank["rank"] for rank in report["ranks"]] == [0, 1]
    for rank in report["ranks"]:
        assert rank["mlx_peak_memory_bytes"] > 0 and rank["peak_rss_bytes"] > 0
        assert rank["decode_tokens"] > 0 and rank["decode_tokens_per_s"] > 0
    assert "raw" not in report["medians"]  # mlx-lm's own loop runs one process
    proc = launch(cli_command, marked_env, "doctor", "-m", str(tiny), "--json")
    assert proc.returncode == 0, proc.stderr
    doctor = json.loads(proc.stdout)
    assert len(doctor["ranks"]) == 2 and doctor["problems"] == []
    assert doctor["ranks"][1]["versions"]["mlx"] and doctor["ranks"][1]["model"] == doctor["ranks"][0]["model"]


#: A long thought, for the model that does not close early.
LONG = ["--temperature", "0", "--no-loop-guard", "--max-thinking-tokens", "4000"]


def _hurt_rank_one_when_thinking(process: subprocess.Popen, env: dict[str, str], how: int) -> tuple[bytes, float]:
    """Wait for rank 0's first thinking text, then send ``how`` to rank 1; return that text and when."""
    first = os.read(process.stderr.fileno(), 4096)
    ranks = {int(e["MLX_RANK"]): pid for pid, e in processes_marked(env).items() if "MLX_RANK" in e}
    os.kill(ranks[1], how)
    return first, time.monotonic()


@pytest.mark.parametrize(
    ("how", "extra"),
    [(signal.SIGKILL, []), (signal.SIGSTOP, ["--rank-timeout", "3"])],
    ids=["killed", "stopped"],
)
def test_a_rank_killed_or_hung_mid_generation_stops_the_run_with_one_line(
    cli_command, long_thinker, marked_env, how, extra
):
    """A stopped rank never answers and ignores SIGTERM: rank 0's watchdog ends the run, and
    the launcher kills what is left after its grace time."""
    with load(long_thinker, engine="mlx", context_length=4096) as single:  # it thinks long: the signal comes mid-way
        stats = single.generate("Count", temperature=0.0, loop_guard=False, max_thinking_tokens=300).stats
    assert stats.thinking_closed_by == "budget"
    args = ["run", "-m", str(long_thinker), "--engine", "mlx", "--ctx", "4096", *LONG, *extra, "Count"]
    process = subprocess.Popen(
        [*cli_command, "launch", "-n", "2", "--grace", "2", "--", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=marked_env,
    )
    first, hurt_at = _hurt_rank_one_when_thinking(process, marked_env, how)
    _, rest = process.communicate(timeout=30)
    assert time.monotonic() - hurt_at < 30
    stderr = (first + rest).decode(errors="replace")
    errors = [line for line in stderr.splitlines() if "error:" in line]
    assert process.returncode != 0 and len(errors) == 1, stderr
    assert "distributed run failed" in errors[0] or "did not answer" in errors[0]
    time.sleep(1)
    assert processes_marked(marked_env) == {}


BOUNDS = {"max_thinking_tokens": 40, "min_thinking_tokens": 12}


def test_serve_answers_as_one_process_does_and_stops_every_rank(cli_command, tiny, marked_env, monkeypatch):
    with load(tiny, engine="mlx", context_length=512) as single:
        expected = single.generate("Hello there", temperature=0.0, **BOUNDS, max_answer_tokens=12)
    assert expected.stats.wait_extensions >= 1  # a rewind on every rank
    monkeypatch.setenv("QWQ_EDGE_TEST_MARK", marked_env["QWQ_EDGE_TEST_MARK"])
    launched = [*cli_command, "launch", "-n", "2", "--"]
    with running_server(launched, tiny, "--engine", "mlx", "--ctx", "512", "--max-answer-tokens", "12") as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0, timeout=60)
        for _ in range(2):  # the second reuses the cached prompt on both ranks
            reply = client.chat.completions.create(
                model="", messages=[{"role": "user", "content": "Hello there"}], extra_body=BOUNDS
            )
            message = reply.choices[0].message
            assert (message.reasoning_content or "", message.content) == (expected.thinking, expected.answer)
        assert len([e for e in processes_marked(marked_env).values() if "MLX_RANK" in e]) == 2
    assert server.process.returncode == 0, server.log
    time.sleep(0.5)
    assert processes_marked(marked_env) == {}


def test_launch_builds_the_mlx_launch_call_and_reads_its_log():
    argv = launch_command(LaunchPlan(("run", "-m", "m", "hi"), hosts="10.0.0.1,10.0.0.2"))
    assert argv[argv.index("--hosts") + 1] == "10.0.0.1,10.0.0.2" and argv[argv.index("--backend") + 1] == "ring"
    assert argv[argv.index("--") + 1 :][-6:] == ["qwq_edge", "run", "--distributed", "-m", "m", "hi"]
    assert "--backend" not in launch_command(LaunchPlan(("python3", "x.py"), backend="any"))
    assert launch_command(LaunchPlan(("python3", "x.py")))[-3:] == ["--", "python3", "x.py"]
    log = LaunchLog()
    assert not log.line("[ring] Socket 4 was closed by the peer\n") and log.line("error: rank lost\n")
    assert log.exit_code == 0
    log.line("\x1b[33m[WARN] Node with rank 1 exited with code -9 \x1b[0m\n")
    assert log.failed == {1: "exited with code -9"} and log.exit_code == 1
    log.line("[WARN] Node with rank 0 exited with code 3\n")
    assert log.exit_code == 3
    assert log.unreported_failure() is None  # a rank said why ("error: rank lost")
    quiet = LaunchLog()  # rank 0 stopped by mlx.launch before it noticed that rank 1 was gone
    quiet.line("[WARN] Node with rank 1 exited with code -9\n")
    quiet.line("[WARN] Node with rank 0 exited with code -15\n")
    assert quiet.unreported_failure() == (
        "error: distributed run failed: rank 0 exited with code -15; rank 1 exited with code -9"
    )


def test_launch_dry_run_and_distributed_outside_a_launch(cli_command, tiny):
    proc = subprocess.run(
        [*cli_command, "launch", "-n", "2", "--dry-run", "--", "chat"], capture_output=True, text=True
    )
    assert proc.returncode == 0 and "mlx.launch -n 2 --backend ring --" in proc.stdout
    assert proc.stdout.strip().endswith("-m qwq_edge chat --distributed")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLX_", "OMPI_"))}
    proc = subprocess.run(
        [*cli_command, "run", "-m", str(tiny), "--engine", "mlx", "--distributed", "hi"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "runs under mlx.launch" in proc.stderr


def test_info_plans_one_rank_share(cli_command, tmp_path):
    """QwQ-32B in 8-bit (34.8 GB) over Macs: weights and KV cache ÷ N, embeddings and head whole."""
    folder = tmp_path / "QwQ-32B-8bit"
    folder.mkdir()
    config = {"architectures": ["Qwen2ForCausalLM"], "hidden_size": 5120, "intermediate_size": 27648}
    config |= {"num_hidden_layers": 64, "num_attention_heads": 40, "num_key_value_heads": 8, "vocab_size": 152064}
    (folder / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 40960}))
    with folder.joinpath("model.safetensors").open("wb") as weights:
        weights.truncate(34_800_000_000)  # sparse: the planner reads sizes only
    two = json.loads(qwq_json(cli_command, "info", str(folder), "--ranks", "2", "--memory", "32").stdout)
    assert two["fits"] and two["plan"]["context"] == 32768 and two["plan"]["kv_cache"] == "f16"
    assert two["kv_bytes_per_token_per_rank"]["f16"] == 128 * 1024  # 64 layers × 4 KV heads × 128 × 2 × 2
    whole = 2 * 152064 * 5120 / 32_763_876_352  # embeddings and output head, of all parameters
    assert two["weights_per_rank_bytes"] == pytest.approx(34.8e9 * (whole + (1 - whole) / 2), rel=1e-3)
    small = qwq_json(cli_command, "info", str(folder), "--ranks", "2", "--memory", "24")
    assert small.returncode == 1 and not json.loads(small.stdout)["fits"]
    three = qwq_json(cli_command, "info", str(folder), "--ranks", "3")
    assert three.returncode == 1 and "splits over 2, 4, 8 ranks" in three.stderr


def qwq_json(cli_command, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*cli_command, *args, "--json"], capture_output=True, text=True)


HANG = """
import time
from qwq_edge.engines.mlx.group import Watchdog
watchdog = Watchdog(1.0, 2)
with watchdog.guard("feed"):
    time.sleep(30)  # a collective that never completes
"""


def test_the_watchdog_ends_a_hung_operation_with_one_line():
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", HANG], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1 and time.monotonic() - start < 10
    assert proc.stderr.strip() == "error: a rank of the 2-rank group did not answer within 1 s (during feed); stopping"
