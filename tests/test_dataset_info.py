from __future__ import annotations

import json

import pytest

from blade_plugin.lf.dataset_info import load_dataset_info, register_dataset
from blade_plugin.extras.errors import BladeInputError


def test_register_adds_and_updates_keeping_other_entries(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "dataset_info.json").write_text(json.dumps({"theirs": {"file_name": "x.json"}}))
    (data / "kit.jsonl").write_text("")
    entry = register_dataset("my_kit", data / "kit.jsonl", data)
    assert entry == {"file_name": "kit.jsonl", "formatting": "alpaca",
                     "columns": {"prompt": "instruction", "query": "input", "response": "output"}}
    info = load_dataset_info(data)
    assert list(info) == ["theirs", "my_kit"]
    register_dataset("my_kit", tmp_path / "elsewhere.jsonl", data, formatting="pt")
    info = load_dataset_info(data)
    assert info["my_kit"] == {"file_name": str((tmp_path / "elsewhere.jsonl").resolve()),
                              "columns": {"prompt": "text"}}
    assert info["theirs"] == {"file_name": "x.json"}


def test_register_creates_missing_dataset_info(tmp_path):
    register_dataset("c", tmp_path / "d" / "c.jsonl", tmp_path / "d", formatting="pt")
    assert json.loads((tmp_path / "d" / "dataset_info.json").read_text())["c"]["file_name"] == "c.jsonl"


def test_malformed_dataset_info_is_reported_and_not_clobbered(tmp_path):
    broken = '{\n  "a": {"file_name": "a.json"},\n  "b": {"file_name": }\n}\n'
    path = tmp_path / "dataset_info.json"
    path.write_text(broken)
    with pytest.raises(BladeInputError) as err:
        register_dataset("new", tmp_path / "n.jsonl", tmp_path)
    assert str(err.value).startswith(f"{path}:3: invalid JSON")
    assert path.read_text() == broken
    assert [p.name for p in tmp_path.iterdir()] == ["dataset_info.json"]  # no temp file left behind


def test_refuses_to_overwrite_when_asked(tmp_path):
    register_dataset("a", tmp_path / "a.jsonl", tmp_path)
    with pytest.raises(BladeInputError, match="already exists"):
        register_dataset("a", tmp_path / "b.jsonl", tmp_path, overwrite=False)
