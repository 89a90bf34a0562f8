"""Quantize a GGUF in-process with ``llama_model_quantize`` from llama-cpp-python.

libllama's per-tensor log lines drive the progress callback instead of reaching
the terminal. Only this converter step needs llama-cpp-python, so it lives apart
and is imported when a quantized GGUF is asked for.
"""

from __future__ import annotations

import ctypes
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import llama_cpp
import llama_cpp._logger

from ..errors import ConversionError
from .output import Progress

_TENSOR_LINE = re.compile(rb"\[\s*(\d+)/\s*(\d+)\]")


@contextmanager
def _quantize_log(progress: Progress) -> Iterator[None]:
    """Route libllama's per-tensor log lines into ``progress`` while quantizing."""

    @llama_cpp.llama_log_callback
    def on_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        match = _TENSOR_LINE.search(text or b"")
        if match:
            progress("quantizing", int(match.group(1)), int(match.group(2)))

    llama_cpp.llama_log_set(on_log, ctypes.c_void_p(0))
    try:
        yield
    finally:
        llama_cpp.llama_log_set(llama_cpp._logger.llama_log_callback, ctypes.c_void_p(0))


def quantize_gguf(source: Path, target: Path, ftype: int, threads: int, progress: Progress) -> None:
    """Quantize a GGUF in-process with libllama (``llama_model_quantize``)."""
    params = llama_cpp.llama_model_quantize_default_params()
    params.nthread = threads
    params.ftype = ftype
    with _quantize_log(progress):
        status = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params))
    if status != 0:
        raise ConversionError(f"libllama could not quantize {source} (status {status})")
