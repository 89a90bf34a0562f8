"""The GGUF header check that runs before llama.cpp sees a file."""

from pathlib import Path

import pytest

from qwq_edge import ModelFormatError, ModelNotFoundError, load
from qwq_edge.engines.gguf_file import read_gguf_header
from qwq_edge.services.testdata import SIZE


def copy_prefix(source: Path, target: Path, size: int) -> Path:
    with source.open("rb") as src, target.open("wb") as dst:
        remaining = size
        while remaining:
            chunk = src.read(min(remaining, 1 << 22))
            dst.write(chunk)
            remaining -= len(chunk)
    return target


def test_header_of_the_real_model(gguf_path):
    header = read_gguf_header(gguf_path)
    assert header.architecture == "qwen2"
    assert header.context_length == 32768
    assert header.name == "Qwen2.5 Coder 0.5B Instruct AWQ"
    assert header.data_end == SIZE == header.file_size
    assert header.tensor_count > 0


@pytest.mark.parametrize("size", [100, 100_000, SIZE // 2, SIZE - 1])
def test_truncated_files_are_rejected_before_llama_cpp(gguf_path, tmp_path, size):
    truncated = copy_prefix(gguf_path, tmp_path / "cut.gguf", size)
    with pytest.raises(ModelFormatError, match=r"truncated|corrupt"):
        load(truncated)


def test_a_file_that_is_not_gguf(tmp_path):
    path = tmp_path / "notes.gguf"
    path.write_text("this is not a model\n" * 10)
    with pytest.raises(ModelFormatError, match="not a GGUF file"):
        load(path)


def test_an_empty_file_and_a_missing_file(tmp_path):
    empty = tmp_path / "empty.gguf"
    empty.touch()
    with pytest.raises(ModelFormatError):
        load(empty)
    with pytest.raises(ModelNotFoundError):
        load(tmp_path / "missing.gguf")
