"""``qwq-edge eval`` end to end on the shipped sample problems with the 0.5B model."""

import json
import subprocess

from qwq_edge.services.evaluate import SAMPLE_DATA, load_problems

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def qwq(cli_command, *args):
    return subprocess.run([*cli_command, *args], capture_output=True, text=True, timeout=600, check=False)


def test_the_sample_file_is_shipped_and_valid():
    problems = load_problems(SAMPLE_DATA)
    assert len(problems) >= 10 and len({p.id for p in problems}) == len(problems)


def test_eval_writes_table_json_and_png_and_resumes(cli_command, gguf_path, tmp_path):
    out = tmp_path / "eval"
    args = [
        "eval", "-m", str(gguf_path), "--ctx", "2048", "--reasoning-format", "think", "--budgets", "8,32",
        "--limit", "2", "--max-answer-tokens", "24", "--temperature", "0", "--out", str(out),
    ]  # fmt: skip
    proc = qwq(cli_command, *args)
    assert proc.returncode == 0, proc.stderr
    assert "accuracy" in proc.stdout and "mean thinking tokens" in proc.stdout
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and {r["budget"] for r in rows} == {8, 32}
    assert all(r["thinking_tokens"] <= r["budget"] for r in rows)
    summary = json.loads((out / "summary.json").read_text())
    assert [b["budget"] for b in summary["budgets"]] == [8, 32]
    assert (out / "accuracy_vs_thinking.png").read_bytes()[:8] == PNG_SIGNATURE
    # A rerun skips what is done; a line cut by an interruption is redone.
    with (out / "results.jsonl").open("a") as handle:
        handle.write('{"id": "apples", "budg')
    again = qwq(cli_command, *args, "--json")
    assert again.returncode == 0, again.stderr
    lines = (out / "results.jsonl").read_text().splitlines()
    assert len([line for line in lines if line.endswith("}")]) == 4
    assert json.loads(again.stdout)["budgets"][0]["runs"] == 2
    # With votes, each run is two thoughts and their majority, beside one thought's accuracy.
    args[args.index("8,32")], args[args.index("--limit") + 1] = "8", "1"
    voted = qwq(cli_command, *args, "--votes", "2", "--temperature", "0.8")
    assert voted.returncode == 0, voted.stderr
    assert "2 votes each" in voted.stdout and "one thought" in voted.stdout
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 5 and rows[4]["votes"] == 2
    assert all(0 <= r["single_correct"] <= 1 and r["correct"] in (True, False) for r in rows[4:])
    assert json.loads((out / "summary.json").read_text())["budgets"][0]["votes"] == 2


def test_eval_bad_input_is_one_line(cli_command, gguf_path, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "no answer here"}\n')
    proc = qwq(cli_command, "eval", "-m", str(gguf_path), "--data", str(bad), "--budgets", "8")
    assert proc.returncode == 1 and proc.stderr.startswith("error: ") and "line 1" in proc.stderr
    proc = qwq(cli_command, "eval", "-m", str(gguf_path), "--budgets", "8,x")
    assert proc.returncode == 2 and "comma-separated" in proc.stderr
