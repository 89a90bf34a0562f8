"""Final-answer extraction and math-aware comparison."""

import pytest

from qwq_edge.text.answers import answers_match, extract_answer, normalize


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"So the answer is \boxed{\frac{1}{2}}.", "0.5"),
        (r"\boxed{\dfrac{3}{4}}", "3/4"),
        (r"\boxed{\tfrac{6}{8}}", r"\frac{3}{4}"),
        (r"so \boxed{1,000} apples", "1000"),
        (r"\boxed{x = 3}", "3"),
        (r"\boxed{42\text{ cm}}", "42"),
        (r"\boxed{\text{Paris}}", "paris"),
        (r"\boxed{\left( 2 \right)}", "2"),
        (r"\boxed{2\sqrt{3}}", r"2 \sqrt{3}"),
        (r"\boxed{\frac{\sqrt{2}}{2}}", r"\frac{\sqrt2}{2}"),
        (r"\boxed{50\%}", "50%"),
        (r"\boxed{-7}", "-7"),
        (r"First \boxed{3}, then corrected: \boxed{5}", "5"),
        (r"\boxed{\frac{a+b}{2}}", "(a+b)/2"),
        (r"\boxed{(1, 2)}", "(1,2)"),
        ("It costs 12.50 dollars in total.", "12.5"),
        ("The result is 2.0", "2"),
        ("answer: 1,234,567", "1234567"),
        ("**Final Answer**\n\n\\[ \\boxed{129} \\]", "129"),
    ],
)
def test_answers_that_match(text, expected):
    assert answers_match(extract_answer(text), expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"\boxed{3}", "4"),
        (r"\boxed{\frac{1}{3}}", "0.33"),
        ("no number at all", "3"),
        (r"\boxed{\text{London}}", "paris"),
        (r"\boxed{12", "12"),  # an unclosed box is no answer; the number inside still is
    ],
)
def test_answers_that_do_not_match(text, expected):
    if text == r"\boxed{12":
        assert extract_answer(text) == "12"
        return
    assert not answers_match(extract_answer(text), expected)


def test_normal_forms():
    assert normalize(r"\left( \frac{1}{2} \right)") == "1/2"
    assert normalize(r" x = 1,000 ") == "1000"
    assert extract_answer("") is None
