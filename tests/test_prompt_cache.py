"""The prompt cache (``engines/prompt_cache.py``): no text prefilled twice, across sequences,
requests and restarts. Its bookkeeping on real files; its states on real llama.cpp and MLX."""

from __future__ import annotations

import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from conftest import in_threads
from serving import http, metric, running_server
from test_batching import GREEDY, pooled

from qwq_edge import load
from qwq_edge.convert import convert_to_mlx
from qwq_edge.convert.synthetic import SyntheticSpec, make_checkpoint
from qwq_edge.engines.base import reusable_prefix
from qwq_edge.engines.prompt_cache import MAGIC, DiskCache, PromptCache
from qwq_edge.services.testdata import fixture_tokenizer_json

IDENTITY = {"model": "m.gguf", "size": 1, "engine": "llama.cpp", "kv_cache": "f16"}
#: A document long enough for the disk cache (over 1,024 tokens), in a chat's first message.
DOCUMENT = " ".join(
    f"Clause {i}: the tenant keeps the garden tidy and pays rent on day {i % 28 + 1}." for i in range(75)
)
QUESTION = [{"role": "user", "content": DOCUMENT + "\nWhich day is rent due under clause 7?"}]
SIDE = [{"role": "user", "content": "Give this chat a title."}]
SHORT = {"reasoning_format": "none", "max_answer_tokens": 6, "temperature": 0.0}


# -- the cache's bookkeeping -----------------------------------------------------------


def test_memory_keeps_the_most_recent_states_within_its_cap():
    cache = PromptCache(cap_bytes=250, min_tokens=2)
    for first in (1, 2, 3):
        cache.put([first, 0, 0], bytes(100))
    assert len(cache) == 2 and cache.bytes <= 250
    assert cache.longest([1, 0, 0, 5]) is None  # the oldest went first
    cache.longest([2, 0, 0])  # used: now the most recent
    cache.put([4, 0, 0], bytes(100))
    assert cache.longest([2, 0, 0, 9])[1] == 3 and cache.longest([3, 0, 0]) is None


def test_the_longest_shared_prefix_wins_and_short_ones_are_not_kept():
    cache = PromptCache(cap_bytes=10_000, min_tokens=3)
    cache.put([1, 2], b"x")  # too short to be worth it
    cache.put([1, 2, 3, 4], b"a")
    cache.put([1, 2, 3, 4, 5, 6], b"b")
    prefix, shared = cache.longest([1, 2, 3, 4, 5, 9])
    assert (prefix.state, shared, prefix.where) == (b"b", 5, "memory")
    assert len(cache) == 2


def test_a_disk_cache_serves_another_process_and_ignores_what_is_not_its_own(tmp_path):
    tokens = list(range(40))
    writer = DiskCache(tmp_path, IDENTITY, cap_bytes=10**6, min_tokens=8)
    writer.save_later(tokens, b"state" * 10)
    writer.flush()
    first = DiskCache(tmp_path, IDENTITY, cap_bytes=10**6, min_tokens=8)
    prefix, shared = first.longest([*tokens[:30], 99], better_than=0)
    assert (prefix.state, shared, prefix.where) == (b"state" * 10, 30, "disk")
    other = DiskCache(tmp_path, {**IDENTITY, "model": "other.gguf"}, cap_bytes=10**6, min_tokens=8)
    assert other.longest(tokens, better_than=0) is None  # another model's file: not read, not removed
    assert len(list(tmp_path.glob("*.qpc"))) == 1


