"""Saved KV states of recent prompts, so that no text is prefilled twice.

One ``PromptCache`` serves every sequence of a loaded model: before a sequence drops a long
prefix it holds (another request takes it), the prefix's state is kept here, in memory up
to a byte cap (least recently used out first); a request then starts from the longest
cached prefix of its prompt, whichever sequence made it. Long prompts are also written to a
``DiskCache`` (in the background, atomically), so that a conversation or a shared document
survives an eviction or a restart. States are the engine's own bytes (llama.cpp's
``llama_state_seq_get_data``); this module only keys, ranks and stores them. A cached state
holds exactly its tokens, and a prompt is served only the tokens it shares with one, so a
thinking that the history drops is never what the cache serves.
"""

from __future__ import annotations

import hashlib
import json
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import QwqEdgeWarning
from ..files import write_bytes_atomic

#: A prefix shorter than this is not worth a copy of its state.
MIN_MEMORY_TOKENS = 64
#: Prompts at least this long are written to disk after they are evaluated.
MIN_DISK_TOKENS = 1024
#: What a disk cache file starts with, then a JSON header's length (8 bytes), the header, the state.
MAGIC = b"QWQPC001"


@dataclass(frozen=True)
class CachedPrefix:
    """A saved state and the tokens it holds; ``where``: ``memory`` or ``disk``."""

    tokens: tuple[int, ...]
    state: bytes
    where: str


