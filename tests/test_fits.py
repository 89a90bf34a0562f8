"""Choosing what fits: the ranking under given budgets, the first run's choice offline, ``list --catalog
--fits``, refusals that name what fits, ``info`` for a model not pulled, and the Mac wired-limit hint."""

import json
import subprocess

import pytest

from qwq_edge import plan_catalog as plan_catalog_here
from qwq_edge.catalog.fits import choose, why
from qwq_edge.catalog.planner import GiB, apple_gpu_budget, parse_size, wired_limit_hint
from qwq_edge.catalog.speed import LLAMA_CPP_CPU, MachineSpeed
from qwq_edge.errors import InsufficientMemoryError, InvalidRequestError

GB = 10**9
#: A machine fast enough that the speed floor never matters: these tests are about memory.
FAST = MachineSpeed("llama.cpp", "cpu", 800 * GB, LLAMA_CPP_CPU, "a test's")


def plan_catalog(budget, format):
    return plan_catalog_here(budget, format, FAST)


#: What the first run takes under each budget: (the download, its context, its KV cache), for GGUF and MLX.
EXPECTED = {
    ("gguf", 4): ("qwen3-4b:q4_k_m", 11264, "q8_0"),  # a Qwen3 thinking model for a small laptop
    ("gguf", 8): ("deepseek-r1-0528-qwen3-8b:q4_k_m", 28928, "q8_0"),
    ("gguf", 16): ("qwq-32b-preview:iq3_xs", 9472, "q8_0"),
    ("gguf", 24): ("qwq-32b-preview:q4_k_m", 21248, "q8_0"),
    ("gguf", 32): ("qwq-32b-preview:q4_k_m", 32768, "f16"),
    ("gguf", 64): ("qwq-32b-preview:q4_k_m", 32768, "f16"),
    ("mlx", 8): ("deepseek-r1-0528-qwen3-8b:4bit", 32768, "q8_0"),
    ("mlx", 16): ("deepseek-r1-distill-qwen-14b:4bit", 32768, "f16"),  # 3-bit QwQ leaves < 8k tokens
    ("mlx", 24): ("qwq-32b-preview:4bit", 32000, "q8_0"),
    ("mlx", 32): ("qwq-32b-preview:4bit", 32768, "f16"),
    ("mlx", 64): ("qwq-32b-preview:4bit", 32768, "f16"),
}


@pytest.mark.parametrize(("format", "budget"), list(EXPECTED))
def test_each_budget_picks_the_expected_download(format, budget):
    candidates = plan_catalog(budget * GB, format)
    choice = choose(candidates)
    assert (choice.spec, choice.plan.context, choice.plan.kv_cache) == EXPECTED[format, budget]
    assert choice.plan.fits and choice.plan.context >= 8192
    assert all(c.plan is None for c in candidates[: candidates.index(choice)] if c.reasoning)
    reason = why(choice, candidates)
    assert (reason is None) == (choice is candidates[0])


def test_the_ranking_puts_the_default_and_its_smaller_quantizations_first():
    specs = [c.spec for c in plan_catalog(16 * GB, "gguf")]
    assert specs[:4] == [f"qwq-32b-preview:{q}" for q in ("q4_k_m", "q3_k_m", "iq3_xs", "q2_k")]
    assert specs.index("deepseek-r1-distill-qwen-14b:q4_k_m") < specs.index("deepseek-r1-distill-qwen-7b:q4_k_m")
    assert specs[-1] == "qwen2.5-coder-0.5b:q4_k_m"  # not a reasoning model: last, and never chosen


def test_a_fitting_download_already_on_disk_comes_first_and_nothing_fitting_is_an_error():
    candidates = plan_catalog(16 * GB, "gguf")
    assert choose(candidates, {"qwq-32b-preview:q2_k"}).spec == "qwq-32b-preview:q2_k"
    assert choose(candidates, {"qwq-32b-preview:q4_k_m"}).spec == "qwq-32b-preview:iq3_xs"  # on disk, but too big
    with pytest.raises(InsufficientMemoryError, match=r"the smallest, qwen3-0\.6b:q8_0"):
        choose(plan_catalog(GB, "gguf"))


