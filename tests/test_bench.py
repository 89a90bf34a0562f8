"""``qwq-edge bench`` and the library behind it: real engines, real processes."""

import json
from pathlib import Path

import pytest
from rich.console import Console
from test_cli import assert_one_line_error, qwq

from qwq_edge import InvalidRequestError
from qwq_edge.cli.bench import _print_report
from qwq_edge.convert import convert_to_mlx
from qwq_edge.convert.synthetic import SyntheticSpec, make_checkpoint
from qwq_edge.reasoning.formats import THINK
from qwq_edge.services.benchmarking import BenchSettings, run_bench
from qwq_edge.services.benchmarking.measure import bench_prompt
from qwq_edge.services.benchmarking.suite import OFF, ON, RAW
from qwq_edge.services.testdata import fixture_tokenizer_json

QUICK = ["--prompt-tokens", "64", "--gen-tokens", "8", "--repetitions", "1", "--ctx", "512"]


@pytest.fixture(scope="module")
def tiny_mlx(tmp_path_factory) -> Path:
    """A random float16 Qwen2 with Qwen2.5's tokenizer, in MLX format: fast on MLX's CPU backend."""
    root = tmp_path_factory.mktemp("bench")
    spec = SyntheticSpec(64, 128, 2, 4, 2, 151_936, 0, False, "float16")
    source = make_checkpoint(root / "tiny", spec, tokenizer_json=fixture_tokenizer_json())
    convert_to_mlx(source, root / "tiny-mlx", bits=16, verify=False)
    return root / "tiny-mlx"


def test_the_bench_prompt_has_the_size_asked_for(model):
    for target in (64, 100, 512):
        _, tokens = bench_prompt(model, THINK, target)
        assert len(tokens) == target
    with pytest.raises(InvalidRequestError, match="shortest benchmark prompt for this model is 59 tokens"):
        bench_prompt(model, THINK, 40)


def test_bench_command_measures_raw_and_qwq_edge_and_writes_json(cli_command, gguf_path, tmp_path):
    out = tmp_path / "report.json"
    proc = qwq(cli_command, "bench", "-m", str(gguf_path), *QUICK, "--json", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert json.loads(out.read_text()) == data
    assert data["settings"]["prompt_tokens"] == 64
    assert data["settings"]["raw_label"] == "llama-cpp-python streaming completion"
    assert set(data["medians"]) == {RAW, OFF, ON}
    for variant, runs in data["runs"].items():
        assert len(runs) == 1
        run = runs[0]
        assert run["prompt_tokens"] == 64 and run["generated_tokens"] == 8, variant
        assert run["time_to_first_token"] > 0 and run["prefill_tokens_per_s"] > 0 and run["decode_tokens_per_s"] > 0
    assert set(data["load_seconds"]) == {"qwq-edge", "raw"} and all(s > 0 for s in data["load_seconds"].values())
    memory = data["memory"]
    assert memory["peak_rss_bytes"] >= memory["rss_after_load_bytes"] > 300e6  # the 0.5B Q4_K_M is ~400 MB
    assert 0.3 < data["ratios"][f"decode: {ON} ÷ {RAW}"] < 3
    # the speed model's figures for the same runs, beside the measured ones (how close: benchmarks/speed_model.py)
    assert data["predicted_decode_tokens_per_s"] == data["prediction"]["predicted_decode_tokens_per_s"] > 0
    assert (
        data["prediction"]["predicted_prefill_tokens_per_s"] > 0 and "llama.cpp on cpu" in data["prediction"]["machine"]
    )


def test_bench_command_prints_a_table(cli_command, gguf_path):
    proc = qwq(cli_command, "bench", "-m", str(gguf_path), *QUICK, "--no-raw", "--greedy", "--verbose")
    assert proc.returncode == 0, proc.stderr
    assert "engine: llama.cpp on cpu" in proc.stderr and "memory: " in proc.stderr
    assert "decode tok/s" in proc.stdout and "controls on" in proc.stdout and "greedy" in proc.stdout
    assert "raw engine" not in proc.stdout
    assert "speed model: decode" in proc.stdout and "measured" in proc.stdout


def test_bench_command_refuses_a_context_too_small(cli_command, gguf_path):
    proc = qwq(
        cli_command, "bench", "-m", str(gguf_path), "--prompt-tokens", "600", "--gen-tokens", "8", "--ctx", "512"
    )
    assert_one_line_error(proc, 1, "need a context of 608")


def test_bench_on_the_mlx_engine_against_mlx_lm(tiny_mlx):
    report = run_bench(tiny_mlx, BenchSettings(prompt_tokens=48, gen_tokens=6, repetitions=2), engine="mlx")
    assert report.model["engine"] == "mlx"
    assert report.settings["raw_label"] == "mlx_lm.stream_generate"
    for variant, runs in report.runs.items():
        assert len(runs) == 2
        assert all(r.prompt_tokens == 48 and 0 < r.generated_tokens <= 6 for r in runs), variant
        assert all(r.decode_tokens_per_s > 0 for r in runs if r.generated_tokens > 1), variant
    assert report.memory["peak_rss_bytes"] > 0


def test_bench_runs_start_from_an_empty_cache(tiny_mlx):
    """Each run reads the whole prompt, though a chat would reuse it from the previous run."""
    report = run_bench(tiny_mlx, BenchSettings(prompt_tokens=48, gen_tokens=4, repetitions=3, raw=False), engine="mlx")
    assert set(report.runs) == {OFF, ON} and "raw_engine_added_rss_bytes" not in report.memory
    assert all(r.cached_prompt_tokens == 0 for runs in report.runs.values() for r in runs)


def test_bench_shows_what_a_prompt_cache_asked_for_served(tiny_mlx, tmp_path):
    """With --prompt-cache the runs after the first restore the long prompt from disk, and say so."""
    settings = BenchSettings(prompt_tokens=1100, gen_tokens=4, repetitions=2, raw=False)
    report = run_bench(tiny_mlx, settings, engine="mlx", prompt_cache_dir=tmp_path / "cache")
    served = [(r.cached_prompt_tokens, r.cached_prompt_from) for runs in report.runs.values() for r in runs]
    assert all(tokens >= 1024 and where == "disk" for tokens, where in served), served
    console = Console(record=True, width=200)
    _print_report(console, report)
    printed = console.export_text()
    assert "started from up to" in printed and "(disk)" in printed
