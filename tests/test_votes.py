"""Votes over several thoughts (``generate(votes=K)``, ``run --votes K``) and ``n`` choices on
chat completions: the tally as a function, then the real 0.5B GGUF in process, through the CLI
and through the server with the official ``openai`` client."""

import json
import subprocess

import openai
import pytest
from conftest import LONG_THINKING_PROMPT
from serving import running_server

from qwq_edge import Done, GenerationResult, GenerationStats, InvalidRequestError
from qwq_edge.runtime.votes import VoteResult, count_votes, final_answer
from qwq_edge.sampling import TokenLogprob

QUESTION = "Tom has 3 bags of 7 apples and eats 2. How many apples are left? Put the final answer in \\boxed{}."
SAMPLED = {"think": False, "temperature": 1.0, "max_answer_tokens": 40}


def thought(answer: str, *logprobs: float, thinking: str = "") -> GenerationResult:
    entries = tuple(TokenLogprob(1, b"x", value) for value in logprobs)
    return GenerationResult(thinking, answer, GenerationStats(), entries)


def test_the_majority_wins_counting_equal_answers_in_any_form():
    thoughts = [
        thought("So \\boxed{\\frac{1}{2}}.", -0.9),
        thought("The answer is 0.5", -0.8),
        thought("\\boxed{3}", -0.1),
        thought("no number here", -0.01, thinking="I think it is 1/2"),
    ]
    vote = count_votes(thoughts, seconds=2.0)
    assert vote.majority == "\\frac{1}{2}" and dict(vote.tally) == {"\\frac{1}{2}": 3, "3": 1}
    # shown: the winners' most likely thought whose answer gives it (not the one with it in its thinking only)
    assert vote.chosen == 1 and not vote.tie
    assert vote.answer == "The answer is 0.5" and vote.results == tuple(thoughts)
    cut = GenerationStats(finish_reason="length")
    looping = GenerationResult("42 42 42", "", cut, (TokenLogprob(1, b"x", -0.001),))
    assert count_votes([thought("\\boxed{42}", -0.5), looping]).chosen == 0  # a thought cut short is not shown


def test_a_tie_goes_to_the_thought_with_the_highest_mean_log_probability():
    thoughts = [thought("\\boxed{4}", -0.5, -0.5), thought("\\boxed{5}", -0.2, -0.4), thought("\\boxed{4}", -2.0)]
    thoughts.append(thought("\\boxed{5}", -3.0))
    vote = count_votes(thoughts)
    assert vote.tie and vote.majority == "5" and vote.chosen == 1
    assert count_votes(list(reversed(thoughts))).chosen == 2  # the same thought, wherever it stands


def test_no_answer_to_count_returns_the_most_likely_thought_and_says_so():
    vote = count_votes([thought("I cannot say.", -1.0), thought("Nor can I.", -0.3)])
    assert vote.majority is None and vote.tally == () and vote.chosen == 1
    record = vote.to_dict()["votes"]
    assert record["majority"] is None and [t["extracted"] for t in record["thoughts"]] == [None, None]


def test_votes_are_checked_before_anything_runs(model):
    for count in (0, 9):
        with pytest.raises(InvalidRequestError, match=r"\[1, 8\]"):
            model.generate(QUESTION, votes=count)


def test_votes_think_differently_evaluate_the_prompt_once_and_keep_every_thought(model):
    """On a model of one sequence the thoughts follow one another: each keeps the prompt the
    sequence holds (one token runs again for its logits), so the prompt runs once."""
    pool = model.engine.pool
    before, length = pool.tokens_run, len(model.prompt_tokens(QUESTION, think=False))
    vote = model.generate(QUESTION, votes=3, seed=11, **SAMPLED)
    assert isinstance(vote, VoteResult) and len(vote.results) == 3
    assert len({one.answer for one in vote.results}) > 1  # temperature 1: different thoughts
    assert [one.stats.seed for one in vote.results] == [11, 12, 13]
    assert [one.stats.cached_prompt_tokens for one in vote.results][1:] == [length - 1] * 2
    generated = sum(one.stats.generated_tokens for one in vote.results)
    assert pool.tokens_run - before <= length + 2 + generated
    assert vote.answers == tuple(final_answer(one) for one in vote.results)
    assert sum(count for _, count in vote.tally) == sum(answer is not None for answer in vote.answers)
    assert vote.answer == vote.results[vote.chosen].answer and vote.seconds > 0


