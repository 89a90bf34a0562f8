"""The MLX engine split over the ranks ``mlx.launch`` started: tensor parallelism, rank 0 in charge.

Every rank loads the model with mlx-lm's ``Model.shard`` (each keeps its share of the
attention heads and MLP columns; the layers' outputs are summed across ranks), so
every forward pass is a collective that all ranks must run together. Rank 0 owns
the conversation: its ``LeaderEngine`` is the engine the loop drives, and before each
operation that runs the model (feed tokens, rewind the cache, stop) it shares the
operation over the ``Channel``; the other ranks' ``FollowerEngine.follow`` applies the
same operations to their shard. Sampling needs no sharing: every rank computes the
same logits, rank 0 samples, and the token reaches the others in the next feed.
Forced tokens, rewinds, cancels and a new prompt (a rewind then a feed) therefore
stay in step by construction.
"""

from __future__ import annotations

import atexit
import signal
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager, suppress
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from ...errors import DistributedError, QwqEdgeError
from ...resources import peak_rss_bytes
from ...sampling import SamplingParams
from ..adapter import EngineOptions
from ..base import EngineInfo, check_room, prefill_reusing
from .engine import PREFILL_STEP, MlxEngine, MlxSampler, mlx_load
from .folder import check_mlx_folder, check_split
from .group import FEED, REPORT, REWIND, STOP, Channel, DecodeMeter, Op, Watchdog, fatal, init_group, pending
from .group import rank_report as _rank_report


class ShardedMlxEngine(MlxEngine):
    """An ``MlxEngine`` holding this rank's share of the model."""

    def __init__(self, path: Path, group: Any, options: EngineOptions) -> None:
        self.group = group
        super().__init__(path, context_length=options.context_length, kv_cache=options.kv_cache)

    def _load(self, path: Path) -> tuple[Any, Any]:
        model, wrapper = mlx_load(str(path), lazy=True)
        if not hasattr(model, "shard"):
            raise DistributedError(f"mlx-lm cannot split {path.name} ({type(model).__module__}) over ranks")
        model.shard(self.group)
        mx.eval(model.parameters())
        return model, wrapper


class _GroupEngine:
    """What both roles forward to their shard: model facts, tokenizer, position."""

    def __init__(self, shard: ShardedMlxEngine, channel: Channel) -> None:
        self.shard = shard
        self.channel = channel
        self.rank, self.size = shard.group.rank(), shard.group.size()
        self.info: EngineInfo = shard.info
        self.end_of_generation = shard.end_of_generation
        self.special_texts = shard.special_texts
        self.meter = DecodeMeter()

    @property
    def position(self) -> int:
        return self.shard.position

    def tokenize(self, text: str, *, special: bool) -> list[int]:
        return self.shard.tokenize(text, special=special)

    def token_bytes(self, token: int) -> bytes:
        return self.shard.token_bytes(token)

    def _settle(self) -> None:
        """Wait for this rank's last forward pass, so that the next collective comes after its own."""
        pending([self.shard.logits])
        self.meter.stop()

    def _report(self) -> list[dict[str, Any]]:
        return self.channel.gather(_rank_report(self.rank, self.meter, peak_rss_bytes()))


class _LeaderSampler:
    """Rank 0's sampler: waiting for the logits waits on the other ranks, so it is watched."""

    rng = None

    def __init__(self, leader: LeaderEngine, sampler: MlxSampler) -> None:
        self._leader = leader
        self._sampler = sampler

    def sample(self, banned: Collection[int] = (), at: int | None = None, banned_mask: Any = None) -> int:
        with self._leader.watchdog.guard("sampling"):
            token = self._sampler.sample(banned, at, banned_mask)
        self._leader.meter.stop()
        return token

    def accept(self, tokens: Sequence[int]) -> None:
        self._sampler.accept(tokens)

    def probabilities(self, banned: Collection[int] = (), at: int | None = None, banned_mask: Any = None) -> None:
        return self._sampler.probabilities(banned, at, banned_mask)

    def masked_row(self) -> np.ndarray:
        return self._sampler.masked_row()


