from __future__ import annotations

import json
import re
from pathlib import Path

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


# --- issue 8 / issue 12 cases, verbatim -------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("Answer: C. Option D is a distractor.", ("C",)),
    ("Answer: B\nExplanation: choice A ignores the dose.", ("B",)),
    ("Answer: A (a BAD choice would be D)", ("A",)),
    ("答案：ＡＢ", ("A", "B")),
    ("（Ａ）", ("A",)),
])
def test_issue_cases(text, expected):
    assert parse_choices(text, ABCD) == expected


# --- the realistic corpus: every response with the letters a human reader takes as the model's answer ------
CORPUS_PATH = Path(__file__).parent / "data" / "answer_corpus.jsonl"
CORPUS = [json.loads(line) for line in CORPUS_PATH.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_corpus_covers_what_it_claims():
    assert len(CORPUS) >= 100
    chinese = [r for r in CORPUS if re.search(r"[\u4e00-\u9fff]", r["response"])]
    assert len(chinese) >= 25
    assert sum(r["expected"] is None for r in CORPUS) >= 15  # refusals, hedges, truncations
    assert sum(bool(r["expected"]) and len(r["expected"]) > 1 for r in CORPUS) >= 20  # multi-answer
    assert sum('"answer"' in r["response"] for r in CORPUS) >= 8  # JSON
    for row in CORPUS:
        assert set(row) == {"response", "letters", "expected", "note"}
        assert row["expected"] is None or set(row["expected"]) <= set(row["letters"])


@pytest.mark.parametrize("row", CORPUS, ids=[f"{i}-{r['note'][:40]}" for i, r in enumerate(CORPUS)])
def test_corpus(row):
    expected = tuple(row["expected"]) if row["expected"] is not None else None
    assert parse_choices(row["response"], row["letters"]) == expected


# --- scoring: unparseable replies are wrong and flagged ---------------------------------------------------
MC_ITEM = QAItem("1", "Q?", {"A": "a", "B": "b", "C": "c", "D": "d"}, ("B",), {})


@pytest.mark.parametrize("raw, correct, unparseable", [
    ("答案：B。解析：选项A错误。", True, False),
    ("Answer: A", False, False),
    ("It is either A or B.", False, True),
    ("无法确定。", False, True),
    ("", False, True),
    ('```json\n{"answer": ["B"]}\n```', True, False),
])
def test_score_flags_unparseable(raw, correct, unparseable):
    score = score_answer(MC_ITEM, raw)
    assert (score.correct, score.unparseable) == (correct, unparseable)


def test_free_text_reads_json_and_the_answer_line():
    item = QAItem("1", "Capital of France?", None, "Paris", {})
    assert score_answer(item, '{"answer": "Paris"}').correct
    assert score_answer(item, "Let me think about European capitals.\nAnswer: Paris").correct
    assert score_answer(item, "答案：Paris").parsed == "Paris"
    empty = score_answer(item, "Answer:")
    assert not empty.correct and empty.unparseable
