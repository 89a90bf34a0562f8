"""Is llama.cpp's multi-token pass the same arithmetic as its one-token pass? Raw ``llama_cpp`` calls, no qwq-edge.

Greedy speculation is token-identical to plain decoding only if a pass over several
tokens gives each position the logits a one-token pass gives it. Per llama.cpp
setting and prompt, with the low-level bindings only (``llama_decode`` on a
``llama_batch``, ``llama_memory_seq_rm``, ``llama_get_logits_ith``): decode greedily
one token per pass (the reference), then compute the very same positions again from
the same prompt cache in passes of ``c`` tokens with logits for every row, and compare
row by row (largest absolute logit difference, rows bit-identical, top-token flips
and the reference's top-2 gap at each flip). ``c = 1`` evaluates the prompt's last
token in its own pass (the prompt pass holds all but it), which isolates the effect
of one key/value computed in another pass shape. Last, qwq-edge's own engine is fed
the same tokens with ``feed_all`` and its sampler's rows are compared with the raw
pass of the same shape (they must be bit-identical: qwq-edge reads the right rows).

    python benchmarks/speculation_rounding.py     # writes results/speculation_rounding.{json,md}
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import llama_cpp
import numpy as np

from qwq_edge import load
from qwq_edge.files import write_text_atomic
from qwq_edge.services.benchmarking.workloads import workload_prompt
from qwq_edge.services.testdata import fixture_model_path

try:
    from benchmarks.common import RESULTS
except ImportError:  # run as a script from the repository root
    from common import RESULTS

POSITIONS = 32
CHUNKS = (1, 4, 32)
WORKLOADS = ("story", "edit", "reasoning")
#: name → (repacked weights, flash attention, n_ubatch).
SETTINGS = {
    "repack on, no flash attention, n_ubatch 512 (llama-cpp-python's default)": (True, False, 512),
    "no weight repacking (use_extra_bufts off)": (False, False, 512),
    "flash attention (qwq-edge's since it turned it on)": (True, True, 512),
    "n_ubatch 1 (a multi-token pass split into one-token ubatches)": (True, False, 1),
}


class RawContext:
    """One model and context through the low-level bindings, with a ``llama_batch``."""

    def __init__(self, path: str, repack: bool, flash: bool, n_ubatch: int) -> None:
        llama_cpp.llama_backend_init()
        model_params = llama_cpp.llama_model_default_params()
        model_params.use_extra_bufts = repack
        self.model = llama_cpp.llama_model_load_from_file(path.encode(), model_params)
        params = llama_cpp.llama_context_default_params()
        params.n_ctx, params.n_batch, params.n_ubatch = 2048, 512, n_ubatch
        params.n_threads = params.n_threads_batch = 2
        params.flash_attn_type = getattr(llama_cpp, f"LLAMA_FLASH_ATTN_TYPE_{'ENABLED' if flash else 'DISABLED'}")
        self.ctx = llama_cpp.llama_init_from_model(self.model, params)
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self.batch = llama_cpp.llama_batch_init(512, 0, 1)

    def tokenize(self, text: str) -> list[int]:
        data, buffer = text.encode(), (llama_cpp.llama_token * 4096)()
        return list(buffer[: llama_cpp.llama_tokenize(self.vocab, data, len(data), buffer, 4096, False, True)])

    def decode(self, tokens: Sequence[int], start: int, every_row: bool) -> list[np.ndarray]:
        """One pass; the logits of every row (or of the last one)."""
        batch = self.batch
        batch.n_tokens = len(tokens)
        for i, token in enumerate(tokens):
            batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.seq_id[i][0] = token, start + i, 1, 0
            batch.logits[i] = every_row or i == len(tokens) - 1
        llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(self.ctx), 0, start, -1)
        if llama_cpp.llama_decode(self.ctx, batch) != 0:
            raise RuntimeError("llama_decode failed")
        rows = range(len(tokens)) if every_row else (len(tokens) - 1,)
        return [self.row(i) for i in rows]

    def row(self, i: int) -> np.ndarray:
        return np.array(np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self.ctx, i), shape=(self.n_vocab,)))

    def close(self) -> None:
        llama_cpp.llama_batch_free(self.batch)
        llama_cpp.llama_free(self.ctx)
        llama_cpp.llama_model_free(self.model)


def one_token_passes(raw: RawContext, prompt: list[int]) -> tuple[list[int], list[np.ndarray]]:
    """Greedy decoding, one token per pass: the tokens and the logits each was chosen from."""
    logits = raw.decode(prompt, 0, every_row=False)
    tokens: list[int] = []
    while len(tokens) < POSITIONS:
        tokens.append(int(np.argmax(logits[-1])))
        logits += raw.decode(tokens[-1:], len(prompt) + len(tokens) - 1, every_row=False)
    return tokens, logits[:POSITIONS]


def chunked_passes(raw: RawContext, prompt: list[int], tokens: list[int], chunk: int) -> list[np.ndarray]:
    """The same positions' logits from passes of ``chunk`` tokens (after a prompt pass without its last token)."""
    raw.decode(prompt[:-1], 0, every_row=False)
    sequence, rows = [prompt[-1], *tokens[:-1]], []
    for start in range(0, len(sequence), chunk):
        rows += raw.decode(sequence[start : start + chunk], len(prompt) - 1 + start, every_row=True)
    return rows


