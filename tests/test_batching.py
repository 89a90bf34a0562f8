"""Continuous batching (``qwq_edge.engines.scheduler``) on the toy engine's pool: several generations in
threads, one pass per step for all of them, in well under a second."""

import threading
import time

import pytest
from conftest import in_threads
from toy_engine import ToyPool

from qwq_edge import ContextOverflowError, Model

GREEDY = {"temperature": 0.0, "max_answer_tokens": 24, "think": False}
PROMPTS = ["one", "two two", "three three three", "four", "five five"]


def pooled(parallel: int, **settings) -> Model:
    return Model(ToyPool(parallel, **settings), reasoning_format="think")


def alone(prompt: str, **options) -> str:
    return pooled(1).generate(prompt, **{**GREEDY, **options}).answer


def generated(model: Model, prompts: list[str], **options) -> list:
    """Each prompt generated in its own thread at once; the results in order."""
    return in_threads(lambda i: model.generate(prompts[i], **{**GREEDY, **options}), len(prompts), timeout=30)


def test_concurrent_generations_share_passes_and_each_gives_its_text_alone():
    model = Model(SlowPool(3, delay=0.005), reasoning_format="think")  # passes take time, as real ones do
    results = generated(model, PROMPTS[:3])
    assert [r.answer for r in results] == [alone(p) for p in PROMPTS[:3]]
    passes = model.engine.passes
    assert max(len(p) for p in passes) == 3  # one pass carried all three sequences
    assert len(passes) < sum(r.stats.answer_tokens + 1 for r in results) / 2


def test_a_request_past_the_pool_waits_and_joins_when_one_leaves():
    model = pooled(2)
    results = generated(model, PROMPTS)
    assert [r.answer for r in results] == [alone(p) for p in PROMPTS]
    assert all(len(p) <= 2 for p in model.engine.passes)
    assert not model.scheduler.active


def test_cancelling_one_stream_leaves_the_others_untouched():
    model = pooled(3)
    streams = [model.stream(p, **{**GREEDY, "max_answer_tokens": 200}) for p in PROMPTS[:3]]
    texts = ["", "", ""]
    done = [None, None, None]

    def read(index: int) -> None:
        for count, event in enumerate(streams[index]):
            if index == 1 and count == 3:
                streams[1].cancel()
            done[index] = event
            texts[index] += getattr(event, "text", "")

    in_threads(read, 3, timeout=30)
    assert done[1].result.stats.finish_reason == "cancelled"
    for index in (0, 2):
        assert done[index].result.stats.finish_reason == "length"
        assert done[index].result.answer == alone(PROMPTS[index], max_answer_tokens=200)


def test_an_oversized_request_gets_the_context_error_and_the_batch_goes_on():
    model = pooled(2, context_length=256)
    with pytest.raises(ContextOverflowError):
        model.generate("x" * 300, **GREEDY)
    results = generated(model, PROMPTS[:2])
    assert [r.answer for r in results] == [alone(p) for p in PROMPTS[:2]]


def test_a_repeated_prompt_takes_the_sequence_that_holds_it():
    model = pooled(2)
    first = model.generate("a long shared prompt", **GREEDY)
    generated(model, ["other"])  # takes the other, free sequence
    again = model.generate("a long shared prompt", **GREEDY)
    assert first.stats.cached_prompt_tokens == 0 and again.stats.cached_prompt_tokens > 10


def test_an_abandoned_stream_loses_its_sequence_to_a_waiting_request():
    model = pooled(1 + 1)
    model.scheduler.stale_after = 0.2
    held = [model.stream(p, **{**GREEDY, "max_answer_tokens": 200}) for p in PROMPTS[:2]]
    for stream in held:
        next(stream)  # both sequences taken, then abandoned mid-generation
    began = time.monotonic()
    assert model.generate("three", **GREEDY).answer == alone("three")
    assert time.monotonic() - began < 5


class SlowPool(ToyPool):
    """A pool whose passes take a while, noting any sequence changed while its pass ran."""

    def __init__(self, parallel: int, delay: float = 0.02) -> None:
        super().__init__(parallel)
        self.delay = delay
        self.changed_mid_pass = 0

    def decode(self, sequences) -> None:
        before = [list(sequence.cached_tokens) for sequence in sequences]
        time.sleep(self.delay)
        super().decode(sequences)
        rewritten = [list(s.cached_tokens[: len(b)]) != b for s, b in zip(sequences, before, strict=True)]
        self.changed_mid_pass += sum(rewritten)  # tokens fed meanwhile wait for the next pass: no harm


def test_a_sequence_freed_while_its_last_token_is_in_the_pass_waits_for_the_pass():
    """A generation ends right after feeding its last token, which the running pass still reads:
    the next request must not take that sequence (and rewrite it) before the pass ends."""
    pool = SlowPool(1)
    model = Model(pool, reasoning_format="think")
    prompts = [
        f"{word} " * (1 + i % 3)
        for i, word in enumerate(["one", "two", "three", "four", "five", "six", "seven", "eight"])
    ]
    results = generated(model, prompts, max_answer_tokens=3)  # 7 hand-overs: each has about even odds to race
    assert pool.changed_mid_pass == 0
    assert [r.answer for r in results] == [alone(p, max_answer_tokens=3) for p in prompts]
    model.close()


