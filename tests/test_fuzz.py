"""Fuzzing each input surface with seeded random bytes and random JSON values, as real CLI processes.

Every run must end within a time bound with a clean failure (a non-zero exit below 128
that is not 70, "internal error", and exactly one ``error:`` line on stderr), and must
leave the user's files as they were. A model file whose chat template is garbage is
not a failure: the model runs with ChatML, and the one line on stderr says so.
"""

import hashlib
import json
import random
import subprocess
import time
from pathlib import Path

import pytest
from conftest import TEMPLATE_SLOT, gguf_with

from qwq_edge.runtime.chat import CHAT_FILE_FORMAT

COUNT = 4  # cases per surface and kind: each CLI process costs about a second
TIME_BOUND = 60.0
KEYS = ["question", "answer", "id", "format", "messages", "options", "role", "content", "temperature",
        "num_hidden_layers", "num_attention_heads", "hidden_size", "vocab_size", "architectures", "x"]  # fmt: skip


def random_text(rng: random.Random, size: int = 12) -> str:
    alphabet = "abc xyz{}%\"'\\\n\t\u00e9\u4e2d\U0001f999\u202e\x00"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, size)))


def random_json(rng: random.Random, depth: int = 0) -> object:
    """Any JSON value: scalars of every type (huge, negative, empty), lists and objects."""
    kinds = ["null", "bool", "int", "float", "str"] + (["list", "dict"] if depth < 3 else [])
    kind = rng.choice(kinds)
    if kind == "null":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "int":
        return rng.choice([0, -1, 1, 2**64, -(2**70), rng.randint(-1000, 1000)])
    if kind == "float":
        return rng.choice([0.5, -1e308, 1e-300, 3.0])
    if kind == "str":
        return random_text(rng)
    if kind == "list":
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(KEYS): random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def random_bytes(rng: random.Random, size: int = 64) -> bytes:
    """Bytes that are never valid UTF-8 (one invalid byte at least)."""
    data = bytearray(rng.randbytes(rng.randint(1, size)))
    data.insert(rng.randrange(len(data) + 1), 0xFF)
    return bytes(data)


def snapshot(paths: list[Path]) -> dict[Path, str]:
    files = [f for p in paths for f in ([p] if p.is_file() else sorted(p.rglob("*")))]
    return {f: hashlib.sha256(f.read_bytes()).hexdigest() for f in files if f.is_file()}


def run_checked(cli_command, args: list, files: list[Path], stdin: bytes = b"") -> subprocess.CompletedProcess:
    """Run one case; check the time bound and that ``files`` are untouched."""
    before = snapshot(files)
    start = time.monotonic()
    proc = subprocess.run([*cli_command, *args], input=stdin, capture_output=True, timeout=TIME_BOUND, check=False)
    assert time.monotonic() - start < TIME_BOUND
    assert snapshot(files) == before, "the user's files are untouched"
    return proc


def assert_clean_failure(proc: subprocess.CompletedProcess) -> None:
    stderr = proc.stderr.decode("utf-8", "replace")
    assert 0 < proc.returncode < 128 and proc.returncode != 70, (proc.returncode, stderr)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "internal error" not in stderr


@pytest.mark.parametrize("seed", range(COUNT))
def test_fuzz_prompt_bytes_and_text(cli_command, gguf_path, seed):
    rng = random.Random(seed)
    bad = random_bytes(rng).replace(b"\0", b"")
    blank = "".join(rng.choice(" \t\n\r\u3000\u00a0") for _ in range(rng.randint(0, 8))).encode()
    run = ["run", "-m", str(gguf_path)]
    assert_clean_failure(run_checked(cli_command, run, [gguf_path], stdin=bad))
    assert_clean_failure(run_checked(cli_command, [*run, bad], [gguf_path]))
    assert_clean_failure(run_checked(cli_command, run, [gguf_path], stdin=blank))


def broken_config(rng: random.Random) -> bytes:
    """Random bytes, a random JSON value, or a model-like object with one size unusable."""
    choice = rng.randrange(3)
    if choice == 0:
        return random_bytes(rng)
    if choice == 1:
        value = random_json(rng)
        return json.dumps(value).encode()
    config = {"architectures": ["Qwen2ForCausalLM"], "num_hidden_layers": 2, "num_attention_heads": 4,
              "hidden_size": 64, "vocab_size": 1024, "intermediate_size": 128}  # fmt: skip
    bad_key = rng.choice(list(config))
    config[bad_key] = rng.choice([None, 0, -3, "2", 1.5, [], {}, True]) if bad_key != "architectures" else 7
    return json.dumps(config).encode()


