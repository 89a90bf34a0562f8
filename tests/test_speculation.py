"""Speculative decoding on the toy engine: the controller sees the same tokens with and without it.

Three proposers are compared with no speculation on every reasoning control: prompt
lookup (``ngram``), an oracle that drafts the rest of the run without speculation
(every draft right, so budgets, forced texts and rewinds fall in the middle of a
draft), and an adversary whose drafts are the tokens the controller bans.
"""

from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np
import pytest
from toy_engine import ToyEngine

from qwq_edge import Done, Model
from qwq_edge.engines.base import CPU_PASS_COSTS
from qwq_edge.sampling import SamplingParams
from qwq_edge.speculation.ngram import NgramIndex
from qwq_edge.speculation.proposers import DraftModelProposer, NgramProposer, draft_seed
from qwq_edge.speculation.tuner import DraftTuner, expected_yield
from qwq_edge.speculation.verifier import rejection_step

GREEDY = {"temperature": 0.0}
TIMINGS = ("seed", "time_to_first_token", "prefill_seconds", "decode_seconds", "thinking_seconds", "total_seconds")
SPECULATION = ("draft", "draft_proposed", "draft_accepted", "decode_passes")


class Oracle:
    """Drafts the tokens a run without speculation produced, as far as the history agrees."""

    name, draft_cost = "oracle", 0.0

    @staticmethod
    def prior(kind: int) -> float:
        return 0.5

    def __init__(self, expected: Sequence[int], history: Sequence[int]) -> None:
        self.expected, self.history = list(expected), list(history)

    def extend(self, tokens: Sequence[int]) -> None:
        self.history.extend(tokens)

    def truncate(self, length: int) -> None:
        del self.history[length:]

    def available(self) -> tuple[int, int]:
        n = len(self.history)
        agrees = self.expected[:n] == self.history
        return n, (len(self.expected) - n if agrees else 0) + 3  # and three tokens past the end

    def propose(self, k: int) -> list[int]:
        n = len(self.history)
        return (self.expected[n:] + [ord("q")] * 3)[:k]

    @staticmethod
    def distributions() -> None:
        return None


class Adversary(Oracle):
    """Drafts ``bad`` tokens only: each must be rejected (a banned one by the mask)."""

    name = "adversary"

    def __init__(self, bad: Sequence[int], history: Sequence[int]) -> None:
        super().__init__((), history)
        self.bad = list(bad)

    def available(self) -> tuple[int, int]:
        return len(self.history), len(self.bad)  # a new kind each time: the tuner keeps trying

    def propose(self, k: int) -> list[int]:
        return self.bad[:k]


def budget(toy: Model) -> dict:
    return {"max_thinking_tokens": 7, "max_answer_tokens": 3}


def minimum(toy: Model) -> dict:
    toy.engine.script = {2: toy.engine.id("</think>")}
    return {"min_thinking_tokens": 6, "max_thinking_tokens": 10, "max_answer_tokens": 2}


def rewound_marker(toy: Model) -> dict:
    toy.engine.say(3, "**Final Answer**")
    return {"reasoning_format": "qwq-preview", "min_thinking_tokens": 40, "max_thinking_tokens": 45}


def loop_guard(toy: Model) -> dict:
    toy.engine.say(0, "the cat sat down. " * 6)
    return {"max_thinking_tokens": 120, "max_answer_tokens": 1}


def language_guard(toy: Model) -> dict:
    toy.engine.bias[[toy.engine.id("你"), toy.engine.id("好")]] = 40.0
    return {"think": False, "max_answer_tokens": 6, "language": "en"}


def end_while_thinking(toy: Model) -> dict:
    end = toy.engine.id("<|im_end|>")
    toy.engine.script = {3: end, 7: end, 0: toy.engine.id("你")}
    return {"language": "en", "language_in_thinking": True}


def sampled(toy: Model) -> dict:
    return {"max_thinking_tokens": 30, "max_answer_tokens": 6, "temperature": 1.0, "seed": 11, "top_k": 5}


SCENARIOS = (budget, minimum, rewound_marker, loop_guard, language_guard, end_while_thinking, sampled)


