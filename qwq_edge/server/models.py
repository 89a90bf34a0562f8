"""The models a server serves: loaded on demand by name, held while in use, unloaded when idle.

A request names a model; ``ModelHost.hold`` loads it if it is not loaded (one load or unload
at a time, so concurrent requests for a model wait for its one load, and no two loads count
the same free memory). Before a load it makes room: idle models are unloaded, least recently
used first, until the memory planner gives the new model the plan it would get with only the
busy models loaded; a model that cannot fit even then is refused with the planner's line. A
model is held while a request uses it and never unloads under one; once idle it stays for
its keep-alive (the server's ``--keep-alive``, or what the last request asked) and ``reap``
unloads it when that runs out, as Ollama and LM Studio do.
"""

from __future__ import annotations

import asyncio
import gc
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..catalog.planner import MemoryPlan
from ..errors import InsufficientMemoryError, InvalidRequestError
from ..runtime.model import Model, load, plan_load
from ..runtime.options import GenerationOptions
from ..runtime.stream import Stream
from .errors import APIError
from .queue import Runner

#: Seconds an idle model stays loaded when neither the server nor the request says (Ollama's 5 minutes).
DEFAULT_KEEP_ALIVE = 300.0
_DURATION = re.compile(r"(-?\d+(?:\.\d+)?)(ms|s|m|h)?")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def keep_alive_seconds(value: str | float) -> float | None:
    """A keep-alive as Ollama takes it: seconds, or a duration (``30s``, ``5m``, ``1h``);
    0 unloads after each reply; a negative one (``-1``) never unloads (``None``)."""
    if isinstance(value, str):
        match = _DURATION.fullmatch(value.strip())
        if match is None:
            raise InvalidRequestError(f"keep_alive: {value!r} is not a duration (30s, 5m, 1h, or seconds; -1: forever)")
        value = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    return None if value < 0 else float(value)


def servable_models(folders: Sequence[Path], installed: Callable[[], list[Any]]) -> dict[str, Path]:
    """Every model a server without ``--model`` may load, by the name a request gives: the pulled
    catalog models (``NAME:QUANT``, and ``NAME`` for the first of its downloads) and the GGUF
    files and MLX folders in ``folders`` (the file's name without ``.gguf``, the folder's name)."""
    names: dict[str, Path] = {}
    for pulled in installed():
        names[f"{pulled.name}:{pulled.quant}"] = Path(pulled.path)
        names.setdefault(pulled.name, Path(pulled.path))
    for folder in folders:
        for entry in sorted(folder.iterdir()):
            if entry.suffix == ".gguf" and entry.is_file():
                names.setdefault(entry.stem, entry)
            elif (entry / "config.json").is_file():
                names.setdefault(entry.name, entry)
    return names


@dataclass(eq=False)
class Loaded:
    """A loaded model with what serving it takes: its queue, its prompt builders, its live
    generations, and how long it stays once idle (``keep_alive``: seconds, ``None``: forever)."""

    name: str
    model: Model
    defaults: GenerationOptions
    runner: Runner
    keep_alive: float | None
    #: Where prompts are built (templated, tokenized): as many threads as generations run at once.
    prompts: ThreadPoolExecutor = field(init=False)
    #: The generations under way by reply id, for ``POST /v1/requests/{id}/answer``.
    live: dict[str, Stream] = field(default_factory=dict)
    #: Requests using the model now: it never unloads while there is one.
    holds: int = 0
    idle_since: float = field(default_factory=time.monotonic)
    loaded_at: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        self.prompts = ThreadPoolExecutor(self.model.parallel, thread_name_prefix=f"qwq-edge-prompt-{self.name}")

    @property
    def memory_bytes(self) -> int:
        """What the planner counted for it: weights, KV cache, overhead and its prompt cache."""
        plan = self.model.memory_plan
        return plan.total_bytes + plan.prompt_cache_bytes if plan else 0

    def expires_in(self, now: float) -> float | None:
        """Seconds until it unloads: ``None`` while it is in use or kept forever."""
        if self.holds or self.keep_alive is None:
            return None
        return max(0.0, self.idle_since + self.keep_alive - now)

    def status(self) -> dict[str, Any]:
        """What ``ps`` shows of it."""
        expires = self.expires_in(time.monotonic())
        info = self.model.info
        return {
            "name": self.name,
            "model_name": info.model_name,
            "path": info.model_path,
            "engine": info.engine,
            "device": info.device,
            "memory_bytes": self.memory_bytes,
            "context_length": info.context_length,
            "requests": self.holds,
            "loaded_at": int(self.loaded_at),
            "expires_at": None if expires is None else int(time.time() + expires),
        }

    def close(self) -> None:
        self.runner.shutdown()
        self.prompts.shutdown(wait=False, cancel_futures=True)
        self.model.close()


