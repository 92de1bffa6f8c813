"""`--group-by`: per-group accuracy, CI, McNemar vs LLM alone and knowledge support, against hand-computed
values; raw JEC-QA keeps `type` and its other fields; the ablation table prints a column per group."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from blade_plugin.extras.errors import BladeError
from blade_plugin.qa.data import QAItem, load_qa
from blade_plugin.qa.groups import check_group_field, group_metrics
from blade_plugin.stages.evaluation import compute_metrics, render_report

DATA = Path(__file__).parent / "data"
OPTIONS = {"A": "Solvarin", "B": "Pemmitrex", "C": "Draxolene", "D": "Nuvacort"}


def _items() -> list[QAItem]:
    # five "trained" items then three "corpus_only" ones; the gold is always A (Solvarin)
    kinds = ["trained"] * 5 + ["corpus_only"] * 3
    return [QAItem(f"q{i}", f"Question {i}?", OPTIONS, ("A",), {"kind": kind}) for i, kind in enumerate(kinds)]


def _predictions():
    llm = [True, False, False, False, False, True, True, False]
    knowledge = [True, True, True, True, False, False, False, False]
    texts = ["Solvarin.", "Solvarin.", "Solvarin and Pemmitrex.", "Solvarin.", "Nuvacort.", "", "Draxolene.", ""]
    rows = [{"mode": "llm", "id": f"q{i}", "correct": c, "knowledge": ""} for i, c in enumerate(llm)]
    rows += [{"mode": "knowledge", "id": f"q{i}", "correct": c, "knowledge": t}
             for i, (c, t) in enumerate(zip(knowledge, texts))]
    return rows


def test_group_metrics_match_hand_computed_values():
    metrics = compute_metrics(_items(), _predictions(), ("llm", "knowledge"), n_resamples=500, group_by="kind")
    assert metrics["groups"]["field"] == "kind"
    values = metrics["groups"]["values"]
    assert list(values) == ["trained", "corpus_only"]
    trained, only = values["trained"], values["corpus_only"]
    # trained: LLM 1/5, knowledge 4/5; discordant pairs: 3 only-knowledge, 0 only-LLM -> McNemar p = 2 * 0.5^3
    assert (trained["llm"]["correct"], trained["llm"]["n"], trained["llm"]["accuracy"]) == (1, 5, 0.2)
    assert trained["knowledge"]["accuracy"] == 0.8
    assert trained["knowledge"]["vs_llm"]["accuracy_diff"] == 0.6
    assert (trained["knowledge"]["vs_llm"]["wins"], trained["knowledge"]["vs_llm"]["losses"]) == (3, 0)
    assert trained["knowledge"]["vs_llm"]["mcnemar_p"] == 0.25
    # knowledge support on trained: "Solvarin." x3 supports A alone; "Solvarin and Pemmitrex." ties A with B
    # (not support, and names B); "Nuvacort." names D -> supports 3/5, names wrong 2/5
    assert trained["knowledge"]["knowledge_support"] == {"supports_correct": 0.6, "names_wrong": 0.4, "n": 5}
    # corpus_only: LLM 2/3, knowledge 0/3; 0 wins, 2 losses -> p = 2 * 0.5^2 = 0.5
    assert only["llm"]["accuracy"] == 0.6667 and only["knowledge"]["accuracy"] == 0.0
    assert only["knowledge"]["vs_llm"]["mcnemar_p"] == 0.5
    assert only["knowledge"]["vs_llm"]["accuracy_diff"] == -0.6667
    # a constant group has no spread: its interval is the point
    assert only["knowledge"]["ci95"] == [0.0, 0.0]
    # only one of the three has knowledge ("Draxolene.", names C)
    assert only["knowledge"]["knowledge_support"] == {"supports_correct": 0.0, "names_wrong": 1.0, "n": 1}
    assert "vs_llm" not in only["llm"] and "knowledge_support" not in only["llm"]
    report = render_report(metrics)
    assert "## By kind" in report
    assert "| trained | LLM + small-LM knowledge | 5 | 0.800 |" in report and "+0.600 (p=0.25)" in report


def test_ungrouped_metrics_have_no_groups():
    assert "groups" not in compute_metrics(_items(), _predictions(), ("llm", "knowledge"), n_resamples=200)


def test_raw_jecqa_type_and_extra_fields_group(tmp_path):
    items = load_qa(DATA / "jecqa_sample.json")
    types = [item.meta["type"] for item in items]
    correct = [True, False, True, True, False]
    by_type = group_metrics(items, "type", correct, n_resamples=200)
    expected = {str(t): sum(c for c, tt in zip(correct, types) if tt == t) for t in set(types)}
    assert {g: m["correct"] for g, m in by_type.items()} == expected
    assert sum(m["n"] for m in by_type.values()) == 5
    # any extra raw field survives the loader and can be grouped on
    raw = [json.loads(line) for line in (DATA / "jecqa_sample.json").read_text(encoding="utf-8").splitlines()]
    raw[0]["kind"], raw[1]["kind"] = "two_hop", "corpus_only"
    path = tmp_path / "raw.json"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in raw), encoding="utf-8")
    loaded = load_qa(path)
    assert loaded[0].meta["kind"] == "two_hop" and loaded[0].meta["type"] == raw[0]["type"]
    groups = group_metrics(loaded, "kind", [True] * 5, n_resamples=200)
    assert {g: m["n"] for g, m in groups.items()} == {"two_hop": 1, "corpus_only": 1, "(none)": 3}


def test_unknown_group_field_is_refused_naming_the_fields():
    with pytest.raises(BladeError, match=r"--group-by kinds: no item has a field 'kinds' .*kind"):
        check_group_field(_items(), "kinds")
    check_group_field(_items(), "kind")


def test_ablation_markdown_has_a_column_per_group():
    from blade_plugin.stages.ablation import _add_groups, AblationConfig, render_markdown

    items = _items()
    preds = _predictions()
    correct = {"llm": [p["correct"] for p in preds if p["mode"] == "llm"],
               "dp": [p["correct"] for p in preds if p["mode"] == "knowledge"]}
    knowledge = {"llm": [""] * 8, "dp": [p["knowledge"] for p in preds if p["mode"] == "knowledge"]}
    rows = [{"key": "llm", "title": "LLM alone", "accuracy": 0.375, "ci95": [0.1, 0.7], "unparseable": 0,
             "llm_calls": 8, "prompt_tokens": 1, "completion_tokens": 1},
            {"key": "dp", "title": "+ DP only", "accuracy": 0.5, "ci95": [0.1, 0.8], "unparseable": 0,
             "llm_calls": 8, "prompt_tokens": 1, "completion_tokens": 1}]
    _add_groups(rows, items, correct, knowledge, AblationConfig(out_dir=Path("."), group_by="kind", bootstrap=200))
    assert rows[1]["groups"]["trained"]["vs_llm"]["mcnemar_p"] == 0.25
    text = render_markdown({"n_items": 8, "rows": rows, "group_by": "kind"})
    assert "| configuration | trained (n=5) | corpus_only (n=3) |" in text
    assert "| + DP only | 0.800 +0.600 (p=0.25); 0.60 / 0.40 | 0.000 -0.667 (p=0.5); 0.00 / 1.00 |" in text
    assert "| LLM alone | 0.200 | 0.667 |" in text
