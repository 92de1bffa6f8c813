"""BM25 retrieval (retrieval/bm25.py) on a hand-made corpus with hand-computed scores; grounded KIT rows
record their passages and the reader restates the supporting one; the ablation's retrieval row."""

from __future__ import annotations

import json
import math

import pytest

from blade_plugin.extras.errors import BladeInputError
from blade_plugin.qa.data import QAItem, load_qa
from blade_plugin.retrieval import CorpusIndex, tokens

CORPUS = [
    "Trelomazine is indicated for Corvane fever.",  # 1
    "The antidote to Trelomazine poisoning is Solvarin.",  # 2
    "Solvarin neutralises Trelomazine and Trelomazine only.",  # 3
    "Quorvadil is indicated for Ashmere palsy.",  # 4
    "The weather in Ostrelia is mild.",  # 5
]


def _bm25(query: list[str], docs: list[list[str]], k1: float = 1.5, b: float = 0.75) -> list[float]:
    """Lucene BM25 written out from its definition (the expectation, independent of bm25s)."""
    n = len(docs)
    avgdl = sum(len(d) for d in docs) / n
    out = []
    for doc in docs:
        score = 0.0
        for term in query:
            df = sum(term in d for d in docs)
            if not df:
                continue
            idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
            tf = doc.count(term)
            score += idf * tf / (tf + k1 * (1 - b + b * len(doc) / avgdl))
        out.append(score)
    return out


def test_tokens_latin_words_minus_stopwords_and_chinese_bigrams():
    assert tokens("The antidote to Trelomazine is Solvarin.") == ["antidote", "trelomazine", "solvarin"]
    assert tokens("合同无效") == ["合同", "同无", "无效"]
    assert tokens("第17条 规定：甲") == ["第", "17", "条", "规定", "甲"]
    assert tokens("the of and") == []


