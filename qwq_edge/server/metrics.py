"""``GET /metrics``: what the server did, in Prometheus's text format (``prometheus-client``).

Besides what any server counts (requests by route and status, time to first token, decode
speed, tokens, the queue, the loaded model and its memory), what only a reasoning runtime
can: budget cuts by where they cut, the runtime's forced texts by kind, minimum-thinking
extensions, loop interventions, language guard steps, drafted tokens proposed and accepted,
and where cached prompt tokens came from. Each app has a registry of its own, so two apps in
one process count apart.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.routing import BaseRoute, Match
from starlette.types import Scope

from ..events import GenerationStats

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

#: Seconds: from a quick reply on a small model to a long prompt on a large one.
TIME_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
#: Tokens per second, from a 32B model on a small machine to a small model on a fast one.
SPEED_BUCKETS = (1, 2, 5, 10, 20, 30, 50, 75, 100, 150, 250, 500)


#: The gauges read from the loaded models when scraped, by name.
GAUGES = {
    "requests_waiting": "Requests waiting for their turn",
    "generations_running": "Generations running now",
    "model_loaded": "1 while the model is loaded",
    "model_memory_bytes": "The model's planned memory (weights, KV cache, overhead, prompt cache)",
    "prompt_cache_bytes": "KV states the prompt cache holds in memory",
}


class Metrics:
    """The server's counters, histograms and gauges, by model."""

    def __init__(self, routes: Sequence[BaseRoute]) -> None:
        self.routes = routes
        self.registry = CollectorRegistry()
        self.requests = self._counter("requests", "HTTP requests by route and status", "route", "status")
        self.generations = self._counter("generations", "Generations by how they ended", "model", "finish_reason")
        self.tokens = self._counter(
            "tokens", "Tokens by kind: prompt, cached_prompt, thinking, answer, forced", "model", "kind"
        )
        self.budget_cuts = self._counter("budget_cuts", "Thinking budgets that cut, by where they cut", "model", "at")
        self.forced = self._counter(
            "interventions", "The runtime's texts forced into a thinking, by kind", "model", "kind"
        )
        self.extensions = self._counter("minimum_extensions", "Waits forced by a minimum thinking length", "model")
        self.loops = self._counter("loop_interventions", "Loops in a thinking the loop breaker acted on", "model")
        self.loop_steps = self._counter("loop_masked_steps", "Steps at which the loop breaker masked tokens", "model")
        self.language_steps = self._counter(
            "language_guard_steps", "Steps at which the language guard masked tokens", "model"
        )
        self.drafts = self._counter("draft_tokens", "Drafted tokens, proposed and accepted", "model", "outcome")
        self.cache_hits = self._counter(
            "prompt_cache_hits", "Generations that started from a cached prefix, by its source", "model", "source"
        )
        self.model_changes = self._counter("model_changes", "Models loaded and unloaded, by change", "model", "change")
        self.ttft = self._histogram("time_to_first_token_seconds", "Time to the first token", TIME_BUCKETS)
        self.decode = self._histogram("decode_tokens_per_second", "Decode speed of a generation", SPEED_BUCKETS)
        self.queue_wait = self._histogram("queue_wait_seconds", "Time a request waited for its turn", TIME_BUCKETS)

    def watch(self, read: Callable[[], dict[str, dict[str, float]]]) -> None:
        """The ``GAUGES`` read when the metrics are scraped: ``read()`` gives them by model."""
        self.registry.register(_Gauges(read))

    def observe_request(self, scope: Scope, status: int, stats: list[GenerationStats], model: str = "") -> None:
        """Count one HTTP request, and its generations' counts (on ``model``; one per choice)."""
        self.requests.labels(self._route(scope), str(status)).inc()
        for one in stats:
            self.observe_generation(one, model)

    def observe_generation(self, stats: GenerationStats, model: str) -> None:
        self.generations.labels(model, stats.finish_reason).inc()
        kinds = {
            "prompt": stats.prompt_tokens,
            "cached_prompt": stats.cached_prompt_tokens,
            "thinking": stats.thinking_tokens,
            "answer": stats.answer_tokens,
            "forced": stats.forced_tokens,
        }
        for kind, count in kinds.items():
            self.tokens.labels(model, kind).inc(count)
        if stats.budget_cut != "none":
            self.budget_cuts.labels(model, stats.budget_cut).inc()
        for kind, count in stats.interventions.items():
            self.forced.labels(model, kind).inc(count)
        self.extensions.labels(model).inc(stats.wait_extensions)
        self.loops.labels(model).inc(stats.loop_interventions)
        self.loop_steps.labels(model).inc(stats.loop_masked_steps)
        self.language_steps.labels(model).inc(stats.language_masked_steps)
        self.drafts.labels(model, "proposed").inc(stats.draft_proposed)
        self.drafts.labels(model, "accepted").inc(stats.draft_accepted)
        if stats.cached_prompt_tokens:
            self.cache_hits.labels(model, stats.cached_prompt_from or "sequence").inc()
        if stats.time_to_first_token > 0:
            self.ttft.labels(model).observe(stats.time_to_first_token)
        if stats.decode_tokens_per_s > 0:
            self.decode.labels(model).observe(stats.decode_tokens_per_s)

    def text(self) -> bytes:
        return generate_latest(self.registry)

    def _route(self, scope: Scope) -> str:
        """The route's path as declared (``/v1/models/{name:path}``), so that the label's values stay few."""
        for route in self.routes:
            if route.matches(scope)[0] != Match.NONE:
                return getattr(route, "path", "other")
        return "other"

    def _counter(self, name: str, doc: str, *labels: str) -> Counter:
        return Counter(f"qwq_edge_{name}", doc, labels, registry=self.registry)

    def _histogram(self, name: str, doc: str, buckets: Sequence[float]) -> Histogram:
        return Histogram(f"qwq_edge_{name}", doc, ["model"], buckets=buckets, registry=self.registry)


class _Gauges(Collector):
    """The loaded models' gauges, read at each scrape (a model unloaded is no longer listed)."""

    def __init__(self, read: Callable[[], dict[str, dict[str, float]]]) -> None:
        self.read = read

    def collect(self) -> list[GaugeMetricFamily]:
        families = {name: GaugeMetricFamily(f"qwq_edge_{name}", doc, labels=["model"]) for name, doc in GAUGES.items()}
        for model, values in self.read().items():
            for name, value in values.items():
                families[name].add_metric([model], value)
        return list(families.values())