def shared_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens ``a`` and ``b`` have in common."""
    count = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        count += 1
    return count


class PromptCache:
    """The states of recent prefixes, in memory up to ``cap_bytes``, and optionally on disk."""

    def __init__(self, cap_bytes: int, disk: DiskCache | None = None, min_tokens: int = MIN_MEMORY_TOKENS) -> None:
        self.cap_bytes = cap_bytes
        self.disk = disk
        self.min_tokens = min_tokens
        self._entries: OrderedDict[tuple[int, ...], bytes] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def bytes(self) -> int:
        return sum(len(state) for state in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, tokens: Sequence[int], state: bytes) -> None:
        """Keep the state of ``tokens`` (the most recent); evict the least recently used past the cap."""
        key = tuple(tokens)
        if len(key) < self.min_tokens or len(state) > self.cap_bytes:
            return
        with self._lock:
            self._entries.pop(key, None)
            self._entries[key] = state
            while self.bytes > self.cap_bytes:
                self._entries.popitem(last=False)

    def holds(self, tokens: Sequence[int]) -> bool:
        """Whether a memory entry already holds ``tokens`` (or a longer prefix with them)."""
        with self._lock:
            return any(shared_prefix(key, tokens) >= len(tokens) for key in self._entries)

    def longest(self, tokens: Sequence[int]) -> tuple[CachedPrefix, int] | None:
        """The cached prefix sharing the most leading tokens with ``tokens``, and how many;
        memory first, then disk (a disk entry is read only when it beats memory)."""
        best: tuple[CachedPrefix, int] | None = None
        with self._lock:
            for key in self._entries:
                shared = shared_prefix(key, tokens)
                if shared >= self.min_tokens and (best is None or shared > best[1]):
                    best = (CachedPrefix(key, self._entries[key], "memory"), shared)
            if best is not None:
                self._entries.move_to_end(best[0].tokens)
        if self.disk is not None:
            found = self.disk.longest(tokens, best[1] if best else self.min_tokens - 1)
            if found is not None:
                best = found
        return best


class DiskCache:
    """Prefix states in files under ``folder``, each with the identity of what made it.

    ``identity`` names the model file, engine, KV type and versions: a file with another
    identity, or one that is truncated or not a cache file, is ignored with a warning and
    removed. Files are written atomically (two processes writing one prefix both write a
    whole file); past ``cap_bytes`` the least recently used files go.
    """

    def __init__(
        self, folder: Path, identity: dict[str, Any], cap_bytes: int, min_tokens: int = MIN_DISK_TOKENS
    ) -> None:
        self.folder = folder
        self.identity = identity
        self.cap_bytes = cap_bytes
        self.min_tokens = min_tokens
        self._key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
        self._index: dict[Path, tuple[int, ...]] | None = None
        self._lock = threading.RLock()  # reading the index may remove a bad file from it
        #: Background writes still running (``flush`` waits for them).
        self._writers: list[threading.Thread] = []

    def _path(self, tokens: Sequence[int]) -> Path:
        digest = hashlib.sha256(json.dumps(list(tokens)).encode()).hexdigest()[:32]
        return self.folder / f"{self._key}-{digest}.qpc"

    def _headers(self) -> dict[Path, tuple[int, ...]]:
        """The tokens of each usable file of this identity (read once, then kept up to date)."""
        with self._lock:
            if self._index is None:
                self._index = {}
                for path in sorted(self.folder.glob(f"{self._key}-*.qpc")) if self.folder.is_dir() else ():
                    header = self._read(path, header_only=True)
                    if header is not None:
                        self._index[path] = tuple(header["tokens"])
            return self._index

    def longest(self, tokens: Sequence[int], better_than: int) -> tuple[CachedPrefix, int] | None:
        """The file sharing more than ``better_than`` leading tokens with ``tokens`` (the most), loaded."""
        ranked = sorted(((shared_prefix(t, tokens), p) for p, t in self._headers().items()), reverse=True)
        for shared, path in ranked:
            if shared <= better_than:
                return None
            loaded = self._read(path)
            if loaded is not None:
                path.touch()  # recently used
                return CachedPrefix(tuple(loaded["tokens"]), loaded["state"], "disk"), shared
        return None

    def save_later(self, tokens: Sequence[int], state: Callable[[], bytes] | bytes) -> None:
        """Write the state of ``tokens`` in a background thread (``state`` may be read now or later)."""
        if len(tokens) < self.min_tokens or self._path(tokens) in self._headers():
            return
        data = state if isinstance(state, bytes) else state()
        writer = threading.Thread(target=self._save, args=(tuple(tokens), data), name="qwq-edge-prompt-cache")
        self._writers = [w for w in self._writers if w.is_alive()] + [writer]
        writer.start()

    def flush(self) -> None:
        """Wait for the background writes (at exit, and in tests)."""
        for writer in list(self._writers):
            writer.join()

    def _save(self, tokens: tuple[int, ...], state: bytes) -> None:
        path = self._path(tokens)
        header = json.dumps({**self.identity, "tokens": list(tokens), "state_bytes": len(state)}).encode()
        # A temporary file of its own (two processes may write one prefix at once), renamed into place.
        write_bytes_atomic(path, MAGIC + len(header).to_bytes(8, "little") + header + state)
        with self._lock:
            if self._index is not None:
                self._index[path] = tokens
        self._trim()

    def _trim(self) -> None:
        """Remove the least recently used files past the cap."""
        files = sorted(self.folder.glob("*.qpc"), key=lambda p: p.stat().st_mtime)
        total = sum(p.stat().st_size for p in files)
        for path in files:
            if total <= self.cap_bytes:
                break
            total -= path.stat().st_size
            self._forget(path)

    def _forget(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        with self._lock:
            if self._index is not None:
                self._index.pop(path, None)

    def _read(self, path: Path, header_only: bool = False) -> dict[str, Any] | None:
        """A file's header (and its ``state``), or None for one that is not this identity's or
        not whole (then it is removed, with a line saying why)."""
        try:
            with open(path, "rb") as source:
                magic, size = source.read(len(MAGIC)), int.from_bytes(source.read(8), "little")
                header = json.loads(source.read(size)) if magic == MAGIC else None
                state = None if header_only or header is None else source.read()
        except (OSError, ValueError) as error:
            return self._refuse(path, f"unreadable ({error})")
        if header is None or not isinstance(header, dict):
            return self._refuse(path, "not a prompt cache file")
        if {k: header.get(k) for k in self.identity} != self.identity:
            return self._refuse(path, "made by another model file, engine or version")
        if state is not None and len(state) != header.get("state_bytes"):
            return self._refuse(path, f"truncated ({len(state)} of {header.get('state_bytes')} bytes)")
        return {**header, "state": state}

    def _refuse(self, path: Path, why: str) -> None:
        warnings.warn(f"prompt cache file {path.name} ignored and removed: {why}", QwqEdgeWarning, stacklevel=2)
        self._forget(path)
        return None
