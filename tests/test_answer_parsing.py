from __future__ import annotations

import pytest

from blade_plugin.qa.answers import normalize_answer, parse_choices, score_answer, token_f1
from blade_plugin.qa.data import QAItem

ABCD = "ABCD"


@pytest.mark.parametrize("text, expected", [
    ("B", ("B",)),
    ("AC", ("A", "C")),
    ("A, C", ("A", "C")),
    ("答案：B", ("B",)),
    ("The answer is (C)", ("C",)),
    ("选项B和D", ("B", "D")),
    ("**Answer: B**", ("B",)),
    ("B. because the enzyme is blocked", ("B",)),
    ("answer: b", ("B",)),
    ("A good question. The answer is C", ("C",)),
    ("Let me think.\nAnswer: A, C", ("A", "C")),
    ("正确答案是A、C", ("A", "C")),
    ("Answer: A and C", ("A", "C")),
    ("(A)(D)", ("A", "D")),
    ("I would pick D here", ("D",)),
    ("Based on the evidence, nothing fits", None),
    ("Cell walls are rigid", None),
    ("", None),
])
def test_parse_choices(text, expected):
    assert parse_choices(text, ABCD) == expected


def test_letters_outside_the_options_are_ignored():
    assert parse_choices("Answer: E", "ABCD") is None
    assert parse_choices("Answer: E", "ABCDE") == ("E",)


def test_multiple_choice_scoring_is_exact_set_match():
    item = QAItem("1", "Q?", {"A": "a", "B": "b", "C": "c", "D": "d"}, ("A", "C"), {})
    assert score_answer(item, "Answer: C, A").correct
    assert not score_answer(item, "Answer: A").correct  # partial is wrong
    assert not score_answer(item, "Answer: A, B, C").correct
    assert score_answer(item, "Answer: A, B, C").parsed == ("A", "B", "C")


def test_free_text_scoring():
    item = QAItem("1", "Capital of France?", None, "Paris", {})
    assert score_answer(item, "Answer: paris.").correct
    score = score_answer(item, "It is Paris, France")
    assert not score.correct and 0 < score.f1 < 1
    assert normalize_answer("The  Eiffel-Tower!") == "eiffel tower"
    assert token_f1("维生素K", "维生素K") == 1.0
    assert 0 < token_f1("维生素C", "维生素K") < 1