def run(scenario: Callable[[Model], dict], proposer=None) -> tuple[list, list[int], dict]:
    """Events (``Done`` without timings), the cache's tokens, and the speculation counts."""
    toy = Model(ToyEngine(), reasoning_format="think")
    options = {**GREEDY, **scenario(toy)}
    if proposer is not None:
        toy.drafts.proposer = lambda draft, history, **_: proposer(history)
    events = list(toy.stream("Hi", **options))
    stats = events[-1].result.stats
    counts = {name: getattr(stats, name) for name in SPECULATION}
    for name in (*TIMINGS, *SPECULATION):
        setattr(stats, name, None)
    return events, toy.engine._tokens, counts


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_proposer_gives_the_controller_the_same_tokens(scenario):
    events, tokens, plain = run(scenario)
    assert plain["draft"] == "off" and plain["draft_proposed"] == 0
    stats = events[-1].result.stats
    sampled = stats.thinking_tokens + stats.answer_tokens
    toy = ToyEngine()
    bad = [toy.id("<|im_end|>"), toy.id("你"), toy.id("</think>"), ord("z")]
    proposers = {
        "ngram": lambda history: NgramProposer(history, 16),
        "oracle": lambda history: Oracle(tokens, history),
        "adversary": lambda history: Adversary(bad, history),
    }
    for name, proposer in proposers.items():
        spec_events, spec_tokens, counts = run(scenario, proposer)
        assert spec_tokens == tokens, name
        assert spec_events == events, name
        assert counts["draft_accepted"] <= counts["draft_proposed"]
        if name == "oracle":  # nearly every token came from a draft, in far fewer passes
            assert counts["draft_accepted"] + counts["decode_passes"] >= sampled
            assert counts["decode_passes"] <= sampled / 2
        if name == "adversary":
            assert counts["draft_proposed"] > 0 and counts["draft_accepted"] <= counts["draft_proposed"] // 2


def test_a_banned_draft_is_rejected_even_where_the_model_prefers_it():
    def chinese(toy: Model) -> dict:
        toy.engine.bias[toy.engine.id("你")] = 60.0  # the model's top choice everywhere
        return {"think": False, "max_answer_tokens": 8, "language": "en"}

    _, tokens, _ = run(chinese)
    _, spec_tokens, counts = run(chinese, lambda history: Adversary([ToyEngine().id("你")] * 4, history))
    assert spec_tokens == tokens and ToyEngine().id("你") not in tokens
    assert counts["draft_proposed"] >= 8 and counts["draft_accepted"] == 0


def test_a_cancel_in_the_middle_of_a_draft_leaves_only_seen_tokens_in_the_cache():
    _, tokens, _ = run(budget)
    toy = Model(ToyEngine(), reasoning_format="think")
    toy.drafts.proposer = lambda draft, history, **_: Oracle(tokens, history)
    stream = toy.stream("Hi", max_thinking_tokens=7, **GREEDY)
    for _ in range(3):
        next(stream)
    toy.cancel()
    done = list(stream)[-1]
    assert isinstance(done, Done) and done.result.stats.finish_reason == "cancelled"
    stats = done.result.stats
    assert toy.engine.position == stats.prompt_tokens + stats.generated_tokens
    assert toy.engine._tokens == tokens[: toy.engine.position]


def test_stats_report_drafts_acceptance_and_tokens_per_pass():
    _, tokens, _ = run(budget)
    toy = Model(ToyEngine(), reasoning_format="think")
    toy.drafts.proposer = lambda draft, history, **_: Oracle(tokens, history)
    stats = toy.generate("Hi", **GREEDY, **budget(toy)).stats
    data = stats.to_dict()
    assert data["draft"] == "oracle" and data["draft_proposed"] >= data["draft_accepted"] > 0
    assert data["draft_acceptance_rate"] == round(stats.draft_accepted / stats.draft_proposed, 4)
    assert data["tokens_per_pass"] > 2 and data["decode_passes"] == stats.decode_passes
    assert toy.engine.passes == stats.decode_passes + 1  # and the prompt's


def test_the_ngram_option_runs_prompt_lookup():
    toy = Model(ToyEngine(), reasoning_format="think")
    toy.engine.say(0, "abc abc abc abc abc abc abc abc")
    result = toy.generate("Hi", draft="ngram", max_thinking_tokens=30, max_answer_tokens=2, **GREEDY)
    stats = result.stats
    assert stats.draft == "ngram" and stats.draft_accepted > 10 and stats.tokens_per_pass > 1.5


def test_the_index_finds_the_longest_earlier_suffix():
    index = NgramIndex([1, 2, 3, 4, 9, 2, 3, 5, 7, 3])
    assert index.propose(3) == ([5, 7, 3], 1)  # only "3" matched; its latest occurrence counts
    index.extend([4])
    assert index.propose(2) == ([9, 2], 2)  # "3 4" occurred once, followed by 9
    index.extend([9, 2, 3])
    assert index.propose(8) == ([5, 7, 3, 4, 9, 2, 3], 5)  # "3 4 9 2 3", then up to the end
    index.truncate(4)
    assert index.tokens == [1, 2, 3, 4] and index.propose(4) == ([], 0)