def test_ranking_and_scores_match_hand_computed_bm25(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" + "\n" * (i == 1) for i, t in enumerate(CORPUS)))
    index = CorpusIndex.from_jsonl(path)
    assert index.lines == [1, 2, 4, 5, 6]  # the blank line is skipped, line numbers are the file's
    query = "What is the antidote for Trelomazine?"
    hits = index.search(query, k=5)
    # "antidote" is in doc 2 only; "trelomazine" in docs 1-3 (twice in doc 3): doc 2 > doc 3 > doc 1,
    # docs 4-5 share no token with the query and are not returned
    assert [h.text for h in hits] == [CORPUS[1], CORPUS[2], CORPUS[0]]
    expected = _bm25(tokens(query), [tokens(t) for t in CORPUS])
    assert expected[3] == expected[4] == 0.0
    for hit in hits:
        assert hit.score == pytest.approx(expected[CORPUS.index(hit.text)], rel=1e-5)
    assert [h.line for h in hits] == [2, 4, 1]
    assert [h.text for h in index.search(query, k=1)] == [CORPUS[1]]
    assert index.search("nothing here matches", k=3) == []


def test_ties_break_by_corpus_order_and_chinese_retrieval():
    index = CorpusIndex(["甲与乙订立买卖合同。", "合同无效的，自始没有法律约束力。", "丙故意伤害丁。", "合同无效情形。"])
    # "合同无效": bigrams 合同 同无 无效; docs 2 and 4 have all three, doc 1 only 合同 -> 4 (shorter) > 2 > 1
    assert [h.text for h in index.search("合同无效", k=3)] == ["合同无效情形。", "合同无效的，自始没有法律约束力。",
                                                             "甲与乙订立买卖合同。"]
    twins = CorpusIndex(["alpha beta", "gamma", "beta alpha"])  # same tokens, same length: the same score
    hits = twins.search("alpha", k=2)
    assert [h.text for h in hits] == ["alpha beta", "beta alpha"] and hits[0].score == hits[1].score


def test_bad_corpus_line_names_file_line_and_field(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text(json.dumps({"text": "ok"}) + "\n" + json.dumps({"body": "no text"}) + "\n")
    with pytest.raises(BladeInputError, match=r"corpus.jsonl:2: field 'text': expected a non-empty string"):
        CorpusIndex.from_jsonl(path)


def test_grounded_kit_rows_record_their_passages_and_restate_the_supporting_one(tmp_path, prompts, isolated_home):
    from blade_plugin.llm.client import LLMClient, LLMConfig
    from blade_plugin.llm.reader import EvidenceReader
    from blade_plugin.stages.kit import generate_kit_data, progress_path_for
    from blade_testing.openai_stub_server import StubOpenAIServer

    item = QAItem("t1", "What is the antidote for Trelomazine?",
                  {"A": "Pemmitrex", "B": "Solvarin", "C": "Draxolene", "D": "Nuvacort"}, ("B",))
    index = CorpusIndex(CORPUS)
    out = tmp_path / "kit.jsonl"
    with StubOpenAIServer(EvidenceReader(), models=("reader",)) as server:
        with LLMClient(LLMConfig(base_url=server.base_url, model="reader", cache_db=tmp_path / "c.sqlite3")) as client:
            stats = generate_kit_data([item], prompts, client, out, corpus=index, corpus_k=2, progress_bar=False)
        prompt = server.requests[0]["messages"][-1]["content"]
    assert stats.kept == 1
    # the query is the question and the correct answer's text: docs 2 and 3 both name Solvarin and Trelomazine
    assert "Passages from the corpus" in prompt and f"- {CORPUS[1]}" in prompt and f"- {CORPUS[2]}" in prompt
    [row] = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["passages"] == [CORPUS[1], CORPUS[2]]
    # the reader restates the first passage that states the correct option, not the bare option
    assert row["output"] == f"Relevant knowledge: {CORPUS[1]}"
    progress = [json.loads(line) for line in progress_path_for(out).read_text().splitlines()]
    [done] = [r for r in progress if r.get("type") == "item"]
    assert [p["text"] for p in done["passages"]] == [CORPUS[1], CORPUS[2]] and done["passages"][0]["score"] > 0


def test_reader_restates_the_passages_that_state_the_correct_options():
    from blade_plugin.llm.reader import supporting_passages

    options = {"A": "Solvarin", "B": "Pemmitrex", "C": "Draxolene", "D": "Nuvacort"}
    passages = ["Trelomazine is indicated for Corvane fever.", "Pemmitrex reverses Quorvadil.",
                "Solvarin neutralises Trelomazine.", "Solvarin is stocked everywhere."]
    assert supporting_passages(passages, ["Solvarin"], "Antidote for Trelomazine?", options) == [passages[2]]
    # two answers: the fewest passages stating both, earliest first
    assert supporting_passages(passages, ["Solvarin", "Pemmitrex"], "?", options) == [passages[1], passages[2]]
    assert supporting_passages(passages[:2], ["Solvarin"], "?", options) == []  # no passage states it


def test_retrieval_ablation_row_answers_from_passages(demo_data_dir, prompts, tmp_path, isolated_home):
    from blade_plugin.llm.client import LLMClient, LLMConfig
    from blade_plugin.stages.ablation import AblationConfig, AblationInputs, run_ablation

    items = [i for i in load_qa(demo_data_dir / "demo_qa_test.jsonl") if i.meta["kind"] == "corpus_only"][:6]
    corpus = demo_data_dir / "demo_corpus.jsonl"
    inputs = AblationInputs(base_model="/nonexistent", corpus=str(corpus))
    with LLMClient(LLMConfig(backend="reader", cache_db=tmp_path / "c.sqlite3")) as client:
        table = run_ablation(items, prompts, client, inputs,
                             AblationConfig(out_dir=tmp_path / "abl", group_by="kind", bootstrap=200),
                             keys=("llm", "retrieval"))
    row = next(r for r in table["rows"] if r["key"] == "retrieval")
    assert "skipped" not in row and row["groups"]["corpus_only"]["n"] == 6
    predictions = [json.loads(line) for line in (tmp_path / "abl" / "rows").glob("retrieval-*/predictions.jsonl")
                   .__next__().read_text().splitlines()]
    texts = {json.loads(line)["text"] for line in corpus.read_text().splitlines()}
    for p, item in zip(predictions, items):
        passages = p["knowledge"].split("\n")
        assert 1 <= len(passages) <= 3 and set(passages) <= texts
        drug = item.meta["fact"].split(" | ")[0]
        assert any(drug.split()[0] in passage for passage in passages), item.id
    skipped = run_ablation(items, prompts, LLMClient(LLMConfig(backend="reader", cache_db=tmp_path / "c.sqlite3")),
                           AblationInputs(base_model="/nonexistent"),
                           AblationConfig(out_dir=tmp_path / "abl2", bootstrap=200), keys=("llm", "retrieval"))
    assert skipped["rows"][1]["skipped"].startswith("no --corpus")
