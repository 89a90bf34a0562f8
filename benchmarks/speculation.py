"""Speculative decoding (n-gram prompt lookup) against raw llama-cpp-python, greedy, on four prompts.

In one process, on the same GGUF and thread count, per workload and repetition: plain
llama-cpp-python streaming, qwq-edge without speculation and qwq-edge with
``draft="ngram"``, each from an empty KV cache, the same prompt tokens, greedy. The
texts are compared (speculation must not change a token), and decode tokens/s is
measured from the first to the last token, as in ``overhead_llama_cpp.py``.

    python benchmarks/speculation.py            # full run, writes benchmarks/results/
    python benchmarks/speculation.py --quick    # seconds; what the test suite runs
"""

from __future__ import annotations

from pathlib import Path
from time import perf_counter
from typing import Any

import numpy as np

from qwq_edge import load
from qwq_edge.bench.measure import timing
from qwq_edge.bench.raw import open_raw
from qwq_edge.bench.workloads import workload_prompt
from qwq_edge.machine import usable_cores
from qwq_edge.model import Model
from qwq_edge.prompt import Message
from qwq_edge.reasoning.formats import resolve_format
from qwq_edge.sampling import SamplingParams
from qwq_edge.testdata import fixture_model_path

try:
    from benchmarks.common import decode_parser, machine, median, quick, save
except ImportError:  # run as a script from the repository root
    from common import decode_parser, machine, median, quick, save

#: Workload → reasoning format: the 0.5B model answers directly, except in the think format.
WORKLOADS = {"edit": "none", "story": "none", "sort": "none", "reasoning": "think"}
#: llama.cpp's own server on this machine, from issue 13 (ngram-simple, greedy, 300 tokens).
LLAMA_SERVER = {"edit": "2.81× (279/279 drafts accepted)", "story": "1.57× (157/183)"}
GREEDY = SamplingParams(temperature=0.0)


def run_raw(raw: Any, tokens: list[int], n: int) -> tuple[str, float]:
    """Raw llama-cpp-python: its text and decode tokens/s."""
    start, marks, text = perf_counter(), [], []
    for count, chunk in enumerate(raw.stream(tokens, n, GREEDY, 0), start=1):
        text.append(chunk["choices"][0]["text"])
        marks.append((count, perf_counter()))
    return "".join(text), timing(len(tokens), start, marks).decode_tokens_per_s


def run_qwq(model: Model, text: str, fmt: str, n: int, draft: str) -> tuple[str, dict[str, Any]]:
    """qwq-edge from an empty cache: its text (thinking and answer) and its stats (with the generated tokens)."""
    model.engine.rewind(0)
    limits = {"max_thinking_tokens": n, "max_answer_tokens": 1} if fmt == "think" else {"max_answer_tokens": n}
    result = model.generate(text, reasoning_format=fmt, temperature=0.0, draft=draft, loop_guard=False, **limits)
    stats = result.stats.to_dict()
    return result.thinking + result.answer, stats | {"tokens": list(model.engine._tokens[stats["prompt_tokens"] :])}


def divergence(model: Model, prompt: list[int], plain: list[int], drafted: list[int]) -> dict[str, Any] | None:
    """Where the run with drafts first chose another token, and the top-2 logit gap there in the
    run without (replayed as it ran: the prompt in one pass, then one token per pass)."""
    at = next((i for i, (a, b) in enumerate(zip(plain, drafted, strict=False)) if a != b), None)
    if at is None:
        return None
    engine = model.engine
    engine.rewind(0)
    engine.prefill(prompt)
    for token in plain[:at]:
        engine.feed((token,))
        engine.evaluate_pending()
    row = np.sort(np.array(engine.new_sampler(GREEDY, 0)._logits(engine.logits_index(None))))
    return {"at_generated_token": at, "top2_gap_without_drafts": float(row[-1] - row[-2])}


def workload_tokens(model: Model, name: str) -> list[int]:
    """The prompt token ids of a workload, in its reasoning format."""
    messages = model.prompt_messages([Message("user", workload_prompt(name))])
    fmt = resolve_format(WORKLOADS[name], model.info.chat_template, model.info.model_name)
    return model.prompts.build(messages, fmt)


