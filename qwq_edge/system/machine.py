"""Facts about this machine that several layers need: platform, accelerators, cores, memory.

Nothing here loads a model. The accelerator probes import an engine library inside
the function that asks (never at import), and answer ``False`` when it is not
installed: a missing library means that accelerator is not usable here.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path


def apple_silicon() -> bool:
    return sys.platform == "darwin" and platform.machine() == "arm64"


def metal_available() -> bool:
    """Whether MLX imports and has a Metal GPU."""
    try:
        import mlx.core as mx
    except ImportError:
        return False
    return bool(mx.metal.is_available())


def gpu_offload_supported() -> bool:
    """Whether the installed llama.cpp build can offload layers to a GPU (CUDA, Metal, …)."""
    try:
        import llama_cpp
    except ImportError:
        return False
    return bool(llama_cpp.llama_supports_gpu_offload())


def usable_cores() -> int:
    """All cores this process may use: llama.cpp decodes fastest with one thread per core."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS
        return max(1, os.cpu_count() or 1)


def _meminfo() -> dict[str, int]:
    values = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        values[key] = int(rest.split()[0]) * 1024
    return values


def total_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def available_memory() -> int:
    """Memory a new model can use now (Linux: MemAvailable; macOS: the whole RAM)."""
    if sys.platform.startswith("linux"):
        return _meminfo()["MemAvailable"]
    return total_memory()


def _sysctl(name: str) -> str:
    """A macOS ``sysctl`` value as text ("" when there is none)."""
    try:
        return subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def cpu_name() -> str:
    """The processor's name: ``Apple M2 Pro`` on a Mac, ``/proc/cpuinfo``'s model name on Linux."""
    if sys.platform == "darwin":
        name = _sysctl("machdep.cpu.brand_string")
        if name:
            return name
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def wired_limit_mb() -> int:
    """macOS's ``iogpu.wired_limit_mb``: what the GPU may wire, when raised (0: the default limit, or not a Mac)."""
    if not apple_silicon():
        return 0
    try:
        return int(_sysctl("iogpu.wired_limit_mb") or 0)
    except ValueError:
        return 0


def models_home() -> Path:
    """Where qwq-edge keeps its models and records: ``QWQ_EDGE_HOME``, else the user's data folder."""
    if "QWQ_EDGE_HOME" in os.environ:
        return Path(os.environ["QWQ_EDGE_HOME"])
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "qwq-edge"
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "qwq-edge"