def test_memory_budget_sizes():
    assert parse_size("16GB") == 16 * GB and parse_size("16 GiB") == 16 * GiB
    assert parse_size("17179869184") == 16 * GiB and parse_size("12.5g") == 12_500_000_000
    for bad in ("abc", "", "16 parsecs", "-4GB", "0"):
        with pytest.raises(InvalidRequestError, match="QWQ_EDGE_MEMORY_BUDGET"):
            parse_size(bad)


def test_the_mac_wired_limit_hint_comes_from_platform_and_ram():
    ram = 24 * GiB
    budget = apple_gpu_budget(ram)
    assert budget == 18 * GiB and apple_gpu_budget(ram, wired_mb=20480) == 20 * GiB
    hint = wired_limit_hint(int(20.7 * GB), budget, ram, is_apple_silicon=True)
    assert "`sudo sysctl iogpu.wired_limit_mb=19968`" in hint  # 20.7 GB rounded up to 256 MiB
    assert "until the next restart" in hint and "may swap or freeze" in hint and "wired_limit_mb=0" in hint
    assert wired_limit_hint(int(20.7 * GB), budget, ram, is_apple_silicon=False) is None  # not a Mac
    assert wired_limit_hint(int(17 * GB), budget, ram, is_apple_silicon=True) is None  # it fits already
    assert wired_limit_hint(int(23 * GB), budget, ram, is_apple_silicon=True) is None  # past what is safe to wire
    assert wired_limit_hint(int(6.5 * GB), apple_gpu_budget(8 * GiB), 8 * GiB, True) is None  # 8 GB: no headroom


def qwq(cli_command, *args, env, budget="16GB"):
    env = {**env, "QWQ_EDGE_MEMORY_BUDGET": budget, "COLUMNS": "220"}
    return subprocess.run([*cli_command, *args], capture_output=True, text=True, timeout=300, env=env, check=False)


@pytest.mark.parametrize(
    ("budget", "repo", "spec"),
    [("16GB", "bartowski/QwQ-32B-Preview-GGUF", "iq3_xs"), ("8GB", "unsloth/DeepSeek-R1-0528-Qwen3-8B-GGUF", "0528")],
)
def test_the_first_run_offline_names_the_chosen_repository(cli_command, offline, budget, repo, spec):
    proc = qwq(cli_command, "run", "--yes", "hi", env=offline, budget=budget)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert lines[0].startswith("qwq-32b-preview:q4_k_m needs 22.2 GB") and "chose" in lines[0]
    assert spec in lines[0] and repo in lines[0]
    assert lines[-1].startswith(f"error: {repo} is not in the local Hugging Face cache")


def test_an_explicit_model_that_does_not_fit_is_refused_with_what_fits(cli_command, offline):
    proc = qwq(cli_command, "run", "--model", "qwq-32b-preview", "--yes", "hi", env=offline)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and "Traceback" not in proc.stderr
    assert lines[0].startswith("error: QwQ-32B-Preview does not fit in memory")
    assert "what fits here, best first: `qwq-edge run --model qwq-32b-preview:iq3_xs`" in lines[0]
    pull = qwq(cli_command, "pull", "qwq-32b:q4_k_m", "--yes", env=offline)
    assert pull.returncode == 1 and "`qwq-edge pull qwq-32b-preview:iq3_xs`" in pull.stderr


@pytest.mark.parametrize("command", ["run", "chat"])
def test_a_refusal_lists_what_fits_once(cli_command, offline, command):
    prompt = ["hi"] if command == "run" else []
    model = ["--model", "deepseek-r1-distill-qwen-7b", "--yes"]
    proc = qwq(cli_command, command, *model, *prompt, env=offline, budget="3GB")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "does not fit in memory" in proc.stderr
    assert proc.stderr.count("what fits here") == 1, proc.stderr
    assert proc.stderr.count(f"`qwq-edge {command} --model deepseek-r1-distill-qwen-1.5b:q4_k_m`") == 1


