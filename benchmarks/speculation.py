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

import json
from pathlib import Path
from time import perf_counter
from typing import Any

import numpy as np

from qwq_edge import Done, ThinkingDelta, load
from qwq_edge.reasoning.formats import resolve_format
from qwq_edge.runtime.model import Model
from qwq_edge.runtime.prompt import Message
from qwq_edge.sampling import SamplingParams
from qwq_edge.services.benchmarking.measure import timing
from qwq_edge.services.benchmarking.raw import open_raw
from qwq_edge.services.benchmarking.workloads import workload_prompt
from qwq_edge.services.testdata import fixture_model_path
from qwq_edge.system.machine import usable_cores

try:
    from benchmarks.common import RESULTS, decode_parser, machine, median, quick, save, spread
except ImportError:  # run as a script from the repository root
    from common import RESULTS, decode_parser, machine, median, quick, save, spread

#: Workload → reasoning format: the 0.5B model answers directly, except in the think format.
WORKLOADS = {"edit": "none", "story": "none", "sort": "none", "reasoning": "think"}
GREEDY = SamplingParams(temperature=0.0)
#: Greedy as the raw run and llama-server decode: no repetition penalty (the model's defaults have one).
PLAIN_GREEDY = {"temperature": 0.0, "repetition_penalty": 1.0, "presence_penalty": 0.0}


def run_raw(raw: Any, tokens: list[int], n: int) -> tuple[str, float]:
    """Raw llama-cpp-python: its text and decode tokens/s."""
    start, marks, text = perf_counter(), [], []
    for count, chunk in enumerate(raw.stream(tokens, n, GREEDY, 0), start=1):
        text.append(chunk["choices"][0]["text"])
        marks.append((count, perf_counter()))
    return "".join(text), timing(len(tokens), start, marks).decode_tokens_per_s


def run_qwq(model: Model, text: str, fmt: str, n: int, draft: str) -> tuple[str, dict[str, Any]]:
    """qwq-edge from an empty cache: its text (thinking and answer) and its stats (with the generated tokens).

    Thinking is read as a stream and stopped at its ``n``-th token, as ``qwq-edge bench`` times it:
    closed by a budget, it would end at a sentence end the graceful close rewinds to, so runs
    whose texts differ would count different numbers of tokens over the same work.
    """
    model.engine.rewind(0)
    options = {"reasoning_format": fmt, "draft": draft, "loop_guard": False, **PLAIN_GREEDY}
    if fmt != "think":
        result = model.generate(text, max_answer_tokens=n, **options)
        stats = result.stats.to_dict()
        return result.thinking + result.answer, stats | {
            "tokens": list(model.engine.cached_tokens[stats["prompt_tokens"] :])
        }
    pieces, marks, stats = [], [], {}
    for event in model.stream(text, max_thinking_tokens=2 * n, max_answer_tokens=1, **options):
        if isinstance(event, ThinkingDelta):
            pieces.append(event.text)
            marks.append((event.thinking_tokens, perf_counter()))
            if event.thinking_tokens >= n:
                model.cancel()
        elif isinstance(event, Done):
            stats = event.result.stats.to_dict()
        else:  # the model left its thinking before n tokens
            model.cancel()
    tokens = list(model.engine.cached_tokens[stats["prompt_tokens"] :])[:n]
    stats["decode_tokens_per_s"] = timing(0, 0.0, marks).decode_tokens_per_s
    return "".join(pieces), stats | {"tokens": tokens}


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
    each_round = [s["decode_tokens_per_s"] / r for s, r in zip(runs["ngram"], runs["raw"], strict=True)]
    last = runs["ngram"][-1]
    return {
        "prompt_tokens": len(tokens),
        "reasoning_format": fmt,
        "runs": runs,
        "decode_tokens_per_s": {"raw": median(runs["raw"]), **speed},
        # Per repetition, each against the raw run just before it: the machine's load drifts.
        "ngram_vs_raw": median(each_round),
        "ngram_vs_raw_each_round": each_round,
        "off_vs_raw": median([s["decode_tokens_per_s"] / r for s, r in zip(runs["off"], runs["raw"], strict=True)]),
        "identical_with_and_without_speculation": generated["ngram"][:n] == generated["off"][:n],
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


def llama_server_column(out: Path) -> dict[str, str]:
    """llama-server's ngram-simple ÷ its own decode per workload (each round's, then the drafts
    accepted), from ``llama_server.py``'s results if run."""
    path = out / "llama_server.json"
    if not path.is_file():
        return {}
    figures = {}
    for name, modes in json.loads(path.read_text())["speculation"].items():
        simple = modes["ngram-simple"]
        rounds = spread(simple.get("vs_off_each_round", [simple["vs_off"]]))
        figures[name] = f"{simple['vs_off']:.2f}× ({rounds}; {simple['drafts'][0]}/{simple['drafts'][1]})"
    return figures


def table(results: dict[str, dict[str, Any]], footer: str, peer: dict[str, str]) -> str:
    lines = [
        "| workload | raw llama-cpp-python tok/s | qwq-edge, no draft | qwq-edge, `--draft ngram` "
        "| ngram ÷ raw (each round) | drafts accepted | tokens per pass | same tokens "
        "| llama-server ngram-simple ÷ its own decode |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        speed, drafts = r["decode_tokens_per_s"], r["drafts"]
        lines.append(
            f"| {name} | {speed['raw']:.1f} | {speed['off']:.1f} | {speed['ngram']:.1f} "
            f"| **{r['ngram_vs_raw']:.2f}×** ({spread(r['ngram_vs_raw_each_round'])}) "
            f"| {drafts['draft_accepted']}/{drafts['draft_proposed']} | {r['tokens_per_pass']:.2f} "
            f"| {same_tokens(r)} | {peer.get(name, '-')} |"
        )
    return "\n".join(lines) + "\n\n" + footer + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = decode_parser(__doc__.splitlines()[0], tokens=300, repetitions=3)
    parser.add_argument("--model", type=Path, help="GGUF file (default: the 0.5B test model)")
    parser.add_argument("--threads", type=int, default=usable_cores())
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated subset")
    args = quick(parser.parse_args(argv))
    path = args.model or fixture_model_path()
    model = load(path, engine="llama.cpp", context_length=4096, n_threads=args.threads)
    raw = open_raw(model.engine)
    try:
        measure(model, raw, "story", 16, 1)  # a warm-up: the first runs of a process are slower
        results = {name: measure(model, raw, name, args.tokens, args.repetitions) for name in args.workloads.split(",")}
    finally:
        raw.close()
        model.close()
    footer = (
        f"{path.name}, llama.cpp on the CPU, {args.threads} threads, greedy, {args.tokens} tokens per run, median of "
        f"{args.repetitions} rounds (decode tokens/s from the first to the last token; ngram ÷ raw: the median of "
        "each round's ratio, with every round's in brackets, the three runs taking turns; thinking timed until "
        "its last token, not closed by a budget). The llama-server column is `benchmarks/llama_server.py`'s "
        "(llama.cpp's server built from the "
        "llama.cpp that llama-cpp-python 0.3.36 vendors, the same prompt token ids, greedy; its text differs from "
        "llama-cpp-python's). Mac figures are not measured here."
    )
    data = {"benchmark": "speculation", "machine": machine(), "settings": vars(args) | {"out": str(args.out)}}
    data["workloads"] = results
    text = table(results, footer, llama_server_column(RESULTS))
    save("speculation_quick" if args.quick else "speculation", data, text, args.out)
    print(text)
    return data


if __name__ == "__main__":
    main()
