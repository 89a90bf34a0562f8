"""Speed through qwq-edge's MLX engine versus plain ``mlx_lm.stream_generate``.

The model is a small random-weight Qwen2 (hidden 64, 2 layers) with Qwen2.5's own
151,936-token vocabulary and tokenizer, in float16, converted to MLX by qwq-edge: on
a Linux CPU it decodes at tens of tokens per second, so the per-token cost of the
output head and of each runtime's Python is what is compared. The method is
``overhead_llama_cpp.py``'s: ``qwq_edge.bench.run_bench``, greedy and sampled, the
raw engine and qwq-edge with the controls off and on taking turns.

    python benchmarks/overhead_mlx.py            # full run, writes benchmarks/results/
    python benchmarks/overhead_mlx.py --quick    # seconds; what the test suite runs
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from qwq_edge import GenerationOptions
from qwq_edge.bench import BenchSettings, run_bench
from qwq_edge.convert import convert_to_mlx
from qwq_edge.convert.synthetic import SyntheticSpec, make_checkpoint
from qwq_edge.testdata import fixture_tokenizer_json

try:
    from benchmarks.common import decode_parser, quick, save_reports
except ImportError:  # run as a script from the repository root
    from common import decode_parser, quick, save_reports

SPEC = SyntheticSpec(64, 128, 2, 4, 2, 151_936, 0, False, "float16")
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
        source = make_checkpoint(Path(temp) / "synthetic", SPEC, tokenizer_json=fixture_tokenizer_json())
        folder = Path(temp) / "synthetic-mlx"
        convert_to_mlx(source, folder, bits=16, verify=False)
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
        "Random Qwen2 (hidden 64, 2 layers, 151,936-token vocabulary), float16, MLX on the CPU; "
        f"{prompt_tokens} prompt tokens, {args.tokens} decoded tokens per run; median of {args.repetitions} "
        f"repetitions; sampled runs seeded {SEED}."
    )
    return save_reports("overhead_mlx", reports, footer, args)


if __name__ == "__main__":
    main()