def measure(model: Model, raw: Any, name: str, n: int, repetitions: int) -> dict[str, Any]:
    """Every repetition of the three runs on one workload, and their medians."""
    fmt, text, tokens = WORKLOADS[name], workload_prompt(name), workload_tokens(model, name)
    runs: dict[str, list] = {"raw": [], "off": [], "ngram": []}
    texts: dict[str, str] = {}
    generated: dict[str, list[int]] = {}
    for _ in range(repetitions):
        raw_text, raw_speed = run_raw(raw, tokens, n)
        runs["raw"].append(raw_speed)
        texts["raw"] = raw_text
        for draft in ("off", "ngram"):
            texts[draft], stats = run_qwq(model, text, fmt, n, draft)
            generated[draft] = stats.pop("tokens")
            runs[draft].append(stats)
    speed = {draft: median([s["decode_tokens_per_s"] for s in runs[draft]]) for draft in ("off", "ngram")}
    last = runs["ngram"][-1]
    return {
        "prompt_tokens": len(tokens),
        "reasoning_format": fmt,
        "runs": runs,
        "decode_tokens_per_s": {"raw": median(runs["raw"]), **speed},
        # Per repetition, each against the raw run just before it: the machine's load drifts.
        "ngram_vs_raw": median([s["decode_tokens_per_s"] / r for s, r in zip(runs["ngram"], runs["raw"], strict=True)]),
        "off_vs_raw": median([s["decode_tokens_per_s"] / r for s, r in zip(runs["off"], runs["raw"], strict=True)]),
        "identical_with_and_without_speculation": texts["ngram"] == texts["off"],
        "first_divergence": divergence(model, tokens, generated["off"], generated["ngram"]),
        "qwq_edge_text_equals_raw": fmt == "none" and texts["off"] == texts["raw"][: len(texts["off"])],
        "generated_tokens": last["generated_tokens"],
        "drafts": {key: last[key] for key in ("draft_proposed", "draft_accepted", "draft_acceptance_rate")},
        "tokens_per_pass": last["tokens_per_pass"],
    }


def same_tokens(result: dict[str, Any]) -> str:
    where = result["first_divergence"]
    if where is None:
        return "yes"
    return f"no: from token {where['at_generated_token']} (top-2 gap {where['top2_gap_without_drafts']:.3f})"


def table(results: dict[str, dict[str, Any]], footer: str) -> str:
    lines = [
        "| workload | raw llama-cpp-python tok/s | qwq-edge, no draft | qwq-edge, `--draft ngram` | ngram ÷ raw "
        "| drafts accepted | tokens per pass | same tokens | llama-server ngram-simple ÷ its own decode |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        speed, drafts = r["decode_tokens_per_s"], r["drafts"]
        lines.append(
            f"| {name} | {speed['raw']:.1f} | {speed['off']:.1f} | {speed['ngram']:.1f} | **{r['ngram_vs_raw']:.2f}×** "
            f"| {drafts['draft_accepted']}/{drafts['draft_proposed']} | {r['tokens_per_pass']:.2f} "
            f"| {same_tokens(r)} | {LLAMA_SERVER.get(name, '-')} |"
        )
    return "\n".join(lines) + "\n\n" + footer + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = decode_parser(__doc__.splitlines()[0], tokens=300, repetitions=2)
    parser.add_argument("--model", type=Path, help="GGUF file (default: the 0.5B test model)")
    parser.add_argument("--threads", type=int, default=usable_cores())
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated subset")
    args = quick(parser.parse_args(argv))
    path = args.model or fixture_model_path()
    model = load(path, engine="llama.cpp", context_length=4096, n_threads=args.threads)
    raw = open_raw(model.engine)
    try:
        results = {name: measure(model, raw, name, args.tokens, args.repetitions) for name in args.workloads.split(",")}
    finally:
        raw.close()
        model.close()
    footer = (
        f"{path.name}, llama.cpp on the CPU, {args.threads} threads, greedy, {args.tokens} tokens per run, median of "
        f"{args.repetitions} repetitions (decode tokens/s from the first to the last token; ngram ÷ raw: the median of "
        "each repetition's ratio, the three runs taking turns). The llama-server column "
        "is quoted from issue 13 (llama.cpp's server built from the llama.cpp that llama-cpp-python 0.3.36 vendors, "
        "measured on this machine with other prompts of the same kinds); it was not rebuilt here. Mac figures are "
        "not measured here."
    )
    data = {"benchmark": "speculation", "machine": machine(), "settings": vars(args) | {"out": str(args.out)}}
    data["workloads"] = results
    text = table(results, footer)
    save("speculation_quick" if args.quick else "speculation", data, text, args.out)
    print(text)
    return data


if __name__ == "__main__":
    main()
