"""How differently llama.cpp's multi-token pass rounds: the same positions' logits, one token per pass vs one pass.

Greedy speculation is token-identical to plain decoding only where both passes pick the
same top token; this measures how far apart their logits are (40 generated positions
per prompt, the 0.5B Q4_K_M model on the CPU) and how often the top token flips.

    python benchmarks/speculation_rounding.py     # writes results/speculation_rounding.json
"""

from __future__ import annotations

import json

import numpy as np

from qwq_edge import load
from qwq_edge.bench.workloads import workload_prompt
from qwq_edge.files import write_text_atomic
from qwq_edge.reasoning.formats import THINK
from qwq_edge.testdata import fixture_model_path

try:
    from benchmarks.common import RESULTS
except ImportError:  # run as a script from the repository root
    from common import RESULTS

POSITIONS = 40


def compare(model, prompt: list[int], generated: list[int]) -> dict[str, float]:
    engine, sampler = model.engine, model.engine.new_sampler(model.sampling, 0)
    engine.rewind(0)
    engine.prefill(prompt)
    single = []
    for token in generated:
        single.append(np.array(sampler._logits(engine.logits_index(None))))
        engine.feed((token,))
        engine.evaluate_pending()
    engine.rewind(len(prompt) - 1)
    engine.feed_all([prompt[-1], *generated[:-1]])
    batch = [np.array(sampler._logits(engine.logits_index(len(prompt) + i))) for i in range(len(generated))]
    diffs = [float(np.max(np.abs(b - s))) for b, s in zip(batch, single, strict=True)]
    gaps = [float(np.diff(np.sort(s)[-2:])[0]) for s in single]
    return {
        "positions": len(generated),
        "max_abs_logit_diff": max(diffs),
        "median_max_abs_logit_diff": float(np.median(diffs)),
        "smallest_top2_gap": min(gaps),
        "top_token_flips": sum(int(np.argmax(b) != np.argmax(s)) for b, s in zip(batch, single, strict=True)),
    }


def main() -> dict:
    model = load(fixture_model_path(), engine="llama.cpp", context_length=2048)
    results = {}
    for name in ("reasoning", "edit", "story"):
        text = workload_prompt(name)
        options = {"reasoning_format": "think", "temperature": 0.0, "max_thinking_tokens": 48, "loop_guard": False}
        result = model.generate(text, **options)
        prompt = model.prompts.build(model.prompt_messages(text), THINK)
        generated = list(model.engine._tokens[len(prompt) : len(prompt) + POSITIONS])
        results[name] = compare(model, prompt, generated) | {"thinking_tokens": result.stats.thinking_tokens}
        print(name, results[name])
    model.close()
    write_text_atomic(RESULTS / "speculation_rounding.json", json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
