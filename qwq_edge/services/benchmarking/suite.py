"""``qwq-edge bench``: speed and memory of one model, through qwq-edge and through the raw engine.

Three variants run in one process on the same prompt tokens and sampler settings,
taking turns repetition by repetition: the raw engine, qwq-edge with every
reasoning control off, and qwq-edge with every control on. Each run starts from an
empty KV cache, so time to first token includes reading the whole prompt: the prompt
cache is off unless a size or folder for it is given (then the runs show what it served).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from time import perf_counter
from typing import Any

from ...catalog.planner import model_shape
from ...catalog.speed import machine_speed, predict
from ...errors import InvalidRequestError
from ...reasoning.formats import THINK, ReasoningFormat
from ...resources import peak_rss_bytes, rss_bytes
from ...runtime.model import Model, load
from ...runtime.options import GenerationOptions
from ...runtime.prompt import Message
from ...sampling import SamplingParams
from ..inspection import system_report
from .measure import RunTiming, bench_prompt, time_qwq, time_raw
from .raw import RawRunner, open_raw
from .workloads import workload_prompt

RAW, OFF, ON = "raw", "qwq-edge, controls off", "qwq-edge, controls on"
#: With ``--draft``: qwq-edge without speculation (controls off), for the speed-up it brings.
NO_DRAFT = "qwq-edge, no draft"
WARMUP_TOKENS = 4


@dataclass(frozen=True)
class BenchSettings:
    prompt_tokens: int = 512
    gen_tokens: int = 128
    repetitions: int = 3
    raw: bool = True
    #: Sampling fields left at None take the model's own defaults.
    options: GenerationOptions = field(default_factory=GenerationOptions)
    seed: int = 0
    #: ``plain`` (filler and a counting task, ``prompt_tokens`` long) or a prompt of ``workloads``.
    workload: str = "plain"


@dataclass
class BenchReport:
    model: dict[str, Any]
    machine: dict[str, Any]
    settings: dict[str, Any]
    load_seconds: dict[str, float]
    memory: dict[str, int]
    runs: dict[str, list[RunTiming]] = field(default_factory=dict)
    #: In a distributed run: each rank's memory and its own decode speed (rank order).
    ranks: list[dict[str, Any]] | None = None
    #: What the speed model predicted for these runs (``catalog/speed.py``), before measuring.
    prediction: dict[str, Any] | None = None

    def medians(self) -> dict[str, dict[str, float]]:
        """Per variant: median time to first token, prefill and decode speed."""
        return {
            name: {
                "time_to_first_token": _median([r.time_to_first_token for r in runs]),
                "prefill_tokens_per_s": _median([r.prefill_tokens_per_s for r in runs]),
                "decode_tokens_per_s": _median([r.decode_tokens_per_s for r in runs]),
                "generated_tokens": _median([r.generated_tokens for r in runs]),
            }
            for name, runs in self.runs.items()
        }

    def ratios(self) -> dict[str, float]:
        """Median over repetitions of the per-repetition decode and prefill ratios."""
        pairs = [(ON, RAW), (OFF, RAW), (ON, OFF), (NO_DRAFT, RAW), (OFF, NO_DRAFT)]
        ratios = {}
        for a, b in pairs:
            if a in self.runs and b in self.runs:
                ratios[f"decode: {a} ÷ {b}"] = _ratio(self.runs[a], self.runs[b], "decode_tokens_per_s")
                ratios[f"prefill: {a} ÷ {b}"] = _ratio(self.runs[a], self.runs[b], "prefill_tokens_per_s")
        return ratios

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["runs"] = {
            name: [{**asdict(r), "prefill_tokens_per_s": r.prefill_tokens_per_s} for r in runs]
            for name, runs in self.runs.items()
        }
        data["medians"] = self.medians()
        data["ratios"] = self.ratios()
        data["predicted_decode_tokens_per_s"] = (self.prediction or {}).get("predicted_decode_tokens_per_s")
        return data


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def _ratio(a: list[RunTiming], b: list[RunTiming], metric: str) -> float:
    values = [getattr(x, metric) / getattr(y, metric) for x, y in zip(a, b, strict=True) if getattr(y, metric)]
    return _median(values)


def _timed(make: Callable[[], Any]) -> tuple[Any, float]:
    start = perf_counter()
    made = make()
    return made, perf_counter() - start


def run_bench(
    path: str | Path,
    settings: BenchSettings | None = None,
    *,
    progress: Callable[[str], None] = lambda message: None,
    **load_options: Any,
) -> BenchReport | None:
    """Load the model (timed), then measure the raw engine and qwq-edge, taking turns.

    ``load_options`` go to ``qwq_edge.load`` (engine, context_length, n_threads, …). With
    ``distributed=True`` there is no raw baseline (mlx-lm's loop runs one process), the
    report has every rank's memory and decode speed, and on the ranks other than 0 this
    follows rank 0 and returns None.
    """
    settings = settings or BenchSettings()
    if load_options.get("distributed"):
        settings = replace(settings, raw=False)
    model, qwq_load = _timed(lambda: load(path, **_cold(load_options)))
    if model.rank != 0:
        model.follow()
        return None
    try:
        return _measure(model, qwq_load, settings, progress)
    finally:
        model.close()


def _cold(load_options: dict[str, Any]) -> dict[str, Any]:
    """No prompt cache unless asked for: with one, every run after the first would time a lookup."""
    cold = dict(load_options)
    if cold.get("cache_ram") is None:
        cold["cache_ram"] = 0
    if cold.get("prompt_cache_dir") is None:
        cold["disk_cache"] = False
    return cold


def _measure(model: Model, qwq_load: float, settings: BenchSettings, progress: Callable[[str], None]) -> BenchReport:
    _check_context(model.info.context_length, settings)
    # A model that does not think is measured in the think format, so that the budget applies.
    fmt = model.reasoning_format if model.reasoning_format.thinks else THINK
    text, prompt_tokens = workload_tokens(model, fmt, settings)
    options = settings.options.replace(seed=settings.seed, reasoning_format=fmt.name)
    params = options.sampling(model.sampling)
    variants: dict[str, Callable[[int], RunTiming]] = {
        OFF: lambda n: time_qwq(model, text, n, options, controls=False),
        ON: lambda n: time_qwq(model, text, n, options, controls=True),
    }
    if options.draft != "off":
        plain = options.replace(draft="off")
        variants[NO_DRAFT] = lambda n: time_qwq(model, text, n, plain, controls=False)
    for variant in variants.values():
        variant(WARMUP_TOKENS)
    report = _new_report(model, fmt.name, settings, params, len(prompt_tokens), qwq_load)
    raw: RawRunner | None = None
    try:
        if settings.raw:
            progress("loading the raw engine")
            raw, report.load_seconds["raw"] = _timed(lambda: open_raw(model.engine))
            report.settings["raw_label"] = raw.label
            variants = {RAW: lambda n: time_raw(raw, prompt_tokens, n, params, settings.seed), **variants}
            variants[RAW](WARMUP_TOKENS)
            report.memory["raw_engine_added_rss_bytes"] = rss_bytes() - report.memory["rss_after_load_bytes"]
        _take_turns(report, variants, settings, progress)
    finally:
        if raw is not None:
            raw.close()
    report.memory["peak_rss_bytes"] = peak_rss_bytes()
    report.ranks = model.rank_reports()
    return report


def workload_tokens(model: Model, fmt: ReasoningFormat, settings: BenchSettings) -> tuple[str, list[int]]:
    """The user message of the workload and the whole prompt's tokens."""
    if settings.workload == "plain":
        return bench_prompt(model, fmt, settings.prompt_tokens)
    text = workload_prompt(settings.workload)
    return text, model.prompts.build(model.prompt_messages([Message("user", text)]), fmt)


def _check_context(context_length: int, settings: BenchSettings) -> None:
    needed = settings.prompt_tokens + settings.gen_tokens
    if needed > context_length:
        raise InvalidRequestError(
            f"{settings.prompt_tokens} prompt + {settings.gen_tokens} generated tokens need a context of {needed}; "
            f"the model was loaded with {context_length} (use --ctx)"
        )


def _new_report(
    model: Model, fmt: str, settings: BenchSettings, params: SamplingParams, prompt_tokens: int, qwq_load: float
) -> BenchReport:
    """An empty report: what was measured, how, and qwq-edge's load time and memory."""
    info = model.info
    return BenchReport(
        model={
            "path": info.model_path,
            "name": info.model_name,
            "engine": info.engine,
            "device": info.device,
            "engine_reason": model.engine_reason,
            "memory_plan": model.memory_plan.describe() if model.memory_plan else None,
            "context_length": info.context_length,
            "reasoning_format": fmt,
        },
        machine=system_report(),
        settings={**asdict(settings), "sampling": asdict(params), "prompt_tokens": prompt_tokens, "raw_label": None},
        load_seconds={"qwq-edge": qwq_load},
        memory={"rss_after_load_bytes": rss_bytes()},
        prediction=_prediction(model, settings, prompt_tokens),
    )


def _prediction(model: Model, settings: BenchSettings, prompt_tokens: int) -> dict[str, Any] | None:
    """The speed model's figures for these runs: ``gen_tokens`` decoded after ``prompt_tokens`` (``None``
    when this device has none, or for a model split over machines)."""
    machine = machine_speed(model.info.engine)
    if machine is None or model.rank_reports() is not None:
        return None
    kv = model.memory_plan.kv_cache if model.memory_plan else "f16"
    shape = model_shape(model.info.model_path)
    predicted = predict(shape, kv, machine, settings.gen_tokens, prompt_tokens)
    return {
        "predicted_decode_tokens_per_s": predicted.decode_tokens_per_s,
        "predicted_prefill_tokens_per_s": predicted.prefill_tokens_per_s or None,
        "machine": machine.describe(),
    }


def _take_turns(
    report: BenchReport,
    variants: dict[str, Callable[[int], RunTiming]],
    settings: BenchSettings,
    progress: Callable[[str], None],
) -> None:
    """Run every variant once per repetition; who goes first rotates, so that no variant
    always runs right after the same one."""
    names = list(variants)
    for repetition in range(settings.repetitions):
        shift = repetition % len(names)
        for name in names[shift:] + names[:shift]:
            progress(f"repetition {repetition + 1}/{settings.repetitions}: {name}")
            report.runs.setdefault(name, []).append(variants[name](settings.gen_tokens))
