"""`blade-bpo split`: deterministic, stratified train/dev/test from raw files, raw records kept as they were."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from blade_plugin.cli import cli
from blade_plugin.extras.errors import BladeError, BladeInputError
from blade_plugin.stages.split import allocate, split_raw

from helpers import shared_data_dir

JECQA_SAMPLE = shared_data_dir("jecqa") / "0_train_lines401-1000.json"


def _jecqa(i: int, type_: str, answer=("A",)) -> dict:
    # field order as in the raw release, Chinese text, a multi-answer item now and then
    return {"answer": list(answer), "id": f"{type_}_{i}", "option_list": {"A": f"甲{i}", "B": f"乙{i}", "C": "丙",
                                                                           "D": "丁"},
            "statement": f"第{i}题：下列说法正确的是", "type": type_}


def _write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture
def raw(tmp_path) -> Path:
    records = [_jecqa(i, "0", ("A", "C") if i % 3 == 0 else ("B",)) for i in range(10)]
    records += [_jecqa(i, "1") for i in range(10, 15)]
    return _write(tmp_path / "0_train.json", records)


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def test_allocate_by_largest_remainder():
    # 3 of 15 split 10:5 -> exactly 2 and 1; 4 of 15 -> 2.67 and 1.33: the larger remainder gets the extra one
    assert allocate({"0": 10, "1": 5}, 3) == {"0": 2, "1": 1}
    assert allocate({"0": 10, "1": 5}, 4) == {"0": 3, "1": 1}
    assert allocate({"a": 1, "b": 1, "c": 1}, 2) == {"a": 1, "b": 1, "c": 0}  # tie: by name
    assert allocate({"0": 2, "1": 0}, 0) == {"0": 0, "1": 0}


def test_split_is_stratified_disjoint_complete_and_keeps_raw_records(raw, tmp_path):
    result = split_raw([raw], tmp_path / "data", n_dev=3, n_test=3, seed=7)
    # 15 records, 10 of type 0 and 5 of type 1: dev 2 + 1, test from the remaining 8 + 4: 2 + 1
    assert result.counts == {"train": {"0": 6, "1": 3}, "dev": {"0": 2, "1": 1}, "test": {"0": 2, "1": 1}}
    source = _lines(raw)
    parts = {part: _lines(path) for part, path in result.files.items()}
    # every raw line lands in exactly one part, byte for byte (fields, order, Chinese text unescaped)
    assert sorted(parts["train"] + parts["dev"] + parts["test"]) == sorted(source)
    assert len(set(parts["dev"]) | set(parts["test"]) | set(parts["train"])) == 15
    for lines in parts.values():  # each part keeps the source order
        assert lines == [line for line in source if line in set(lines)]
    manifest = json.loads((tmp_path / "data" / "split.json").read_text())
    assert manifest["seed"] == 7 and manifest["format"] == "jecqa"
    assert manifest["ids"]["dev"] == [json.loads(line)["id"] for line in parts["dev"]]


def test_same_seed_same_split_other_seed_other_split(raw, tmp_path):
    a = split_raw([raw], tmp_path / "a", 4, 4, seed=1)
    b = split_raw([raw], tmp_path / "b", 4, 4, seed=1)
    c = split_raw([raw], tmp_path / "c", 4, 4, seed=2)
    for part in ("train", "dev", "test"):
        assert a.files[part].read_bytes() == b.files[part].read_bytes()
    assert any(a.files[p].read_bytes() != c.files[p].read_bytes() for p in ("dev", "test"))


def test_refuses_to_overwrite_and_writes_nothing(raw, tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    (out / "test.jsonl").write_text("mine\n")
    with pytest.raises(BladeError, match="refusing to overwrite .*test.jsonl"):
        split_raw([raw], out, 3, 3, seed=0)
    assert (out / "test.jsonl").read_text() == "mine\n"
    assert sorted(p.name for p in out.iterdir()) == ["test.jsonl"]


def test_bad_record_is_one_line_naming_file_line_and_field(raw, tmp_path):
    records = [json.loads(line) for line in _lines(raw)]
    del records[4]["option_list"]
    bad = _write(tmp_path / "bad.json", records)
    with pytest.raises(BladeInputError) as err:
        split_raw([bad], tmp_path / "data", 3, 3, seed=0)
    message = str(err.value)
    assert message.startswith(f"{bad}:5: field 'option_list': ") and "\n" not in message
    assert not (tmp_path / "data").exists()  # nothing written before every record passed
    # --skip-invalid leaves it out and lists it
    result = split_raw([bad], tmp_path / "data", 3, 3, seed=0, skip_invalid=True)
    assert sum(sum(c.values()) for c in result.counts.values()) == 14
    assert result.skipped and result.skipped[0].startswith(f"{bad}:5: field 'option_list'")


def test_duplicate_id_across_files_and_missing_group_field(raw, tmp_path):
    other = _write(tmp_path / "1_train.json", [_jecqa(3, "0")])
    with pytest.raises(BladeInputError, match=r"1_train.json:1: field 'id': duplicate id '0_3' \(first at .*0_train"):
        split_raw([raw, other], tmp_path / "data", 3, 3, seed=0)
    record = _jecqa(99, "0")
    del record["type"]
    no_type = _write(tmp_path / "no_type.json", [_jecqa(1, "0"), record, _jecqa(2, "0")])
    with pytest.raises(BladeInputError, match=r"no_type.json:2: field 'type': missing"):
        split_raw([no_type], tmp_path / "d2", 1, 1, seed=0)
    assert sum(split_raw([no_type], tmp_path / "d3", 1, 1, seed=0, group_by=None).counts["train"].values()) == 1


def test_too_large_dev_plus_test_is_refused(raw, tmp_path):
    with pytest.raises(BladeError, match="leaves no training record of 15"):
        split_raw([raw], tmp_path / "data", 10, 5, seed=0)


def test_corpus_is_the_training_part_with_correct_options_and_registered(raw, tmp_path):
    out = tmp_path / "data"
    result = split_raw([raw], out, 3, 3, seed=0, corpus=out / "corpus.jsonl")
    train = [json.loads(line) for line in _lines(result.files["train"])]
    docs = [json.loads(line)["text"] for line in _lines(out / "corpus.jsonl")]
    expected = [r["statement"] + "\n" + "\n".join(r["option_list"][a] for a in r["answer"]) for r in train]
    assert docs == expected
    info = json.loads((out / "dataset_info.json").read_text())
    assert info["corpus"]["file_name"] == "corpus.jsonl" and info["corpus"]["columns"] == {"prompt": "text"}


def test_cli_reports_counts_by_type(raw, tmp_path):
    result = CliRunner().invoke(cli, ["split", str(raw), "--out-dir", str(tmp_path / "d"), "--dev", "3",
                                      "--test", "3", "--seed", "7"])
    assert result.exit_code == 0, result.output
    assert "dev: 3 records" in result.output and "(type 0: 2, type 1: 1)" in result.output


@pytest.mark.skipif(not JECQA_SAMPLE.is_file(), reason=f"real JEC-QA sample not found at {JECQA_SAMPLE} "
                    "(../shared beside the checkout, or $BLADE_SHARED_DIR)")
def test_real_jecqa_sample_splits_and_loads_back(tmp_path):
    from blade_plugin.qa.data import load_qa

    result = split_raw([JECQA_SAMPLE], tmp_path / "data", 40, 60, seed=0)
    assert result.counts == {"train": {"0": 500}, "dev": {"0": 40}, "test": {"0": 60}}  # the sample is all type 0
    items = {part: load_qa(path) for part, path in result.files.items()}
    original = {it.id: it for it in load_qa(JECQA_SAMPLE)}
    for part_items in items.values():
        for item in part_items:  # what the loaders read from a part is what they read from the source
            assert item == original[item.id] and item.meta == original[item.id].meta
    assert sum(it.is_multi_answer for part in items.values() for it in part) == 307  # 600 - 293 single-answer


def test_mlecqa_json_array_splits_by_qtype_into_jsonl(tmp_path):
    from blade_plugin.qa.data import load_qa

    records = [{"qid": f"m{i}", "qtype": "A1" if i < 6 else "B1", "qtext": f"患者{i}最可能的诊断是",
                "options": {"A": "甲", "B": "乙", "C": "丙", "D": "丁", "E": "戊"}, "answer": "C"} for i in range(9)]
    raw = tmp_path / "train.json"
    raw.write_text(json.dumps(records, ensure_ascii=False, indent=1), encoding="utf-8")  # one JSON array
    result = split_raw([raw], tmp_path / "data", 3, 0, seed=0, group_by="qtype")
    assert result.format == "mlecqa"
    assert result.counts == {"train": {"A1": 4, "B1": 2}, "dev": {"A1": 2, "B1": 1}, "test": {}}
    dev = [json.loads(line) for line in _lines(result.files["dev"])]
    assert all(r in records for r in dev) and len(dev) == 3
    assert [it.meta["qtype"] for it in load_qa(result.files["dev"])] == [r["qtype"] for r in dev]
