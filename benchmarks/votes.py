"""Votes over several thoughts: the wall time of K=4 thoughts (``generate(votes=4)`` on a model
loaded with ``parallel=4``, as ``run --votes 4`` loads it) against one thought (``parallel=1``,
as ``run`` loads it), in alternating rounds on the 0.5B GGUF, and how many tokens the passes
ran (the prompt once, then one token of it per other thought).

    python benchmarks/votes.py            # full run, writes benchmarks/results/votes.*
    python benchmarks/votes.py --quick    # seconds; what the test suite runs
"""

from __future__ import annotations

import argparse
from pathlib import Path
from time import perf_counter
from typing import Any

from qwq_edge import load
from qwq_edge.services.testdata import fixture_model_path

try:
    from benchmarks.common import RESULTS, machine, median, save, spread
except ImportError:  # run as a script from the repository root
    from common import RESULTS, machine, median, save, spread


def prompt_of(items: int) -> str:
    """A long prompt (the prefill matters: 40 items make ~800 tokens) asking for a long answer
    (every thought runs its tokens)."""
    notes = " ".join(f"Item {n}: the team reviewed task {n} and agreed on its next step." for n in range(1, items + 1))
    return (
        f"Here are the notes of a meeting. {notes} List the numbers 1 to 500, each on its own line, with no other text."
    )


CONTEXT = 2048


def _round(model: Any, votes: int, index: int, tokens: int, items: int) -> dict[str, Any]:
    """One thought or ``votes`` thoughts of a prompt no earlier round began with."""
    pool = model.pool if hasattr(model.pool, "tokens_run") else model.engine.pool
    prompt = f"Round {index}. {prompt_of(items)}"
    options = {"think": False, "temperature": 0.7, "max_answer_tokens": tokens, "seed": index}
    before, began = pool.tokens_run, perf_counter()
    result = model.generate(prompt, votes=votes, **options)
    seconds = perf_counter() - began
    thoughts = getattr(result, "results", (result,))
    generated = sum(one.stats.generated_tokens for one in thoughts)
    return {
        "seconds": seconds,
        "generated_tokens": generated,
        "prompt_tokens": thoughts[0].stats.prompt_tokens,
        #: What the first thought kept of an earlier round's prompt (the chat template's start).
        "cached_prompt_tokens": thoughts[0].stats.cached_prompt_tokens,
        #: Every token the passes ran: the new part of the prompt once, one more per other thought,
        #: and the generated tokens but each thought's last.
        "tokens_run": pool.tokens_run - before,
    }


def run(path: Path, votes: int, tokens: int, rounds: int, items: int = 40) -> dict[str, Any]:
    with load(path, context_length=CONTEXT) as one, load(path, context_length=CONTEXT, parallel=votes) as many:
        for model, count in ((one, 1), (many, votes)):  # warm-up
            model.generate("Hello", votes=count, think=False, max_answer_tokens=4)
        pairs = [
            (_round(one, 1, 2 * r + 1, tokens, items), _round(many, votes, 2 * r + 2, tokens, items))
            for r in range(rounds)
        ]
    ratios = [v["seconds"] / o["seconds"] for o, v in pairs]
    return {
        "votes": votes,
        "tokens": tokens,
        "rounds": [{"one": o, "votes": v, "ratio": ratio} for (o, v), ratio in zip(pairs, ratios, strict=True)],
        "ratio": median(ratios),
        "ratio_spread": spread(ratios),
        "one_seconds": median([o["seconds"] for o, _ in pairs]),
        "votes_seconds": median([v["seconds"] for _, v in pairs]),
    }


def table(result: dict[str, Any]) -> str:
    k, last = result["votes"], result["rounds"][-1]["votes"]
    ratio_text = f"**{result['ratio']:.2f}×** ({result['ratio_spread']})"
    return "\n".join(
        [
            f"| thoughts | wall time (median) | ÷ one thought (median, spread over {len(result['rounds'])} rounds) "
            "| prompt tokens (new) | tokens generated | tokens the passes ran |",
            "|---|---|---|---|---|---|",
            *(
                f"| {label} | {seconds:.2f} s | {ratio} | {row['prompt_tokens']} "
                f"({row['prompt_tokens'] - row['cached_prompt_tokens']}) | {row['generated_tokens']} "
                f"| {row['tokens_run']} |"
                for label, seconds, ratio, row in (
                    ("1", result["one_seconds"], "1.00×", result["rounds"][-1]["one"]),
                    (f"{k} (votes)", result["votes_seconds"], ratio_text, last),
                )
            ),
            "",
        ]
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--votes", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=128, help="tokens each thought generates at most")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="one round of 8 tokens, a short prompt (the tests)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    items = 40
    if args.quick:
        args.tokens, args.rounds, items = 8, 1, 4
    result = run(fixture_model_path(), args.votes, args.tokens, args.rounds, items)
    data = {"machine": machine(), "model": str(fixture_model_path()), **result}
    text = table(result)
    save("votes_quick" if args.quick else "votes", data, text, args.out)
    print(text)
    return data


if __name__ == "__main__":
    main()