def test_run_votes_prints_each_thought_and_the_majority(cli_command, gguf_path):
    args = [*cli_command, "run", "-m", str(gguf_path), "--ctx", "1024", "--votes", "3", "--no-think", "--seed", "5"]
    args += ["--temperature", "1", "--max-answer-tokens", "40", QUESTION]
    shown = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False)
    assert shown.returncode == 0, shown.stderr
    assert sorted(line.split()[1] for line in shown.stderr.splitlines() if line.startswith("thought ")) == [
        "1/3",
        "2/3",
        "3/3",
    ]
    assert "votes: " in shown.stderr or "no thought gave an answer" in shown.stderr
    record = subprocess.run([*args, "--json"], capture_output=True, text=True, timeout=300, check=False)
    assert record.returncode == 0, record.stderr
    result = json.loads(record.stdout)
    votes = result["votes"]
    assert votes["count"] == 3 and len(votes["thoughts"]) == 3
    assert result["answer"] == votes["thoughts"][votes["chosen"]]["answer"]
    assert sum(votes["tally"].values()) == sum(t["extracted"] is not None for t in votes["thoughts"])
    assert shown.stdout.strip() == result["answer"].strip()  # the same seeds: the same vote
    refused = subprocess.run(
        [*args, "--server", "http://127.0.0.1:9"], capture_output=True, text=True, timeout=60, check=False
    )
    assert refused.returncode == 1 and "--votes runs its thoughts here" in refused.stderr


def test_the_server_gives_n_choices_streamed_or_whole(cli_command, gguf_path):
    with running_server(cli_command, gguf_path, "--parallel", "2", "--ctx", "1024") as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0, timeout=120)
        messages = [{"role": "user", "content": QUESTION}]
        body = {"think": False, "max_answer_tokens": 30}
        reply = client.chat.completions.create(model="", messages=messages, n=3, temperature=1.0, extra_body=body)
        assert [choice.index for choice in reply.choices] == [0, 1, 2]
        assert all(choice.message.content for choice in reply.choices)
        assert len({choice.message.content for choice in reply.choices}) > 1
        assert reply.usage.completion_tokens > 30 and reply.usage.prompt_tokens < reply.usage.completion_tokens
        texts, ended, usage = {0: "", 1: ""}, set(), None
        for chunk in client.chat.completions.create(
            model="",
            messages=messages,
            n=2,
            stream=True,
            temperature=0.0,
            stream_options={"include_usage": True},
            extra_body=body,
        ):
            usage = chunk.usage or usage
            for choice in chunk.choices:
                texts[choice.index] += choice.delta.content or ""
                if choice.finish_reason:
                    ended.add(choice.index)
        assert ended == {0, 1} and texts[0] == texts[1] and texts[0]  # greedy: the same text twice
        whole = client.chat.completions.create(model="", messages=messages, n=2, temperature=0.0, extra_body=body)
        assert [choice.message.content for choice in whole.choices] == [texts[0], texts[1]]
        assert usage.completion_tokens == whole.usage.completion_tokens  # every choice's tokens, streamed or not
        assert usage.prompt_tokens == whole.usage.prompt_tokens == reply.usage.prompt_tokens  # the prompt once
        cut = client.chat.completions.create(
            model="", messages=messages, n=2, temperature=1.0, stop=[" "], extra_body=body
        )
        assert all(" " not in choice.message.content for choice in cut.choices)  # each choice stops on its own
        for fields, needle in (({"n": 9}, "n must be in [1, 8]"), ({"n": 0}, "n: Input should be greater")):
            with pytest.raises(openai.BadRequestError, match=needle.replace("[", r"\[").replace("]", r"\]")):
                client.chat.completions.create(model="", messages=messages, **fields)
        with pytest.raises(openai.BadRequestError, match="chat completions"):
            client.completions.create(model="", prompt="Hello", n=2)


def test_cancelling_a_vote_ends_every_thought_and_the_model_goes_on(model):
    """On a model of one sequence the second and third thoughts wait for the first: ``Model.cancel``
    (what Ctrl-C calls) stops them too, before they begin."""
    stream = model.vote(LONG_THINKING_PROMPT, 3, think=False, max_answer_tokens=400)
    for count, event in enumerate(stream):
        if count == 5:
            model.cancel()
        if isinstance(event, Done):
            break
    assert [one.stats.finish_reason for one in event.result.results] == ["cancelled"] * 3
    assert event.result.results[0].stats.answer_tokens < 50
    assert [one.stats.generated_tokens for one in event.result.results[1:]] == [0, 0]
    assert not model.scheduler.active
    assert model.generate("Say hi.", think=False, max_answer_tokens=4).stats.finish_reason in ("stop", "length")
