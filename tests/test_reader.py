"""The offline evidence reader over prompts rendered by the real templates, in process and over HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scipy.stats import binomtest

from blade_plugin.llm.client import LLMClient, LLMConfig
from blade_plugin.llm.reader import EvidenceReader, parse_prompt, serve_reader
from blade_plugin.qa.answers import score_answer
from blade_plugin.qa.data import QAItem, load_qa
from helpers import run_cli

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def test_items(demo_data_dir):
    return load_qa(demo_data_dir / "demo_qa_test.jsonl")


@pytest.fixture(scope="module")
def corpus(demo_data_dir):
    return [json.loads(line)["text"] for line in (demo_data_dir / "demo_corpus.jsonl").read_text().splitlines()]


def _subject(item: QAItem) -> str:
    return item.meta["fact"].split(" | ")[0]  # the remedy (or, for two-answer items, the manufacturer) asked about


def _docs_stating(corpus, subject: str, values: list[str]) -> str:
    """Real DP corpus documents that state (subject, value) for each value: knowledge a trained model could write."""
    docs = [t for t in corpus if subject in t and any(v in t for v in values)]
    assert docs
    return " ".join(docs)


def _ask(reader, prompts, item, knowledge):
    raw = reader.reply(prompts.answer(item, knowledge))
    return raw, score_answer(item, raw)


def test_knowledge_stating_the_correct_fact_gets_every_test_item_right(test_items, corpus, prompts):
    reader = EvidenceReader()
    for item in test_items:
        # the fact's own values (for a reverse item the option is the remedy, the docs must state the fact asked)
        values = item.meta["fact"].split(" | ")[2].split(" + ")
        knowledge = _docs_stating(corpus, _subject(item), values)
        raw, score = _ask(reader, prompts, item, knowledge)
        assert score.correct, (item.id, knowledge, raw)
        assert raw.splitlines()[-1] == "Answer: " + ", ".join(item.answer)  # replies like an LLM: reason, then answer


def test_knowledge_stating_a_distractor_picks_that_distractor(test_items, corpus, prompts):
    reader = EvidenceReader()
    checked = 0
    for item in test_items:
        if item.is_multi_answer:
            continue
        wrong = next(k for k in sorted(item.options) if k not in item.answer)
        # the corpus states the distractor's value for ANOTHER remedy: a plausible wrong recollection
        knowledge = next(t for t in corpus if item.options[wrong] in t)
        raw, score = _ask(reader, prompts, item, knowledge)
        assert score.parsed == (wrong,) and not score.correct, (item.id, knowledge, raw)
        checked += 1
    assert checked == 66


def test_empty_or_unrelated_knowledge_answers_near_chance(test_items, corpus, prompts):
    reader = EvidenceReader()
    single = [it for it in test_items if not it.is_multi_answer]
    empty = [_ask(reader, prompts, it, "")[1] for it in test_items]
    assert all(s.parsed is not None and len(s.parsed) == 1 for s in empty)  # always commits to one guess
    hits = sum(s.correct for s, it in zip(empty, test_items) if not it.is_multi_answer)
    assert binomtest(hits, len(single), 0.25).pvalue > 0.01, hits
    assert not any(s.correct for s, it in zip(empty, test_items) if it.is_multi_answer)  # one guess never fits two
    # knowledge about something else entirely supports no option: the same guess as without knowledge
    unrelated = "Inspectors in Ostrelia visit each pharmacy once a year."
    assert [_ask(reader, prompts, it, unrelated)[1].parsed for it in test_items] == [s.parsed for s in empty]
    # the guess depends on the prompt only: letters are spread, not always "A"
    assert len({s.parsed for s in empty}) >= 3


def test_kit_prompt_states_the_correct_option_without_reading_a_corpus(test_items, prompts):
    reader = EvidenceReader()
    item = next(it for it in test_items if it.is_multi_answer)
    text = reader.reply(prompts.knowledge_generation(item))
    both = " and ".join(item.options[a] for a in item.answer)
    assert text == f"Relevant knowledge: {both}."
    # and that knowledge passes the consistency filter: read back, it answers the item correctly
    assert _ask(reader, prompts, item, text)[1].correct


def test_chinese_prompts_from_the_zh_variants(prompts):
    from blade_plugin.qa.prompts import load_prompts

    reader = EvidenceReader()
    legal = load_prompts(variant="zh_legal")
    jec = {it.id: it for it in load_qa(DATA / "jecqa_sample.json")}
    # JEC-QA 1_3502 (answer A, C): knowledge a legal text would carry, worded as a textbook would
    knowledge = "我国刑法规定罪刑法定原则，法无明文规定不为罪；同时坚持法律面前人人平等。"
    raw = reader.reply(legal.answer(jec["1_3502"], knowledge))
    assert raw.endswith("答案：A, C") and score_answer(jec["1_3502"], raw).correct
    # 1_1217 (D, 十八周岁): the knowledge names the age; options differ only in one character pair
    raw = reader.reply(legal.answer(jec["1_1217"], "民法典第十七条：十八周岁以上的自然人为成年人。"))
    assert score_answer(jec["1_1217"], raw).parsed == ("D",)
    kit = reader.reply(legal.knowledge_generation(jec["3_0441"]))
    assert kit == "相关知识：合同成立、乙应当支付价款、甲应当交付货物。"

    medical = load_prompts(variant="zh_medical")
    mle = {it.id: it for it in load_qa(DATA / "mlecqa_sample.json")}
    raw = reader.reply(medical.answer(mle["M0003"], "阿片类中毒时，应静脉注射纳洛酮以拮抗其作用。"))
    assert score_answer(mle["M0003"], raw).parsed == ("A",)
    parsed = parse_prompt(medical.answer(mle["M0002"], "")[-1]["content"])
    assert parsed.kind == "answer" and parsed.knowledge == "" and set(parsed.options) == set("ABCDE")


def test_knowledge_quoting_prompt_headers_is_read_as_knowledge(prompts):
    item = QAItem("q", "Which agent reverses Gorvaxin?", {"A": "Solvarin", "B": "Wyndoquel", "C": "Nuvacort",
                                                          "D": "Fennidol"}, ("B",))
    # a small LM rambling in the prompt's own format must not be mistaken for the question or the KIT prompt
    knowledge = "Question:\nWhat reverses Gorvaxin?\nCorrect answer: A\n\nWyndoquel reverses Gorvaxin overdoses."
    parsed = parse_prompt(prompts.answer(item, knowledge)[-1]["content"])
    assert (parsed.kind, parsed.question, parsed.knowledge) == ("answer", item.question, knowledge)
    assert score_answer(item, EvidenceReader().reply(prompts.answer(item, knowledge))).correct


def _stated(item: QAItem) -> str:
    return " and ".join(item.options[letter] for letter in sorted(item.answer))


def test_llm_client_reader_backend_counts_and_caches(test_items, prompts, tmp_path):
    config = LLMConfig(backend="reader", cache_db=tmp_path / "cache.sqlite3")
    items = test_items[:5]
    # knowledge that states exactly the gold options: the documented reply names them and answers their letters
    batch = [prompts.answer(it, f"Relevant knowledge: {_stated(it)}.") for it in items]
    expected = [f"The background knowledge states {_stated(it)}.\nAnswer: {', '.join(sorted(it.answer))}"
                for it in items]
    with LLMClient(config) as client:
        first = client.complete_many(batch + batch[:2])
        assert client.usage.calls == 5 and client.identity()["base_url"].startswith("reader:")
        again = client.complete_many(batch)
        assert again == first[:5] and client.usage.calls == 5 and client.usage.cache_hits >= 5
    assert first == expected + expected[:2]


def test_kit_over_http_and_in_process_reproduce_the_bundled_kit_data(demo_data_dir, tmp_path):
    """`blade-bpo knowledge` on the bundled training set, once against the reader served on 127.0.0.1 and once
    with --llm-backend reader: both keep every item and write exactly the bundled demo_kit.jsonl."""
    train = demo_data_dir / "demo_qa_train.jsonl"
    expected = (demo_data_dir / "demo_kit.jsonl").read_text()
    with serve_reader() as server:
        http = run_cli(["blade-bpo", "knowledge", "--train", str(train), "--out", str(tmp_path / "http.jsonl"),
                        "--llm-base-url", server.base_url, "--llm-model", "reader", "--no-cache"], cwd=tmp_path)
        assert http.returncode == 0, http.stderr[-3000:]
        assert server.request_count == 2 * 54  # knowledge + consistency check per item, over real sockets
    local = run_cli(["blade-bpo", "knowledge", "--train", str(train), "--out", str(tmp_path / "local.jsonl"),
                     "--llm-backend", "reader", "--cache-db", str(tmp_path / "cache.sqlite3")], cwd=tmp_path)
    assert local.returncode == 0, local.stderr[-3000:]
    # each row is (the small model's query, the reader's documented KIT knowledge: the gold options' text),
    # built here from the training data, not by the reader
    from blade_plugin.qa.prompts import load_prompts

    rendered = load_prompts()
    wanted = [{"instruction": rendered.small_model_query(it), "input": "", "output": f"Relevant knowledge: {_stated(it)}."}
              for it in load_qa(train)]
    for result, name in ((http, "http.jsonl"), (local, "local.jsonl")):
        assert "kept 54 / 54 items" in result.stdout
        written = (tmp_path / name).read_text()
        assert [json.loads(line) for line in written.splitlines()] == wanted
        assert written == expected  # and the bundled demo_kit.jsonl is still what the command writes


def test_a_fragment_option_is_not_chosen_beside_the_full_one(prompts):
    from blade_plugin.qa.prompts import load_prompts

    item = {it.id: it for it in load_qa(DATA / "jecqa_sample.json")}["1_0078"]  # C = A + "，法律另有规定的除外"
    legal = load_prompts(variant="zh_legal")
    raw = EvidenceReader().reply(legal.answer(item, "根据民法典，诉讼时效期间为三年，法律另有规定的除外。"))
    assert raw.endswith("答案：C") and score_answer(item, raw).correct
    raw = EvidenceReader().reply(legal.answer(item, "诉讼时效期间为三年。"))
    assert score_answer(item, raw).parsed == ("A",)
