"""Every failure a clean line, nothing lost: bad input of each kind, Ctrl-C in eval, rm, leftovers, verify."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from qwq_edge.convert import convert_to_mlx, verify
from qwq_edge.convert.checkpoint import QwenConfig
from qwq_edge.convert.safetensors_io import SafetensorsFile
from qwq_edge.convert.synthetic import make_checkpoint
from qwq_edge.convert.verify import VerifyReport, judge
from qwq_edge.errors import CheckpointError


def qwq(cli_command, *args, stdin=None, env=None, timeout=120):
    return subprocess.run(
        [*cli_command, *args], input=stdin, capture_output=True, timeout=timeout, check=False, env=env
    )


def clean_failure(proc, fragment="", code=None):
    """A non-zero exit below 128 that is not 70, and exactly one ``error:`` line on stderr."""
    stderr = proc.stderr.decode("utf-8", "replace") if isinstance(proc.stderr, bytes) else proc.stderr
    assert 0 < proc.returncode < 128 and proc.returncode != 70, (proc.returncode, stderr)
    assert code is None or proc.returncode == code, (proc.returncode, stderr)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], stderr


@pytest.mark.parametrize("where", ["stdin", "argument"])
def test_a_prompt_that_is_not_utf8_is_one_line(cli_command, gguf_path, where):
    prompt = b"What is 2+2? \xff\xfe caf\xe9"
    args = ["run", "-m", str(gguf_path)] + ([prompt] if where == "argument" else [])
    proc = qwq(cli_command, *args, stdin=prompt if where == "stdin" else b"")
    clean_failure(proc, "not valid UTF-8", code=1)


def model_folder(tmp_path: Path, config: object) -> Path:
    folder = tmp_path / "model"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").write_bytes(b"")
    return folder


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ([1, 2], "must hold a JSON object, not a list"),
        ("text", "must hold a JSON object, not a string"),
        (None, "must hold a JSON object, not null"),
        ({"num_attention_heads": 4, "hidden_size": 64}, "config.json lacks num_hidden_layers"),
        ({"num_hidden_layers": 2, "num_attention_heads": 0, "hidden_size": 64}, "must be a positive whole number"),
        ({"num_hidden_layers": "2", "num_attention_heads": 4, "hidden_size": 64}, "must be a positive whole number"),
    ],
)
@pytest.mark.parametrize("command", ["run", "info"])
def test_a_config_json_that_is_valid_json_but_unusable_is_one_line(cli_command, tmp_path, config, fragment, command):
    folder = model_folder(tmp_path, config)
    args = ["run", "-m", str(folder), "Hi"] if command == "run" else ["info", str(folder)]
    clean_failure(qwq(cli_command, *args), fragment, code=1)


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        (b"[1, 2]", "not a list"),
        (b'"text"', "not a string"),
        (b"null", "not null"),
        (b'{"question": "q"}', "needs answer as text"),
        (b'{"question": ["q"], "answer": "1"}', "needs question as text"),
        (b'{"question": "\xff", "answer": "1"}', "not valid UTF-8"),
        (b"{nope", "not valid JSON"),
    ],
)
def test_eval_data_lines_that_are_not_problems_are_one_line(cli_command, gguf_path, tmp_path, line, fragment):
    data = tmp_path / "data.jsonl"
    data.write_bytes(b'{"question": "1+1?", "answer": "2"}\n' + line + b"\n")
    proc = qwq(cli_command, "eval", "-m", str(gguf_path), "--data", str(data), "--out", str(tmp_path / "out"))
    clean_failure(proc, fragment, code=1)
    assert "data.jsonl, line 2: " in proc.stderr.decode("utf-8", "replace")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"vocab_size": "a lot"}, 'config.json\'s vocab_size must be a positive whole number, not "a lot"'),
        ({"architectures": None}, None),
        ({"architectures": None, "model_type": "llama"}, 'names model_type "llama"; supported: Qwen2ForCausalLM'),
        ({"architectures": "Qwen2ForCausalLM"}, "architectures must be a list of names"),
    ],
)
def test_converter_config_messages_are_clear(change, fragment):
    config = {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": 1024, "hidden_size": 64,
        "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
    }  # fmt: skip
    config = {k: v for k, v in {**config, **change}.items() if v is not None}
    if fragment is None:  # no architectures: model_type qwen2 is enough
        assert QwenConfig.from_dict(config, "src").num_hidden_layers == 2
        return
    with pytest.raises(CheckpointError) as error:
        QwenConfig.from_dict(config, "src")
    assert fragment in str(error.value) and "invalid literal" not in str(error.value)


def test_rm_deletes_only_inside_the_folders_qwq_edge_owns(cli_command, tmp_path):
    home, outside = tmp_path / "home", tmp_path / "precious.gguf"
    outside.write_bytes(b"GGUF keep me")
    record = home / "models" / "qwq-32b--q4_k_m.json"
    record.parent.mkdir(parents=True)
    fields = {"name": "qwq-32b", "format": "gguf", "quant": "q4_k_m", "repo": "x/y", "size_bytes": 1}
    record.write_text(json.dumps({**fields, "path": str(outside)}))
    env = {**os.environ, "QWQ_EDGE_HOME": str(home), "HF_HUB_CACHE": str(tmp_path / "hub")}
    proc = qwq(cli_command, "rm", "qwq-32b", env=env)
    clean_failure(proc, "outside qwq-edge's folders", code=1)
    assert outside.read_bytes() == b"GGUF keep me" and record.is_file()
    (home / "converted").mkdir()
    sneaky = home / "converted" / ".." / ".." / "precious.gguf"  # inside, until `..` is resolved
    record.write_text(json.dumps({**fields, "path": str(sneaky)}))
    clean_failure(qwq(cli_command, "rm", "qwq-32b", env=env), "outside qwq-edge's folders")
    assert outside.read_bytes() == b"GGUF keep me"


def test_a_killed_conversion_is_cleaned_up_at_the_next_start(cli_command, tmp_path):
    """A record of a conversion whose process is gone: its .partial goes at the next start, said in one line."""
    home = tmp_path / "home"
    env = {**os.environ, "QWQ_EDGE_HOME": str(home)}
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / "elsewhere" / "big.gguf.partial"
    stale.parent.mkdir()
    stale.write_bytes(b"\0" * 4096)
    records = home / "conversions-in-progress"
    records.mkdir(parents=True)
    (records / "1.json").write_text(json.dumps({"pid": dead.pid, "paths": [str(stale)], "output": "big.gguf"}))
    source = make_checkpoint(tmp_path / "tiny")
    proc = qwq(cli_command, "convert", str(source), "--to", "gguf", "--quant", "f16", "--no-verify",
               "-o", str(tmp_path / "t.gguf"), env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    warning = [line for line in proc.stderr.decode().splitlines() if line.startswith("warning:")]
    assert warning == [f"warning: removed {stale} (0.00 GB), left by a conversion that was killed"]
    assert not stale.exists() and not list(records.iterdir()), "the stale and the finished records are gone"


def test_a_running_conversions_scratch_files_are_left_alone(tmp_path, monkeypatch):
    from qwq_edge.convert.output import sweep_leftovers

    monkeypatch.setenv("QWQ_EDGE_HOME", str(tmp_path / "home"))
    busy = tmp_path / "busy.gguf.partial"
    busy.write_bytes(b"x")
    records = tmp_path / "home" / "conversions-in-progress"
    records.mkdir(parents=True)
    (records / "2.json").write_text(json.dumps({"pid": os.getpid(), "paths": [str(busy)]}))
    assert sweep_leftovers() == [] and busy.exists()


def flatten_logits(folder: Path, factor: float = 0.02) -> Path:
    """Scale the final norm down: nearly flat next-token distributions, as random weights can give."""
    shard = SafetensorsFile(folder / "model.safetensors")
    entry = shard.entries["model.norm.weight"]
    values = (shard.float32("model.norm.weight") * factor).astype(np.float32)
    with (folder / "model.safetensors").open("r+b") as handle:
        handle.seek(shard.data_start + entry.start)
        handle.write(values.tobytes())
    return folder


def test_verify_accepts_a_good_4bit_conversion_of_a_flat_model_and_rejects_a_broken_one(tmp_path):
    source = flatten_logits(make_checkpoint(tmp_path / "flat"))
    summary = convert_to_mlx(source, tmp_path / "flat-mlx4", bits=4)  # verified: raises if judged bad
    v = summary.verification
    assert v["confident_positions"] < 8 and v["reference_entropy"] > 6.5, "nearly flat: top-1 is a coin toss"
    broken = flatten_logits(make_checkpoint(tmp_path / "other", seed=1))
    report = verify(broken, source)
    assert judge(report, "quantized") is not None
    assert "mean KL" in judge(report, "quantized")


def test_the_judge_looks_at_confident_positions_only_for_top1():
    flat = VerifyReport("c", "r", 100, 0.48, 0.0045, 0.02, 6.5, 0.4, confident_positions=0)
    assert judge(flat, "quantized") is None  # the case: top-1 is a coin toss there
    wrong_layout = VerifyReport("c", "r", 100, 0.1, 0.2, 1.0, 2.0, 4.9, 40, confident_top1_agreement=0.1)
    assert "where the source is confident" in judge(wrong_layout, "quantized")
    assert "mean KL" in judge(VerifyReport("c", "r", 100, 0.9, 0.2, 1.0, 2.0, 4.9, 40, 0.95), "full")


@pytest.mark.slow
def test_ctrl_c_stops_eval_discards_the_cancelled_run_and_a_rerun_redoes_it(cli_command, gguf_path, tmp_path):
    data = tmp_path / "data.jsonl"
    problems = [{"id": "quick", "question": "What is 2+2?", "answer": "4"},
                {"id": "long", "question": "List the numbers 1 to 500, one per line.", "answer": "500"}]  # fmt: skip
    data.write_text("".join(json.dumps(p) + "\n" for p in problems))
    out = tmp_path / "out"
    args = [*cli_command, "eval", "-m", str(gguf_path), "--data", str(data), "--out", str(out), "--budgets", "120",
            "--reasoning-format", "think", "--max-answer-tokens", "4", "--temperature", "0"]  # fmt: skip
    child = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = out / "results.jsonl"
    deadline = time.monotonic() + 120
    while not (results.is_file() and results.read_text().count("\n") == 1) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # into the second problem's generation
    child.send_signal(signal.SIGINT)
    start = time.monotonic()
    _, stderr = child.communicate(timeout=60)
    assert time.monotonic() - start < 10, "the first Ctrl-C stops the eval"
    assert child.returncode == 130, stderr
    assert "interrupted: the finished runs are kept in" in stderr.splitlines()[-1]
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert [row["id"] for row in rows] == ["quick"], "the cancelled run is not recorded"
    assert not (out / "summary.json").exists()
    rerun = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False)
    assert rerun.returncode == 0, rerun.stderr
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert [row["id"] for row in rows] == ["quick", "long"], "the rerun redoes only the cancelled run"
    assert rows[1]["finish_reason"] != "cancelled"