@pytest.mark.parametrize("seed", range(2 * COUNT))
def test_fuzz_config_json(cli_command, tmp_path, seed):
    rng = random.Random(100 + seed)
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_bytes(broken_config(rng))
    (folder / "model.safetensors").write_bytes(b"\0" * 16)
    command = [["run", "-m", str(folder), "Hi"], ["info", str(folder)], ["convert", str(folder), "--to", "gguf"]]
    args = command[seed % 3] + (["-o", str(tmp_path / "out.gguf")] if seed % 3 == 2 else [])
    assert_clean_failure(run_checked(cli_command, args, [folder]))
    assert not (tmp_path / "out.gguf").exists()


def is_problem(value: object) -> bool:
    return isinstance(value, dict) and all(isinstance(value.get(k), str | int | float) for k in ("question", "answer"))


@pytest.mark.parametrize("seed", range(COUNT))
def test_fuzz_eval_jsonl(cli_command, gguf_path, tmp_path, seed):
    rng = random.Random(200 + seed)
    lines = [json.dumps({"question": "1+1?", "answer": "2"}).encode()]
    value = random_json(rng)
    while is_problem(value):
        value = random_json(rng)
    lines.insert(rng.randrange(2), random_bytes(rng) if seed % 2 else json.dumps(value).encode())
    data = tmp_path / "data.jsonl"
    data.write_bytes(b"\n".join(lines).replace(b"\n\n", b"\n") + b"\n")
    out = tmp_path / "out"
    args = ["eval", "-m", str(gguf_path), "--data", str(data), "--out", str(out)]
    assert_clean_failure(run_checked(cli_command, args, [data]))
    assert not out.exists()


def chat_file(rng: random.Random, kind: str) -> bytes:
    if kind == "bytes":
        return random_bytes(rng)
    if kind == "json":
        value = random_json(rng)
        return json.dumps(value if not isinstance(value, dict) else {**value, "format": "other"}).encode()
    if kind == "messages":
        messages = rng.choice([random_json(rng), [random_json(rng)], [{"role": random_json(rng)}], {"a": 1}])
        return json.dumps({"format": CHAT_FILE_FORMAT, "messages": messages}).encode()
    options = rng.choice([[1], "fast", 3, {"temperature": "hot"}, {"no_such_option": 1}, {"seed": [1]}])
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    return json.dumps({"format": CHAT_FILE_FORMAT, "messages": messages, "options": options}).encode()


CHAT_CASES = [(kind, seed) for kind in ("bytes", "json", "messages", "options") for seed in range(2)]


@pytest.mark.parametrize(("kind", "seed"), CHAT_CASES)
def test_fuzz_chat_file(cli_command, gguf_path, tmp_path, kind, seed):
    rng = random.Random(f"{kind}-{seed}")
    saved = tmp_path / "chat.json"
    saved.write_bytes(chat_file(rng, kind))
    args = ["chat", "-m", str(gguf_path), "--resume", str(saved), "--max-answer-tokens", "2"]
    assert_clean_failure(run_checked(cli_command, args, [saved], stdin=b"Hi\n"))


def random_template(rng: random.Random) -> bytes:
    """Random bytes, or random Jinja made of the pieces that hostile templates use."""
    if rng.random() < 0.4:
        return random_bytes(rng, 512)
    pieces = ["{%", "%}", "{{", "}}", " for x in ", "range(", "10**9", "100000", ")", " messages ", "'a'", "*", "~",
              " if ", " endfor ", " endif ", "macro f()", "f()", "|center(", "|join", " set ns = namespace(s=1) ",
              "ns.s", "__class__", "raise_exception('no')", "loop.index", "[0]", "\xff", "{#", "#}"]  # fmt: skip
    return "".join(rng.choice(pieces) for _ in range(rng.randint(1, 40))).encode("utf-8", "surrogateescape")


@pytest.mark.parametrize("seed", range(COUNT))
def test_fuzz_gguf_metadata_strings(cli_command, placeholder_gguf, tmp_path, seed):
    rng = random.Random(300 + seed)
    template = random_template(rng)[:TEMPLATE_SLOT]
    gguf = gguf_with(placeholder_gguf, tmp_path / "fuzz.gguf", template, random_bytes(rng, 40))
    args = ["run", "-m", str(gguf), "--json", "--reasoning-format", "none", "--max-answer-tokens", "1", "Hi"]
    proc = run_checked(cli_command, args, [gguf])
    stderr = proc.stderr.decode("utf-8", "replace").strip().splitlines()
    if proc.returncode == 0:  # the model runs; a template it cannot use is said in one line
        assert len(stderr) <= 1 and all(line.endswith("using ChatML instead") for line in stderr), stderr
        assert json.loads(proc.stdout)["answer_tokens"] <= 1
    else:
        assert_clean_failure(proc)
    info = run_checked(cli_command, ["info", str(gguf), "--json"], [gguf])
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["prompt_template"].startswith(("ChatML", "the model's own"))
