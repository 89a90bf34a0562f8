"""Shared fixtures: the real 0.5B Qwen2 GGUF (downloaded once, checksum-verified) and a loaded model."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from qwq_edge import Model, load
from qwq_edge.convert import convert_to_gguf
from qwq_edge.convert.synthetic import SyntheticSpec, make_checkpoint
from qwq_edge.services.testdata import fixture_model_path, fixture_tokenizer_json

# Every test (and every process it starts) keeps qwq-edge's files, the disk prompt cache among
# them, in a folder of this run's own: a state cached by an earlier run would change what a
# fresh model reports (cached prompt tokens) and how fast it answers.
os.environ["QWQ_EDGE_HOME"] = tempfile.mkdtemp(prefix="qwq-edge-tests-")
# ``run`` and ``chat`` load their model in the test's process unless a test names a server
# (``--server``): a server someone runs on this machine's default address is not the tests'.
os.environ["QWQ_EDGE_NO_SERVER"] = "1"
# The processes tests start (``qwq-edge …``) run this checkout's code, even where another one is installed.
ROOT = Path(__file__).resolve().parents[1]
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))

#: Greedy, short: the settings most tests use so that runs are fast and repeatable.
GREEDY = {"temperature": 0.0}
#: What a test needs, read from the fixtures it uses: marker → the fixtures that imply it. A test
#: module with needs no fixture shows sets ``pytestmark`` itself (``pytest.mark.mlx``, …).
NEEDS = {
    "model": {"gguf_path", "model"},  # the real 0.5B GGUF
    "engine": {"tiny", "tiny_models", "tiny_mlx", "placeholder_gguf", "wide", "qwen"},  # a real engine, tiny models
    "subprocess": {"cli_command"},  # qwq-edge run as a process
    "server": {"server", "client", "door_server"},  # a real uvicorn server
    "browser": {"page"},  # headless chromium
}
#: Markers the everyday loop (``pytest --quick``) leaves out.
SLOW_NEEDS = (*NEEDS, "mlx")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--quick",
        action="store_true",
        help="the everyday loop: only the tests that need no real model, engine, MLX, process, server or browser",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test by what it needs; with ``--quick``, deselect those that need any of it."""
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        for marker, fixtures in NEEDS.items():
            if used & fixtures:
                item.add_marker(marker)
    if not config.getoption("--quick"):
        return
    kept = [item for item in items if not any(item.get_closest_marker(m) for m in SLOW_NEEDS)]
    config.hook.pytest_deselected(items=[item for item in items if item not in kept])
    items[:] = kept


#: A request that keeps the 0.5B model thinking for a long time.
LONG_THINKING_PROMPT = "List the numbers 1 to 500, each on its own line, with no other text."


@pytest.fixture(scope="session")
def gguf_path() -> Path:
    return fixture_model_path()


@pytest.fixture(scope="session")
def model(gguf_path: Path) -> Iterator[Model]:
    loaded = load(gguf_path, context_length=4096)
    yield loaded
    loaded.close()


#: The two models of ``models_dir``.
CODER, TINY = "coder", "tiny-qwen3"


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory, gguf_path: Path) -> Path:
    """A ``--models`` folder: the fixture GGUF as ``coder.gguf`` and a tiny random Qwen3 (Qwen's
    tokenizer) as a second GGUF, and a file that is not a model."""
    root = tmp_path_factory.mktemp("served")
    folder = root / "models"
    folder.mkdir()
    (folder / f"{CODER}.gguf").symlink_to(gguf_path)
    spec = SyntheticSpec(64, 128, 2, 4, 2, 151_936, 0, False, "float16", architecture="qwen3", head_dim=32)
    source = make_checkpoint(root / "tiny-source", spec, tokenizer_json=fixture_tokenizer_json())
    convert_to_gguf(source, folder / f"{TINY}.gguf", quant="f16", verify=False)
    (folder / "notes.txt").write_text("not a model")
    return folder


@pytest.fixture(scope="session")
def cli_command() -> list[str]:
    """The real ``qwq-edge`` executable (or the module, when the script is not on PATH)."""
    script = shutil.which("qwq-edge")
    return [script] if script else [sys.executable, "-m", "qwq_edge"]


#: Bytes reserved in ``placeholder_gguf`` for the chat template and for ``general.name``.
TEMPLATE_SLOT, NAME_SLOT = 4096, 64


@pytest.fixture(scope="session")
def placeholder_gguf(tmp_path_factory) -> Path:
    """A tiny random Qwen2 GGUF whose chat template and name are placeholders of fixed size,
    so that a test can write any bytes there (see ``gguf_with``) without rewriting the file."""
    from qwq_edge.convert import convert_to_gguf
    from qwq_edge.convert.synthetic import make_checkpoint

    folder = make_checkpoint(tmp_path_factory.mktemp("placeholder") / "tiny")
    for name, key, slot in (
        ("config.json", "_name_or_path", "N" * NAME_SLOT),
        ("tokenizer_config.json", "chat_template", "T" * TEMPLATE_SLOT),
    ):
        data = json.loads((folder / name).read_text())
        data[key] = slot
        (folder / name).write_text(json.dumps(data))
    out = folder.parent / "tiny.gguf"
    convert_to_gguf(folder, out, quant="f16", verify=False)
    return out


def gguf_with(placeholder: Path, out: Path, template: bytes, name: bytes = b"tiny") -> Path:
    """A copy of ``placeholder_gguf`` with ``template`` and ``name`` (space-padded) in place."""
    data = placeholder.read_bytes()
    for slot, value in ((b"T" * TEMPLATE_SLOT, template), (b"N" * NAME_SLOT, name)):
        assert len(value) <= len(slot) and data.count(slot) == 1
        data = data.replace(slot, value.ljust(len(slot), b" "))
    out.write_bytes(data)
    return out


@pytest.fixture
def offline(tmp_path: Path) -> dict[str, str]:
    """The environment of a user without network: an empty hub cache and ``QWQ_EDGE_HOME``, offline, on
    a machine fast enough for any model (``QWQ_EDGE_BANDWIDTH``: the speed floor leaves the choice to memory)."""
    return {
        **os.environ,
        "HF_HUB_CACHE": str(tmp_path / "hub"),
        "HF_HUB_OFFLINE": "1",
        "QWQ_EDGE_HOME": str(tmp_path / "home"),
        "QWQ_EDGE_BANDWIDTH": "800GB/s",
    }


def in_threads(work: Callable[[int], object], count: int, timeout: float = 60) -> list:
    """``work(0)`` … ``work(count - 1)``, each in its own thread at once; their results in order."""
    results: list = [None] * count

    def run(index: int) -> None:
        results[index] = work(index)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    return results


@pytest.fixture(scope="session")
def door_server(cli_command, gguf_path):
    """One ``serve --api-key`` for every door's tests (Anthropic, Responses, Ollama): one start for all."""
    from serving import KEY, running_server

    with running_server(cli_command, gguf_path, "--api-key", KEY, "--max-tokens", "200") as server:
        yield server
