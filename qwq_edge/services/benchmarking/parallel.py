"""Continuous batching measured: N concurrent greedy streams against one.

For 1, 4 and 8 streams (say): aggregate tokens/s (every stream's tokens ÷ the wall time
from their common start to the last one's end; the one-stream figure is the plain
``parallel=1`` engine, what a model loaded without ``parallel`` does), each stream's
tokens against the same prompt run alone (divergences, and at the first one the top-2
logit gap of the alone run's logits there), and the time to first token of a request
arriving while three others decode, against its time alone.
"""

from __future__ import annotations

import statistics
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from time import perf_counter
from typing import Any

import numpy as np

from ...engines.registry import spec_named
from ...runtime.model import Model, load
from ...runtime.options import GenerationOptions

TOPICS = (
    "a lighthouse keeper",
    "a lost robot",
    "a city under the sea",
    "a dragon who bakes bread",
    "a train crossing the desert",
    "a young chess player",
    "a winter festival",
    "an old clockmaker",
)
#: A peer's aggregate speedups by number of streams, and its name.
Peer = tuple[str, dict[int, float]]
CONTEXT = 1024


def prompts(count: int) -> list[str]:
    return [f"Write a long story about {TOPICS[i % len(TOPICS)]}." for i in range(count)]


def greedy(tokens: int) -> GenerationOptions:
    """Greedy without the model's repetition penalty, as llama-server's streams decode."""
    return GenerationOptions(
        temperature=0.0,
        repetition_penalty=1.0,
        max_answer_tokens=tokens,
        think=False,
        loop_guard=False,
        reasoning_format="none",
    )


def _generated(model: Model, prompt: str, options: GenerationOptions) -> list[int]:
    """The tokens the model generated for ``prompt`` (read from the sequence that holds it)."""
    head = model.prompt_tokens(prompt, options)
    sequences = getattr(model.engine, "sequences", [model.engine])
    for sequence in sequences:
        cached = list(sequence.cached_tokens)
        if cached[: len(head)] == head:
            return cached[len(head) :]
    raise RuntimeError(f"no sequence holds the prompt {prompt!r}")


def run_streams(model: Model, texts: Sequence[str], options: GenerationOptions) -> tuple[list[list[int]], float]:
    """Every prompt's stream in its own thread, started together: their tokens and the wall time."""
    tokens: list[list[int]] = [[] for _ in texts]

    def run(index: int) -> None:
        model.generate(texts[index], options)
        tokens[index] = _generated(model, texts[index], options)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(texts))]
    began = perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return tokens, perf_counter() - began


def _top2_gaps(model: Model, sequences: list[list[int]]) -> list[float]:
    """The gap between the two highest logits after each token sequence, run alone (the
    engine's ``verify`` logits: one load of their own for all of them)."""
    logits = spec_named(model.info.engine).logits
    if logits is None or not sequences:
        return [float("nan")] * len(sequences)
    rows = [np.sort(each[-1]) for each in logits(Path(model.info.model_path), sequences)]
    return [float(row[-1] - row[-2]) for row in rows]


def _divergences(
    alone: Model, texts: Sequence[str], options: GenerationOptions, got: list[list[int]], want: list[list[int]]
) -> list[dict[str, Any]]:
    """Per stream that differs from its run alone: where, and how close the alone run's top two were."""
    found, prefixes = [], []
    for text, batched, reference in zip(texts, got, want, strict=True):
        if batched == reference:
            continue
        index = next((i for i, (a, b) in enumerate(zip(batched, reference, strict=False)) if a != b), None)
        if index is None:  # one is a prefix of the other: it ended (end of text) where the other went on
            index = min(len(batched), len(reference))
        found.append({"prompt": text, "first_divergence": index})
        prefixes.append(alone.prompt_tokens(text, options) + reference[:index])
    for divergence, gap in zip(found, _top2_gaps(alone, prefixes), strict=True):
        divergence["top2_logit_gap"] = gap
    return found


def _first_event_seconds(start: Callable[[], Any]) -> tuple[float, Any]:
    began = perf_counter()
    stream = start()
    next(stream)
    return perf_counter() - began, stream


#: The request whose time to first token is measured: a paragraph to summarise (about 200 tokens with the template).
PROBE = "Summarise in one sentence: " + " ".join(
    f"{topic.capitalize()} appears in the story, and the story says a little about {topic}." for topic in TOPICS
)


