"""The reader-independent knowledge metric, against values computed by hand (English and Chinese)."""

from __future__ import annotations

import pytest

from blade_plugin.stages.evaluation import compute_metrics
from blade_plugin.qa.data import QAItem
from blade_plugin.extras.lexical import units
from blade_plugin.qa.knowledge_support import item_support, option_support, support_summary

EN_Q = "Which agent reverses an overdose of Gorvaxin?"
EN_OPTIONS = {"A": "Solvarin", "B": "Wyndoquel", "C": "Nuvacort sodium", "D": "Fennidol sodium"}
ZH_Q = "阿片类药物过量的解毒剂是"
ZH_OPTIONS = {"A": "纳洛酮", "B": "阿托品", "C": "氟马西尼", "D": "乙酰半胱氨酸"}


def test_units_are_words_for_english_and_character_bigrams_for_chinese():
    assert units("The antidote of COX-1 is Wyndoquel") == {"antidote", "cox", "1", "wyndoquel"}
    assert units("合同无效") == {"合同", "同无", "无效"}
    assert units("甲，乙") == {"甲", "乙"}  # one-character runs count as themselves
    assert units("依据Article 17的规定") == {"依据", "article", "17", "的规", "规定"}


@pytest.mark.parametrize("knowledge, correct, expected_support, supports, names_wrong", [
    # {treated, wyndoquel, sodium, salts} after removing the question's words: B 1/1, C and D 1/2 (sodium)
    ("Gorvaxin overdose is treated with Wyndoquel, not sodium salts.", ["B"],
     {"A": 0.0, "B": 1.0, "C": 0.5, "D": 0.5}, True, False),
    # the distractor is stated in full: 2/2 -> named, and it outscores the correct option
    ("Nuvacort sodium reverses Gorvaxin.", ["B"], {"A": 0.0, "B": 0.0, "C": 1.0, "D": 0.5}, False, True),
    # two correct options, both stated; D's 1/2 stays below both
    ("Both Wyndoquel and Nuvacort sodium work.", ["B", "C"], {"A": 0.0, "B": 1.0, "C": 1.0, "D": 0.5}, True, False),
    # knowledge that only repeats the question supports nothing
    ("Which agent reverses an overdose of Gorvaxin?", ["B"], {"A": 0.0, "B": 0.0, "C": 0.0, "D": 0.0}, False, False),
])
def test_english_items(knowledge, correct, expected_support, supports, names_wrong):
    result = item_support(EN_OPTIONS, correct, knowledge, EN_Q)
    assert result == {"supports_correct": supports, "names_wrong": names_wrong, "support": expected_support}


@pytest.mark.parametrize("knowledge, expected_support, supports, names_wrong", [
    # A {纳洛, 洛酮} both stated; B {阿托, 托品} both stated too: a tie, and a wrong option named
    ("纳洛酮可逆转阿片中毒，阿托品则用于有机磷中毒。", {"A": 1.0, "B": 1.0, "C": 0.0, "D": 0.0}, False, True),
    ("应使用纳洛酮。", {"A": 1.0, "B": 0.0, "C": 0.0, "D": 0.0}, True, False),
    # D {乙酰, 酰半, 半胱, 胱氨, 氨酸}: 3 of 5 stated = 0.6, above A's 0 but below the 0.75 "named" bar
    ("乙酰半胱可以用于对乙酰氨基酚中毒", {"A": 0.0, "B": 0.0, "C": 0.0, "D": 0.6}, False, False),
])
def test_chinese_items(knowledge, expected_support, supports, names_wrong):
    result = item_support(ZH_OPTIONS, ["A"], knowledge, ZH_Q)
    assert result == {"supports_correct": supports, "names_wrong": names_wrong, "support": expected_support}