@pytest.mark.parametrize("damage", ["truncated", "not a cache file", "another identity"])
def test_a_damaged_or_foreign_file_is_refused_with_a_line_removed_and_written_again(tmp_path, damage):
    tokens = list(range(40))
    cache = DiskCache(tmp_path, IDENTITY, cap_bytes=10**6, min_tokens=8)
    cache.save_later(tokens, bytes(1000))
    cache.flush()
    (path,) = tmp_path.glob("*.qpc")
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[:-10])
    elif damage == "not a cache file":
        path.write_bytes(b"hello" + data[len(MAGIC) :])
    else:
        path.write_bytes(data.replace(b'"m.gguf"', b'"x.gguf"'))
    fresh = DiskCache(tmp_path, IDENTITY, cap_bytes=10**6, min_tokens=8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert fresh.longest(tokens, better_than=0) is None
    assert any("ignored and removed" in str(w.message) for w in caught) and not path.exists()
    fresh.save_later(tokens, bytes(1000))
    fresh.flush()
    assert DiskCache(tmp_path, IDENTITY, 10**6, 8).longest(tokens, better_than=0)[0].state == bytes(1000)


def test_the_disk_cap_removes_the_least_recently_used_files(tmp_path):
    cache = DiskCache(tmp_path, IDENTITY, cap_bytes=2500, min_tokens=8)
    for first in range(4):
        cache.save_later([first, *range(20)], bytes(1000))
        cache.flush()
    assert sum(p.stat().st_size for p in tmp_path.glob("*.qpc")) <= 2500
    assert cache.longest([3, *range(20)], better_than=0) is not None
    assert cache.longest([0, *range(20)], better_than=0) is None


WRITER = """
import sys
from pathlib import Path
from qwq_edge.engines.prompt_cache import DiskCache
cache = DiskCache(Path(sys.argv[1]), {"model": "m"}, cap_bytes=10**9, min_tokens=8)
for _ in range(5):
    cache._save(tuple(range(64)), bytes([int(sys.argv[2])]) * 4_000_000)
"""


@pytest.mark.subprocess
def test_two_processes_writing_one_prefix_leave_a_whole_file(tmp_path):
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(n)]) for n in (1, 2)]
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    prefix, shared = DiskCache(tmp_path, {"model": "m"}, 10**9, 8).longest(list(range(64)), better_than=0)
    assert shared == 64 and prefix.state in (bytes([1]) * 4_000_000, bytes([2]) * 4_000_000)


# -- which sequence a request takes (toy pool) ------------------------------------------


def test_a_side_request_takes_the_sequence_that_loses_least_not_the_long_conversation():
    """The conversation's sequence is the least recently used, yet the short side request that
    shares its start takes the other one; the conversation's next turn finds its tokens."""
    model = pooled(2)
    conversation = "a long conversation about gardens and rent and clauses " * 3
    model.generate(conversation, **GREEDY)
    in_threads(lambda _: model.generate("other", **GREEDY), 1)  # the other sequence, used last
    model.generate(conversation[:30] + "title?", **GREEDY)  # shares the start only
    again = model.generate(conversation + "more", **GREEDY)
    shared = reusable_prefix(model.prompt_tokens(conversation), model.prompt_tokens(conversation + "more"))
    assert again.stats.cached_prompt_tokens == shared > 100


# -- real llama.cpp ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def cached_model(gguf_path, tmp_path_factory):
    folder = tmp_path_factory.mktemp("prompt-cache")
    with load(gguf_path, context_length=4096, prompt_cache_dir=folder) as model:
        yield model, folder


def test_a_conversation_after_an_unrelated_request_starts_from_memory_with_the_same_text(cached_model):
    model, _ = cached_model
    first = model.generate(QUESTION, **SHORT)
    model.generate(SIDE, **SHORT)  # overwrites the one sequence: its prompt's state goes to memory
    again = model.generate(QUESTION, **SHORT)
    assert again.stats.cached_prompt_from == "memory"
    assert again.stats.cached_prompt_tokens == again.stats.prompt_tokens - 1
    assert again.answer == first.answer
    with load(model.info.model_path, context_length=4096, cache_ram=0, disk_cache=False) as plain:
        assert plain.generate(QUESTION, **SHORT).answer == first.answer


def test_a_prefix_made_by_one_sequence_is_served_to_another(gguf_path):
    with load(gguf_path, context_length=2048, parallel=2, disk_cache=False) as model:
        one, two = model.engine.sequences
        tokens = model.prompt_tokens(QUESTION)
        one.prefill(tokens)
        expected = one.new_sampler(model.sampling.replace(temperature=0.0), 0).sample()
        one.prefill(model.prompt_tokens(SIDE))  # drops the long prompt: its state is kept
        assert two.prefill(tokens) == len(tokens) - 1 and two.cached_from == "memory"
        assert two.new_sampler(model.sampling.replace(temperature=0.0), 0).sample() == expected