@dataclass
class ModelHost:
    """The models a server can serve (``catalog()``: name → path, read at each lookup so that a
    pull shows up), the ones loaded, and how a load is made: ``settings`` (``load``'s keyword
    arguments), ``defaults_for`` (the server's options for a loaded model), ``runner_for`` (its queue)."""

    catalog: Callable[[], Mapping[str, Path]]
    settings: dict[str, Any]
    defaults_for: Callable[[Model | None], GenerationOptions]
    #: Each model's queue (``create_app`` gives one that counts its waits in the metrics).
    runner_for: Callable[[str, Model], Runner] = lambda name, model: Runner(8, model.parallel)
    keep_alive: float | None = DEFAULT_KEEP_ALIVE
    #: Told of each load and unload, by model name and ``"load"`` or ``"unload"`` (the metrics).
    on_change: Callable[[str, str], object] = lambda name, change: None
    loaded: dict[str, Loaded] = field(default_factory=dict)
    #: The model a request that names none gets (``--model``'s), if any.
    default: str | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)
    _changed: asyncio.Event = field(default_factory=asyncio.Event, init=False)

    #: Names for paths besides the catalog's (``--model``'s name), so that such a model loads again.
    aliases: dict[str, Path] = field(default_factory=dict)

    def adopt(self, name: str, model: Model, defaults: GenerationOptions, keep_alive: float | None = None) -> Loaded:
        """A model loaded before serving (``--model``, ``create_app(model)``): the default one,
        kept ``keep_alive`` seconds once idle (``None``: always)."""
        loaded = self.loaded[name] = Loaded(name, model, defaults, self.runner_for(name, model), keep_alive)
        self.default = name
        return loaded

    def paths(self) -> dict[str, Path]:
        """What can be loaded, by name: the catalog's models and the aliases."""
        return {**self.catalog(), **self.aliases}

    def names(self) -> list[str]:
        """Every model a request may name, once each: a model (a path) under the name it is
        loaded as, else under its first name (a pulled model's ``NAME:QUANT``)."""
        loaded = [(name, Path(m.model.info.model_path)) for name, m in self.loaded.items()]
        by_path: dict[Path, str] = {}
        for name, path in [*loaded, *self.paths().items()]:
            by_path.setdefault(path.resolve(), name)
        return list(by_path.values())

    def resolve(self, name: str | None) -> str:
        """The model a request's ``model`` names (none: the default, or the only one), as it is
        loaded if it is (under any of its names); 404 if none."""
        if not name:
            only = self.names()
            if self.default is not None or len(only) == 1:
                return self.default or only[0]
            raise APIError(400, "name a model: this server loads models on demand", param="model")
        if name in self.loaded:
            return name
        path = self.paths().get(name)
        if path is None:
            known = ", ".join(self.names()) or "none (pull one, or serve a folder with --models DIR)"
            message = f"the model {name!r} does not exist; this server serves {known}"
            raise APIError(404, message, param="model", code="model_not_found")
        same = (other for other, m in self.loaded.items() if Path(m.model.info.model_path).resolve() == path.resolve())
        return next(same, name)

    @contextmanager
    def held(self, loaded: Loaded) -> Iterator[Loaded]:
        """``loaded`` held (it does not unload) until the block ends."""
        self.hold(loaded)
        try:
            yield loaded
        finally:
            self.release(loaded)

    def hold(self, loaded: Loaded) -> None:
        loaded.holds += 1

    def release(self, loaded: Loaded) -> None:
        """One request less on ``loaded``; once none, its keep-alive starts."""
        loaded.holds -= 1
        if not loaded.holds:
            loaded.idle_since = time.monotonic()
            self._changed.set()  # the reaper's next expiry moved

    async def get(self, name: str | None) -> Loaded:
        """The model ``name`` names, loaded (the caller holds it at once, on the event loop)."""
        name = self.resolve(name)
        if name in self.loaded:
            return self.loaded[name]
        async with self._lock:
            if name not in self.loaded:  # another request may have loaded it while this one waited
                await self._load(name)
            return self.loaded[name]

    async def unload(self, name: str) -> bool:
        """Unload ``name`` now, or (in use) once its requests end; ``False`` if it is not loaded."""
        loaded = self.loaded.get(self.resolve(name))
        if loaded is None:
            return False
        loaded.keep_alive = 0.0
        if not loaded.holds:
            async with self._lock:
                await self._unload(loaded)
        return True

    async def reap(self) -> None:
        """Unload idle models whose keep-alive ran out, for as long as the server runs."""
        while True:
            now = time.monotonic()
            due = [left for loaded in self.loaded.values() if (left := loaded.expires_in(now)) is not None]
            self._changed.clear()
            with suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=min(due, default=3600.0))
            now = time.monotonic()
            for loaded in [loaded for loaded in self.loaded.values() if loaded.expires_in(now) == 0.0]:
                async with self._lock:
                    if loaded.expires_in(time.monotonic()) == 0.0:
                        await self._unload(loaded)

    def close(self) -> None:
        for loaded in self.loaded.values():
            loaded.close()
        self.loaded.clear()

    async def _load(self, name: str) -> None:
        path = self.paths()[name]
        plan = await self._make_room(path)
        settings = self.settings | {"context_length": plan.context, "kv_cache": plan.kv_cache}
        reserved = sum(loaded.memory_bytes for loaded in self.loaded.values())
        try:
            model = await asyncio.to_thread(lambda: load(path, **settings, reserved_bytes=reserved))
        except InsufficientMemoryError as error:  # the machine's free memory fell while it made room
            raise self._refusal(path, error) from None
        self.loaded[name] = Loaded(name, model, self.defaults_for(model), self.runner_for(name, model), self.keep_alive)
        self.on_change(name, "load")
        self._changed.set()

    async def _make_room(self, path: Path) -> MemoryPlan:
        """The plan to load ``path`` with, once idle models (least recently used first) are unloaded
        until it gets the plan it would get with only the busy models loaded."""
        busy = sum(loaded.memory_bytes for loaded in self.loaded.values() if loaded.holds)
        try:
            self._plan(path, 0)
        except InsufficientMemoryError as error:
            raise APIError(507, str(error), kind="server_error", code="insufficient_memory") from None
        try:
            target = self._plan(path, busy)
        except InsufficientMemoryError as error:
            raise self._refusal(path, error) from None
        while not self._fits_as(path, target):  # the least recently used idle model first, each time
            idle = min((m for m in self.loaded.values() if not m.holds), key=lambda m: m.idle_since, default=None)
            if idle is None:  # those in use hold the memory (one was taken while this made room)
                raise self._refusal(path, InsufficientMemoryError(f"{path.name} does not fit here now"))
            await self._unload(idle)
        return target

    def _refusal(self, path: Path, error: InsufficientMemoryError) -> APIError:
        """503 while models in use hold the memory ``path`` needs (try again once they finish);
        else 507 with the planner's line (the machine's memory is short)."""
        if any(loaded.holds for loaded in self.loaded.values()):
            message = f"{path.name} fits only once the models in use now finish their requests: try again then"
            return APIError(503, message, kind="server_error", code="model_busy", headers={"Retry-After": "5"})
        return APIError(507, str(error), kind="server_error", code="insufficient_memory")

    def _fits_as(self, path: Path, target: MemoryPlan) -> bool:
        try:
            plan = self._plan(path, sum(loaded.memory_bytes for loaded in self.loaded.values()))
        except InsufficientMemoryError:
            return False
        return plan.context >= target.context and plan.kv_cache == target.kv_cache

    def _plan(self, path: Path, reserved: int) -> MemoryPlan:
        keys = ("engine", "context_length", "kv_cache", "parallel")
        return plan_load(
            path, **{key: self.settings[key] for key in keys if key in self.settings}, reserved_bytes=reserved
        )

    async def _unload(self, loaded: Loaded) -> None:
        """Forget ``loaded`` (unless a request holds it) and close it off the event loop; its
        memory goes back to the system."""
        if loaded.holds or self.loaded.get(loaded.name) is not loaded:
            return
        del self.loaded[loaded.name]
        await asyncio.to_thread(loaded.close)
        gc.collect()
        self.on_change(loaded.name, "unload")
