"""Chat templates from model files are bounded in time and size; every failure is named, with a stated fallback."""

import json
import subprocess
import time
import warnings

import pytest
from conftest import gguf_with

from qwq_edge.errors import TemplateFallbackWarning
from qwq_edge.reasoning.formats import NONE
from qwq_edge.runtime.prompt import CHATML_TEMPLATE, Message, PromptBuilder
from qwq_edge.text.template import MAX_SECONDS, TemplateProblem, render_template

NESTED_LOOPS = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
HOSTILE = {
    "nested loops": (NESTED_LOOPS, "runs longer than"),
    "nested loops with output": (
        NESTED_LOOPS.replace("{% endfor %}{% endfor", "{{ j }}{% endfor %}{% endfor"),
        "builds",
    ),
    "huge range": ("{% for i in range(10**9) %}{% endfor %}", "asks for a size"),
    "range over the sandbox's limit": ("{% for i in range(200000) %}{% endfor %}", "range of more than"),
    "recursive macro": ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "recurses too deeply"),
    "exponential macro": (
        "{% macro f(n) %}{% if n %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}{% endmacro %}{{ f(60) }}",
        "runs",
    ),
    "string repetition": ("{{ 'a' * 10**10 }}", "by repetition"),
    "list repetition": ("{{ (range(100000)|list) * 1000 }}", "by repetition"),
    "doubling with ~": (
        "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
        "builds a text",
    ),
    "doubling with +": (
        "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
        "builds a value",
    ),
    "huge number": ("{{ 2 ** 100000000 }}", "number too large"),
    "huge width filter": ("{{ 'x'|center(10**9) }}", "asks for a size"),
    "huge width method": ("{{ 'x'.ljust(999999) * 1 ~ 'y'.rjust(999999) }}", "builds"),
    "huge format width": ("{{ '%999999999d' % 1 }}", "format width"),
    "huge replace": ("{{ ('x' * 100000)|replace('x', 'y' * 1000) }}", "builds a text"),
    "sandbox escape": ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "sandbox blocked"),
    "syntax error": ("{% for message in messages %}", "syntax error"),
    "raise_exception": ("{{ raise_exception('roles must alternate') }}", "refused the conversation: roles must"),
    "undefined": ("{{ nothing.at.all }}", "UndefinedError"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_each_hostile_template_ends_quickly_with_a_named_problem(name):
    template, fragment = HOSTILE[name]
    start = time.perf_counter()
    with pytest.raises(TemplateProblem) as problem:
        render_template(template, messages=[{"role": "user", "content": "hi"}], add_generation_prompt=True)
    assert time.perf_counter() - start < MAX_SECONDS + 1.5
    assert fragment in str(problem.value) and "\n" not in str(problem.value)


def test_real_templates_still_render_and_tracing_is_restored():
    import sys

    before = sys.gettrace()
    text = render_template(CHATML_TEMPLATE, messages=[{"role": "user", "content": "hi"}], add_generation_prompt=True)
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert sys.gettrace() is before


def builder(model, template):
    return PromptBuilder(model.engine.tokenize, model.engine.special_texts, template)


@pytest.mark.parametrize("name", ["nested loops", "sandbox escape", "syntax error", "huge range"])
def test_a_model_with_a_broken_template_falls_back_to_chatml_and_says_why(model, name):
    template, fragment = HOSTILE[name]
    with pytest.warns(TemplateFallbackWarning, match="using ChatML instead") as caught:
        prompts = builder(model, template)
    assert fragment in str(caught[0].message)
    assert prompts.template_source == "chatml-fallback" and fragment in prompts.template_problem
    tokens = prompts.build([Message("user", "Hi")], NONE)
    assert model.engine.llama.detokenize(tokens, special=True).decode().endswith("<|im_start|>assistant\n")


def test_a_template_that_refuses_one_conversation_falls_back_for_it_and_says_so(model):
    template = "{% if messages[0]['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}" + (
        CHATML_TEMPLATE
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prompts = builder(model, template)  # one user message renders: no warning
    assert prompts.template_source == "model"
    with pytest.warns(TemplateFallbackWarning, match="cannot render this conversation.*no system role.*ChatML"):
        prompts.build([Message("system", "Be brief."), Message("user", "Hi")], NONE)


def test_the_cli_states_the_fallback_and_info_shows_it(cli_command, placeholder_gguf, tmp_path):
    gguf = gguf_with(placeholder_gguf, tmp_path / "loops.gguf", NESTED_LOOPS.encode())
    args = ["run", "-m", str(gguf), "--json", "--reasoning-format", "none", "--max-answer-tokens", "2", "Hi"]
    start = time.monotonic()
    proc = subprocess.run([*cli_command, *args], capture_output=True, text=True, timeout=60, check=False)
    assert time.monotonic() - start < 30
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: the model's chat template cannot be used"), lines
    assert "runs longer than" in lines[0] and lines[0].endswith("using ChatML instead")
    assert json.loads(proc.stdout)["answer_tokens"] <= 2
    info = subprocess.run([*cli_command, "info", str(gguf), "--json"], capture_output=True, text=True, check=False)
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["prompt_template"].startswith("ChatML fallback: the model's template cannot be used")


def test_info_shows_a_working_template(cli_command, gguf_path):
    info = subprocess.run([*cli_command, "info", str(gguf_path), "--json"], capture_output=True, text=True, check=False)
    assert json.loads(info.stdout)["prompt_template"] == "the model's own"
