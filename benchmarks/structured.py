"""Structured answers: the grammar engines' per-step mask cost, and decode speed with a schema versus without.

Two measurements on the 0.5B test model (llama.cpp, CPU):

- **grammar engines**: llguidance (what qwq-edge uses) and, when it is installed, xgrammar,
  each given the model's 151,936 token byte strings and one JSON schema, then walked along
  the tokens of a valid answer; per step, the time to fill the next-token bit mask (and for
  llguidance, qwq-edge's whole lever: the mask, unpacked to a boolean row, written into a
  logits row);
- **decode**: the same request (thinking off, greedy, N answer tokens) with and without a
  ``response_format`` schema, taking turns each repetition; decode tokens/s is
  ``(answer tokens − 1) / decode seconds`` from the ``Done`` stats.

    python benchmarks/structured.py            # full run, writes benchmarks/results/
    python benchmarks/structured.py --quick    # seconds; what the test suite runs
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from qwq_edge import Model, load
from qwq_edge.reasoning.grammar import answer_grammar
from qwq_edge.services.testdata import fixture_model_path

try:
    from benchmarks.common import decode_parser, machine, median, quick, save
except ImportError:  # run as a script from the repository root
    from common import decode_parser, machine, median, quick, save

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "tags": {"type": "array", "items": {"type": "string", "pattern": "^[a-z]+$"}, "maxItems": 5},
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
            "required": ["city"],
        },
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}
ANSWER = {"name": "Ann Smith", "age": 31, "tags": ["hiking", "chess"], "address": {"city": "Paris", "zip": "75001"}}
PROMPT = "Write the integers from 1 to 200 as a JSON array."
INTEGERS = {"type": "array", "items": {"type": "integer"}}
NUMBERS = {"type": "json_schema", "json_schema": {"name": "n", "schema": INTEGERS}}


def _steps(fill: Any, take: Any, tokens: list[int]) -> list[float]:
    """Seconds per step of filling the mask before each token, then taking it."""
    times = []
    for token in tokens:
        start = time.perf_counter()
        fill()
        times.append(time.perf_counter() - start)
        take(token)
    return times


def _summary(name: str, build: float, compile_s: float, times: list[float]) -> dict[str, Any]:
    micro = sorted(t * 1e6 for t in times)
    return {
        "engine": name,
        "vocabulary_build_s": build,
        "compile_s": compile_s,
        "steps": len(micro),
        "median_us": statistics.median(micro),
        "p90_us": micro[int(0.9 * (len(micro) - 1))],
        "max_us": micro[-1],
    }


def llguidance_steps(model: Model, tokens: list[int]) -> list[dict[str, Any]]:
    """llguidance's mask alone, and qwq-edge's lever (mask → boolean row → logits row)."""
    vocabulary = model.controllers.grammars
    start = time.perf_counter()
    vocabulary.matcher(answer_grammar(SCHEMA, True, []))  # the first matcher builds the vocabulary
    build = time.perf_counter() - start
    start = time.perf_counter()
    grammar = vocabulary.matcher(answer_grammar(SCHEMA, True, []))
    compile_s = time.perf_counter() - start
    from llguidance.numpy import allocate_token_bitmask, fill_next_token_bitmask

    bitmask = allocate_token_bitmask(1, vocabulary.vocab_size)
    raw = _steps(lambda: fill_next_token_bitmask(grammar._matcher, bitmask), grammar.take, tokens)
    grammar = vocabulary.matcher(answer_grammar(SCHEMA, True, []))
    logits = np.zeros(vocabulary.vocab_size, dtype=np.float32)
    lever = _steps(lambda: np.copyto(logits, -np.inf, where=grammar.banned_mask()), grammar.take, tokens)
    return [
        _summary("llguidance: bit mask", build, compile_s, raw),
        _summary("llguidance: qwq-edge's whole lever", build, compile_s, lever),
    ]


def xgrammar_steps(model: Model, tokens: list[int]) -> dict[str, Any] | None:
    """xgrammar on a numpy bit mask (it takes any DLPack array), when it is installed."""
    start = time.perf_counter()
    try:
        import xgrammar
    except ImportError:
        return None
    imported = time.perf_counter() - start
    size = model.info.vocab_size
    start = time.perf_counter()
    info = xgrammar.TokenizerInfo(
        [model.engine.token_bytes(t) for t in range(size)],
        vocab_type=xgrammar.VocabType.RAW,
        vocab_size=size,
        stop_token_ids=sorted(model.engine.end_of_generation),
    )
    compiler = xgrammar.GrammarCompiler(info)
    build = time.perf_counter() - start
    start = time.perf_counter()
    compiled = compiler.compile_json_schema(json.dumps(SCHEMA), any_whitespace=False, separators=(", ", ": "))
    matcher = xgrammar.GrammarMatcher(compiled)
    compile_s = time.perf_counter() - start
    bitmask = np.full((1, (size + 31) // 32), -1, dtype=np.int32)
    times = _steps(lambda: matcher.fill_next_token_bitmask(bitmask), matcher.accept_token, tokens)
    return {**_summary("xgrammar: bit mask", build, compile_s, times), "import_s (torch)": imported}


def decode_runs(model: Model, tokens: int, repetitions: int) -> dict[str, Any]:
    """Decode tokens/s with and without a schema, the two taking turns."""
    options = {"think": False, "temperature": 0.0, "max_answer_tokens": tokens}
    runs: dict[str, list[float]] = {"free text": [], "JSON schema": []}
    model.generate(PROMPT, **options)  # warm-up
    for repetition in range(repetitions):
        order = list(runs) if repetition % 2 == 0 else list(runs)[::-1]
        for name in order:
            extra = {"response_format": NUMBERS} if name == "JSON schema" else {}
            stats = model.generate(PROMPT, **options, **extra).stats
            runs[name].append((stats.answer_tokens - 1) / stats.decode_seconds)
    ratios = [s / f for s, f in zip(runs["JSON schema"], runs["free text"], strict=True)]
    medians = {name: median(values) for name, values in runs.items()}
    return {"tokens_per_s": runs, "median_tokens_per_s": medians, "ratio": median(ratios)}


def table(engines: list[dict[str, Any]], decode: dict[str, Any], footer: str) -> str:
    lines = [
        "| grammar engine | vocabulary build | schema compile | mask per step: median | p90 | max |",
        "|---|---|---|---|---|---|",
    ]
    for row in engines:
        lines.append(
            f"| {row['engine']} | {row['vocabulary_build_s'] * 1000:.0f} ms | {row['compile_s'] * 1000:.1f} ms | "
            f"{row['median_us']:.1f} µs | {row['p90_us']:.1f} µs | {row['max_us']:.0f} µs |"
        )
    free, constrained = (decode["median_tokens_per_s"][k] for k in ("free text", "JSON schema"))
    lines += [
        "",
        "| decode | tokens/s |",
        "|---|---|",
        f"| free text | {free:.1f} |",
        f"| JSON schema | {constrained:.1f} |",
        f"| schema ÷ free (median of per-repetition ratios) | **{decode['ratio']:.3f}** |",
    ]
    return "\n".join(lines) + f"\n\n{footer}\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = decode_parser(__doc__.splitlines()[0], tokens=128, repetitions=5)
    parser.add_argument("--model", type=Path, help="GGUF file (default: the 0.5B test model)")
    args = quick(parser.parse_args(argv))
    path = args.model or fixture_model_path()
    with load(path, engine="llama.cpp", context_length=2048) as model:
        answer = model.engine.tokenize(json.dumps(ANSWER), special=False)
        engines = llguidance_steps(model, answer)
        xgrammar = None if args.quick else xgrammar_steps(model, answer)
        engines += [xgrammar] if xgrammar else []
        decode = decode_runs(model, args.tokens, args.repetitions)
    footer = (
        f"{path.name}, llama.cpp on the CPU; mask steps along the {len(answer)} tokens of a valid answer to a "
        f"nested schema (enum-free: strings, bounded integers, a pattern, an array); decode: {args.tokens} answer "
        f"tokens, thinking off, greedy, median of {args.repetitions} repetitions."
    )
    data = {"benchmark": "structured", "machine": machine(), "engines": engines, "decode": decode}
    save("structured_quick" if args.quick else "structured", data, table(engines, decode, footer), args.out)
    print(table(engines, decode, footer))
    return data


if __name__ == "__main__":
    main()
