"""The one-line notice that a model without thinking ignores the thinking controls."""

from qwq_edge.reasoning.formats import NONE, QWQ_PREVIEW, THINK
from qwq_edge.runtime.notices import requested_format, thinking_controls_ignored
from qwq_edge.runtime.options import GenerationOptions


def test_a_model_without_thinking_names_the_controls_it_ignores_and_how_to_turn_thinking_on():
    asked = GenerationOptions(max_thinking_tokens=64, effort="low")
    assert thinking_controls_ignored(NONE, asked, {"effort": "reasoning_effort"}) == (
        "this model does not think (reasoning format none), so it ignores max_thinking_tokens and "
        'reasoning_effort; if it can think, set reasoning_format to "think" (or "qwq-preview")'
    )
    assert "ignores min_thinking_tokens;" in thinking_controls_ignored(NONE, GenerationOptions(min_thinking_tokens=8))


def test_no_notice_for_a_thinking_model_or_for_no_thinking_asked():
    asked = GenerationOptions(max_thinking_tokens=64, min_thinking_tokens=8, language_in_thinking=True)
    assert thinking_controls_ignored(THINK, asked) is None
    assert thinking_controls_ignored(QWQ_PREVIEW, asked) is None
    for nothing in (GenerationOptions(), GenerationOptions(max_thinking_tokens=0), GenerationOptions(think=False)):
        assert thinking_controls_ignored(NONE, nothing) is None


def test_the_request_s_own_format_wins_over_the_model_s():
    assert requested_format(NONE, GenerationOptions()) is NONE
    assert requested_format(NONE, GenerationOptions(reasoning_format="auto")) is NONE
    assert requested_format(NONE, GenerationOptions(reasoning_format="think")) is THINK
    assert requested_format(THINK, GenerationOptions(reasoning_format="none")) is NONE
