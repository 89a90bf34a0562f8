"""The benchmarks' quick modes, so that the scripts cannot rot (the full runs are not part of CI)."""

import json

import pytest

from benchmarks import (
    budget_eval,
    convert_memory,
    loop_breaker,
    multiturn,
    overhead_llama_cpp,
    overhead_mlx,
    parallel,
    roofline,
    speed_model,
    votes,
)

#: Each benchmark's quick mode runs a real model (the 0.5B GGUF, or MLX) in this process.
pytestmark = [pytest.mark.model, pytest.mark.mlx]


def test_overhead_benchmark_quick_mode_writes_json_and_a_table(tmp_path):
    data = overhead_llama_cpp.main(["--quick", "--out", str(tmp_path)])
    assert set(data["reports"]) == {"greedy", "model defaults"}
    for report in data["reports"].values():
        assert all(m["decode_tokens_per_s"] > 0 for m in report["medians"].values())
        assert all(len(runs) == 1 for runs in report["runs"].values())
    saved = json.loads((tmp_path / "overhead_llama_cpp_quick.json").read_text())
    assert saved["machine"]["versions"]["llama-cpp-python"]
    table = (tmp_path / "overhead_llama_cpp_quick.md").read_text()
    assert "| greedy | llama-cpp-python streaming completion |" in table and "controls on" in table


def test_conversion_memory_benchmark_quick_mode(tmp_path):
    data = convert_memory.main(["--quick", "--out", str(tmp_path)])
    kinds = [row["conversion"] for row in data["rows"]]
    assert kinds == list(convert_memory.CONVERSIONS)
    assert all(row["peak_rss_bytes"] > 0 and row["seconds"] >= 0 for row in data["rows"])
    assert "mlx_lm.convert" in (tmp_path / "convert_memory_quick.md").read_text()
    assert (tmp_path / "convert_memory_quick.png").read_bytes().startswith(b"\x89PNG")


def test_mlx_overhead_benchmark_quick_mode(tmp_path):
    data = overhead_mlx.main(["--quick", "--out", str(tmp_path)])
    for report in data["reports"].values():
        assert all(m["decode_tokens_per_s"] > 0 for m in report["medians"].values())
    assert "mlx_lm.stream_generate" in (tmp_path / "overhead_mlx_quick.md").read_text()


def test_roofline_and_multiturn_quick_modes(tmp_path):
    roof = roofline.main(["--quick", "--threads", "1", "--out", str(tmp_path)])
    row = roof["rows"][0]
    assert row["bandwidth_bytes_per_s"] > 1e9 and 0 < row["fraction_of_limit"] < 2
    assert row["bytes_per_token"] > 300e6  # the 0.5B Q4_K_M reads ~390 MB per token
    turns = multiturn.main(["--quick", "--out", str(tmp_path)])
    assert turns["reuse"][0]["cached_prompt_tokens"] == 0
    assert all(t["cached_prompt_tokens"] > 0 for t in turns["reuse"][1:])
    assert all(t["cached_prompt_tokens"] == 0 for t in turns["full"])
    assert (tmp_path / "roofline_quick.md").is_file() and (tmp_path / "multiturn_quick.md").is_file()
    assert (tmp_path / "multiturn_quick.png").read_bytes().startswith(b"\x89PNG")


def test_loop_breaker_and_budget_eval_quick_modes(tmp_path):
    results = loop_breaker.main(["--quick", "--out", str(tmp_path)])
    assert len(results) == 2 and all(row["looped"] for rows in results.values() for row in rows)
    assert "steered away" in (tmp_path / "loop_breaker_quick.md").read_text()
    tables = budget_eval.main(["--quick", "--out", str(tmp_path)])
    (table,) = tables.values()
    assert [row["budget"] for row in table] == [0, 8] and table[1]["cuts"]
    assert "where the cuts fell" in budget_eval.markdown("finish", table)


