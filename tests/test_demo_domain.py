"""The bundled fictional domain keeps its promises (checked here independently of the generator's audit)."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from blade_plugin.data import make_demo_domain
from blade_plugin.qa.data import load_qa

_STOP = {"a", "an", "the", "of", "and", "or", "to", "in", "is", "for", "which", "what", "who", "whom", "does",
         "do", "did", "it", "its", "should", "would", "from", "with", "has", "have", "two", "how", "when", "she"}


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _rows(demo_data_dir, name):
    return [json.loads(line) for line in (demo_data_dir / name).read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def splits(demo_data_dir):
    return {s: load_qa(demo_data_dir / f"demo_qa_{s}.jsonl") for s in ("train", "dev", "test")}


def test_committed_files_are_what_the_seeded_script_writes(demo_data_dir, tmp_path):
    assert make_demo_domain.main(["--out", str(tmp_path)]) == 0
    for name in ("demo_corpus.jsonl", "demo_qa_train.jsonl", "demo_qa_dev.jsonl", "demo_qa_test.jsonl",
                 "demo_kit.jsonl"):
        assert (tmp_path / name).read_bytes() == (demo_data_dir / name).read_bytes(), name
    assert make_demo_domain.main(["--check", "--out", str(tmp_path)]) == 0
    (tmp_path / "demo_kit.jsonl").write_text("{}\n")
    assert make_demo_domain.main(["--check", "--out", str(tmp_path)]) == 1


def test_split_sizes_and_multi_answer_items(splits, demo_data_dir):
    sizes = {s: (len(items), sum(i.is_multi_answer for i in items)) for s, items in splits.items()}
    assert sizes == {"train": (54, 6), "dev": (41, 5), "test": (75, 9)}
    kinds = {s: Counter(i.meta["kind"] for i in items) for s, items in splits.items()}
    assert kinds == {"train": {"trained": 54}, "dev": {"trained": 16, "reverse": 12, "corpus_only": 13},
                     "test": {"trained": 30, "reverse": 18, "corpus_only": 27}}
    assert all(len(i.options) == 4 and len(i.answer) in (1, 2) for items in splits.values() for i in items)
    assert len(_rows(demo_data_dir, "demo_corpus.jsonl")) == 225  # 18 remedies x 4 facts x 3, + 9 maker pairs
    for items in splits.values():  # no letter is a better blind guess than another (within 2 of even)
        counts = Counter(i.answer[0] for i in items if not i.is_multi_answer)
        assert max(counts.values()) - min(counts.values()) <= 5 and set(counts) == set("ABCD")


def test_every_fact_has_three_corpus_phrasings_and_a_training_question(splits, demo_data_dir):
    corpus = [r["text"] for r in _rows(demo_data_dir, "demo_corpus.jsonl")]
    assert all(1 <= len(re.findall(r"[.!?](\s|$)", t)) <= 3 for t in corpus)
    facts = {i.meta["fact"] for i in splits["train"]}
    for fact in facts:
        subject, _, value = (part.strip() for part in fact.split("|"))
        for name in value.split(" + "):  # a two-answer fact is two manufacturer facts
            assert sum(subject in t and name in t for t in corpus) >= 3, fact
    corpus_facts = set()
    for split in ("dev", "test"):
        by_kind = {k: {i.meta["fact"] for i in splits[split] if i.meta["kind"] == k}
                   for k in ("trained", "reverse", "corpus_only")}
        assert by_kind["trained"] | by_kind["reverse"] <= facts  # training facts, asked again
        assert not by_kind["corpus_only"] & facts  # facts no training question asks
        corpus_facts |= by_kind["corpus_only"]
    for fact in corpus_facts:  # ... which the corpus states, three times over
        subject, _, value = (part.strip() for part in fact.split("|"))
        for name in value.split(" + "):
            assert sum(subject in t and name in t for t in corpus) >= 3, fact


def test_reverse_items_ask_a_training_fact_from_its_value(splits):
    train_facts = {i.meta["fact"] for i in splits["train"]}
    reverse = [i for s in ("dev", "test") for i in splits[s] if i.meta["kind"] == "reverse"]
    assert len(reverse) == 30
    for item in reverse:
        drug, _, value = (part.strip() for part in item.meta["fact"].split("|"))
        assert item.meta["fact"] in train_facts and value in item.question and drug not in item.question
        assert item.options[item.answer[0]] == drug


def test_dev_and_test_are_worded_differently_from_train_and_corpus(splits, demo_data_dir):
    # every entity name is some item's option (remedy names are the options of the two-answer items)
    names = sorted({n for items in splits.values() for i in items for n in i.options.values()}, key=len,
                   reverse=True)

    def grams(text):
        for n in names:
            text = text.replace(n, "X")
        w = _words(text)
        return {tuple(w[k:k + 4]) for k in range(len(w) - 3)}

    seen = set().union(*(grams(r["text"]) for r in _rows(demo_data_dir, "demo_corpus.jsonl")),
                       *(grams(i.question) for i in splits["train"]))
    for split in ("dev", "test"):
        for item in splits[split]:
            assert not grams(item.question) & seen, item.id
    train_q = {i.question for i in splits["train"]}
    assert not train_q & {i.question for s in ("dev", "test") for i in splits[s]}


def test_no_distractor_shares_more_question_words_than_the_correct_option(splits):
    checked = 0
    for items in splits.values():
        for item in items:
            asked = set(_words(item.question)) - _STOP
            overlap = {k: len(set(_words(v)) & asked) for k, v in item.options.items()}
            assert max(overlap[k] for k in item.options if k not in item.answer) <= min(overlap[k] for k in item.answer)
            checked += 1
    assert checked == 170


def test_distractors_are_entities_of_the_same_kind(splits):
    by_kind: dict[str, set[str]] = {}
    for items in splits.values():  # the correct values of each relation, over all splits (remedies for "maker")
        for item in items:
            kind = item.id.split("-")[1]
            if not kind.startswith("rev") and kind != "maker":
                by_kind.setdefault(kind, set()).update(item.options[a] for a in item.answer)
    remedies = {i.meta["fact"].split(" | ")[0] for s in splits.values() for i in s if i.id.split("-")[1] != "maker"}
    for items in splits.values():
        for item in items:
            kind = item.id.split("-")[1]
            pool = remedies if kind == "maker" or kind.startswith("rev") else by_kind[kind]
            assert set(item.options.values()) <= pool, item.id


def test_kit_rows_come_from_training_questions_only(splits, demo_data_dir, prompts):
    kit = _rows(demo_data_dir, "demo_kit.jsonl")
    assert [r["instruction"] for r in kit] == [prompts.small_model_query(i) for i in splits["train"]]
    for row, item in zip(kit, splits["train"]):
        assert row["input"] == "" and all(item.options[a] in row["output"] for a in item.answer)
        assert not any(item.options[k] in row["output"] for k in item.options if k not in item.answer)
    held_out = {i.question for s in ("dev", "test") for i in splits[s]}
    assert not any(q in r["instruction"] or q in r["output"] for r in kit for q in held_out)
    info = json.loads((demo_data_dir / "dataset_info.json").read_text())
    assert info["blade_demo_kit"]["file_name"] == "demo_kit.jsonl"
    assert info["blade_demo_corpus"]["file_name"] == "demo_corpus.jsonl"
