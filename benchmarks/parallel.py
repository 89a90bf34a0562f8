"""Continuous batching: aggregate tokens/s of 1, 4 and 8 concurrent greedy streams of 128
tokens on the 0.5B GGUF, each stream's text against its run alone, and the time to first
token of a request arriving while 3 others decode (``qwq_edge.services.benchmarking.parallel``).

    python benchmarks/parallel.py            # full run, writes benchmarks/results/parallel.*
    python benchmarks/parallel.py --quick    # seconds; what the test suite runs
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path
from time import perf_counter
from typing import Any

from qwq_edge import load
from qwq_edge.services.benchmarking.parallel import CONTEXT, Peer, greedy, prompts, run_parallel, table
from qwq_edge.services.testdata import fixture_model_path

try:
    from benchmarks.common import RESULTS, SYNTHETIC_MLX_WORDS, machine, save, synthetic_mlx_model
except ImportError:  # run as a script from the repository root
    from common import RESULTS, SYNTHETIC_MLX_WORDS, machine, save, synthetic_mlx_model


def llama_server_peer(saved: Path = RESULTS / "llama_server.json") -> Peer:
    """llama-server's speedups from ``llama_server.py``'s saved run (measured on this machine with
    the same model, prompts and tokens), named with the day it was measured; none without one."""
    if not saved.is_file():
        return ("llama-server (not measured)", {})
    data = json.loads(saved.read_text())
    when = data.get("measured") or _committed(saved) or "date unknown"
    return (
        f"llama-server ({when})",
        {row["streams"]: row["speedup"] for row in data["parallel"] if row["streams"] > 1},
    )


def _committed(path: Path) -> str | None:
    """The day ``path`` was last committed (results saved before they carried their date)."""
    done = subprocess.run(["git", "log", "-1", "--format=%cs", "--", path.name], cwd=path.parent, capture_output=True)
    return done.stdout.decode().strip() or None


def mlx_lm_peer(path: Path, streams: list[int], tokens: int) -> Peer:
    """mlx-lm's own continuous batching (``batch_generate``, greedy) on the same prompt tokens:
    aggregate tokens/s of N streams against one."""
    from mlx_lm import load as load_mlx
    from mlx_lm.generate import batch_generate

    with load(path, engine="mlx", context_length=CONTEXT) as ours:
        token_prompts = [ours.prompt_tokens(text, greedy(tokens)) for text in prompts(max(streams))]
    model, tokenizer = load_mlx(str(path))

    def rate(count: int) -> float:
        batch_generate(model, tokenizer, token_prompts[:count], max_tokens=8)  # warm-up
        began = perf_counter()
        done = batch_generate(model, tokenizer, token_prompts[:count], max_tokens=tokens, return_token_ids=True)
        return sum(map(len, done.token_ids)) / (perf_counter() - began)

    one = rate(1)
    return "mlx-lm batch_generate", {count: rate(count) / one for count in streams if count > 1}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a GGUF or an MLX folder (default: the 0.5B test model)")
    parser.add_argument("--engine", default="auto", help="auto, llama.cpp or mlx (default model: a random one)")
    parser.add_argument("--tokens", type=int, default=128, help="greedy tokens per stream")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--quick", action="store_true", help="1 and 4 streams of 8 tokens (what the tests run)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.tokens, args.streams = 8, [1, 4]
    with tempfile.TemporaryDirectory(prefix="qwq-edge-parallel-") as temp:
        default = synthetic_mlx_model if args.engine == "mlx" else lambda _: fixture_model_path()
        path = args.model or default(Path(temp))
        peer = mlx_lm_peer(path, args.streams, args.tokens) if args.engine == "mlx" else llama_server_peer()
        result = run_parallel(path, args.streams, args.tokens, peer=peer, engine=args.engine)
    model = SYNTHETIC_MLX_WORDS if path.name == "synthetic-mlx" else str(path)
    data = {"machine": machine(), "model": model, **result}
    name = ("parallel_quick" if args.quick else "parallel") + ("" if args.engine == "auto" else f"_{args.engine}")
    text = table(result)
    save(name, data, text, args.out)
    print(text)
    return data


if __name__ == "__main__":
    main()
