"""Speed through qwq-edge versus a plain llama-cpp-python streaming completion.

``qwq_edge.services.benchmarking.run_bench`` (what ``qwq-edge bench`` runs) on one GGUF, twice:
greedy, and the model family's sampling defaults with a fixed seed. In one process,
on the same prompt tokens, with the same thread count and sampler settings, three
runs take turns each repetition: plain llama-cpp-python, qwq-edge with every
reasoning control off, and qwq-edge with all of them on (a thinking budget counting
every token, set above N so the forced close is not timed; the loop guard; the
language guard in the thinking).

    python benchmarks/overhead_llama_cpp.py            # full run, writes benchmarks/results/
    python benchmarks/overhead_llama_cpp.py --quick    # seconds; what the test suite runs
"""

from __future__ import annotations

from pathlib import Path

from qwq_edge import GenerationOptions
from qwq_edge.services.benchmarking import BenchSettings, run_bench
from qwq_edge.services.testdata import fixture_model_path
from qwq_edge.system.machine import usable_cores

try:
    from benchmarks.common import decode_parser, quick, save_reports
except ImportError:  # run as a script from the repository root
    from common import decode_parser, quick, save_reports

SEED = 1234
PROMPT_TOKENS = 512


def main(argv: list[str] | None = None) -> dict:
    parser = decode_parser(__doc__.splitlines()[0], tokens=256, repetitions=7)
    parser.add_argument("--model", type=Path, help="GGUF file (default: the 0.5B test model)")
    parser.add_argument("--threads", type=int, default=usable_cores())
    args = quick(parser.parse_args(argv))
    path = args.model or fixture_model_path()
    prompt_tokens = 64 if args.quick else PROMPT_TOKENS
    reports = {
        setting: run_bench(
            path,
            BenchSettings(prompt_tokens, args.tokens, args.repetitions, options=options, seed=SEED),
            context_length=2048,
            n_threads=args.threads,
            engine="llama.cpp",
        )
        for setting, options in {
            "greedy": GenerationOptions(temperature=0.0),
            "model defaults": GenerationOptions(),
        }.items()
    }
    footer = (
        f"{path.name}, llama.cpp on the CPU, {args.threads} threads; {prompt_tokens} prompt tokens, "
        f"{args.tokens} decoded tokens per run; median of {args.repetitions} repetitions; model defaults seeded {SEED}."
    )
    return save_reports("overhead_llama_cpp", reports, footer, args)


if __name__ == "__main__":
    main()
