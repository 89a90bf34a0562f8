"""What this process uses: resident memory now and at its peak."""

from __future__ import annotations

import resource
import sys
from pathlib import Path

_STATUS = Path("/proc/self/status")


def _status_bytes(field: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` in bytes (Linux), else None."""
    if not _STATUS.exists():
        return None
    for line in _STATUS.read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    return None


def peak_rss_bytes() -> int:
    """This process's peak resident memory so far.

    On Linux this is ``VmHWM`` of the process's own address space: ``ru_maxrss``
    would also count the parent's peak, which a child inherits across fork and exec.
    """
    peak = _status_bytes("VmHWM")
    if peak is not None:
        return peak
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss if sys.platform == "darwin" else maxrss * 1024


def rss_bytes() -> int:
    """This process's resident memory now (Linux); elsewhere its peak, the closest figure at hand."""
    current = _status_bytes("VmRSS")
    return current if current is not None else peak_rss_bytes()