def test_of_several_occurrences_the_index_follows_the_one_sharing_the_most_context():
    """A text that repeats itself with variations (a loop, a list): the latest occurrence of the
    suffix continues one way, an older one whose preceding tokens also match another."""
    gram, older, newer = list(range(1, 9)), list(range(20, 36)), list(range(60, 76))
    index = NgramIndex([*older, *gram, 50, 51, *newer, *gram, 80, 81, *older, *gram])
    assert index.propose(2) == ([50, 51], 8)
    index.extend([50, 51, *newer, *gram])
    assert index.propose(2) == ([80, 81], 8)


def test_the_tuner_drafts_long_when_drafts_pass_and_switches_off_when_they_do_not():
    tuner = DraftTuner(CPU_PASS_COSTS)
    assert tuner.best(5, 64) == 0  # an untried kind at 50% does not pay on a CPU
    for k in (2, 4, 8, 16, 32, 64, 64):
        tuner.record(8, k, k)
    assert tuner.best(8, 64) >= 32 and tuner.rate(8) > 0.95
    tuner.record(8, 64, 0)  # the copied passage ended: k falls back at once
    assert tuner.best(8, 64) <= 2
    for _ in range(30):
        tuner.record(8, 2, 1)
    assert tuner.best(8, 64) == 0
    probes = sum(tuner.best(8, 64) > 0 for _ in range(1000))
    assert 0 < probes <= 1000 // 128  # a short probe now and then, rarer and rarer
    assert expected_yield(1.0, 4) == 5 and expected_yield(0.5, 1) == 1.5


#: Two sampled tokens (top-4 each: 16 outcomes, 15 degrees of freedom): chi-square's 0.1% critical value.
CHI2_CRITICAL_DF15 = 37.70


def sampled_pairs(draft_seed_of, runs: int) -> tuple[Counter, int, int, list[int]]:
    """The last two tokens of ``runs`` seeded generations drafted by a perturbed copy of the
    toy model, drawing with the target's settings from the seed ``draft_seed_of(seed)``."""
    toy = Model(ToyEngine(), reasoning_format="think")
    draft = ToyEngine()
    draft._out = draft._out + np.random.default_rng(1).normal(0.0, 0.5, draft._out.shape)
    toy.drafts.proposer = lambda name, history, sampling, seed, **_: DraftModelProposer(
        draft, history, 0.0, 4, sampling, draft_seed_of(seed)
    )
    pairs, proposed, accepted = Counter(), 0, 0
    for seed in range(runs):
        stats = toy.generate("Hi", seed=seed, draft="toy", **SAMPLED_PAIR).stats
        pairs[tuple(toy.engine._tokens[-2:])] += 1
        proposed, accepted = proposed + stats.draft_proposed, accepted + stats.draft_accepted
    return pairs, proposed, accepted, toy.engine._tokens[:-2]


SAMPLED_PAIR = {"think": False, "max_answer_tokens": 2, "temperature": 1.0, "top_k": 4}


def chi_square(pairs: Counter, prefix: list[int]) -> float:
    """Against the target's exact distribution of the two tokens after ``prefix``."""
    runs, engine = sum(pairs.values()), ToyEngine()
    sampler = engine.new_sampler(SamplingParams(temperature=1.0, top_k=4), 0)
    engine.prefill(prefix)
    first, total = sampler.probabilities(engine.end_of_generation), 0.0
    for a in np.flatnonzero(first):
        engine.rewind(len(prefix))
        engine.feed([int(a)])
        second = sampler.probabilities()
        for b in np.flatnonzero(second):
            expected = runs * first[a] * second[b]
            total += (pairs[(int(a), int(b))] - expected) ** 2 / expected
    return total


def test_a_sampled_draft_keeps_the_targets_distribution():
    pairs, proposed, accepted, prefix = sampled_pairs(draft_seed, 2000)
    assert 0 < accepted < proposed  # drafts both kept and replaced by the residual's draw
    assert chi_square(pairs, prefix) < CHI2_CRITICAL_DF15
    # The test's power: drafts drawn from the target's own RNG stream are correlated with its
    # acceptance draws, and the bias shows.
    pairs, *_ = sampled_pairs(lambda seed: seed, 2000)
    assert chi_square(pairs, prefix) > 5 * CHI2_CRITICAL_DF15


def test_the_rejection_rule_on_its_own():
    p, q = np.array([0.5, 0.5, 0.0]), np.array([0.1, 0.1, 0.8])
    rng = np.random.default_rng(0)
    draws = [rejection_step(p, q, int(rng.choice(3, p=q)), rng) for _ in range(20000)]
    assert abs(np.mean(np.array(draws) == 0) - 0.5) < 0.02 and 2 not in draws
    assert rejection_step(p, p, 1, rng) == 1  # a draft from the target's own distribution always passes
