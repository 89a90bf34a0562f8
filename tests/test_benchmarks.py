"""The benchmarks' quick modes, so that the scripts cannot rot (the full runs are not part of CI)."""

import json

from benchmarks import overhead_llama_cpp


def test_overhead_benchmark_quick_mode_writes_json_and_a_table(tmp_path):
    data = overhead_llama_cpp.main(["--quick", "--out", str(tmp_path)])
    assert set(data["results"]) == {"greedy", "qwen2.5 defaults, seed 1234"}
    for result in data["results"].values():
        assert result["raw_tokens_per_s"] > 0 and result["qwq_tokens_per_s"] > 0
        assert len(result["repetitions"]) == 1
    saved = json.loads((tmp_path / "overhead_llama_cpp.json").read_text())
    assert saved["machine"]["versions"]["llama-cpp-python"]
    assert "| greedy |" in (tmp_path / "overhead_llama_cpp.md").read_text()