def test_a_new_holder_never_inherits_the_tokens_the_last_one_fed_but_never_ran():
    """A generation that stops right after feeding leaves tokens no pass has run: a pass must not
    run them for the next holder while its prefill rewrites the sequence (or restores a state)."""
    model = pooled(1)
    sequence = model.engine.sequences[0]
    first = model.scheduler.claim(threading.Event(), [1, 2])
    sequence.feed([1, 2, 3])
    sequence.logits()  # runs the pass
    sequence.feed([4, 5])  # fed, never run: the generation ends here
    model.scheduler.release(first)
    model.scheduler.claim(threading.Event(), [1, 2, 3, 9])
    assert sequence.pending == 0 and sequence.cached_tokens == [1, 2, 3]


class HeldPool(ToyPool):
    """A pool whose pass, once it has run every sequence's tokens, waits for ``proceed``."""

    def __init__(self, parallel: int) -> None:
        super().__init__(parallel)
        self.ran, self.proceed = threading.Event(), threading.Event()

    def decode(self, sequences):
        super().decode(sequences)
        self.ran.set()
        assert self.proceed.wait(10)


def test_logits_are_read_only_once_the_pass_that_ran_their_tokens_has_ended():
    """A pass marks a sequence's tokens run before it says where their logits are: a generation
    that looks between the two (no tokens pending) would read another sequence's row."""
    pool = HeldPool(2)
    first, second = pool.sequences
    for sequence in pool.sequences:
        pool.scheduler.claim(threading.Event(), [])
        sequence.feed([1, 2])
    runner = threading.Thread(target=second.logits)
    runner.start()
    assert pool.ran.wait(10) and first.pending == 0  # its tokens are run, the pass not over
    reader = threading.Thread(target=first.logits)
    reader.start()
    reader.join(0.3)
    waited = reader.is_alive()
    pool.proceed.set()
    runner.join(10)
    reader.join(10)
    assert waited and not reader.is_alive() and not runner.is_alive()


def test_a_rewind_waits_for_the_pass_that_evaluates_the_tokens_it_takes_back():
    """A budget cut takes back tokens right after they were fed, while their pass may run."""
    pool = SlowPool(2)
    model = Model(pool, reasoning_format="think")
    options = {"think": True, "max_thinking_tokens": 8, "max_answer_tokens": 4, "temperature": 1.0, "seed": 0}
    results = generated(model, PROMPTS[:4], **options)
    assert all(r.stats.budget_cut_tokens for r in results)  # every cut took tokens back
    assert pool.changed_mid_pass == 0
    assert [r.answer for r in results] == [alone(p, **options) for p in PROMPTS[:4]]
    model.close()


def scripted_pool(parallel: int, text: str) -> Model:
    model = pooled(parallel)
    for sequence in model.engine.sequences:
        sequence.say(0, text)
    return model


def test_a_generation_alone_in_a_pool_drafts_and_stops_while_others_share_the_passes():
    """Speculation and batching combine as far as a pass serves one sequence: a generation
    drafts while it is alone, not while another runs, and again once it is alone."""
    text, options = "abc " * 40, {**GREEDY, "max_answer_tokens": 60, "draft": "ngram"}
    single = scripted_pool(2, text).generate("Hi", **options)
    assert single.stats.draft_accepted > 10
    assert single.answer == scripted_pool(2, text).generate("Hi", **{**options, "draft": "off"}).answer
    model = scripted_pool(2, text)
    long = model.stream("Ho", **options)
    next(long)  # alone for now
    short = model.stream("Hi", **{**options, "max_answer_tokens": 20})
    events = []
    for event in short:  # both hold a sequence until the short one ends
        events.append(event)
        next(long)
    assert events[-1].result.stats.draft_proposed == 0
    rest = list(long)
    assert rest[-1].result.stats.draft_accepted > 10  # alone again after the short one ended
    assert rest[-1].result.answer == single.answer


def test_a_stream_held_while_another_request_comes_and_goes_resumes():
    """Held past the grace, a stream's pending token waits while another request's passes run;
    when it resumes after that request has ended, its token runs (with no other generation
    left to wake the decoding thread)."""
    model = pooled(2)
    held = model.stream(PROMPTS[0], **GREEDY)
    head = [next(held) for _ in range(3)]
    time.sleep(0.05)  # past the grace: the other request's passes go without it
    model.generate(PROMPTS[1], **GREEDY)
    (rest,) = in_threads(lambda _: list(held), 1, timeout=10)
    assert rest is not None, "the resumed stream never got its pass"
    assert "".join(e.text for e in [*head, *rest[:-1]] if hasattr(e, "text")) == alone(PROMPTS[0])
