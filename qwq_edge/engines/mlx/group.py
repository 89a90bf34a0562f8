"""The wire between the ranks of a distributed MLX run: operations, a watchdog, gathering.

Rank 0 tells the other ranks what to do with ``Channel.send``: one ``all_sum`` of a
16-integer header, to which the followers add zeros, so every rank reads rank 0's
header. The header is ``[op, argument, count, token, token, …]``; up to 13 tokens
ride in it (a decode step's one token costs one small collective), more follow in a
second ``all_sum`` of ``count`` integers. A rank sends or receives only when its own
last forward pass has finished (``settle``), so that on every rank the collectives of
the forward passes and of the channel go through the group in the same order.

A collective that never completes (a rank hung) blocks in C++; the ``Watchdog``
thread notices a guarded operation that outlives its timeout, prints one line and
ends the process, which ends the launch (``mlx.launch`` stops the other ranks when
one exits with an error). A rank that dies is seen sooner: MLX raises
``RuntimeError`` ("connection to a peer was lost") in the rank waiting on it.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from time import monotonic, sleep
from typing import Any

import mlx.core as mx

from ...errors import DistributedError
from .thread import on_mlx_thread

HEADER = 16
INLINE = HEADER - 3
FEED, REWIND, STOP, REPORT = 1, 2, 3, 4
OP_NAMES = {FEED: "feed", REWIND: "rewind", STOP: "stop", REPORT: "report"}


@dataclass(frozen=True)
class Op:
    """One operation rank 0 shares: its code, an integer argument, and tokens."""

    code: int
    argument: int = 0
    tokens: tuple[int, ...] = ()


def init_group() -> Any:
    """The group ``mlx.launch`` set up for this process."""
    try:
        return mx.distributed.init(strict=True)
    except RuntimeError as error:
        raise DistributedError(f"could not join the distributed group: {error}") from None


class Channel:
    """Rank 0's operations, delivered to every rank in the same order."""

    def __init__(self, group: Any) -> None:
        self.group = group

    def _sum(self, values: list[int]) -> list[int]:
        total = mx.distributed.all_sum(mx.array(values, dtype=mx.int32), group=self.group, stream=mx.cpu)
        return total.tolist()

    def send(self, op: Op) -> None:
        """Rank 0: share ``op`` with the other ranks."""
        tokens = list(op.tokens)
        inline = tokens if len(tokens) <= INLINE else []
        self._sum([op.code, op.argument, len(tokens), *inline, *[0] * (INLINE - len(inline))])
        if not inline and tokens:
            self._sum(tokens)

    def receive(self) -> Op:
        """Another rank: wait for rank 0's next operation."""
        code, argument, count, *inline = self._sum([0] * HEADER)
        if count <= INLINE:
            return Op(code, argument, tuple(inline[:count]))
        return Op(code, argument, tuple(self._sum([0] * count)))

    def gather(self, value: dict[str, Any]) -> list[dict[str, Any]]:
        """Every rank's ``value`` (JSON), in rank order, on every rank."""
        data = json.dumps(value).encode()
        sizes = mx.distributed.all_gather(mx.array([len(data)], dtype=mx.int32), group=self.group, stream=mx.cpu)
        longest = max(sizes.tolist())
        padded = mx.array(list(data) + [32] * (longest - len(data)), dtype=mx.uint8)
        rows = mx.distributed.all_gather(padded, group=self.group, stream=mx.cpu).reshape(-1, longest)
        return [json.loads(bytes(row.tolist()).decode()) for row in rows]


def fatal(message: str) -> None:
    """End this rank at once with one line (on a line of its own, after any streamed text): a
    broken group cannot be used or closed politely."""
    sys.stderr.write(f"\nerror: {message}\n")
    sys.stderr.flush()
    os._exit(1)


class Watchdog:
    """Ends the process when a guarded operation takes longer than ``timeout`` seconds."""

    def __init__(self, timeout: float, ranks: int) -> None:
        self.timeout = timeout
        self.ranks = ranks
        self._started: float | None = None
        self._what = ""
        threading.Thread(target=self._watch, name="qwq-edge-watchdog", daemon=True).start()

    @contextmanager
    def guard(self, what: str) -> Iterator[None]:
        """Watch the block; a ``RuntimeError`` from MLX in it means the group broke."""
        self._what, self._started = what, monotonic()
        try:
            yield
        except RuntimeError as error:
            fatal(f"the distributed run failed during {what}: {error}")
        finally:
            self._started = None

    def _watch(self) -> None:
        while True:
            sleep(min(1.0, self.timeout / 4))
            started = self._started
            if started is not None and monotonic() - started > self.timeout:
                fatal(
                    f"a rank of the {self.ranks}-rank group did not answer within {self.timeout:g} s "
                    f"(during {self._what}); stopping"
                )


class DecodeMeter:
    """Tokens fed one at a time and the seconds until their logits were ready, on one rank."""

    def __init__(self) -> None:
        self.tokens = 0
        self.seconds = 0.0
        self._since: float | None = None

    def start(self, count: int) -> None:
        self._since = monotonic() if count == 1 else None

    def stop(self) -> None:
        if self._since is not None:
            self.tokens += 1
            self.seconds += monotonic() - self._since
            self._since = None


def rank_report(rank: int, meter: DecodeMeter, peak_rss: int) -> dict[str, Any]:
    """What one rank reports to ``bench``: its memory and its own decode speed."""
    return {
        "rank": rank,
        "host": os.uname().nodename,
        "mlx_peak_memory_bytes": int(mx.get_peak_memory()),
        "peak_rss_bytes": peak_rss,
        "decode_tokens": meter.tokens,
        "decode_seconds": meter.seconds,
        "decode_tokens_per_s": meter.tokens / meter.seconds if meter.seconds else 0.0,
    }


def pending(values: Sequence[Any]) -> None:
    """Wait for the arrays a forward pass is still computing."""
    live = [value for value in values if value is not None]
    if live:
        on_mlx_thread(lambda: mx.eval(live))
