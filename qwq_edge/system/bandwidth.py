"""How fast this machine reads memory and multiplies matrices: what decoding and prompt speed follow.

Decoding a token reads every weight once, so its speed is bounded by the memory
bandwidth; reading a prompt is bounded by compute. On a CPU a short probe measures
both (about a second): every core reduces its slice of a 256 MiB array (a float32 sum
and a 64-bit max; the faster read sets the figure; best of several tries), then a
float32 matrix product gives the compute. The result is kept in
``QWQ_EDGE_HOME/machine-speed.json`` under this machine's identity (host, processor,
cores, memory), so the probe runs once per machine; ``doctor`` runs it again.

On Apple Silicon the GPU reads memory faster than the CPU cores can, and a CPU probe
cannot reach that: there the chip's published bandwidth is used (``APPLE_CHIPS``).
"""

from __future__ import annotations

import json
import platform
import re
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from time import perf_counter

import numpy as np

from ..files import write_text_atomic
from .machine import cpu_name, models_home, total_memory, usable_cores

GB = 1e9
#: Read kernels: the fastest sets the figure. A float32 sum alone can be compute-bound
#: (~21 GB/s per core on this project's CI machine, where a 64-bit max reads ~34 GB/s).
READ_KERNELS = {"float32 sum": (np.float32, np.sum), "int64 max": (np.int64, np.max)}
#: Larger than any CPU's last-level cache, small enough for a machine with little memory.
PROBE_BYTES = 256 * 2**20
PROBE_TRIES = 8
MATMUL_SIZE = 1024
CACHE_FILE = "machine-speed.json"


@dataclass(frozen=True)
class Probe:
    """What the probe measured on this machine, and when."""

    bandwidth_bytes_per_s: float
    matmul_flops: float
    seconds: float
    measured_at: str
    identity: str


def read_bandwidth(threads: int, size_bytes: int = PROBE_BYTES, tries: int = PROBE_TRIES) -> dict[str, float]:
    """Bytes per second that ``threads`` threads read, each reducing its slice of one array
    (numpy releases the GIL), best of ``tries``, for each read kernel."""
    data = np.ones(size_bytes // 8, dtype=np.int64)
    rates = {}
    with ThreadPoolExecutor(threads) as pool:
        for name, (dtype, reduce) in READ_KERNELS.items():
            slices = np.array_split(data.view(dtype), threads)
            best = 0.0
            for _ in range(tries):
                start = perf_counter()
                list(pool.map(reduce, slices))
                best = max(best, data.nbytes / (perf_counter() - start))
            rates[name] = best
    return rates


def matmul_flops(size: int = MATMUL_SIZE, tries: int = 5) -> float:
    """Operations per second of a float32 matrix product (numpy's BLAS, every core), best of ``tries``."""
    a = np.ones((size, size), dtype=np.float32)
    best = 0.0
    for _ in range(tries):
        start = perf_counter()
        a @ a
        best = max(best, 2 * size**3 / (perf_counter() - start))
    return best


def machine_identity() -> str:
    """What tells this machine from another: host, processor, cores and memory."""
    return f"{platform.node()} | {cpu_name()} | {usable_cores()} cores | {total_memory()} bytes"


def run_probe() -> Probe:
    """Measure now (about a second)."""
    start = perf_counter()
    bandwidth = max(read_bandwidth(usable_cores()).values())
    flops = matmul_flops()
    when = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return Probe(bandwidth, flops, perf_counter() - start, when, machine_identity())


def cache_path() -> Path:
    return models_home() / CACHE_FILE


def _cached(identity: str) -> Probe | None:
    try:
        return Probe(**json.loads(cache_path().read_text())[identity])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def measured_speed(refresh: bool = False) -> Probe:
    """This machine's probe: the one kept under its identity, else (or with ``refresh``) a new one, kept."""
    identity = machine_identity()
    probe = None if refresh else _cached(identity)
    if probe is not None:
        return probe
    probe = run_probe()
    try:
        kept = json.loads(cache_path().read_text())
        kept = kept if isinstance(kept, dict) else {}
    except (OSError, ValueError):
        kept = {}
    with suppress(OSError):  # a read-only home: measure again next time
        write_text_atomic(cache_path(), json.dumps({**kept, identity: asdict(probe)}, indent=2) + "\n")
    return probe


@dataclass(frozen=True)
class AppleChip:
    """A chip's published memory bandwidth and GPU cores (the configuration llama.cpp's
    discussion #4167 measured, where it did)."""

    name: str
    bandwidth_bytes_per_s: float
    gpu_cores: int

    @property
    def generation(self) -> str:
        return self.name.split()[0]


#: Apple's published bandwidth (GB/s) and a GPU core count, by chip; a chip sold with two
#: bandwidths is told apart by its CPU cores (the M3 Max and M4 Max with 14 cores have the
#: narrower memory bus).
APPLE_CHIPS: dict[str, tuple[tuple[int | None, float, int], ...]] = {
    "M1": ((None, 68, 8),),
    "M1 Pro": ((None, 200, 16),),
    "M1 Max": ((None, 400, 32),),
    "M1 Ultra": ((None, 800, 48),),
    "M2": ((None, 100, 10),),
    "M2 Pro": ((None, 200, 16),),
    "M2 Max": ((None, 400, 30),),
    "M2 Ultra": ((None, 800, 60),),
    "M3": ((None, 100, 10),),
    "M3 Pro": ((None, 150, 18),),
    "M3 Max": ((14, 300, 30), (None, 400, 40)),
    "M3 Ultra": ((None, 819, 60),),
    "M4": ((None, 120, 10),),
    "M4 Pro": ((None, 273, 20),),
    "M4 Max": ((14, 410, 32), (None, 546, 40)),
}


def apple_chip(name: str, cores: int) -> AppleChip | None:
    """The chip a processor name (``Apple M3 Max``) and CPU core count make, if the table knows it."""
    match = re.search(r"\b(M\d+)(?: (Pro|Max|Ultra))?\b", name)
    chip = " ".join(part for part in match.groups() if part) if match else ""
    for wanted_cores, bandwidth, gpu_cores in APPLE_CHIPS.get(chip, ()):
        if wanted_cores in (None, cores):
            return AppleChip(chip, bandwidth * GB, gpu_cores)
    return None


def this_apple_chip() -> AppleChip | None:
    """This Mac's chip, if it is in ``APPLE_CHIPS``."""
    return apple_chip(cpu_name(), usable_cores())
