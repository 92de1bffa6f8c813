"""Append-only progress files: torn tails, job fingerprints, empty files (no mocks: real files)."""

from __future__ import annotations

import json

import pytest

from blade_plugin.extras.errors import BladeError
from blade_plugin.runs.atomic_io import append_jsonl, iter_jsonl
from blade_plugin.runs.fingerprint import JobFingerprint
from blade_plugin.runs.job_log import JobLog


def _rows(path):
    return [row for _, row in iter_jsonl(path)]


def test_append_after_a_torn_tail_keeps_every_row(tmp_path):
    path = tmp_path / "p.jsonl"
    append_jsonl(path, {"id": "1", "text": "答案：B"})
    append_jsonl(path, {"id": "2"})
    # a kill in the middle of writing row 3: its first bytes only, no newline
    with open(path, "ab") as f:
        f.write('{"id": "3", "text": "解析'.encode("utf-8")[:-2])
    assert [r["id"] for _, r in iter_jsonl(path, tolerate_truncated_tail=True)] == ["1", "2"]
    append_jsonl(path, {"id": "4"})
    append_jsonl(path, {"id": "5"})
    # strict reading: every line is whole JSON, nothing glued
    assert [r["id"] for r in _rows(path)] == ["1", "2", "4", "5"]
    assert path.read_bytes().count(b"\n") == 4


def test_a_torn_tail_that_happens_to_parse_is_still_dropped(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_bytes(b'{"id": "1"}\n{"id": "2"}')  # killed just before the newline
    assert [r["id"] for _, r in iter_jsonl(path, tolerate_truncated_tail=True)] == ["1"]
    append_jsonl(path, {"id": "3"})
    assert path.read_bytes() == b'{"id": "1"}\n{"id": "3"}\n'


def test_torn_first_line_leaves_an_empty_file(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_bytes(b'{"type": "hea')
    append_jsonl(path, {"id": "1"})
    assert path.read_bytes() == b'{"id": "1"}\n'


def _fp(**changes):
    parts = {"items": "aaaa", "template answer.j2": "t1", "llm model": "gpt-x", "llm sampling": {"temperature": 0.0}}
    parts.update(changes)
    return JobFingerprint(**parts)


def test_resume_returns_finished_rows_last_one_wins(tmp_path):
    path = tmp_path / "progress.jsonl"
    log = JobLog(path, _fp())
    assert log.load(key=lambda r: r["id"]) == {}
    log.append({"id": "a", "error": "HTTP 400"})
    log.append({"id": "b", "ok": 1})
    log.append({"id": "a", "ok": 2})  # retried on a resume
    done = JobLog(path, _fp()).load(key=lambda r: r["id"])
    assert done == {"a": {"id": "a", "ok": 2}, "b": {"id": "b", "ok": 1}}


def test_mismatch_is_one_line_naming_the_changed_parts(tmp_path):
    path = tmp_path / "progress.jsonl"
    log = JobLog(path, _fp())
    log.load(key=lambda r: r["id"])
    log.append({"id": "a"})
    with pytest.raises(BladeError) as err:
        JobLog(path, _fp(**{"llm model": "gpt-y", "template answer.j2": "t2"})).load(key=lambda r: r["id"])
    message = str(err.value)
    assert "\n" not in message and str(path) in message and "--restart" in message
    assert "(llm model, template answer.j2 changed)" in message
    # --restart discards it
    assert JobLog(path, _fp(**{"llm model": "gpt-y"}), restart=True).load(key=lambda r: r["id"]) == {}
    header = json.loads(path.read_text().splitlines()[0])
    assert header["fingerprint"]["parts"]["llm model"] == "gpt-y"


def test_a_file_without_finished_rows_belongs_to_no_job(tmp_path):
    """A run that failed before saving anything must not block fixing the URL or temperature."""
    path = tmp_path / "progress.jsonl"
    JobLog(path, _fp()).load(key=lambda r: r["id"])  # header only
    changed = _fp(**{"llm sampling": {"temperature": 0.7}})
    assert JobLog(path, changed).load(key=lambda r: r["id"]) == {}
    lines = path.read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["fingerprint"] == changed.to_json()
