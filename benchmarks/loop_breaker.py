"""Does the loop breaker change the model's course? Constructed loops, greedy and sampled.

Each prompt makes the 0.5B model repeat a sentence while it thinks (in the ``think``
format, with a minimum equal to the budget so that it cannot close and every return
of the loop is nudged again). For every loop nudge, the looped sentence is the one
repeated most since the previous nudge; the nudge *steers* when that sentence does not
come back within the next 150 thinking tokens. Nudges with fewer than 150 tokens
left before the budget are not counted. Runs with the mask (``--stretch``, default
the runtime's) and without it (stretch 0: the nudge alone, as before).

    python benchmarks/loop_breaker.py [--budget 320] [--seeds 0,1]
    python benchmarks/loop_breaker.py --quick     # what the test suite runs
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path
from typing import Any

from qwq_edge import Intervention, Model, ThinkingDelta, load
from qwq_edge.reasoning import loop_steer
from qwq_edge.reasoning.loop_guard import normalize_sentence
from qwq_edge.services.testdata import fixture_model_path

try:
    from benchmarks.common import RESULTS, machine, save
except ImportError:  # run as a script from the repository root
    from common import RESULTS, machine, save

PROMPTS = [
    "Repeat the sentence 'I need to check the answer again carefully.' thirty times.",
    "Write the sentence 'The cat sat on the mat and looked at the door.' over and over, at least twenty times.",
    "Keep saying 'Let me verify this step once more before moving on.' again and again.",
    "Repeat after me, many times: 'We should double check the total before we answer.'",
]
WINDOW = 150
_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")


def _sentences(text: str) -> list[str]:
    return [n for part in _SPLIT.split(text) if (n := normalize_sentence(part.strip(" '\"")))]


def _nudges(events: list[Any]) -> list[tuple[int, str, str]]:
    """Per loop nudge: the thinking tokens at the nudge, the text before it (since the last
    nudge) and the thinking text of the next ``WINDOW`` tokens."""
    spans: list[list[Any]] = [[]]
    nudged_at: list[int] = []
    count = 0
    for event in events:
        if isinstance(event, ThinkingDelta):
            count = event.thinking_tokens
            spans[-1].append(event)
        elif isinstance(event, Intervention) and event.kind == "loop-nudge":
            nudged_at.append(count)
            spans.append([])
    result = []
    for index, at in enumerate(nudged_at):
        before = "".join(e.text for e in spans[index])
        after = "".join(e.text for span in spans[index + 1 :] for e in span if e.thinking_tokens <= at + WINDOW)
        result.append((at, before, after))
    return result


def measure(model: Model, prompt: str, budget: int, sampling: dict[str, Any]) -> list[dict[str, Any]]:
    """One run: a row per nudge with at least ``WINDOW`` tokens after it."""
    events = list(
        model.stream(
            prompt,
            reasoning_format="think",
            max_thinking_tokens=budget,
            min_thinking_tokens=budget,
            max_answer_tokens=4,
            **sampling,
        )
    )
    rows = []
    for at, before, after in _nudges(events):
        if at + WINDOW > budget:
            continue
        looped, repeats = Counter(_sentences(before)).most_common(1)[0] if _sentences(before) else ("", 0)
        rows.append({"at": at, "looped": looped, "repeats": repeats, "returned": looped in _sentences(after)})
    return rows


def run(model: Model, args: argparse.Namespace, stretch: int) -> list[dict[str, Any]]:
    loop_steer.STRETCH = stretch
    rows = []
    samplings = [("greedy", {"temperature": 0.0, "seed": 0})]
    samplings += [(f"sampled seed {seed}", {"temperature": 0.7, "seed": seed}) for seed in args.seeds]
    for prompt in args.prompts:
        for name, sampling in samplings:
            for row in measure(model, prompt, args.budget, sampling):
                rows.append({"prompt": prompt, "sampling": name, "stretch": stretch, **row})
    return rows


def table(results: dict[str, list[dict[str, Any]]]) -> str:
    lines = [
        "| loop breaker | sampling | nudges | looped sentence back within 150 tokens | steered away |",
        "|---|---|---:|---:|---:|",
    ]
    for setting, rows in results.items():
        for sampling in ("greedy", "sampled", "all"):
            mine = [r for r in rows if sampling == "all" or r["sampling"].startswith(sampling)]
            back = sum(r["returned"] for r in mine)
            share = f"{(len(mine) - back) / len(mine):.0%}" if mine else "—"
            lines.append(f"| {setting} | {sampling} | {len(mine)} | {back} | {share} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=320)
    parser.add_argument("--seeds", type=lambda v: [int(s) for s in v.split(",")], default=[0, 1])
    parser.add_argument("--stretch", type=int, default=loop_steer.STRETCH)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--quick", action="store_true", help="one prompt, greedy, a short budget")
    args = parser.parse_args(argv)
    args.prompts = PROMPTS
    if args.quick:
        args.prompts, args.seeds, args.budget = PROMPTS[:1], [], 120
    default = loop_steer.STRETCH
    try:
        with load(args.model or fixture_model_path(), context_length=2048) as model:
            results = {
                "nudge only (before)": run(model, args, 0),
                f"nudge + n-gram mask for {args.stretch} tokens": run(model, args, args.stretch),
            }
    finally:
        loop_steer.STRETCH = default
    text = table(results)
    header = f"Loop breaker, {len(args.prompts)} prompts, budget = minimum = {args.budget}, seeds {args.seeds}\n\n"
    name = "loop_breaker_quick" if args.quick else "loop_breaker"
    save(
        name,
        {"machine": machine(), "args": {"budget": args.budget, "seeds": args.seeds}, "results": results},
        header + text,
        args.out,
    )
    print(header + text)
    return results


if __name__ == "__main__":
    main()