def test_units_shared_by_every_option_do_not_count():
    options = {"A": "Article 17", "B": "Article 42", "C": "Article 96", "D": "Article 104"}
    # "article" is in every option: only the number tells them apart, so "Article 42" earns B nothing
    assert option_support(options, "See Article 42 for sales; Gorvaxin falls under 17.", "Which provision?") == \
        {"A": 1.0, "B": 1.0, "C": 0.0, "D": 0.0}
    assert option_support(options, "Gorvaxin: Article 17.") == {"A": 1.0, "B": 0.0, "C": 0.0, "D": 0.0}


def test_a_distractor_contained_in_the_correct_option_is_not_named():
    options = {"A": "三年", "B": "一年", "C": "三年，法律另有规定的除外", "D": "二十年"}
    # C states A's words too; A is wrong but its units all belong to C, so stating C does not "name" A
    # A {三年}; C {三年, 法律, 律另, 另有, 有规, 规定, 定的, 的除, 除外}: both fully stated, a tie that still counts
    result = item_support(options, ["C"], "诉讼时效为三年，法律另有规定的除外。", "诉讼时效期间一般为多久？")
    assert result == {"supports_correct": True, "names_wrong": False,
                      "support": {"A": 1.0, "B": 0.0, "C": 1.0, "D": 0.0}}
    # stating only the fragment supports the distractor, not C (1 of 9 units)
    result = item_support(options, ["C"], "诉讼时效为三年。", "诉讼时效期间一般为多久？")
    assert result["supports_correct"] is False and result["support"] == {"A": 1.0, "B": 0.0, "C": round(1 / 9, 4),
                                                                          "D": 0.0}


def test_summary_rates_and_exclusions():
    items = [
        QAItem("e1", EN_Q, EN_OPTIONS, ("B",)),
        QAItem("e2", EN_Q, EN_OPTIONS, ("B",)),
        QAItem("z1", ZH_Q, ZH_OPTIONS, ("A",)),
        QAItem("z2", ZH_Q, ZH_OPTIONS, ("A",)),
        QAItem("free", "Capital of Ostrelia?", None, "Velt"),  # free text: not scored
    ]
    knowledge = ["Wyndoquel.", "Nuvacort sodium reverses Gorvaxin.", "应使用纳洛酮。", "", "Velt is the capital."]
    summary = support_summary(items, knowledge)
    # scored: e1 (supports), e2 (names C), z1 (supports); z2 has no knowledge, "free" has no options
    assert (summary["supports_correct"], summary["names_wrong"], summary["n"]) == (round(2 / 3, 4), round(1 / 3, 4), 3)
    assert [d["id"] for d in summary["items"]] == ["e1", "e2", "z1"]
    assert summary["items"][1]["support"]["C"] == 1.0
    assert support_summary(items[:1], [""]) == {"supports_correct": None, "names_wrong": None, "n": 0, "items": []}
    with pytest.raises(ValueError, match="2 items but 1 knowledge"):
        support_summary(items[:2], ["x"])


def test_evaluation_metrics_report_it_for_modes_with_knowledge():
    items = [QAItem("e1", EN_Q, EN_OPTIONS, ("B",)), QAItem("e2", EN_Q, EN_OPTIONS, ("C",))]
    predictions = [
        {"mode": "llm", "id": "e1", "correct": False, "knowledge": ""},
        {"mode": "llm", "id": "e2", "correct": True, "knowledge": ""},
        # the LLM got e1 wrong although the knowledge was right: the metric still credits the small LM
        {"mode": "knowledge", "id": "e1", "correct": False, "knowledge": "Gorvaxin is reversed by Wyndoquel."},
        {"mode": "knowledge", "id": "e2", "correct": True, "knowledge": "Solvarin, then Fennidol sodium."},
    ]
    metrics = compute_metrics(items, predictions, ("llm", "knowledge"), 200, 0)
    assert "knowledge_support" not in metrics["modes"]["llm"]
    # e1: B 1/1 -> supports; e2 (correct C): A 1/1, D 2/2 named, C 1/2 -> neither supports nor clean
    assert metrics["modes"]["knowledge"]["knowledge_support"] == {"supports_correct": 0.5, "names_wrong": 0.5,
                                                                  "n": 2}
