"""Decode speed through qwq-edge versus a plain llama-cpp-python streaming completion.

Both run in this process on the same GGUF, with the same thread count, the same
prompt tokens and the same sampler settings, alternating A/B over several
repetitions. Decode tokens/s is measured between the first and the N-th
generated token, so prefill is excluded from both. qwq-edge runs with a thinking
budget counting every token (set above N, so the run measures the per-token cost
of the controls, not the forced close). Two sampler settings: greedy, and the
model family's sampling defaults with a fixed seed.

    python benchmarks/overhead_llama_cpp.py            # full run, writes benchmarks/results/
    python benchmarks/overhead_llama_cpp.py --quick    # seconds; what the test suite runs
"""

from __future__ import annotations

from pathlib import Path
from time import perf_counter

import llama_cpp

from qwq_edge import SamplingParams, load
from qwq_edge.engines.llama_cpp import default_threads
from qwq_edge.prompt import Message
from qwq_edge.reasoning.formats import THINK
from qwq_edge.testdata import fixture_model_path

try:
    from benchmarks.common import (
        ab_compare,
        decode_parser,
        machine,
        quick,
        qwq_decode_rate,
        rate,
        ratio_table,
        save,
    )
except ImportError:  # run as a script from the repository root
    from common import ab_compare, decode_parser, machine, quick, qwq_decode_rate, rate, ratio_table, save

PROMPT = "List the numbers 1 to 500, each on its own line, with no other text."
SEED = 1234


def raw_decode_rate(llama: llama_cpp.Llama, prompt_tokens: list[int], n: int, params: SamplingParams) -> float:
    """Plain llama-cpp-python: a streaming completion with the same sampler settings."""
    chunks = llama.create_completion(
        prompt_tokens,
        max_tokens=n,
        temperature=params.temperature,
        top_p=params.top_p,
        top_k=params.top_k,
        min_p=params.min_p,
        repeat_penalty=params.repetition_penalty,
        presence_penalty=params.presence_penalty,
        seed=SEED,
        stream=True,
    )
    return rate([perf_counter() for _ in chunks])


def main(argv: list[str] | None = None) -> dict:
    parser = decode_parser(__doc__.splitlines()[0], tokens=256, repetitions=7)
    parser.add_argument("--model", type=Path, help="GGUF file (default: the 0.5B test model)")
    parser.add_argument("--threads", type=int, default=default_threads())
    args = quick(parser.parse_args(argv))
    path = args.model or fixture_model_path()

    model = load(path, context_length=2048, n_threads=args.threads)
    raw = llama_cpp.Llama(
        str(path), n_ctx=2048, n_threads=args.threads, n_threads_batch=args.threads, n_gpu_layers=0, verbose=False
    )
    prompt_tokens = model.prompts.build(model.prompt_messages([Message("user", PROMPT)]), THINK)
    settings = {
        "greedy": (SamplingParams(temperature=0.0), "off"),
        f"{model.family.key} defaults, seed {SEED}": (model.sampling.replace(seed=SEED), "off"),
        "greedy + language guard (en), in the thinking": (SamplingParams(temperature=0.0), "en"),
    }
    results = {}
    for name, (params, language) in settings.items():
        qwq_decode_rate(model, PROMPT, 4, params, language)  # warm up both paths once
        raw_decode_rate(raw, prompt_tokens, 4, params)
        results[name] = ab_compare(
            lambda p=params: raw_decode_rate(raw, prompt_tokens, args.tokens, p),
            lambda p=params, lang=language: qwq_decode_rate(model, PROMPT, args.tokens, p, lang),
            args.repetitions,
        )
    footer = (
        f"{path.name}; {args.tokens} decoded tokens per run; median of {args.repetitions} alternating A/B pairs; "
        f"{args.threads} threads."
    )
    table = ratio_table(results, "llama-cpp-python streaming", "qwq-edge with budget", footer)
    data = {
        "benchmark": "overhead_llama_cpp",
        "machine": machine(),
        "settings": {"model": path.name, "tokens": args.tokens, "threads": args.threads},
        "results": results,
    }
    save("overhead_llama_cpp", data, table, args.out)
    print(table)
    return data


if __name__ == "__main__":
    main()
