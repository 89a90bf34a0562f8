"""Speed through qwq-edge's MLX engine versus plain ``mlx_lm.stream_generate``.

The model is a small random-weight Qwen2 (hidden 64, 2 layers) with Qwen2.5's own
151,936-token vocabulary and tokenizer, in float16, converted to MLX by qwq-edge: on
a Linux CPU it decodes at tens of tokens per second, so the per-token cost of the
output head and of each runtime's Python is what is compared. The method is
``overhead_llama_cpp.py``'s: ``qwq_edge.services.benchmarking.run_bench``, greedy and sampled, the
raw engine and qwq-edge with the controls off and on taking turns.

    python benchmarks/overhead_mlx.py            # full run, writes benchmarks/results/
    python benchmarks/overhead_mlx.py --quick    # seconds; what the test suite runs
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from qwq_edge import GenerationOptions
from qwq_edge.services.benchmarking import BenchSettings, run_bench

try:
    from benchmarks.common import SYNTHETIC_MLX_WORDS, decode_parser, quick, save_reports, synthetic_mlx_model
except ImportError:  # run as a script from the repository root
    from common import SYNTHETIC_MLX_WORDS, decode_parser, quick, save_reports, synthetic_mlx_model

SEED = 1234
PROMPT_TOKENS = 512


def main(argv: list[str] | None = None) -> dict:
    parser = decode_parser(__doc__.splitlines()[0], tokens=128, repetitions=7)
    args = quick(parser.parse_args(argv))
    prompt_tokens = 64 if args.quick else PROMPT_TOKENS
    samplings = {
        "greedy": GenerationOptions(temperature=0.0),
        "0.6 / 0.95 / 20": GenerationOptions(temperature=0.6, top_p=0.95, top_k=20),
    }
    with tempfile.TemporaryDirectory(prefix="qwq-edge-mlx-bench-") as temp:
        folder = synthetic_mlx_model(Path(temp))
        reports = {
            setting: run_bench(
                folder,
                BenchSettings(prompt_tokens, args.tokens, args.repetitions, options=options, seed=SEED),
                engine="mlx",
                context_length=2048,
            )
            for setting, options in samplings.items()
        }
    footer = (
        f"{SYNTHETIC_MLX_WORDS}; {prompt_tokens} prompt tokens, {args.tokens} decoded tokens per run; "
        f"median of {args.repetitions} repetitions; sampled runs seeded {SEED}."
    )
    return save_reports("overhead_mlx", reports, footer, args)


if __name__ == "__main__":
    main()
