"""Continuous batching: aggregate tokens/s of 1, 4 and 8 concurrent greedy streams of 128
tokens on the 0.5B GGUF, each stream's text against its run alone, and the time to first
token of a request arriving while 3 others decode (``qwq_edge.bench.parallel``).

    python benchmarks/parallel.py            # full run, writes benchmarks/results/parallel.*
    python benchmarks/parallel.py --quick    # seconds; what the test suite runs
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from qwq_edge.bench.parallel import run_parallel, table
from qwq_edge.testdata import fixture_model_path

try:
    from benchmarks.common import RESULTS, machine, save
except ImportError:  # run as a script from the repository root
    from common import RESULTS, machine, save


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a GGUF (default: the 0.5B test model)")
    parser.add_argument("--tokens", type=int, default=128, help="greedy tokens per stream")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--quick", action="store_true", help="1 and 4 streams of 8 tokens (what the tests run)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.tokens, args.streams = 8, [1, 4]
    path = args.model or fixture_model_path()
    result = run_parallel(path, args.streams, args.tokens)
    data = {"machine": machine(), "model": str(path), **result}
    name = "parallel_quick" if args.quick else "parallel"
    text = table(result)
    save(name, data, text, args.out)
    print(text)
    return data


if __name__ == "__main__":
    main()
