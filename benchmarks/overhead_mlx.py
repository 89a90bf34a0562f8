"""Decode speed through qwq-edge's MLX engine versus plain ``mlx_lm.stream_generate``.

The model is a small random-weight Qwen2 (hidden 64, 2 layers) with Qwen2.5's own
151,936-token vocabulary and tokenizer, in float16, converted to MLX by qwq-edge: on
a Linux CPU it decodes at tens of tokens per second, so the per-token cost of the
output head and of each runtime's Python is what is compared. Both run in this
process with the same prompt tokens and sampler settings, alternating A/B; decode
tokens/s is measured between the first and the N-th token. qwq-edge runs with a
thinking budget counting every token (set above N).

    python benchmarks/overhead_mlx.py            # full run, writes benchmarks/results/
    python benchmarks/overhead_mlx.py --quick    # seconds; what the test suite runs
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from time import perf_counter

import mlx_lm
from mlx_lm.sample_utils import make_sampler

from qwq_edge import SamplingParams, load
from qwq_edge.convert import convert_to_mlx
from qwq_edge.convert.synthetic import SyntheticSpec, make_checkpoint
from qwq_edge.prompt import Message
from qwq_edge.reasoning.formats import THINK
from qwq_edge.testdata import fixture_tokenizer_json

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
SPEC = SyntheticSpec(64, 128, 2, 4, 2, 151_936, 0, False, "float16")
SEED = 1234


def raw_decode_rate(model, tokenizer, prompt_tokens: list[int], n: int, params: SamplingParams) -> float:
    """Plain mlx-lm: ``stream_generate`` with the same sampler settings."""
    import mlx.core as mx

    mx.random.seed(SEED)
    sampler = make_sampler(temp=params.temperature, top_p=params.top_p, min_p=params.min_p, top_k=params.top_k)
    responses = mlx_lm.stream_generate(model, tokenizer, prompt_tokens, max_tokens=n, sampler=sampler)
    return rate([perf_counter() for _ in responses])


def main(argv: list[str] | None = None) -> dict:
    parser = decode_parser(__doc__.splitlines()[0], tokens=128, repetitions=7)
    args = quick(parser.parse_args(argv))
    with tempfile.TemporaryDirectory(prefix="qwq-edge-mlx-bench-") as temp:
        source = make_checkpoint(Path(temp) / "synthetic", SPEC, tokenizer_json=fixture_tokenizer_json())
        folder = Path(temp) / "synthetic-mlx"
        convert_to_mlx(source, folder, bits=16, verify=False)
        model = load(folder, engine="mlx", context_length=2048)
        raw_model, raw_tokenizer = mlx_lm.load(str(folder))
        prompt_tokens = model.prompts.build(model.prompt_messages([Message("user", PROMPT)]), THINK)
        settings = {
            "greedy": (SamplingParams(temperature=0.0), "off"),
            f"0.6 / 0.95 / 20, seed {SEED}": (SamplingParams(seed=SEED), "off"),
            "greedy + language guard (en), in the thinking": (SamplingParams(temperature=0.0), "en"),
        }
        results = {}
        for name, (params, language) in settings.items():
            qwq_decode_rate(model, PROMPT, 4, params, language)  # warm up both paths once
            raw_decode_rate(raw_model, raw_tokenizer, prompt_tokens, 4, params)
            results[name] = ab_compare(
                lambda p=params: raw_decode_rate(raw_model, raw_tokenizer, prompt_tokens, args.tokens, p),
                lambda p=params, lang=language: qwq_decode_rate(model, PROMPT, args.tokens, p, lang),
                args.repetitions,
            )
    footer = (
        "Random Qwen2 (hidden 64, 2 layers, 151,936-token vocabulary), float16, MLX on the CPU; "
        f"{args.tokens} decoded tokens per run; median of {args.repetitions} alternating A/B pairs."
    )
    table = ratio_table(results, "mlx_lm.stream_generate", "qwq-edge MLX engine with budget", footer)
    data = {"benchmark": "overhead_mlx", "machine": machine(), "settings": {"tokens": args.tokens}, "results": results}
    save("overhead_mlx", data, table, args.out)
    print(table)
    return data


if __name__ == "__main__":
    main()
