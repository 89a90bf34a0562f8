"""Shared fixtures: the real 0.5B Qwen2 GGUF (downloaded once, checksum-verified) and a loaded model."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from qwq_edge import Model, load
from qwq_edge.testdata import fixture_model_path

#: Greedy, short: the settings most tests use so that runs are fast and repeatable.
GREEDY = {"temperature": 0.0}
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


@pytest.fixture(scope="session")
def cli_command() -> list[str]:
    """The real ``qwq-edge`` executable (or the module, when the script is not on PATH)."""
    script = shutil.which("qwq-edge")
    return [script] if script else [sys.executable, "-m", "qwq_edge"]


@pytest.fixture
def offline(tmp_path: Path) -> dict[str, str]:
    """The environment of a user without network: an empty hub cache and ``QWQ_EDGE_HOME``, offline."""
    return {
        **os.environ,
        "HF_HUB_CACHE": str(tmp_path / "hub"),
        "HF_HUB_OFFLINE": "1",
        "QWQ_EDGE_HOME": str(tmp_path / "home"),
    }
