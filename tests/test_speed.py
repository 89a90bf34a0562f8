"""The speed model (a pure function of bandwidth, sizes and context), the bandwidth probe and its cache,
and what a user sees of it: the first run's choice under a memory budget and a given speed, ``list
--catalog --fits``, the warning for a slow ``--model``, ``info``."""

import json
import subprocess
from dataclasses import replace
from time import perf_counter

import pytest

from qwq_edge.architecture.shape import ModelShape, shape_from_config
from qwq_edge.catalog.entries import find
from qwq_edge.catalog.fits import choose, plan_catalog, why
from qwq_edge.catalog.planner import model_shape
from qwq_edge.catalog.speed import (
    CPU_OPERATIONS_PER_BYTE,
    LLAMA_CPP_CPU,
    METAL,
    MachineSpeed,
    Prediction,
    bandwidth_override,
    decode_tokens_per_s,
    duration,
    min_speed,
    predict,
    prefill_tokens_per_s,
)
from qwq_edge.errors import InvalidRequestError
from qwq_edge.system import bandwidth

GB = 10**9
#: CPUs as ``QWQ_EDGE_BANDWIDTH`` gives them (the compute rate, the per-row cost's scale, in proportion).
SLOW = MachineSpeed("llama.cpp", "cpu", 20 * GB, LLAMA_CPP_CPU, "a slow CPU", 20 * GB * CPU_OPERATIONS_PER_BYTE)
FAST = MachineSpeed("llama.cpp", "cpu", 400 * GB, LLAMA_CPP_CPU, "a fast one", 400 * GB * CPU_OPERATIONS_PER_BYTE)
BASE_M1 = MachineSpeed("llama.cpp", "metal", 68 * GB, METAL, "Apple M1")
BANDWIDTH_ONLY = replace(LLAMA_CPP_CPU, fraction=0.5, layer_seconds=0.0, row_operations=0.0)
ROW_COST = replace(BANDWIDTH_ONLY, row_operations=2000)
KV_PER_TOKEN = 24 * 2 * 64 * 2 * 2  # 24 layers × 2 KV heads × 64 wide × K and V × 2 bytes


def machine(bandwidth, efficiency, flops=0.0):
    return MachineSpeed("llama.cpp", "cpu", bandwidth, efficiency, "test", compute_flops=flops)


@pytest.mark.parametrize(
    ("bandwidth", "weights", "context", "layers", "rows", "flops", "efficiency", "expected"),
    [
        (50 * GB, 1 * GB, 0, 24, 0, 0, BANDWIDTH_ONLY, 25.0),  # 25 GB/s reach the weights: 25 tokens/s
        (100 * GB, 1 * GB, 0, 24, 0, 0, BANDWIDTH_ONLY, 50.0),  # twice the bandwidth, twice the speed
        (50 * GB, 2 * GB, 0, 24, 0, 0, BANDWIDTH_ONLY, 12.5),  # twice the weights, half the speed
        (50 * GB, 1 * GB, GB / KV_PER_TOKEN, 24, 0, 0, BANDWIDTH_ONLY, 12.5),  # a KV cache as big as the weights
        # a million rows at 2,000 operations each, at 100 G operations/s: 20 ms on top of 40 ms
        (50 * GB, 1 * GB, 0, 24, 1_000_000, 100 * GB, ROW_COST, 1 / 0.06),
        (50 * GB, 1 * GB, 0, 24, 1_000_000, 1000 * GB, ROW_COST, 1 / 0.042),  # ten times the compute: 2 ms
        (50 * GB, 1 * GB, 0, 24, 1_000_000, 0, ROW_COST, 25.0),  # no compute rate known: no row cost
        # 3.6 GB at 90% of 400 GB/s is 10 ms, plus 32 layers × 0.16 ms: 15.12 ms a token
        (400 * GB, 3.6 * GB, 0, 32, 0, 0, METAL, 1 / 0.01512),
    ],
)
def test_decode_speed_from_bandwidth_sizes_rows_and_context(
    bandwidth, weights, context, layers, rows, flops, efficiency, expected
):
    shape = ModelShape("m", layers, 2, 64, int(weights), 32768, output_rows=rows)
    got = decode_tokens_per_s(machine(bandwidth, efficiency, flops), shape, "f16", context)
    assert got == pytest.approx(expected, rel=1e-3)


