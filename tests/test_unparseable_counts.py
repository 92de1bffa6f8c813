"""Replies with no readable answer are scored wrong and counted: evaluation metrics and report, KIT stats.
Real HTTP against the stub server on 127.0.0.1; replies written as real LLMs hedge and refuse."""

from __future__ import annotations

import json

from blade_plugin.qa.answering import KnowledgeAnswerer
from blade_plugin.stages.evaluation import EvalConfig, run_evaluation
from blade_plugin.stages.kit import generate_kit_data
from blade_plugin.llm.client import LLMClient
from blade_plugin.qa.data import QAItem
from blade_plugin.qa.metrics import accuracy_summary
from blade_testing.openai_stub_server import StubOpenAIServer
from conftest import llm_config

# question id -> the answer-request reply; ph006's gold is A, ph007's C, ph013's B
REPLIES = {
    "ph006": "Metformin accumulates in renal failure and impairs hepatic lactate clearance.\n\nAnswer: A",
    "ph007": "It could be either B or C depending on the formulation; I cannot determine a single answer.",
    "ph013": "答案：A或B",
}


def _responder(messages, body):
    content = messages[-1]["content"]
    if "Correct answer:" in content:  # a knowledge-writing request (it carries the gold answer)
        return "Warfarin antagonises vitamin K epoxide reductase; fluoroquinolones inhibit DNA gyrase."
    for item_id, question in QUESTIONS.items():
        if question in content:
            return REPLIES[item_id]
    raise AssertionError("unexpected prompt")


QUESTIONS: dict[str, str] = {}

# The three questions, written here so the test does not depend on the bundled demo domain.
_ITEMS = [
    QAItem("ph006", "Which drug is contraindicated in severe renal failure because of lactic acidosis?",
           {"A": "Metformin", "B": "Insulin glargine", "C": "Sitagliptin", "D": "Glipizide"}, ("A",)),
    QAItem("ph007", "Which antibiotic class inhibits bacterial DNA gyrase?",
           {"A": "Macrolides", "B": "Penicillins", "C": "Fluoroquinolones", "D": "Tetracyclines"}, ("C",)),
    QAItem("ph013", "华法林通过抑制哪种酶发挥抗凝作用？",
           {"A": "环氧合酶", "B": "维生素K环氧化物还原酶", "C": "凝血酶", "D": "Xa因子"}, ("B",)),
]


def _items(demo_data_dir=None):
    QUESTIONS.update({it.id: it.question for it in _ITEMS})
    return list(_ITEMS)


def test_accuracy_summary_counts_unparseable():
    summary = accuracy_summary([True, False, False, False], 200, 0, unparseable=[False, True, False, True])
    assert (summary["correct"], summary["unparseable"], summary["accuracy"]) == (1, 2, 0.25)
    assert "unparseable" not in accuracy_summary([True], 200, 0)


def test_evaluation_reports_unparseable(demo_data_dir, prompts, tmp_path):
    items = _items(demo_data_dir)
    with StubOpenAIServer(_responder) as server, LLMClient(llm_config(server, tmp_path)) as client:
        metrics = run_evaluation(items, KnowledgeAnswerer(prompts, client),
                                 EvalConfig(out_dir=tmp_path / "eval", modes=("llm",), bootstrap=200))
    llm = metrics["modes"]["llm"]
    assert (llm["n"], llm["correct"], llm["unparseable"]) == (3, 1, 2)
    rows = [json.loads(line) for line in (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert {r["id"]: (r["correct"], r["unparseable"], r["parsed"]) for r in rows} == {
        "ph006": (True, False, ["A"]), "ph007": (False, True, None), "ph013": (False, True, None)}
    on_disk = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert on_disk["modes"]["llm"]["unparseable"] == 2
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "| unparseable |" in report and "| LLM alone | 3 | 0.333 |" in report and report.count("| 2 |") == 1


def test_kit_stats_count_unparseable(demo_data_dir, prompts, tmp_path):
    items = _items(demo_data_dir)
    out = tmp_path / "kit.jsonl"
    with StubOpenAIServer(_responder) as server, LLMClient(llm_config(server, tmp_path)) as client:
        stats = generate_kit_data(items, prompts, client, out, progress_bar=False)
    assert (stats.total, stats.kept, stats.dropped, stats.unparseable) == (3, 1, 2, 2)
    assert json.loads(out.with_name("kit.jsonl.stats.json").read_text())["unparseable"] == 2