def time_to_first_token(model: Model, tokens: int, repetitions: int = 3) -> dict[str, Any]:
    """Median seconds to the first event of a request alone, and while three others decode."""
    options, probe = greedy(tokens), greedy(4)
    alone, busy = [], []
    for repetition in range(repetitions):
        # A new start each time, so that no sequence's cache holds the request already.
        request = [f"Request {2 * repetition}. {PROBE}", f"Request {2 * repetition + 1}. {PROBE}"]
        seconds, stream = _first_event_seconds(lambda text=request[0]: model.stream(text, probe))
        alone.append(seconds)
        list(stream)
        others = [model.stream(text, options) for text in prompts(3)]
        readers = [threading.Thread(target=lambda s=s: list(s)) for s in others]
        for stream in others:
            next(stream)  # each has its first token: they are decoding
        for reader in readers:
            reader.start()
        seconds, stream = _first_event_seconds(lambda text=request[1]: model.stream(text, probe))
        busy.append(seconds)
        list(stream)
        for other in others:
            other.cancel()
        for reader in readers:
            reader.join()
    median_alone, median_busy = statistics.median(alone), statistics.median(busy)
    return {
        "prompt_tokens": len(model.prompt_tokens(PROBE, probe)),
        "alone_s": median_alone,
        "while_3_decode_s": median_busy,
        "ratio": median_busy / median_alone,
    }


def warm_up(model: Model, count: int) -> None:
    """A few tokens of ``count`` other prompts at once: a process's first passes are slower."""
    run_streams(model, [f"Warm up number {i}." for i in range(count)], greedy(8))


def run_parallel(
    path: str | Path,
    streams: Sequence[int] = (1, 4, 8),
    tokens: int = 128,
    peer: Peer | None = None,
    **load_kwargs: Any,
) -> dict[str, Any]:
    """The whole measurement (see the module's docstring), as one JSON-able dict; ``peer``'s
    figures go beside it (measured by the caller: ``benchmarks/parallel.py`` reads llama-server's
    from ``benchmarks/llama_server.py``'s saved result, with its date)."""
    options, most = greedy(tokens), max(streams)
    texts = prompts(most)
    with load(path, context_length=CONTEXT, **load_kwargs) as alone:
        warm_up(alone, 1)
        reference, seconds = [], 0.0
        for text in texts:  # the one-stream baseline, and every prompt's text alone
            got, wall = run_streams(alone, [text], options)
            reference.append(got[0])
            seconds += wall
        one = sum(map(len, reference)) / seconds
        rows = [{"streams": 1, "tokens": sum(map(len, reference)), "tokens_per_s": one, "speedup": 1.0}]
        peer = peer or ("peer", {})
        with load(path, context_length=CONTEXT, parallel=most, **load_kwargs) as pooled:
            warm_up(pooled, most)
            for count in (n for n in streams if n > 1):
                got, wall = run_streams(pooled, texts[:count], options)
                total = sum(map(len, got))
                rows.append(
                    {
                        "streams": count,
                        "tokens": total,
                        "tokens_per_s": total / wall,
                        "speedup": total / wall / one,
                        "peer_speedup": peer[1].get(count),
                        "diverged": _divergences(alone, texts[:count], options, got, reference[:count]),
                    }
                )
            ttft = time_to_first_token(pooled, tokens) if most >= 4 else None
    return {"tokens_per_stream": tokens, "context": CONTEXT, "peer": peer[0], "rows": rows, "time_to_first_token": ttft}


def table(result: dict[str, Any]) -> str:
    """The results as a Markdown table."""
    lines = [
        f"| streams | tokens | aggregate tok/s | speedup | {result['peer']} | diverged (first at, top-2 gap) |",
        "|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        diverged = row.get("diverged", [])
        first = ", ".join(f"token {d['first_divergence']}, gap {d['top2_logit_gap']:.4f}" for d in diverged)
        peer = f"{row['peer_speedup']:.2f}×" if row.get("peer_speedup") else "–"
        lines.append(
            f"| {row['streams']} | {row['tokens']} | {row['tokens_per_s']:.1f} | {row['speedup']:.2f}× | {peer} "
            f"| {len(diverged)}/{row['streams'] if row['streams'] > 1 else 0}{f' ({first})' if first else ''} |"
        )
    ttft = result["time_to_first_token"]
    if ttft:
        lines.append("")
        lines.append(
            f"Time to first token of a {ttft['prompt_tokens']}-token request: {ttft['alone_s'] * 1000:.0f} ms alone, "
            f"{ttft['while_3_decode_s'] * 1000:.0f} ms while 3 others decode ({ttft['ratio']:.2f}×)."
        )
    return "\n".join(lines) + "\n"
