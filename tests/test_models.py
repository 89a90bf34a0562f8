"""The catalog, ``pull`` / ``list`` / ``info`` / ``rm`` and every form of ``--model``, offline.

The hub is out of reach here, so ``pull`` runs for real against huggingface-hub's own
cache layout, pre-populated by the test (as a past download would have left it), with
``HF_HUB_OFFLINE=1``; and against a cache that lacks the files.
"""

import glob
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from huggingface_hub._tree_cache import TreeCacheEntry, write_tree_cache

from qwq_edge.catalog.entries import CatalogError, default_entry, find, load_catalog
from qwq_edge.convert import convert_to_mlx
from qwq_edge.convert.synthetic import SyntheticSpec, make_checkpoint
from qwq_edge.reasoning.formats import FORMATS

ROOT = Path(__file__).resolve().parent.parent
COMMIT = "0123456789abcdef0123456789abcdef01234567"
FIXTURE_REPO = "Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF"


def cache_file(cache: Path, repo: str, name: str, source: Path) -> None:
    """Put ``source`` into a huggingface-hub cache as ``repo``'s file ``name`` (blob + snapshot link)."""
    folder = cache / ("models--" + repo.replace("/", "--"))
    (folder / "blobs").mkdir(parents=True, exist_ok=True)
    blob = folder / "blobs" / f"blob-{name.replace('/', '-')}"
    if not blob.exists():
        os.link(source, blob)  # a second name for the file: removing it leaves the original
    link = folder / "snapshots" / COMMIT / name
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(blob, link.parent))
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(COMMIT)


def qwq(cli_command, *args, env):
    return subprocess.run([*cli_command, *args], capture_output=True, text=True, timeout=300, env=env, check=False)


def test_the_catalog_is_valid_and_complete():
    names = {entry.name for entry in load_catalog()}
    assert {"qwq-32b-preview", "qwq-32b", "qwen2.5-coder-0.5b"} <= names
    assert {f"deepseek-r1-distill-qwen-{s}" for s in ("1.5b", "7b", "14b", "32b")} <= names
    assert default_entry().name == "qwq-32b-preview"
    for entry in load_catalog():
        assert entry.reasoning_format in FORMATS and entry.license
        assert entry.source("gguf").files[0].endswith(".gguf")
        assert entry.shape(entry.source("gguf")).kv_bytes_per_token() > 0
    qwq = find("qwq-32b")
    assert (qwq.sampling.temperature, qwq.sampling.top_p, qwq.sampling.top_k) == (0.6, 0.95, 20)
    assert qwq.shape(qwq.source("gguf")).kv_bytes_per_token() == 256 * 1024
    with pytest.raises(CatalogError, match="no mlx:q8_0 download"):
        qwq.source("mlx", "q8_0")


def test_the_catalog_lists_smaller_downloads_with_quality_notes(tmp_path, monkeypatch):
    for name in ("qwq-32b-preview", "qwq-32b"):
        entry = find(name)
        quants = {s.quant: s for s in entry.sources}
        assert {"q4_k_m", "q3_k_m", "q2_k", "4bit", "3bit"} <= set(quants)
        for quant in ("q4_k_m", "q3_k_m", "q2_k", "4bit", "3bit"):
            source = quants[quant]
            assert source.checked is True and source.quality and source.size_bytes < 20e9
            assert source.files[0].endswith(".gguf") == (source.format == "gguf")
        assert quants["q2_k"].size_bytes < quants["q3_k_m"].size_bytes < quants["q4_k_m"].size_bytes
        assert quants["3bit"].size_bytes < quants["4bit"].size_bytes
    assert find("qwq-32b-preview").source("gguf", "iq3_xs").files == ("QwQ-32B-Preview-IQ3_XS.gguf",)
    (tmp_path / "bad.toml").write_text(USER_CATALOG.replace("size_bytes = 420000", "size_bytes = 420000\nchecked = 1"))
    monkeypatch.setenv("QWQ_EDGE_CATALOG", str(tmp_path))
    load_catalog.cache_clear()
    try:
        with pytest.raises(CatalogError, match="a source's checked must be a bool"):
            load_catalog()
    finally:
        load_catalog.cache_clear()