class LeaderEngine(_GroupEngine):
    """Rank 0's engine: shares every operation with the other ranks, then does it on its shard."""

    def __init__(self, shard: ShardedMlxEngine, channel: Channel, watchdog: Watchdog) -> None:
        super().__init__(shard, channel)
        self.watchdog = watchdog
        self._stopped = False
        atexit.register(self._stop)

    @contextmanager
    def _shared(self, op: Op, what: str) -> Iterator[None]:
        """Share ``op``, then do it here in the block; all under the watchdog, since any
        evaluation may wait on the other ranks."""
        with self.watchdog.guard(what):
            self._settle()
            self.channel.send(op)
            yield

    def prefill(self, tokens: Sequence[int]) -> int:
        return prefill_reusing(self, self.shard.cached_tokens, tokens)

    def feed(self, tokens: Sequence[int]) -> None:
        # Checked before sharing: every rank must be able to do what rank 0 shares.
        check_room(self.position + len(tokens), self.info.context_length)
        for start in range(0, len(tokens), PREFILL_STEP):
            chunk = tuple(tokens[start : start + PREFILL_STEP])
            with self._shared(Op(FEED, tokens=chunk), "feed"):
                self.meter.start(len(chunk))
                self.shard.feed(chunk)

    def feed_all(self, tokens: Sequence[int]) -> None:
        """Speculation's multi-position pass is not shared with the other ranks yet."""
        raise DistributedError("speculative decoding (--draft) does not run with --distributed yet; use --draft off")

    def rewind(self, position: int) -> None:
        with self._shared(Op(REWIND, position), "rewind"):
            self.shard.rewind(position)

    def new_sampler(self, params: SamplingParams, seed: int) -> _LeaderSampler:
        return _LeaderSampler(self, self.shard.new_sampler(params, seed))

    def reports(self) -> list[dict[str, Any]]:
        """Every rank's memory and decode speed (rank order)."""
        with self._shared(Op(REPORT), "report"):
            return self._report()

    def _stop(self) -> None:
        """Release the other ranks (at ``close`` or at exit, whichever comes first)."""
        if not self._stopped:
            self._stopped = True
            with self._shared(Op(STOP), "stop"):
                pass

    def close(self) -> None:
        self._stop()
        self.shard.close()


class FollowerEngine(_GroupEngine):
    """Another rank's engine: it generates nothing itself; ``follow`` does what rank 0 shares."""

    def follow(self) -> None:
        """Apply rank 0's operations until it stops; a lost group ends this rank with one line."""
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for rank 0, which cancels in step
        try:
            while self._apply(self.channel.receive()):
                pass
        except (RuntimeError, QwqEdgeError) as error:
            fatal(f"rank {self.rank} lost the distributed run: {error}")
        self.shard.close()

    def _apply(self, op: Op) -> bool:
        """Do one operation; whether to go on."""
        if op.code == FEED:
            self.meter.start(len(op.tokens))
            self.shard.feed(op.tokens)
            self._settle()
        elif op.code == REWIND:
            self.shard.rewind(op.argument)
        elif op.code == REPORT:
            self._report()
        elif op.code != STOP:
            raise DistributedError(f"unknown operation {op.code} from rank 0")
        return op.code != STOP

    def _refuse(self, *_: object) -> Any:
        raise DistributedError(f"rank {self.rank} follows rank 0 and does not generate on its own")

    prefill = feed = rewind = new_sampler = _refuse

    def close(self) -> None:
        self.shard.close()


def _versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for package in ("mlx", "mlx-lm", "qwq-edge"):
        with suppress(PackageNotFoundError):
            found[package] = version(package)
    return found


def _agree(channel: Channel, path: Path, shard: ShardedMlxEngine) -> None:
    """Refuse to run when the ranks loaded different models or run different versions."""
    weights = sum(p.stat().st_size for p in path.glob("*.safetensors"))
    mine = {"versions": _versions(), "model": [shard.info.model_name, shard.info.vocab_size, weights]}
    ranks = channel.gather(mine)
    for rank, theirs in enumerate(ranks):
        if theirs != ranks[0]:
            raise DistributedError(f"rank {rank} differs from rank 0: {theirs} against {ranks[0]}")


def open_distributed(path: Path, options: EngineOptions) -> LeaderEngine | FollowerEngine:
    """Join the group, load this rank's share, check that the ranks agree; rank 0 leads."""
    group = init_group()
    config = check_mlx_folder(path)
    check_split(config, group.size(), str(config.get("_name_or_path") or path.name))
    shard = ShardedMlxEngine(path, group, options)
    channel = Channel(group)
    _agree(channel, path, shard)
    if group.rank() == 0:
        return LeaderEngine(shard, channel, Watchdog(options.rank_timeout, group.size()))
    return FollowerEngine(shard, channel)
