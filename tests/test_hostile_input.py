"""Hostile and dirty input, as a new user brings it: raw JEC-QA with unusable records, GBK files, a BOM, a
non-UTF-8 template, a binary dataset_info.json, a word where an option letter belongs. Each gets a one-line
error naming file and line (or the documented --skip-invalid flag), never a traceback, and no LLM request."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from blade_plugin.extras.errors import BladeInputError
from blade_plugin.qa.data import load_qa
from blade_plugin.qa.prompts import load_prompts
from blade_testing.openai_stub_server import StubOpenAIServer
from blade_testing.scripted_llm import QAOracle
from helpers import run_cli

DATA = Path(__file__).parent / "data"
# A sample of raw JEC-QA `0_train.json` (JSON lines: statement, option_list A-D, answer list, id, type) with
# the dirt the real file has: lines 4 and 7 have an empty answer list, line 3 pads options and statement
# with spaces and newlines, line 5 gives full-width answer letters.
JECQA = DATA / "jecqa_0_train_sample.json"


def _one_line_error(result) -> str:
    """The CLI failed with exactly one 'Error: ...' line on stderr and no traceback."""
    assert result.returncode == 1, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


def _knowledge(server, tmp_path, train, *extra, out=None):
    return run_cli(["blade-bpo", "knowledge", "--train", str(train), "--out", str(out or tmp_path / "kit.jsonl"),
                    "--llm-base-url", server.base_url, "--llm-model", "stub", "--cache-db",
                    str(tmp_path / "cache.sqlite3"), "--max-retries", "0", *extra],
                   cwd=tmp_path, env={"BLADE_HOME": str(tmp_path / "home")})


# --- raw JEC-QA with invalid records ------------------------------------------------------------------
def test_jecqa_strict_by_default_names_line_field_and_the_flag():
    with pytest.raises(BladeInputError) as err:
        load_qa(JECQA)
    assert str(err.value) == (f"{JECQA}:4: field 'answer': empty answer (no option letter given); "
                              "pass --skip-invalid to skip such records and list them in the stats")


def test_jecqa_skip_invalid_lists_skipped_records_and_cleans_the_dirty_ones():
    items = load_qa(JECQA, skip_invalid=True)
    assert [it.id for it in items] == ["3_2613", "3_2614", "3_2615", "3_2617", "3_2618", "3_2620", "3_2621", "3_2622"]
    assert items.skipped == [f"{JECQA}:4: field 'answer': empty answer (no option letter given)",
                             f"{JECQA}:7: field 'answer': empty answer (no option letter given)"]
    by_id = {it.id: it for it in items}
    assert by_id["3_2617"].answer == ("B", "D")  # full-width "Ｂ", "Ｄ"
    assert by_id["3_2621"].answer == ("A", "C", "D")
    padded = by_id["3_2615"]
    assert padded.question == "某县公安局违法拘留王某10日，王某依法可以采取下列哪一救济途径要求赔偿？"
    assert padded.options == {"A": "行政复议", "B": "行政诉讼", "C": "申请仲裁", "D": "申请国家赔偿"}
    # --limit counts kept items, so the skipped line 4 does not shorten the run
    assert [it.id for it in load_qa(JECQA, skip_invalid=True, limit=4)] == ["3_2613", "3_2614", "3_2615", "3_2617"]


def test_knowledge_cli_on_raw_jecqa_strict_then_skip_invalid(tmp_path):
    items = load_qa(JECQA, skip_invalid=True)
    prompts = load_prompts()
    with StubOpenAIServer(QAOracle(items, prompts)) as server:
        strict = _knowledge(server, tmp_path, JECQA)
        line = _one_line_error(strict)
        assert f"{JECQA}:4: field 'answer'" in line and "--skip-invalid" in line
        assert server.request_count == 0

        result = _knowledge(server, tmp_path, JECQA, "--skip-invalid")
        assert result.returncode == 0, result.stderr[-3000:]
        assert server.request_count == 2 * len(items)
    assert "kept 8 / 8 items" in result.stdout
    stats = json.loads((tmp_path / "kit.jsonl.stats.json").read_text(encoding="utf-8"))
    assert stats["skipped_invalid"] == {"count": 2, "records": [
        f"{JECQA}:4: field 'answer': empty answer (no option letter given)",
        f"{JECQA}:7: field 'answer': empty answer (no option letter given)"]}
    assert stats["total"] == 8
    # off a terminal the progress bar logs plain lines, never carriage-return redraws
    assert "\r" not in result.stderr


# --- answers that are not option letters --------------------------------------------------------------
def test_a_word_answer_on_a_multiple_choice_item_is_quoted_not_letter_soup(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text(json.dumps({"id": "q1", "question": "Capital of France?",
                                "options": {"A": "Paris", "B": "Lyon", "C": "Nice", "D": "Lille"},
                                "answer": "Paris"}) + "\n", encoding="utf-8")
    with pytest.raises(BladeInputError) as err:
        load_qa(path)
    assert str(err.value).startswith(f"{path}:1: field 'answer': answer 'Paris' is not an option letter (A-D)")


@pytest.mark.parametrize("answer, expected", [("ＡＢ", ("A", "B")), ("A, C", ("A", "C")), (["c"], ("C",)),
                                              ("Ｄ", ("D",)), ("B；D", ("B", "D"))])
def test_option_letter_spellings(tmp_path, answer, expected):
    path = tmp_path / "qa.jsonl"
    path.write_text(json.dumps({"id": "q1", "question": "q", "options": {"A": "a", "B": "b", "C": "c", "D": "d"},
                                "answer": answer}, ensure_ascii=False) + "\n", encoding="utf-8")
    assert load_qa(path)[0].answer == expected


# --- encodings ------------------------------------------------------------------------------------------
def _gbk_copy(tmp_path) -> Path:
    target = tmp_path / "jecqa_gbk.json"
    target.write_bytes(JECQA.read_text(encoding="utf-8").encode("gbk"))
    return target


def test_gbk_input_is_read_as_gb18030_and_says_so(tmp_path, caplog):
    gbk = _gbk_copy(tmp_path)
    with pytest.raises(UnicodeDecodeError):
        gbk.read_text(encoding="utf-8")  # really not UTF-8
    with caplog.at_level(logging.INFO, logger="blade_plugin.runs.atomic_io"):
        items = load_qa(gbk, skip_invalid=True)
    assert [it.question for it in items] == [it.question for it in load_qa(JECQA, skip_invalid=True)]
    assert any("GB18030" in r.getMessage() and str(gbk) in r.getMessage() for r in caplog.records)


def test_utf8_bom_is_stripped(tmp_path):
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + JECQA.read_bytes())
    assert [it.id for it in load_qa(bom, skip_invalid=True)][:2] == ["3_2613", "3_2614"]


def test_undecodable_input_is_one_line_with_byte_offset(tmp_path):
    bad = tmp_path / "latin.jsonl"
    good_line = '{"id": "1", "question": "q", "options": {"A": "a", "B": "b"}, "answer": "A"}\n'
    bad.write_bytes(good_line.encode() + b'{"id": "2", "question": "caf\xe9\xff", "answer": "x"}\n')
    with pytest.raises(BladeInputError) as err:
        load_qa(bad)
    offset = len(good_line) + len('{"id": "2", "question": "caf')
    assert str(err.value) == (f"{bad}:2: not UTF-8 or GB18030 text: byte 0xe9 at offset {offset} cannot be "
                              "decoded (save the file as UTF-8)")


def test_knowledge_cli_on_binary_input_is_one_line(tmp_path):
    binary = tmp_path / "train.jsonl"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00")
    with StubOpenAIServer() as server:
        line = _one_line_error(_knowledge(server, tmp_path, binary))
        assert server.request_count == 0
    assert line == f"Error: {binary}:1: not UTF-8 or GB18030 text: byte 0x89 at offset 0 cannot be decoded " \
                   "(save the file as UTF-8)"


def test_gbk_template_loads_and_an_undecodable_one_is_one_line(tmp_path):
    from blade_plugin.extras.paths import templates_dir

    zh = tmp_path / "zh"
    shutil.copytree(templates_dir() / "zh_legal", zh)
    source = (zh / "answer.j2").read_text(encoding="utf-8")
    (zh / "answer.j2").write_bytes(source.encode("gbk"))
    item = load_qa(JECQA, skip_invalid=True)[0]
    assert load_prompts(zh).answer(item, "") == load_prompts(templates_dir() / "zh_legal").answer(item, "")

    (zh / "answer.j2").write_bytes(b"\xff\xfe" + source.encode("utf-16-le"))
    with pytest.raises(BladeInputError) as err:
        load_prompts(zh)
    assert str(err.value).startswith(f"{zh / 'answer.j2'}:1: not UTF-8 or GB18030 text: byte 0xff at offset 0")


def test_binary_dataset_info_fails_before_any_request(tmp_path, demo_data_dir):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    binary = b"SQLite format 3\x00\x10\x00\x01\x01\x00@  \x00\x00\x00\x02"
    (data_dir / "dataset_info.json").write_bytes(binary)
    with StubOpenAIServer() as server:
        line = _one_line_error(_knowledge(server, tmp_path, demo_data_dir / "demo_qa_train.jsonl",
                                          "--dataset-dir", str(data_dir), "--limit", "2"))
        assert server.request_count == 0
    assert line.startswith(f"Error: {data_dir / 'dataset_info.json'}:1: binary data")
    assert (data_dir / "dataset_info.json").read_bytes() == binary


def test_unicode_line_separator_inside_a_string_is_not_a_line_break(tmp_path):
    # U+2028 is legal unescaped in JSON strings (json.dumps(ensure_ascii=False) writes it raw); only "\n"
    # (and "\r\n") end a JSONL record
    path = tmp_path / "qa.jsonl"
    record = {"id": "q1", "question": "第一款\u2028第二款", "options": {"A": "是", "B": "否"}, "answer": "Ａ"}
    path.write_bytes((json.dumps(record, ensure_ascii=False) + "\r\n").encode("utf-8"))
    [item] = load_qa(path)
    assert (item.question, item.answer) == ("第一款\u2028第二款", ("A",))