def test_a_thought_prompt_speed_and_their_words():
    shape = ModelShape("m", 24, 2, 64, GB, 32768, matmul_parameters=GB)
    assert prefill_tokens_per_s(machine(GB, BANDWIDTH_ONLY, 100 * GB), shape) == 50
    assert prefill_tokens_per_s(machine(GB, BANDWIDTH_ONLY), shape) == 0  # no compute rate known
    slow_half = replace(shape, matmul_types=(("Q5_0", GB // 2), ("Q4_K", GB // 2)))  # half in a type 3× slower
    slower = replace(BANDWIDTH_ONLY, prompt_type_factors=(("Q5_0", 3.0),))
    assert prefill_tokens_per_s(machine(GB, slower, 100 * GB), slow_half) == 25  # 2 G weights' worth in all
    assert [duration(s) for s in (40, 300, 840, 5400, 9000)] == ["40 s", "5 min", "14 min", "1.5 h", "2.5 h"]
    thought = Prediction(2048 / 840, 2048)  # 2,048 tokens in 14 minutes
    assert thought.thought_seconds == pytest.approx(840)
    assert thought.describe() == "~2.4 tokens/s: a medium thought (~2,048 tokens) ≈ 14 min"
    assert thought.to_dict()["predicted_decode_tokens_per_s"] == 2.44


def test_a_prediction_reads_all_but_an_untied_embedding_table_and_the_cache_at_the_thought_s_middle():
    shape = ModelShape("m", 10, 2, 64, 2 * GB, 32768, embedding_bytes=GB, matmul_parameters=GB)
    kv = shape.kv_bytes_per_token("f16")  # 10 × 2 × 64 × 2 × 2 = 5120 bytes
    got = predict(shape, "f16", machine(50 * GB, BANDWIDTH_ONLY, 100 * GB), thought_tokens=2000, prompt_tokens=500)
    assert kv == 5120
    assert got.decode_tokens_per_s == pytest.approx(25 * GB / (GB + kv * 1500))
    assert got.prefill_tokens_per_s == 50 and got.thought_tokens == 2000


def test_rows_and_types_come_from_the_tensor_table_a_config_or_the_catalog(gguf_path):
    shape = model_shape(gguf_path)
    # 24 layers × (896 query + 2 × 128 key and value + 896 output + 2 × 4864 gate and up + 896 down) + 151,936
    assert shape.output_rows == 24 * (896 + 2 * 128 + 896 + 2 * 4864 + 896) + 151_936 == 456_064
    types = dict(shape.matmul_types)
    assert sum(types.values()) == pytest.approx(shape.matmul_parameters, rel=1e-3)  # not the output layer's
    assert max(types, key=types.get) == "Q5_0"  # 896-wide rows cannot take K-quants: Q4_K_M falls back
    entry = find("qwen2.5-coder-0.5b")
    estimated = entry.shape(entry.source("gguf")).output_rows  # from the catalog's sizes alone
    assert estimated == pytest.approx(shape.output_rows, rel=0.01)
    small = find("qwen3-0.6b")
    q8 = small.shape(small.source("gguf", "q8_0"))
    assert q8.matmul_types == (("Q8_0", q8.matmul_parameters),)  # a Q8_0 download's prompt is slower
    a3b = find("qwen3-30b-a3b")
    assert a3b.shape(a3b.source("gguf")).output_rows == 0  # its parameters are not what a token runs through
    moe = {"num_hidden_layers": 48, "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128}
    moe |= {"hidden_size": 2048, "vocab_size": 151_936, "moe_intermediate_size": 768, "num_experts_per_tok": 8}
    moe |= {"num_experts": 128, "intermediate_size": 6144}
    experts = shape_from_config("a3b", moe, 0)  # the router's 128 rows, then 8 experts of 768: not 6144 wide
    assert experts.output_rows == 48 * (4096 + 2 * 512 + 2048 + 128 + 8 * (2 * 768 + 2048)) + 151_936


def test_a_small_model_falls_further_below_its_bandwidth_on_a_slower_cpu(gguf_path):
    """The row cost is counted in the machine's compute rate: it weighs on the fixture on a 2-core CPU,
    hardly on a fast one, and never caps a fast machine at a fixed speed."""
    shape = model_shape(gguf_path)
    bandwidth_only = replace(SLOW, compute_flops=0.0)  # no compute rate known: no row cost
    slow, fast = (decode_tokens_per_s(m, shape) for m in (SLOW, replace(SLOW, compute_flops=100 * 200 * GB)))
    assert slow < 0.5 * decode_tokens_per_s(bandwidth_only, shape)
    assert fast == pytest.approx(decode_tokens_per_s(bandwidth_only, shape), rel=0.02)


def test_apple_chips_by_name_and_cores():
    assert bandwidth.apple_chip("Apple M1", 8).bandwidth_bytes_per_s == 68 * GB
    assert bandwidth.apple_chip("Apple M2 Pro", 12).bandwidth_bytes_per_s == 200 * GB
    assert bandwidth.apple_chip("Apple M3 Max", 14).bandwidth_bytes_per_s == 300 * GB  # the narrower bus
    assert bandwidth.apple_chip("Apple M3 Max", 16).bandwidth_bytes_per_s == 400 * GB
    assert bandwidth.apple_chip("Apple M4 Max", 14).bandwidth_bytes_per_s == 410 * GB
    assert bandwidth.apple_chip("Apple M4 Max", 16).bandwidth_bytes_per_s == 546 * GB
    assert bandwidth.apple_chip("Apple M4 Pro", 14).generation == "M4"
    assert bandwidth.apple_chip("Intel(R) Xeon(R) Processor", 2) is None
    assert bandwidth.apple_chip("Apple M9 Max", 16) is None  # unknown: the probe decides


def test_qwq_32b_on_a_base_m1_thinks_at_about_three_tokens_per_second():
    """The issue's example: 19.9 GB of weights over 68 GB/s."""
    candidates = plan_catalog(64 * GB, "gguf", BASE_M1)
    qwq = next(c for c in candidates if c.spec == "qwq-32b-preview:q4_k_m")
    assert 2.5 < qwq.speed.decode_tokens_per_s < 3.5
    assert "a medium thought (~2,048 tokens) ≈ 1" in qwq.speed.describe()  # 11 or so minutes


def test_the_probe_is_positive_quick_and_kept_under_this_machine_s_identity(tmp_path, monkeypatch):
    monkeypatch.setenv("QWQ_EDGE_HOME", str(tmp_path))
    probe = bandwidth.measured_speed()
    assert probe.bandwidth_bytes_per_s > 1e9 and probe.matmul_flops > 1e9
    assert probe.seconds < 3
    kept = json.loads((tmp_path / "machine-speed.json").read_text())
    assert list(kept) == [bandwidth.machine_identity()] and kept[probe.identity]["seconds"] == probe.seconds
    start = perf_counter()
    assert bandwidth.measured_speed() == probe  # from the file: no second probe
    assert perf_counter() - start < 0.5
    again = bandwidth.measured_speed(refresh=True)  # what doctor does
    assert again.seconds != probe.seconds
    assert json.loads((tmp_path / "machine-speed.json").read_text())[probe.identity]["seconds"] == again.seconds
    monkeypatch.setattr(bandwidth, "machine_identity", lambda: "another machine")
    other = bandwidth.measured_speed()  # a home shared with another machine: its own probe
    assert other.identity == "another machine" and len(json.loads((tmp_path / "machine-speed.json").read_text())) == 2


def test_the_environment_overrides_are_checked(monkeypatch):
    monkeypatch.setenv("QWQ_EDGE_BANDWIDTH", "50GB/s")
    assert bandwidth_override() == 50 * GB
    monkeypatch.setenv("QWQ_EDGE_BANDWIDTH", "400e9")
    assert bandwidth_override() == 400 * GB
    monkeypatch.setenv("QWQ_EDGE_BANDWIDTH", "fast")
    with pytest.raises(InvalidRequestError, match="QWQ_EDGE_BANDWIDTH must be bytes per second"):
        bandwidth_override()
    monkeypatch.setenv("QWQ_EDGE_MIN_SPEED", "2.5")
    assert min_speed() == 2.5 and min_speed(10) == 10
    for bad in ("0", "-1", "slow"):
        monkeypatch.setenv("QWQ_EDGE_MIN_SPEED", bad)
        with pytest.raises(InvalidRequestError, match="QWQ_EDGE_MIN_SPEED must be a number of tokens per second"):
            min_speed()


#: The first run's choice (GGUF) under each budget: on a slow CPU (20 GB/s) the floor (a medium thought
#: within 5 minutes: 6.8 tokens/s) leaves only the 1.5B; on a fast machine (400 GB/s) memory decides.
EXPECTED = {
    ("slow", 8): "deepseek-r1-distill-qwen-1.5b:q4_k_m",
    ("slow", 16): "deepseek-r1-distill-qwen-1.5b:q4_k_m",
    ("slow", 24): "deepseek-r1-distill-qwen-1.5b:q4_k_m",
    ("slow", 64): "deepseek-r1-distill-qwen-1.5b:q4_k_m",
    ("fast", 8): "deepseek-r1-0528-qwen3-8b:q4_k_m",
    ("fast", 16): "qwq-32b-preview:iq3_xs",
    ("fast", 24): "qwq-32b-preview:q4_k_m",
    ("fast", 64): "qwq-32b-preview:q4_k_m",
    ("base M1", 8): "deepseek-r1-distill-qwen-7b:q4_k_m",
    ("base M1", 64): "deepseek-r1-distill-qwen-7b:q4_k_m",  # QwQ fits, at ~3 tokens/s
}
MACHINES = {"slow": SLOW, "fast": FAST, "base M1": BASE_M1}


@pytest.mark.parametrize(("machine", "budget"), list(EXPECTED))
def test_the_first_run_picks_a_model_that_fits_and_answers_in_minutes(machine, budget):
    candidates = plan_catalog(budget * GB, "gguf", MACHINES[machine])
    choice = choose(candidates)
    assert choice.spec == EXPECTED[machine, budget]
    assert choice.plan.fits and choice.speed.thought_seconds <= 300
    better = [c for c in candidates[: candidates.index(choice)] if c.reasoning and c.plan]
    assert all(c.speed.thought_seconds > 300 for c in better)  # each better one that fits is too slow
    reason = why(choice, candidates)
    assert (reason is None) == (choice is candidates[0])
    if reason:
        assert reason.endswith(f"tokens) ≈ {duration(choice.speed.thought_seconds)})") and "chose" in reason


def test_a_floor_of_one_s_own_and_none_fast_enough():
    candidates = plan_catalog(24 * GB, "gguf", SLOW)
    speeds = {c.spec: c.speed.decode_tokens_per_s for c in candidates}
    assert speeds["qwq-32b-preview:q4_k_m"] == pytest.approx(0.63, abs=0.01)  # 1.27 s reading, 0.32 s rows
    assert choose(candidates, floor=0.5).spec == "qwq-32b-preview:q4_k_m"  # the default, slow but allowed
    assert choose(candidates, floor=1).spec == "deepseek-r1-distill-qwen-14b:q4_k_m"
    assert choose(candidates, floor=2).spec == "deepseek-r1-0528-qwen3-8b:q4_k_m"
    assert choose(candidates, {"deepseek-r1-distill-qwen-7b:q4_k_m"}, floor=1).spec.endswith("7b:q4_k_m")  # on disk
    fastest = choose(candidates, {"qwq-32b:q2_k"}, floor=50)  # nothing that fast: the fastest, not what is on disk
    assert fastest.spec == "qwen3-0.6b:q8_0"
    reason = why(fastest, candidates, 50)
    assert "nothing that fits thinks at 50 tokens/s (--min-speed or QWQ_EDGE_MIN_SPEED): chose the fastest" in reason


def qwq(cli_command, *args, env, budget="24GB", speed="20GB/s", **extra):
    env = {**env, "QWQ_EDGE_MEMORY_BUDGET": budget, "QWQ_EDGE_BANDWIDTH": speed, "COLUMNS": "80", **extra}
    return subprocess.run([*cli_command, *args], capture_output=True, text=True, timeout=300, env=env, check=False)


def test_list_fits_carries_the_predictions_and_the_first_run(cli_command, offline):
    data = json.loads(qwq(cli_command, "list", "--catalog", "--fits", "--json", env=offline).stdout)
    expected = {c.spec: c.speed for c in plan_catalog(24 * GB, "gguf", SLOW)}
    for download in data["downloads"]:
        assert download["predicted_decode_tokens_per_s"] == round(expected[download["spec"]].decode_tokens_per_s, 2)
        assert download["predicted_thought_seconds"] == round(expected[download["spec"]].thought_seconds, 1)
    assert [d["spec"] for d in data["downloads"] if d["first_run"]] == ["deepseek-r1-distill-qwen-1.5b:q4_k_m"]
    floor = {"QWQ_EDGE_MIN_SPEED": "2"}
    data = json.loads(qwq(cli_command, "list", "--catalog", "--fits", "--json", env=offline, **floor).stdout)
    assert [d["spec"] for d in data["downloads"] if d["first_run"]] == ["deepseek-r1-0528-qwen3-8b:q4_k_m"]
    table = qwq(cli_command, "list", "--catalog", "--fits", env=offline).stdout.splitlines()
    assert max(len(line) for line in table) <= 80 and "tok/s" in table[1] and "thought" not in table[1]
    assert "│ 0.6   │" in next(line for line in table if "qwq-32b-preview:q4_k_m" in line)  # 0.6 tokens/s
    assert "a first run takes deepseek-r1-distill-qwen-1.5b:q4_k_m (~8.4 tokens/s" in " ".join(" ".join(table).split())
    wide = qwq(cli_command, "list", "--catalog", "--fits", env=offline, COLUMNS="100").stdout.splitlines()
    assert max(len(line) for line in wide) <= 100 and "thought" in wide[1]
    assert "│ 0.6   │ 54 min  │" in next(line for line in wide if "qwq-32b-preview:q4_k_m" in line)


def test_the_first_run_says_why_and_how_fast(cli_command, offline):
    proc = qwq(cli_command, "run", "--yes", "hi", env=offline)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert lines[0].startswith("qwq-32b-preview:q4_k_m would think here at ~0.6 tokens/s")
    assert "chose deepseek-r1-distill-qwen-1.5b:q4_k_m" in lines[0] and "≈ 4 min" in lines[0]
    assert lines[-1].startswith("error: bartowski/DeepSeek-R1-Distill-Qwen-1.5B-GGUF is not in the local")
    pull = next(line for line in lines if line.startswith("DeepSeek-R1-Distill-Qwen-1.5B q4_k_m (gguf) fits: "))
    assert "; it thinks here at ~8.4 tokens/s: a medium thought (~2,048 tokens) ≈ 4 min" in pull
    proc = qwq(cli_command, "run", "--yes", "--min-speed", "2", "hi", env=offline)
    assert "chose deepseek-r1-0528-qwen3-8b:q4_k_m" in proc.stderr and "2 tokens/s (--min-speed" in proc.stderr


def test_an_explicit_model_is_warned_about_once_and_never_refused(cli_command, offline, gguf_path):
    args = ["run", "--model", str(gguf_path), "--max-answer-tokens", "2", "--temperature", "0", "hi"]
    proc = qwq(cli_command, *args, env=offline, speed="0.1GB/s")
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and "thinks here at ~0.1 tokens/s" in warnings[0], proc.stderr
    assert "below 3.4 tokens/s (a medium thought within 5 min)" in warnings[0]
    assert "warning" not in qwq(cli_command, *args, env=offline, speed="50GB/s").stderr


def test_info_shows_the_prediction_next_to_memory(cli_command, offline):
    info = json.loads(qwq(cli_command, "info", "deepseek-r1-distill-qwen-7b", "--json", env=offline).stdout)
    candidates = plan_catalog(24 * GB, "gguf", SLOW)
    speed = next(c.speed for c in candidates if c.spec == "deepseek-r1-distill-qwen-7b:q4_k_m")
    assert info["speed"]["predicted_decode_tokens_per_s"] == round(speed.decode_tokens_per_s, 2)
    assert info["speed"]["machine"] == "20 GB/s (QWQ_EDGE_BANDWIDTH), llama.cpp on cpu"
    text = qwq(cli_command, "info", "deepseek-r1-distill-qwen-7b", env=offline).stdout
    assert "~2.6 tokens/s: a medium thought" in text and "≈ 13" in text


def test_a_bad_speed_setting_is_one_line(cli_command, offline):
    proc = qwq(cli_command, "list", "--catalog", "--fits", env=offline, speed="fast")
    assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [
        "error: QWQ_EDGE_BANDWIDTH must be bytes per second such as 50GB/s, not 'fast'"
    ]
