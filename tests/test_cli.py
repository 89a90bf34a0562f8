"""The real ``qwq-edge`` process: ``run`` through subprocess, ``chat`` through a pty (pexpect)."""

import json
import re
import signal
import subprocess
import time

import pexpect
import pytest
from conftest import LONG_THINKING_PROMPT

from qwq_edge.services.testdata import SIZE

FAST = ["--temperature", "0", "--ctx", "2048"]


def qwq(cli_command, *args, stdin=None):
    return subprocess.run([*cli_command, *args], input=stdin, capture_output=True, text=True, timeout=300, check=False)


def assert_one_line_error(proc, code, fragment):
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert fragment in lines[0]
    assert "Traceback" not in proc.stderr


def test_help_lists_the_commands(cli_command):
    proc = qwq(cli_command, "--help")
    assert proc.returncode == 0
    assert "chat" in proc.stdout and "run" in proc.stdout


def test_run_prints_the_answer_on_stdout_and_the_thinking_on_stderr(cli_command, gguf_path):
    proc = qwq(
        cli_command, "run", "-m", str(gguf_path), *FAST, "--reasoning-format", "think", "--budget", "8",
        "--max-answer-tokens", "12", "What is 2+2?",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()
    assert "Thinking…" in proc.stderr and "thought for 8 tokens" in proc.stderr
    assert "budget reached" in proc.stderr
    assert "Thinking" not in proc.stdout


def test_run_reads_the_prompt_from_stdin_and_prints_json(cli_command, gguf_path):
    proc = qwq(
        cli_command, "run", "-m", str(gguf_path), *FAST, "--json", "--reasoning-format", "think",
        "--budget", "16", "--max-answer-tokens", "8", "--top-logprobs", "2", stdin=LONG_THINKING_PROMPT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["finish_reason"] in ("budget", "length")
    assert data["thinking_tokens"] == 16 and 0 < data["answer_tokens"] <= 8
    assert data["prompt_tokens"] > 0 and data["thinking"] and data["answer"]
    for key in ("time_to_first_token", "prefill_tokens_per_s", "decode_tokens_per_s", "forced_text"):
        assert key in data
    (span,) = data["forced_spans"]  # where the budget's wrap-up is in the thinking
    assert span["kind"] == "budget" and "Thinking time is up." in data["thinking"][span["start"] : span["end"]]
    answer = [entry for entry in data["logprobs"] if not entry["thinking"]]  # each sampled token's, with 2 others
    assert len(answer) == data["answer_tokens"] and all(len(entry["top_logprobs"]) == 2 for entry in answer)


def test_hidden_thinking_and_the_same_seed(cli_command, gguf_path):
    args = ["run", "-m", str(gguf_path), "--ctx", "2048", "--reasoning-format", "none", "--temperature", "1"]
    args += ["--seed", "99", "--max-answer-tokens", "16", "--hide-thinking", "Tell me a word."]
    first, second = qwq(cli_command, *args), qwq(cli_command, *args)
    assert first.returncode == 0 and first.stdout == second.stdout
    assert "Thinking…" not in first.stderr


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["-m", "/nonexistent/model.gguf", "hi"], 1, "not found"),
        (["-m", "{gguf}", ""], 2, "prompt is empty"),
        (["-m", "{gguf}", "--budget", "-1", "hi"], 2, "-1 is not in the range"),
        (["-m", "{gguf}", "--reasoning-format", "telepathy", "hi"], 2, "telepathy"),
        (["-m", "{gguf}", "--ctx", "32", "word " * 100], 1, "context"),
        (["-m", "{notgguf}", "hi"], 1, "not a GGUF file"),
        (["-m", "{truncated}", "hi"], 1, "truncated"),
    ],
)
def test_bad_input_gives_one_line_and_a_nonzero_exit(cli_command, gguf_path, tmp_path, args, code, fragment):
    not_gguf = tmp_path / "notes.gguf"
    not_gguf.write_text("hello\n" * 20)
    truncated = tmp_path / "cut.gguf"
    with gguf_path.open("rb") as src:
        truncated.write_bytes(src.read(SIZE // 3))
    paths = {"gguf": str(gguf_path), "notgguf": str(not_gguf), "truncated": str(truncated)}
    proc = qwq(cli_command, "run", *[a.format(**paths) for a in args])
    assert_one_line_error(proc, code, fragment)


# -- chat ------------------------------------------------------------------------------


def spawn_chat(cli_command, gguf_path, *extra):
    args = [*cli_command[1:], "chat", "-m", str(gguf_path), *FAST, "--reasoning-format", "think", *extra]
    child = pexpect.spawn(cli_command[0], args, encoding="utf-8", timeout=120, dimensions=(50, 200))
    child.expect(">>> ")
    return child


def close_with_ctrl_d(child):
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_chat_streams_thinking_then_answer_and_handles_slash_commands(cli_command, gguf_path, tmp_path):
    child = spawn_chat(cli_command, gguf_path, "--budget", "10", "--max-answer-tokens", "12")
    child.sendline("Name a color.")
    child.expect("Thinking…")
    child.expect("budget reached")
    child.expect(r"thought for (\d+) tokens, [0-9.]+ s")
    assert 0 < int(child.match.group(1)) <= 10  # the budget's cut may take back a few tokens
    child.expect(">>> ")
    child.sendline("/budget 4")
    child.expect("thinking budget 4 tokens")
    child.sendline("/think hide")
    child.expect("thinking hide")
    child.sendline("Name another one.")
    child.expect(r"thought for (\d+) tokens")
    assert int(child.match.group(1)) <= 4
    child.expect(">>> ")
    assert "Thinking…\r\n" not in child.before
    child.sendline("/think off")
    child.expect("thinking off")
    child.sendline("/budget nonsense")
    child.expect("usage: /budget")
    child.sendline("/frobnicate")
    child.expect("unknown command")
    child.sendline("/help")
    child.expect("/save FILE")
    saved = tmp_path / "chat.json"
    child.sendline(f"/save {saved}")
    child.expect("saved 4 messages")
    child.sendline("/clear")
    child.expect("conversation cleared")
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    messages = json.loads(saved.read_text())["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"] * 2
    assert messages[0]["content"] == "Name a color."


def test_ctrl_c_stops_the_answer_and_keeps_the_conversation(cli_command, gguf_path, tmp_path):
    saved = tmp_path / "resume.json"
    child = spawn_chat(cli_command, gguf_path, "--budget", "0", "--resume", str(saved))
    child.sendline(LONG_THINKING_PROMPT)
    child.expect("budget reached")  # budget 0: the bare close, no thinking to summarise
    child.expect("5")  # the answer is streaming
    time.sleep(0.3)
    child.sendintr()
    child.expect(r"\[stopped: cancelled\]")
    child.expect(">>> ")
    # The chat goes on after the interruption, and every turn was saved.
    child.sendline("/budget 2")
    child.expect("thinking budget 2")
    child.sendline("Say OK.")
    child.expect(r"thought for (\d+) tokens")
    assert int(child.match.group(1)) <= 2
    child.expect(">>> ")
    close_with_ctrl_d(child)
    messages = json.loads(saved.read_text())["messages"]
    assert [m["content"] for m in messages if m["role"] == "user"] == [LONG_THINKING_PROMPT, "Say OK."]


def test_the_first_ctrl_c_while_thinking_answers_now_and_the_second_stops(cli_command, gguf_path):
    child = spawn_chat(cli_command, gguf_path, "--min-thinking-tokens", "1500", "--max-answer-tokens", "30")
    child.sendline(LONG_THINKING_PROMPT)
    child.expect("Thinking…")
    time.sleep(2)  # well into the thinking, far from its minimum
    child.sendintr()
    child.expect(r"answer now: the thinking closes at its next sentence end \(Ctrl-C again stops\)")
    child.expect("answering now: closing the thinking")
    child.expect(r"thought for (\d+) tokens")
    assert int(child.match.group(1)) < 1500  # the minimum gave way
    child.expect(">>> ")  # the answer followed
    assert "cancelled" not in child.before, child.before
    child.sendline(LONG_THINKING_PROMPT)  # now Ctrl-C twice: answer now, then stop
    child.expect("Thinking…")
    time.sleep(1)
    child.sendintr()
    time.sleep(0.2)
    child.sendintr()
    child.expect(r"\[stopped: cancelled\]")
    child.expect(">>> ")
    close_with_ctrl_d(child)


def test_resume_continues_a_saved_chat_and_ctrl_c_at_the_prompt_exits(cli_command, gguf_path, tmp_path):
    saved = tmp_path / "resume.json"
    child = spawn_chat(cli_command, gguf_path, "--budget", "2", "--max-answer-tokens", "6", "--resume", str(saved))
    child.sendline("Name a color.")
    child.expect(">>> ")
    close_with_ctrl_d(child)
    assert len(json.loads(saved.read_text())["messages"]) == 2

    child = spawn_chat(cli_command, gguf_path, "--max-answer-tokens", "4", "--seed", "9", "--resume", str(saved))
    assert "resumed 2 messages" in child.before
    assert "budget 2" in child.before  # saved settings come back
    child.sendline("Another one?")
    child.expect(">>> ")
    child.sendintr()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    data = json.loads(saved.read_text())
    assert [m["content"] for m in data["messages"] if m["role"] == "user"] == ["Name a color.", "Another one?"]
    # This session's flags applied to it, but the file keeps the conversation's own options.
    assert data["options"]["max_answer_tokens"] == 6 and data["options"]["seed"] is None
    assert data["options"]["max_thinking_tokens"] == 2


def test_a_chat_killed_mid_answer_keeps_the_question_and_answers_it_on_resume(cli_command, gguf_path, tmp_path):
    saved = tmp_path / "resume.json"
    child = spawn_chat(cli_command, gguf_path, "--budget", "0", "--max-answer-tokens", "300", "--resume", str(saved))
    child.sendline(LONG_THINKING_PROMPT)
    child.expect("budget reached")  # budget 0: the bare close, no thinking to summarise
    child.expect("5")  # the answer is streaming
    child.kill(signal.SIGKILL)
    child.close()
    messages = json.loads(saved.read_text())["messages"]
    assert messages == [{"role": "user", "content": LONG_THINKING_PROMPT}]

    child = spawn_chat(cli_command, gguf_path, "--max-answer-tokens", "4", "--resume", str(saved))
    assert "answering it now" in child.before
    close_with_ctrl_d(child)
    messages = json.loads(saved.read_text())["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"] and messages[1]["content"]


def test_chat_refuses_a_resume_file_it_could_not_write_before_loading(cli_command, gguf_path, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    proc = qwq(cli_command, "chat", "-m", str(gguf_path), "--resume", str(blocker / "chat.json"), stdin="")
    assert_one_line_error(proc, 1, "cannot save the chat to")


def test_chat_with_a_bad_resume_file_is_one_line(cli_command, gguf_path, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2, 3]")
    proc = qwq(cli_command, "chat", "-m", str(gguf_path), "--resume", str(bad), stdin="")
    assert_one_line_error(proc, 1, "not a saved qwq-edge chat")


def test_reasoning_control_flags(cli_command, gguf_path):
    base = ["run", "-m", str(gguf_path), *FAST, "--reasoning-format", "think", "--max-answer-tokens", "8"]
    proc = qwq(cli_command, *base, "--min-thinking-tokens", "50", "--json", "What is 2+2?")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["thinking_tokens"] >= 50 and data["wait_extensions"] >= 1
    for key in ("loop_interventions", "language_masked_steps", "forced_tokens", "interventions"):
        assert key in data
    summary = qwq(cli_command, *base, "--budget", "20", "--thinking-summary", "--language", "en", "Explain recursion.")
    assert summary.returncode == 0, summary.stderr
    thought = re.search(r"thought for (\d+) tokens", summary.stderr)
    assert thought and int(thought.group(1)) <= 20 and "… " in summary.stderr
    assert "Thinking…\n" not in summary.stderr
    helptext = qwq(cli_command, "run", "--help").stdout
    assert "low: budget 512" in helptext and "--no-loop-guard" in helptext and "--language" in helptext


def test_chat_slash_commands_for_the_reasoning_controls(cli_command, gguf_path):
    child = spawn_chat(cli_command, gguf_path, "--max-answer-tokens", "6")
    for command, reply in [
        ("/min 30", "minimum thinking 30 tokens"),
        ("/effort low", "effort low"),
        ("/language en", "language en"),
        ("/loop off", "loop breaker off"),
        ("/think summary", "thinking summary"),
        ("/min x", "usage: /min"),
        ("/language klingon", "usage: /language"),
    ]:
        child.sendline(command)
        child.expect(reply)
    child.sendline("What is 2+2?")
    child.expect(r"thought for (\d+) tokens")
    assert int(child.match.group(1)) >= 30
    child.expect(">>> ")
    close_with_ctrl_d(child)


NO_THINKING = "this model does not think (reasoning format none), so it ignores {}; if it can think, {}"


def test_chat_says_once_that_a_model_without_thinking_ignores_the_thinking_controls(cli_command, gguf_path):
    child = spawn_chat(cli_command, gguf_path, "--reasoning-format", "none", "--max-answer-tokens", "4")
    assert "does not think" not in child.before
    child.sendline("/budget 10")
    child.expect(">>> ")
    said = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", child.before).split())  # the terminal may wrap the line
    assert "thinking budget 10 tokens" in said
    assert NO_THINKING.format("/budget", "start the chat with --reasoning-format think") in said
    for line, reply in [("/effort low", "effort low"), ("/think hide", "thinking hide"), ("Say OK.", "")]:
        child.sendline(line)
        child.expect(">>> ")
        assert reply in child.before and "does not think" not in child.before
    close_with_ctrl_d(child)


def test_run_says_that_a_model_without_thinking_ignores_the_thinking_flags(cli_command, gguf_path):
    args = ["run", "-m", str(gguf_path), *FAST, "--max-answer-tokens", "4", "--budget", "5", "--effort", "low"]
    proc = qwq(cli_command, *args, "--reasoning-format", "none", "Say OK.")
    assert proc.returncode == 0, proc.stderr
    notice = NO_THINKING.format("--budget and --effort", "run it with --reasoning-format think")
    assert proc.stderr.count("does not think") == 1 and notice in proc.stderr
    thinking = qwq(cli_command, *args, "--reasoning-format", "think", "Say OK.")
    assert thinking.returncode == 0 and "does not think" not in thinking.stderr