def test_prompt_cache_quick_mode(tmp_path):
    """Both arms run against real servers; with the cache on, turn 2 after other requests is
    served from memory (the usage says where from), and the table is written."""
    from benchmarks import prompt_cache

    data = prompt_cache.main(["--quick", "--out", str(tmp_path)])
    assert set(data["medians"]) == {"cache on", "cache off"}
    assert all(value > 0 for medians in data["medians"].values() for value in medians.values())
    assert "after a restart" in (tmp_path / "prompt_cache_quick.md").read_text()
    assert data["runs"]["cache on"][0]["served from, after 1"] == "memory"
    assert data["runs"]["cache off"][0]["served from, after 1"] in ("sequence", "")


def test_serve_load_quick_mode(tmp_path):
    from benchmarks import serve_load

    data = serve_load.main(["--quick", "--out", str(tmp_path)])
    assert data["load"]["requests"] == 4 and data["load"]["completion_tokens_per_s"] > 0
    assert data["in_process"]["decode_tokens_per_s"] > 0 and data["overhead"]["decode_ratio"] > 0
    assert "clients ×" in (tmp_path / "serve_load_quick.md").read_text()


def test_soak_quick_mode(tmp_path):
    from benchmarks import soak

    data = soak.main(["--quick", "--out", str(tmp_path)])
    (row,) = data["rows"]
    assert row["statuses"] == {200: 18, 400: 2} and len(row["samples"]) == 5
    assert all(sample["rss"] >= sample["anon"] > 0 for sample in row["samples"])
    assert "slope after warm-up" in (tmp_path / "soak_quick.md").read_text()


def test_structured_quick_mode(tmp_path):
    from benchmarks import structured

    data = structured.main(["--quick", "--out", str(tmp_path)])
    assert data["engines"][0]["engine"].startswith("llguidance") and data["engines"][0]["median_us"] > 0
    assert all(rate > 0 for rate in data["decode"]["median_tokens_per_s"].values())
    assert "schema ÷ free" in (tmp_path / "structured_quick.md").read_text()


def test_parallel_benchmark_quick_mode(tmp_path):
    data = parallel.main(["--quick", "--out", str(tmp_path)])
    assert [row["streams"] for row in data["rows"]] == [1, 4] and all(row["tokens_per_s"] > 0 for row in data["rows"])
    assert data["time_to_first_token"]["ratio"] > 0
    assert "aggregate tok/s" in (tmp_path / "parallel_quick.md").read_text()


def test_parallel_benchmark_quick_mode_on_mlx_beside_mlx_lms_own_batching(tmp_path):
    data = parallel.main(["--quick", "--engine", "mlx", "--out", str(tmp_path)])
    four = data["rows"][1]
    assert four["streams"] == 4 and four["tokens_per_s"] > 0 and four["peer_speedup"] > 0
    assert four["diverged"] == []  # each batched stream's greedy text is its text alone
    assert "mlx-lm batch_generate" in (tmp_path / "parallel_quick_mlx.md").read_text()


def test_votes_benchmark_quick_mode(tmp_path):
    data = votes.main(["--quick", "--out", str(tmp_path)])
    (only,) = data["rounds"]
    assert only["one"]["seconds"] > 0 and data["ratio"] > 0
    # the prompt runs once for the four thoughts: then one token of it again for each of the other three
    voted = only["votes"]
    new = voted["prompt_tokens"] - voted["cached_prompt_tokens"]
    assert new + 3 < voted["tokens_run"] <= new + 3 + voted["generated_tokens"]
    assert "(votes)" in (tmp_path / "votes_quick.md").read_text()


def test_speed_model_quick_mode(tmp_path):
    data = speed_model.main(["--quick", "--out", str(tmp_path)])
    (row,) = data["rows"]  # the fixture only
    assert row["decode_tokens_per_s"] > 0 and row["predicted_decode_tokens_per_s"] > 0
    assert row["bandwidth_bytes_per_s"] > 1e9 and row["decode_bytes"] > 300e6
    assert len(data["apple"]) == len(speed_model.DISCUSSION_4167)
    assert all(abs(r["decode_error"]) <= 0.25 for r in data["apple"])  # published figures: no timing involved
    assert "| M1 | 68 GB/s | 8 | 14.2 |" in (tmp_path / "speed_model_quick.md").read_text()
