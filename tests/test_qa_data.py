from __future__ import annotations

import json
from pathlib import Path

import pytest

from blade_plugin.extras.errors import BladeInputError
from blade_plugin.qa.data import load_qa

DATA = Path(__file__).parent / "data"


def test_generic_demo_splits_load(demo_data_dir):
    items = load_qa(demo_data_dir / "demo_qa_train.jsonl")
    assert len(items) == 54
    multi = [i for i in items if i.is_multi_answer]
    assert multi and all(len(i.answer) == 2 for i in multi)
    assert all(set(i.answer) <= set(i.options) for i in items)


def test_jecqa_raw_format():
    items = load_qa(DATA / "jecqa_sample.json")
    assert [i.id for i in items] == ["3_2613", "1_3502", "1_1217", "3_0441", "1_0078"]
    assert items[1].answer == ("A", "C") and items[1].is_multi_answer
    assert items[3].answer == ("A", "B", "D")
    assert items[0].meta["type"] == 1 and items[1].meta["type"] == 0
    assert items[0].question.startswith("甲谎称")


def test_mlecqa_raw_format_json_array():
    items = load_qa(DATA / "mlecqa_sample.json")
    assert len(items) == 5 and items[0].id == "M0001"
    assert set(items[0].options) == set("ABCDE") and items[0].answer == ("B",)


def test_free_text_and_missing_id(tmp_path):
    path = tmp_path / "free.jsonl"
    path.write_text(json.dumps({"question": "Capital of France?", "answer": "Paris"}) + "\n")
    [item] = load_qa(path)
    assert item.options is None and item.answer == "Paris" and item.id == "line1"


@pytest.mark.parametrize("name, line, field, text", [
    ("bad_json_line2.jsonl", 2, None, "invalid JSON"),
    ("bad_answer_line3.jsonl", 3, "answer", "answer 'E' is not an option letter (A-B)"),
    ("missing_question.jsonl", 1, "question", "missing"),
])
def test_malformed_lines_name_file_line_and_field(name, line, field, text):
    with pytest.raises(BladeInputError) as err:
        load_qa(DATA / name)
    message = str(err.value)
    assert message.startswith(f"{DATA / name}:{line}: ")
    assert text in message
    if field:
        assert f"field '{field}'" in message
    assert "\n" not in message


@pytest.mark.parametrize("answer, expected", [
    (None, "field 'answer': missing"),
    ([], "field 'answer': empty answer (no option letter given)"),
    ("", "field 'answer': empty answer (no option letter given)"),
])
def test_absent_or_empty_answer_is_named_as_such(tmp_path, answer, expected):
    path = tmp_path / "qa.jsonl"
    good = {"id": "a", "question": "Q?", "options": {"A": "a", "B": "b"}, "answer": "A"}
    bad = {"id": "b", "question": "Q2?", "options": {"A": "a", "B": "b"}}
    if answer is not None:
        bad["answer"] = answer
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(BladeInputError) as err:
        load_qa(path)
    assert str(err.value).startswith(f"{path}:2: {expected}")


def test_free_text_empty_answer_is_empty_not_missing(tmp_path):
    path = tmp_path / "free.jsonl"
    path.write_text(json.dumps({"question": "Capital of France?", "answer": ""}) + "\n")
    with pytest.raises(BladeInputError, match=r"free.jsonl:1: field 'answer': empty answer"):
        load_qa(path)


def test_duplicate_ids_are_rejected(tmp_path):
    path = tmp_path / "dup.jsonl"
    row = {"id": "x", "question": "Q?", "options": {"A": "a", "B": "b"}, "answer": "A"}
    path.write_text(json.dumps(row) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(BladeInputError, match=r"dup.jsonl:2: field 'id': duplicate id 'x' \(first on line 1\)"):
        load_qa(path)


def test_missing_file_is_one_clear_line(tmp_path):
    with pytest.raises(BladeInputError, match="nope.jsonl: file not found"):
        load_qa(tmp_path / "nope.jsonl")