def after_rewinds(raw: RawContext, prompt: list[int], tokens: list[int], chunk: int = 8) -> float:
    """``chunked_passes`` again, but after each pass a pass of ``chunk`` wrong tokens (rejected
    drafts) is decoded and removed with ``llama_memory_seq_rm``: the largest difference of any row."""
    expected = chunked_passes(raw, prompt, tokens, chunk)
    raw.decode(prompt[:-1], 0, every_row=False)
    sequence, rows = [prompt[-1], *tokens[:-1]], []
    for start in range(0, len(sequence), chunk):
        rows += raw.decode(sequence[start : start + chunk], len(prompt) - 1 + start, every_row=True)
        raw.decode([tokens[0]] * chunk, len(prompt) - 1 + start + chunk, every_row=True)  # removed by the next pass
    return max(float(np.max(np.abs(a - b))) for a, b in zip(rows, expected, strict=True))


def top2_gap(row: np.ndarray) -> float:
    first, second = np.sort(row)[-2:][::-1]
    return float(first - second)


def compare(reference: list[np.ndarray], other: Iterable[np.ndarray]) -> dict[str, Any]:
    pairs = list(zip(reference, other, strict=True))
    diffs = [float(np.max(np.abs(a - b))) for a, b in pairs]
    flips = [i for i, (a, b) in enumerate(pairs) if np.argmax(a) != np.argmax(b)]
    return {
        "max_abs_logit_diff": max(diffs),
        "median_max_abs_logit_diff": float(np.median(diffs)),
        "bit_identical_rows": sum(d == 0.0 for d in diffs),
        "top_token_flips": len(flips),
        "top2_gap_at_flips": [top2_gap(reference[i]) for i in flips],
    }


def measure_setting(path: str, setting: tuple[bool, bool, int]) -> dict[str, Any]:
    raw, results = RawContext(path, *setting), {}
    try:
        for name in WORKLOADS:
            prompt = raw.tokenize(f"<|im_start|>user\n{workload_prompt(name)}<|im_end|>\n<|im_start|>assistant\n")
            tokens, reference = one_token_passes(raw, prompt)
            results[name] = {
                "prompt_tokens": len(prompt),
                "max_abs_logit_diff_after_rewinds": after_rewinds(raw, prompt, tokens),
                "smallest_top2_gap": min(top2_gap(row) for row in reference),
                **{f"pass_of_{c}": compare(reference, chunked_passes(raw, prompt, tokens, c)) for c in CHUNKS},
            }
    finally:
        raw.close()
    return results


def qwq_edge_rows(path: str) -> dict[str, float]:
    """qwq-edge's engine and sampler against a raw pass of the same shape: the largest difference per workload."""
    model, raw = load(path, engine="llama.cpp", context_length=2048, n_threads=2), RawContext(path, True, False, 512)
    engine, out = model.engine, {}
    sampler = engine.new_sampler(model.sampling, 0)
    try:
        for name in WORKLOADS:
            prompt = raw.tokenize(f"<|im_start|>user\n{workload_prompt(name)}<|im_end|>\n<|im_start|>assistant\n")
            tokens, _ = one_token_passes(raw, prompt)
            expected = chunked_passes(raw, prompt, tokens, POSITIONS)
            engine.rewind(0)
            engine.prefill(prompt[:-1])
            engine.feed_all([prompt[-1], *tokens[:-1]])
            rows = [np.array(sampler._logits(engine.logits_index(len(prompt) + i))) for i in range(POSITIONS)]
            out[name] = max(float(np.max(np.abs(a - b))) for a, b in zip(rows, expected, strict=True))
    finally:
        raw.close()
        model.close()
    return out


def table(results: dict[str, Any]) -> str:
    lines = [
        "| llama.cpp setting | prompt | pass of | max \\|Δlogit\\| | median | bit-identical rows | top-token flips "
        "(top-2 gap of the one-token pass there) |",
        "|---|---|---|---|---|---|---|",
    ]
    for setting, workloads in results["settings"].items():
        for name, r in workloads.items():
            for c in CHUNKS:
                x = r[f"pass_of_{c}"]
                gaps = ", ".join(f"{g:.3f}" for g in x["top2_gap_at_flips"])
                lines.append(
                    f"| {setting} | {name} | {c} | {x['max_abs_logit_diff']:.3f} "
                    f"| {x['median_max_abs_logit_diff']:.3f} "
                    f"| {x['bit_identical_rows']}/{POSITIONS} | {x['top_token_flips']}{f' ({gaps})' if gaps else ''} |"
                )
    same = ", ".join(f"{name} {diff:g}" for name, diff in results["qwq_edge_vs_raw_same_pass"].items())
    rewound = "; ".join(
        f"{setting}: " + ", ".join(f"{name} {r['max_abs_logit_diff_after_rewinds']:g}" for name, r in workloads.items())
        for setting, workloads in results["settings"].items()
    )
    return (
        "\n".join(lines)
        + f"\n\nqwq-edge's feed_all rows vs the raw pass of the same shape, max |Δlogit|: {same}.\n"
        + "\nPasses of 8 with 8 rejected tokens decoded and removed (llama_memory_seq_rm) after each, vs "
        + f"the same passes without, max |Δlogit|: {rewound}.\n"
    )


def main() -> dict:
    path = str(fixture_model_path())
    results = {
        "model": path,
        "positions": POSITIONS,
        "settings": {name: measure_setting(path, setting) for name, setting in SETTINGS.items()},
        "qwq_edge_vs_raw_same_pass": qwq_edge_rows(path),
    }
    write_text_atomic(RESULTS / "speculation_rounding.json", json.dumps(results, indent=2) + "\n")
    text = table(results)
    write_text_atomic(RESULTS / "speculation_rounding.md", text)
    print(text)
    return results


if __name__ == "__main__":
    main()