@pytest.mark.subprocess  # builds a wheel and installs it in a new environment
def test_a_wheel_install_finds_the_catalog(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    names = zipfile.ZipFile(glob.glob(str(tmp_path / "*.whl"))[0]).namelist()
    assert {"qwq_edge/catalog/data/qwq.toml", "qwq_edge/data/sample_math.jsonl"} <= set(names)
    assert {"qwq_edge/catalog/data/qwen3.toml", "qwq_edge/data/qwen3-chat-template.jinja"} <= set(names)


def test_pull_list_info_run_rm_with_the_hub_offline(cli_command, gguf_path, tmp_path, offline):
    cache_file(tmp_path / "hub", FIXTURE_REPO, "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", gguf_path)
    unconfirmed = qwq(cli_command, "pull", "qwen2.5-coder-0.5b", env=offline)
    assert unconfirmed.returncode == 2 and "confirm with --yes" in unconfirmed.stderr
    pulled = qwq(cli_command, "pull", "qwen2.5-coder-0.5b", "--yes", env=offline)
    assert pulled.returncode == 0, pulled.stderr
    assert "fits:" in pulled.stderr and "is ready" in pulled.stdout
    assert "qwen2.5-coder-0.5b" in qwq(cli_command, "list", env=offline).stdout
    info = json.loads(qwq(cli_command, "info", "qwen2.5-coder-0.5b", "--json", env=offline).stdout)
    assert info["quantization"] == "Q4_K_M" and info["catalog"] == "qwen2.5-coder-0.5b" and info["path"]
    args = ["--ctx", "1024", "--reasoning-format", "none", "--max-answer-tokens", "4", "--temperature", "0", "Hi"]
    ran = qwq(cli_command, "run", "-m", "qwen2.5-coder-0.5b", *args, env=offline)
    assert ran.returncode == 0 and ran.stdout.strip(), ran.stderr
    removed = qwq(cli_command, "rm", "qwen2.5-coder-0.5b", env=offline)
    assert removed.returncode == 0, removed.stderr
    assert "no models yet" in qwq(cli_command, "list", env=offline).stdout
    assert gguf_path.is_file(), "rm removes the cache's copy only"
    not_pulled = qwq(cli_command, "run", "-m", "qwen2.5-coder-0.5b", *args, env=offline)
    assert not_pulled.returncode == 2 and "confirm with --yes" in not_pulled.stderr


def test_a_model_missing_from_the_cache_is_one_clear_line(cli_command, offline):
    for args in (["pull", "qwq-32b", "--yes"], ["run", "--yes", "hi"]):
        proc = qwq(cli_command, *args, env=offline)
        lines = proc.stderr.strip().splitlines()
        assert (
            proc.returncode == 1
            and lines[-1].startswith("error: ")
            and "not in the local Hugging Face cache" in lines[-1]
        )
        assert "Traceback" not in proc.stderr
    unknown = qwq(cli_command, "pull", "gpt-17", "--yes", env=offline)
    assert unknown.returncode == 1 and "not in the catalog" in unknown.stderr
    assert "qwq-32b-preview (default)" in qwq(cli_command, "list", "--catalog", env=offline).stdout.replace("\n", " ")


@pytest.mark.parametrize("repo_id", ["a/..", "foo/bar.", "a--b/model", "owner/name.git"])
def test_a_malformed_hub_repo_id_is_one_clear_line(cli_command, tmp_path, offline, repo_id):
    """Ids of the hub's shape that huggingface-hub's own check refuses, as --model and as a conversion source."""
    for args in (["run", "-m", repo_id, "hi"], ["convert", repo_id, "--to", "mlx", "-o", str(tmp_path / "out")]):
        proc = qwq(cli_command, *args, env=offline)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 1 and len(lines) == 1, proc.stderr
        assert lines[0].startswith(f"error: {repo_id} is not a valid hub repo id")


def test_a_hub_repo_id_as_model_from_the_cache(cli_command, tmp_path, offline):
    folder = tmp_path / "tiny-mlx"
    convert_to_mlx(make_checkpoint(tmp_path / "tiny"), folder, bits=16, verify=False)
    for file in folder.iterdir():
        cache_file(tmp_path / "hub", "qwq-edge-tests/tiny-mlx", file.name, file)
    proc = qwq(
        cli_command, "run", "-m", "qwq-edge-tests/tiny-mlx", "--engine", "mlx", "--max-answer-tokens", "3",
        "--budget", "2", "--json", "hi", env=offline,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["thinking_tokens"] <= 2  # the budget's cut may take back tokens


USER_CATALOG = """
[[models]]
name = "tiny-test"
display_name = "Tiny Test"
match = ["tiny", "qwen2"]
architecture = "qwen2"
parameters = 205376
layers = 2
kv_heads = 2
head_dim = 16
context_length = 4096
license = "apache-2.0"
reasoning_format = "think"
chat_template = "ChatML with <think>"
sampling = { temperature = 0.6, top_p = 0.95, top_k = 20 }
effort = { low = 4 }

[[models.sources]]
format = "hf"
quant = "bf16"
repo = "qwq-edge-tests/tiny-qwen2"
files = ["*.json", "*.safetensors"]
size_bytes = 420000
"""


def with_user_catalog(tmp_path: Path, offline: dict[str, str]) -> dict[str, str]:
    """The environment of a user whose own catalog lists ``tiny-test`` (a checkpoint to convert)."""
    (tmp_path / "catalog").mkdir()
    (tmp_path / "catalog" / "tiny.toml").write_text(USER_CATALOG)
    return {**offline, "QWQ_EDGE_CATALOG": str(tmp_path / "catalog")}


def test_a_model_without_a_converted_download_is_downloaded_and_converted(cli_command, tmp_path, offline):
    checkpoint = make_checkpoint(tmp_path / "tiny-qwen2")
    for file in checkpoint.iterdir():
        cache_file(tmp_path / "hub", "qwq-edge-tests/tiny-qwen2", file.name, file)
    env = with_user_catalog(tmp_path, offline)
    pulled = qwq(cli_command, "pull", "tiny-test", "--yes", env=env)
    assert pulled.returncode == 0, pulled.stderr
    assert "has no pre-converted gguf download" in pulled.stderr.replace("\n", " ") or "is ready" in pulled.stdout
    converted = tmp_path / "home" / "converted" / "tiny-test-q4_k_m.gguf"
    assert converted.read_bytes()[:4] == b"GGUF"
    assert "tiny-test" in qwq(cli_command, "list", env=env).stdout
    ran = qwq(
        cli_command, "run", "-m", "tiny-test", "--effort", "low", "--max-answer-tokens", "2", "--json", "hi", env=env
    )
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["thinking_tokens"] <= 4  # the catalog entry's own "low" budget
    assert qwq(cli_command, "rm", "tiny-test", env=env).returncode == 0
    assert not converted.exists()


def test_an_interrupted_download_is_reported_then_resumed(cli_command, tmp_path, offline):
    """The cache as an interrupted download leaves it: the hub's file listing (written by
    huggingface-hub before it downloads) and only some of the files. Offline, pull names
    what is missing; once the rest has arrived, pull completes from the files already there.
    (The transfer itself is huggingface-hub's and needs the hub, which is out of reach here.)"""
    checkpoint = make_checkpoint(tmp_path / "tiny-qwen2")
    files = sorted(checkpoint.iterdir())
    repo_folder = tmp_path / "hub" / "models--qwq-edge-tests--tiny-qwen2"
    listing = {f.name: TreeCacheEntry(size=f.stat().st_size, blob_id=f"blob-{f.name}") for f in files}
    write_tree_cache(str(repo_folder), COMMIT, listing)
    weights = next(f for f in files if f.suffix == ".safetensors")
    for file in files:
        if file != weights:
            cache_file(tmp_path / "hub", "qwq-edge-tests/tiny-qwen2", file.name, file)
    env = with_user_catalog(tmp_path, offline)
    blobs_before = {blob.name: blob.stat().st_ino for blob in (repo_folder / "blobs").iterdir()}

    stopped = qwq(cli_command, "pull", "tiny-test", "--yes", env=env)
    assert stopped.returncode == 1, stopped.stderr
    error = stopped.stderr.strip().splitlines()[-1]  # after the memory plan's line
    assert error.startswith("error: ") and "Traceback" not in stopped.stderr
    assert "stopped before it finished (1 file(s) are missing (model.safetensors))" in error
    assert "run the same command again" in error
    assert "tiny-test" not in qwq(cli_command, "list", env=env).stdout

    cache_file(tmp_path / "hub", "qwq-edge-tests/tiny-qwen2", weights.name, weights)  # the rest arrives
    resumed = qwq(cli_command, "pull", "tiny-test", "--yes", env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert "tiny-test" in qwq(cli_command, "list", env=env).stdout
    kept = {blob.name: blob.stat().st_ino for blob in (repo_folder / "blobs").iterdir() if blob.name in blobs_before}
    assert kept == blobs_before  # what was downloaded before the interruption was used, not fetched again


def test_a_pull_killed_while_converting_is_redone_cleanly(cli_command, tmp_path, offline):
    """Killed (no chance to clean up) in the middle of its conversion, a pull leaves no model
    behind; the next pull starts the conversion afresh and finishes it."""
    big = SyntheticSpec(hidden_size=256, intermediate_size=512, vocab_size=151_936, tokenizer_vocab=4096)
    checkpoint = make_checkpoint(tmp_path / "tiny-qwen2", big)
    for file in checkpoint.iterdir():
        cache_file(tmp_path / "hub", "qwq-edge-tests/tiny-qwen2", file.name, file)
    env = with_user_catalog(tmp_path, offline)
    converted = tmp_path / "home" / "converted"
    proc = subprocess.Popen(
        [*cli_command, "pull", "tiny-test", "--yes"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while proc.poll() is None and not list(converted.glob("*.partial")) and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.kill()
    assert proc.wait() == -signal.SIGKILL, "the pull finished before it could be interrupted"
    assert not (converted / "tiny-test-q4_k_m.gguf").exists()
    assert "tiny-test" not in qwq(cli_command, "list", env=env).stdout

    again = qwq(cli_command, "pull", "tiny-test", "--yes", env=env)
    assert again.returncode == 0, again.stderr
    assert (converted / "tiny-test-q4_k_m.gguf").read_bytes()[:4] == b"GGUF"
    assert not list(converted.glob("*.partial"))
    assert "tiny-test" in qwq(cli_command, "list", env=env).stdout
