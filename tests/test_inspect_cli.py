"""``qwq-edge info`` and ``doctor``, and engine options, as real processes."""

import json
import os
import subprocess
import sys

from qwq_edge.convert import convert_to_mlx
from qwq_edge.convert.synthetic import make_checkpoint


def qwq(cli_command, *args):
    return subprocess.run([*cli_command, *args], capture_output=True, text=True, timeout=300, check=False)


def test_info_describes_a_gguf_without_loading_it(cli_command, gguf_path):
    proc = qwq(cli_command, "info", str(gguf_path), "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["architecture"] == "qwen2" and info["quantization"] == "Q4_K_M"
    assert info["parameters"] == 630_167_424 and info["context_length"] == 32768
    assert info["reasoning_format"] == "none" and info["family"] == "qwen2.5-coder-0.5b"
    assert info["engine"] == "llama.cpp" and "CPU" in info["engine_reason"]
    assert "Qwen2.5 Coder" in qwq(cli_command, "info", str(gguf_path)).stdout
    pooled = json.loads(qwq(cli_command, "info", str(gguf_path), "--parallel", "4", "--json").stdout)["memory"]
    assert list(pooled["largest_context"]) == ["f16", "q8_0"]


#: How Python writes a list, a dict, a string in one, a boolean or nothing.
REPR_MARKS = ("[", "]", "{", "}", "', '", "': ", "True", "False", "None")


def test_info_writes_lists_and_dicts_in_words(cli_command, gguf_path, offline):
    for model in (str(gguf_path), "qwen2.5-coder-0.5b", "qwq-32b"):  # a file; catalog entries, not pulled
        proc = subprocess.run(
            [*cli_command, "info", model], capture_output=True, text=True, env={**offline, "COLUMNS": "250"}
        )
        assert proc.returncode == 0, proc.stderr
        rows = [line.split("│") for line in proc.stdout.splitlines() if line.count("│") == 3]
        values = {label.strip(): value.strip() for _, label, value, _ in rows}
        assert [(k, v) for k, v in values.items() if any(mark in v for mark in REPR_MARKS)] == []
        assert "temperature: " in values["sampling defaults"] and "top_k: 20" in values["sampling defaults"]
        if model == "qwq-32b":
            assert values["effort budgets"] == "low: 512, medium: 2048, high: 8192"
            assert values["downloads"].startswith("gguf:q4_k_m lmstudio-community/QwQ-32B-GGUF (19.9 GB), gguf:")
            assert values["pulled"] == "no"


def test_info_and_run_on_an_mlx_folder(cli_command, tmp_path):
    folder = tmp_path / "tiny-mlx"
    convert_to_mlx(make_checkpoint(tmp_path / "tiny"), folder, bits=4, verify=False)
    info = json.loads(qwq(cli_command, "info", str(folder), "--json").stdout)
    assert info["format"] == "mlx" and info["quantization"] == "4-bit, group 64"
    assert info["reasoning_format"] == "think" and info["engine"] == "none (auto)"
    pooled = json.loads(qwq(cli_command, "info", str(folder), "--parallel", "4", "--json").stdout)["memory"]
    assert pooled["parallel"] == 4 and list(pooled["largest_context"]) == ["f16"]  # MLX's batch cache is fp16
    refused = qwq(cli_command, "run", "-m", str(folder), "hi")
    assert refused.returncode == 1 and "pass --engine mlx" in refused.stderr
    proc = qwq(
        cli_command, "run", "-m", str(folder), "--engine", "mlx", "--budget", "3",
        "--max-answer-tokens", "3", "--json", "-v", "hi",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "engine: mlx" in proc.stderr and "memory:" in proc.stderr
    data = json.loads(proc.stdout)
    assert data["thinking_tokens"] <= 3 and data["thinking_closed_by"] == "budget"


def test_doctor_checks_the_engines_for_real_and_plans_a_model(cli_command, gguf_path):
    proc = qwq(cli_command, "doctor", "--model", str(gguf_path), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["system"]["cores"] >= 1 and report["system"]["ram_total_bytes"] > 0
    assert {e["engine"]: e["ok"] for e in report["engines"]} == {"llama.cpp": True, "mlx": True}
    memory = report["model"]["memory"]
    assert memory["kv_bytes_per_token"]["f16"] == 12288
    assert memory["largest_context"]["f16"] == 32768
    speed = report["speed"]  # the bandwidth probe, run again
    assert speed["memory_bandwidth_bytes_per_s"] > 1e9 and speed["matmul_flops"] > 1e9 and speed["probe_seconds"] > 0
    assert report["model"]["speed"]["predicted_decode_tokens_per_s"] > 0
    text = qwq(cli_command, "doctor").stdout
    assert "Engines" in text and "ok: decoded 1 token" in text
    assert "GB/s memory bandwidth" in text and "predictions use" in text


#: ``qwq-edge doctor`` in a Python where mlx and mlx_lm cannot be imported, as on a Linux install without the extra.
WITHOUT_MLX = """
import sys
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"mlx", "mlx_lm"}:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Blocker())
from qwq_edge.cli import main
sys.argv = ["qwq-edge", "doctor", *sys.argv[1:]]
main()
"""


def test_doctor_says_how_to_add_mlx_when_it_is_not_installed():
    env = {**os.environ, "COLUMNS": "200"}
    run = [sys.executable, "-c", WITHOUT_MLX]
    proc = subprocess.run(run, capture_output=True, text=True, timeout=300, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    mlx_row = next(line for line in proc.stdout.splitlines() if "│ mlx " in line)
    assert "not installed (no mlx, mlx_lm): it is an optional extra" in mlx_row
    assert "pip install 'qwq-edge[mlx]'" in mlx_row
    assert "FAILED" not in proc.stdout and "ModuleNotFoundError" not in proc.stdout
    assert "ok: decoded 1 token" in proc.stdout  # llama.cpp still runs
    report = json.loads(subprocess.run([*run, "--json"], capture_output=True, text=True, timeout=300).stdout)
    mlx = next(e for e in report["engines"] if e["engine"] == "mlx")
    assert (mlx["ok"], mlx["installed"]) == (False, False)


def test_kv_cache_and_context_options(cli_command, gguf_path):
    args = ["run", "-m", str(gguf_path), "--reasoning-format", "none", "--max-answer-tokens", "4", "--temperature", "0"]
    proc = qwq(cli_command, *args, "--ctx", "1024", "--kv-cache", "q8_0", "-v", "Say hi.")
    assert proc.returncode == 0, proc.stderr
    assert "q8_0 KV cache for 1024 tokens" in proc.stderr
    too_big = qwq(cli_command, *args, "--ctx", "90000000", "Say hi.")
    assert too_big.returncode == 1 and too_big.stderr.startswith("error: ") and "it fits with" in too_big.stderr
