"""``qwq-edge convert`` / ``verify`` as real processes: bad input, the hub cache offline, SIGKILL, the 0.5B model."""

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import GREEDY

from qwq_edge import load
from qwq_edge.convert.output import ensure_disk_space
from qwq_edge.convert.synthetic import SyntheticSpec, make_checkpoint
from qwq_edge.engines.llama_cpp.baseline import llama_cpp_logits
from qwq_edge.errors import ConversionError
from qwq_edge.reasoning.formats import NONE


def qwq(cli_command, *args, env=None):
    return subprocess.run([*cli_command, *args], capture_output=True, text=True, timeout=600, check=False, env=env)


def one_line_error(proc, fragment):
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.fixture
def tiny(tmp_path) -> Path:
    return make_checkpoint(tmp_path / "tiny-qwen2")


def break_checkpoint(folder: Path, how: str) -> None:
    if how == "no-config":
        (folder / "config.json").unlink()
    elif how == "no-tokenizer":
        (folder / "tokenizer.json").unlink()
    elif how == "truncated":
        shard = folder / "model.safetensors"
        shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    elif how == "dtype":
        shard = folder / "model.safetensors"
        data = shard.read_bytes()
        shard.write_bytes(data.replace(b'"dtype":"F32"', b'"dtype":"I32"', 1))
    elif how == "architecture":
        config = json.loads((folder / "config.json").read_text())
        config["architectures"] = ["LlamaForCausalLM"]
        (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(
    ("how", "fragment"),
    [
        ("no-config", "has no config.json"),
        ("no-tokenizer", "has no tokenizer.json"),
        ("truncated", "is truncated"),
        ("dtype", "has dtype I32"),
        ("architecture", "LlamaForCausalLM is not supported; supported: Qwen2ForCausalLM"),
    ],
)
def test_bad_checkpoints_give_one_line(cli_command, tiny, tmp_path, how, fragment):
    break_checkpoint(tiny, how)
    proc = qwq(cli_command, "convert", str(tiny), "--to", "gguf", "-o", str(tmp_path / "out.gguf"))
    one_line_error(proc, fragment)
    assert not (tmp_path / "out.gguf").exists()


def test_existing_output_needs_force(cli_command, tiny, tmp_path):
    out = tmp_path / "out.gguf"
    out.write_text("precious")
    one_line_error(qwq(cli_command, "convert", str(tiny), "--to", "gguf", "-o", str(out)), "--force")
    assert out.read_text() == "precious"
    proc = qwq(cli_command, "convert", str(tiny), "--to", "gguf", "-o", str(out), "--force", "--quant", "q8_0")
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[:4] == b"GGUF"
    assert "bits per weight" in proc.stderr and "top-1 agreement" in proc.stderr


def test_other_bad_requests(cli_command, tiny, tmp_path):
    one_line_error(qwq(cli_command, "convert", str(tmp_path / "missing"), "--to", "mlx"), "does not exist")
    one_line_error(qwq(cli_command, "convert", str(tiny), "--to", "hf"), "is not a GGUF file")
    not_gguf = tmp_path / "x.gguf"
    not_gguf.write_text("nope" * 10)
    one_line_error(qwq(cli_command, "convert", str(not_gguf), "--to", "gguf"), "needs a Hugging Face checkpoint")


def test_not_enough_disk_space_is_refused_before_starting(tmp_path):
    with pytest.raises(ConversionError, match="not enough disk space"):
        ensure_disk_space(tmp_path, 10**18)


def hub_cache(root: Path, repo_id: str, checkpoint: Path) -> Path:
    """A huggingface-hub cache holding ``checkpoint`` as ``repo_id`` (the hub's own layout)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = root / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    shutil.copytree(checkpoint, snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    return root


def test_hub_repo_ids_resolve_from_the_cache_offline(cli_command, tiny, tmp_path):
    cache = hub_cache(tmp_path / "hub", "qwq-edge-tests/tiny-qwen2", tiny)
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "from-hub.gguf"
    proc = qwq(cli_command, "convert", "qwq-edge-tests/tiny-qwen2", "--to", "gguf", "-o", str(out), env=env)
    assert proc.returncode == 0, proc.stderr
    assert out.is_file()
    missing = qwq(cli_command, "convert", "qwq-edge-tests/not-cached", "--to", "gguf", env=env)
    one_line_error(missing, "not in the local Hugging Face cache")


def test_a_killed_conversion_leaves_no_complete_looking_output(cli_command, tmp_path):
    source = make_checkpoint(tmp_path / "medium", SyntheticSpec(256, 1024, 6, 4, 2, 151_936, 600))
    out = tmp_path / "medium.gguf"
    args = [*cli_command, "convert", str(source), "--to", "gguf", "-o", str(out)]
    child = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob("medium.gguf*.partial")) and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert list(tmp_path.glob("medium.gguf*.partial")), "killed while writing"
    assert not out.exists()
    proc = qwq(cli_command, "convert", str(source), "--to", "gguf", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert out.is_file() and not list(tmp_path.glob("*.partial"))


def test_verify_command_writes_a_report(cli_command, tiny, tmp_path):
    out = tmp_path / "t.gguf"
    assert (
        qwq(
            cli_command, "convert", str(tiny), "--to", "gguf", "--quant", "f16", "-o", str(out), "--no-verify"
        ).returncode
        == 0
    )
    proc = qwq(cli_command, "verify", str(out), "--reference", str(tiny), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["top1_agreement"] == 1.0
    assert json.loads((tmp_path / "t.gguf.verify.json").read_text())["positions"] > 0


def test_the_real_model_round_trips_gguf_hf_gguf(cli_command, gguf_path, tmp_path):
    """The 0.5B fixture: GGUF → HF checkpoint → GGUF Q4_K_M, then greedy answers against the original."""
    hf = tmp_path / "hf"
    # --no-verify on both steps (verify is tested on tiny models above; on this model it costs ~20 s):
    # the teacher-forced comparison below checks the whole round trip, dequantizing included
    proc = qwq(cli_command, "convert", str(gguf_path), "--to", "hf", "--no-verify", "-o", str(hf))
    assert proc.returncode == 0, proc.stderr
    requantized = tmp_path / "q4.gguf"
    args = ("--to", "gguf", "--quant", "q4_k_m", "--no-verify", "-o", str(requantized))
    proc = qwq(cli_command, "convert", str(hf), *args)
    assert proc.returncode == 0, proc.stderr
    # Teacher-forced: both files read the original's greedy answers; compare their top-1 at every position.
    prompts = [
        "Write a Python function that reverses a string.",
        "What is the capital of France?",
        "Name three primes.",
    ]
    with load(gguf_path, context_length=1024) as original:
        sequences = []
        for prompt in prompts:
            answer = original.generate(prompt, reasoning_format="none", max_answer_tokens=24, **GREEDY).answer
            prompt_tokens = original.prompts.build(original.prompt_messages(prompt), NONE)
            sequences.append(prompt_tokens + original.engine.tokenize(answer, special=False))
        assert load(requantized, context_length=256).info.model_name == original.info.model_name
    reference, converted = llama_cpp_logits(gguf_path, sequences), llama_cpp_logits(requantized, sequences)
    matches = [a.argmax(-1) == b.argmax(-1) for a, b in zip(reference, converted, strict=True)]
    agreement = np.mean(np.concatenate(matches))
    assert agreement > 0.85