def test_list_catalog_fits(cli_command, offline):
    proc = qwq(cli_command, "list", "--catalog", "--fits", env=offline)
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if ":" in line and "│" in line]
    assert "qwq-32b-preview:q4_k_m" in rows[0] and "does not fit" in rows[0]
    assert "qwq-32b-preview:iq3_xs" in rows[2] and "fits with 8-bit KV" in rows[2] and "9472" in rows[2]
    assert "16.0 GB usable; a first run takes qwq-32b-preview:iq3_xs (~" in proc.stdout
    data = json.loads(qwq(cli_command, "list", "--fits", "--format", "mlx", "--json", env=offline).stdout)
    assert data["budget_bytes"] == 16 * GB
    first = data["downloads"][0]
    assert (first["spec"], first["verdict"], first["plan"]) == ("qwq-32b-preview:4bit", "does not fit", None)
    three_bit = next(d for d in data["downloads"] if d["spec"] == "qwq-32b-preview:3bit")
    assert three_bit["repo"] == "mlx-community/QwQ-32B-Preview-3bit" and "no perplexity" in three_bit["quality"]


@pytest.mark.parametrize("columns", ["80", None])
def test_the_catalog_tables_fit_the_width_without_breaking_words(cli_command, offline, columns):
    """At 80 columns the tables fit and no name is cut; piped with no width known, nothing is left out."""
    env = {k: v for k, v in offline.items() if k != "COLUMNS"} | {"QWQ_EDGE_MEMORY_BUDGET": "16GB"}
    env |= {"COLUMNS": columns} if columns else {}

    def lines(*args):
        proc = subprocess.run([*cli_command, "list", "--catalog", *args], capture_output=True, text=True, env=env)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.splitlines()

    downloads = json.loads(qwq(cli_command, "list", "--fits", "--json", env=offline).stdout)["downloads"]
    fits, catalog = lines("--fits"), lines()
    for words in (
        [d["spec"] for d in downloads] + ["download", "plan", "needs", "does not fit", "fits with"],
        [d["name"] for d in downloads] + ["name", "downloads", "reasoning", "context"],
    ):
        table = fits if "plan" in words else catalog
        assert [w for w in words if not any(w in line for line in table)] == [], "\n".join(table)
    if columns:
        assert max(len(line) for line in fits + catalog) <= 80
        assert "repository" not in fits[1]  # the least useful column left out
    else:
        assert all(any(d["repo"] in line for line in fits) for d in downloads)
        assert any("(not reasoning)" in line and "qwen2.5-coder-0.5b:q4_k_m" in line for line in fits)


def test_info_shows_a_catalog_model_s_numbers_and_plan_before_it_is_pulled(cli_command, offline):
    info = json.loads(qwq(cli_command, "info", "qwq-32b", "--json", env=offline, budget="24GB").stdout)
    assert info["pulled"] is False and (info["layers"], info["kv_heads"], info["head_dim"]) == (64, 8, 128)
    assert info["parameters"] == 32_500_000_000 and info["context_length"] == 131072
    assert info["sampling_defaults"]["temperature"] == 0.6 and info["sampling_defaults"]["top_k"] == 20
    # 19.9 GB weights + 1.1 GB overhead + 32768 tokens × 256 KiB (fp16) or × 136 KiB (8-bit)
    assert info["default_context"] == 32768
    assert info["needs_bytes"]["f16"] == 19_900_000_000 + 536_870_912 + 597_000_000 + 8 * GiB
    assert round(info["needs_bytes"]["q8_0"] / GB, 1) == 25.6
    assert info["plan"]["kv_cache"] == "q8_0" and info["plan"]["context"] == 21248
    text = qwq(cli_command, "info", "qwq-32b", env=offline, budget="24GB").stdout
    assert "29.6 GB with f16 KV cache, 25.6 GB with q8_0 KV cache at 32768 tokens" in text
    assert "fits: 21248 tokens with q8_0 KV cache" in text


def test_a_bad_budget_is_one_line(cli_command, offline):
    for args in (["list", "--catalog", "--fits"], ["run", "--yes", "hi"], ["info", "qwq-32b"]):
        proc = qwq(cli_command, *args, env=offline, budget="abc")
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        assert proc.stderr.strip().splitlines() == [
            "error: QWQ_EDGE_MEMORY_BUDGET must be a size in bytes or with a unit such as 16GB, not 'abc'"
        ]


def test_a_local_model_file_that_does_not_fit_is_refused_with_what_fits(cli_command, offline, gguf_path):
    proc = qwq(cli_command, "run", "--model", str(gguf_path), "hi", env=offline, budget="300MB")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("error: ") and "does not fit" in lines[0]
    assert "nothing in the catalog fits" in lines[0] or "what fits here" in lines[0]
