"""The second bundled domain (a fictional statute code in Chinese, raw JEC-QA format) keeps its promises,
checked independently of the generator's audit, through the raw loader and the zh_legal prompts."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from blade_plugin.data import make_statute_domain
from blade_plugin.llm.reader import EvidenceReader
from blade_plugin.qa.answers import score_answer
from blade_plugin.qa.data import load_qa
from blade_plugin.qa.prompts import load_prompts

FILES = ("statute_corpus.jsonl", "statute_qa_train.json", "statute_qa_dev.json", "statute_qa_test.json",
         "statute_kit.jsonl")


@pytest.fixture(scope="module")
def splits(demo_data_dir):
    return {s: load_qa(demo_data_dir / f"statute_qa_{s}.json") for s in ("train", "dev", "test")}


@pytest.fixture(scope="module")
def corpus(demo_data_dir):
    return [json.loads(line)["text"] for line in (demo_data_dir / "statute_corpus.jsonl").read_text("utf-8").splitlines()]


def test_committed_files_are_what_the_seeded_script_writes(demo_data_dir, tmp_path):
    assert make_statute_domain.main(["--out", str(tmp_path)]) == 0
    for name in FILES:
        assert (tmp_path / name).read_bytes() == (demo_data_dir / name).read_bytes(), name
    assert make_statute_domain.main(["--check", "--out", str(tmp_path)]) == 0
    (tmp_path / "statute_qa_test.json").write_text("{}\n")
    assert make_statute_domain.main(["--check", "--out", str(tmp_path)]) == 1


def test_raw_jecqa_records_with_type_and_kind(splits, demo_data_dir):
    raw = json.loads((demo_data_dir / "statute_qa_test.json").read_text("utf-8").splitlines()[0])
    assert set(raw) == {"answer", "id", "option_list", "statement", "type", "kind", "fact"}
    assert isinstance(raw["answer"], list)
    kinds = {s: Counter(i.meta["kind"] for i in items) for s, items in splits.items()}
    assert kinds["train"] == {"trained": 25}
    assert kinds["test"]["corpus_only"] > len(splits["test"]) / 2  # the test set mostly asks corpus-only facts
    for items in splits.values():
        for item in items:
            assert item.meta["source"] == "jecqa" and item.meta["type"] == (1 if item.meta["kind"] == "two_hop" else 0)
            assert re.search(r"[\u4e00-\u9fff]", item.question)
        counts = Counter(i.answer[0] for i in items if not i.is_multi_answer)
        assert max(counts.values()) - min(counts.values()) <= 2


def test_corpus_only_facts_are_in_the_corpus_and_in_no_training_question(splits, corpus):
    train_text = " ".join(i.question + "".join(i.options[a] for a in i.answer) for i in splits["train"])
    for split in ("dev", "test"):
        for item in splits[split]:
            if item.meta["kind"] != "corpus_only" or item.is_multi_answer:
                continue
            trade, _, value = item.meta["fact"].split(" | ")
            assert trade not in train_text, item.id
            assert sum(trade in t and value in t for t in corpus) >= 3, item.id


def test_two_hop_items_need_two_corpus_facts(splits, corpus):
    hops = [i for s in ("dev", "test") for i in splits[s] if i.meta["kind"] == "two_hop"]
    assert len(hops) == 16
    for item in hops:
        article = re.search(r"第[一二三四五六七八九十百零]+条", item.question).group(0)
        # hop 1: the corpus names the trade the article governs; hop 2: that trade's value is the gold
        trades = {t for t in make_statute_domain.offices(make_statute_domain.TRADES).values() for t in t}
        governed = {tr for tr in trades for doc in corpus if article in doc and tr in doc}
        assert len(governed) == 1, (item.id, governed)
        [trade] = governed
        gold = item.options[item.answer[0]]
        assert any(trade in doc and gold in doc for doc in corpus), item.id
        assert trade not in item.question and not any(gold in doc and article in doc for doc in corpus)


def test_zh_legal_reader_answers_from_corpus_sentences(splits, corpus):
    prompts = load_prompts(variant="zh_legal")
    reader = EvidenceReader()
    for item in splits["test"]:
        if item.is_multi_answer:
            continue
        gold = item.options[item.answer[0]]
        subject = item.meta["fact"].split(" | ")[0].split(" -> ")[-1]
        knowledge = next(doc for doc in corpus if subject in doc and gold in doc)
        raw = reader.reply(prompts.answer(item, knowledge))
        assert score_answer(item, raw).correct, (item.id, knowledge, raw)
        assert raw.splitlines()[-1].startswith("答案：")