@pytest.mark.server
def test_a_disk_cache_survives_a_server_restart(cli_command, gguf_path, tmp_path):
    body = {"model": "", "messages": QUESTION, "max_tokens": 4, "temperature": 0, "reasoning_format": "none"}
    flags = ("--prompt-cache", str(tmp_path), "--ctx", "4096")
    replies = []
    for _ in range(2):
        with running_server(cli_command, gguf_path, *flags) as server:
            replies.append(http("POST", f"{server.url}/v1/chat/completions", body).body)
            assert _flushed(tmp_path)
            scraped = http("GET", f"{server.url}/metrics").body
    first, second = (reply["usage"]["prompt_tokens_details"] for reply in replies)
    assert first["cached_tokens"] == 0
    assert second["cached_from"] == "disk" and second["cached_tokens"] >= replies[1]["usage"]["prompt_tokens"] - 1
    assert metric(scraped, "qwq_edge_prompt_cache_hits_total", source="disk") == 1  # the second server's
    assert metric(scraped, "qwq_edge_tokens_total", kind="cached_prompt") == second["cached_tokens"]
    assert replies[0]["choices"][0]["message"]["content"] == replies[1]["choices"][0]["message"]["content"]


def _flushed(folder: Path) -> bool:
    """The background write of the first request's prompt has landed (a few seconds at most)."""
    deadline = time.monotonic() + 30
    while not list(folder.glob("*.qpc")) and time.monotonic() < deadline:
        time.sleep(0.1)
    return bool(list(folder.glob("*.qpc")))


# -- real MLX ---------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["bfloat16", "float16"])
def mlx_folder(request, tmp_path_factory) -> Path:
    """A random Qwen2 with Qwen2.5's tokenizer in MLX format (its KV cache in the weights' type)."""
    root = tmp_path_factory.mktemp(f"mlx-{request.param}")
    spec = SyntheticSpec(64, 128, 2, 4, 2, 151_936, 0, False, request.param)
    source = make_checkpoint(root / "tiny", spec, tokenizer_json=fixture_tokenizer_json())
    convert_to_mlx(source, root / "tiny-mlx", bits=16, verify=False)
    return root / "tiny-mlx"


@pytest.mark.mlx
def test_an_mlx_conversation_after_an_unrelated_request_starts_from_memory_with_the_same_text(mlx_folder):
    with load(mlx_folder, engine="mlx", context_length=2048, disk_cache=False) as model:
        first = model.generate(QUESTION, **SHORT)
        model.generate(SIDE, **SHORT)  # the one cache now holds the side request: the question's state is kept
        again = model.generate(QUESTION, **SHORT)
    assert again.stats.cached_prompt_from == "memory"
    assert again.stats.cached_prompt_tokens == again.stats.prompt_tokens - 1
    assert again.answer == first.answer
    with load(mlx_folder, engine="mlx", context_length=2048, cache_ram=0, disk_cache=False) as plain:
        assert plain.generate(QUESTION, **SHORT).answer == first.answer


@pytest.mark.mlx
def test_an_mlx_pool_serves_a_prefix_to_another_sequence_and_to_one_in_the_batch(mlx_folder):
    with load(mlx_folder, engine="mlx", context_length=2048, parallel=2, disk_cache=False) as model:
        one, two = model.engine.sequences
        tokens, greedy = model.prompt_tokens(QUESTION), model.sampling.replace(temperature=0.0)
        one.prefill(tokens)
        expected = one.new_sampler(greedy, 0).sample()
        one.prefill(model.prompt_tokens(SIDE))  # drops the long prompt (its state is kept); one is in the batch
        assert two.prefill(tokens) == len(tokens) - 1 and two.cached_from == "memory"
        assert two.new_sampler(greedy, 0).sample() == expected
        two.prefill(model.prompt_tokens(SIDE))
        assert two in model.engine._rows  # so the next restore takes it out of the batch first
        assert two.prefill(tokens) == len(tokens) - 1 and two.cached_from == "memory"
        assert two.new_sampler(greedy, 0).sample() == expected


@pytest.mark.mlx
def test_an_mlx_disk_cache_serves_the_next_load(mlx_folder, tmp_path):
    answers = []
    for _ in range(2):
        with load(mlx_folder, engine="mlx", context_length=2048, prompt_cache_dir=tmp_path) as model:
            result = model.generate(QUESTION, **SHORT)
            model.engine.prompt_cache.disk.flush()
        answers.append(result)
    assert answers[0].stats.cached_prompt_tokens == 0
    assert answers[1].stats.cached_prompt_from == "disk"
    assert answers[1].answer == answers[0].answer
