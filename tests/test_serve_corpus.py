"""`blade-bpo serve --corpus` (issue 29, deliverable 4): what the LLM sees in each `--combine` mode, the default
chosen from the workspace's ablation, and the startup errors.

The fast tests run the real app on a real uvicorn in a thread (`blade_testing.serve_thread`) in front of the
strict stub upstream; the knowledge writer is a stand-in that records what it was asked (no model). The passages
every request must carry are a ranking of a five-line corpus worked out by hand below (and re-checked with the
BM25 formula written out, not bm25s); the prompts are compared with literal text, not with a template render.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
import time

import httpx
import pytest
from blade_testing.openai_stub_server import StubOpenAIServer
from blade_testing.serve_thread import ThreadedServe
from helpers import bm25_order

from blade_plugin.qa.combine_modes import PassageSource
from blade_plugin.qa.data import QAItem
from blade_plugin.qa.prompts import load_prompts
from blade_plugin.retrieval import tokens
from blade_plugin.retrieval.bm25 import CorpusIndex
from blade_plugin.retrieval.combine import PassageRetriever
from blade_plugin.serve.app import ServeSettings, create_app
from blade_plugin.serve.modes import ServeInputs, default_mode
from blade_plugin.serve.upstream import UpstreamConfig

CORPUS = [
    "Velmora is treated with Quintrel.",  # 1
    "Quintrel causes drowsiness in elderly patients.",  # 2
    "Ostrelia is a mild country.",  # 3
    "Velmora outbreaks follow heavy rain in Ostrelia.",  # 4
    "Brassane dissolves in cold water.",  # 5
]
MC = "Which drug treats Velmora?\nA. Quintrel\nB. Brassane"
CHAT = "Tell me about Quintrel"
# The query of MC is its question and options: terms drug, treats, velmora, quintrel, brassane (no line has the
# first two). Line 1 holds two of them (velmora, quintrel): first. Then one term each: brassane (line 5) is in one
# line, velmora and quintrel in two, so brassane's idf is the highest and line 5 (4 terms, the shortest) is second;
# lines 2 (quintrel, 5 terms) and 4 (velmora, 6 terms) tie on idf, the shorter wins: line 2. Top 3: 1, 5, 2.
MC_TOP3 = [CORPUS[0], CORPUS[4], CORPUS[1]]
# CHAT's only corpus term is quintrel (lines 1 and 2); line 1 is shorter. No other line scores above 0.
CHAT_TOP = [CORPUS[0], CORPUS[1]]
# The writer's knowledge: knowledge-as-query adds velmora, outbreaks, rain, ostrelia to MC's query, so line 4
# (all four, and velmora) comes first, line 1 (velmora, quintrel) second, line 5 (brassane, idf ln 4 against
# ostrelia's ln 2.4 for line 3) third.
KNOWLEDGE = "Velmora outbreaks come after rain, reports Ostrelia."
MC_AS_QUERY_TOP3 = [CORPUS[3], CORPUS[0], CORPUS[4]]

EN_KNOWLEDGE = "Background knowledge (may be incomplete):\n"
EN_PASSAGES = "Passages from the corpus (retrieved for this question):\n"
EN_CHAT_KNOWLEDGE = ("Background knowledge that may help with the user's request (it may be incomplete or wrong; use "
                     "it only\nwhere it is relevant):\n")
EN_CHAT_PASSAGES = "Passages from the corpus (retrieved for this request; use them only where they are relevant):\n"
MC_REST = ("Question:\nWhich drug treats Velmora?\nOptions:\nA. Quintrel\nB. Brassane\n\nOne or more options may be "
           "correct. Think briefly, then finish with a line of the form\n\"Answer: X\" listing every correct option "
           "letter (for example \"Answer: B\" or \"Answer: A, C\").")


def bullets(passages: list[str]) -> str:
    return "".join(f"- {p}\n" for p in passages)




def test_the_hand_made_rankings_agree_with_the_bm25_formula():
    assert [CORPUS[i] for i in bm25_order("Which drug treats Velmora? Quintrel Brassane", CORPUS)[:3]] == MC_TOP3
    assert [CORPUS[i] for i in bm25_order(CHAT, CORPUS)] == CHAT_TOP
    query = f"Which drug treats Velmora? Quintrel Brassane {KNOWLEDGE}"
    assert [CORPUS[i] for i in bm25_order(query, CORPUS)[:3]] == MC_AS_QUERY_TOP3


class RecordingWriter:
    """The small model's stand-in: KNOWLEDGE for every text, each text recorded; tokens are words."""

    def __init__(self):
        self.texts: list[str] = []

    def __call__(self, texts: list[str]) -> list[str]:
        self.texts.extend(texts)
        return [KNOWLEDGE for _ in texts]

    @staticmethod
    def count_tokens(text: str) -> int:
        return len(text.split())


class SlowSource:
    """A passage source that takes `seconds` per lookup (a corpus too large for its deadline)."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def texts(self, item: QAItem, extra: str = "") -> list[str]:
        time.sleep(self.seconds)
        return ["late"]


@pytest.fixture(scope="module")
def stub():
    with StubOpenAIServer(responder=lambda messages, body: "Answer: A") as server:
        yield server


@pytest.fixture(scope="module")
def retriever():
    return PassageRetriever(CorpusIndex(CORPUS), k=3)


def serving(stub, mode: str, retriever: PassageSource | None, writer: RecordingWriter | None = None, **settings):
    writer = writer or RecordingWriter()
    upstream = UpstreamConfig(base_url=stub.base_url, model="stub", max_retries=0, timeout=30)
    prompts = load_prompts()
    app = create_app(ServeSettings(combine=mode, max_wait_ms=1, **settings), writer, prompts, prompts, upstream,
                     count_tokens=writer.count_tokens, retriever=retriever)
    return ThreadedServe(app)


def ask(server: ThreadedServe, content: str, **extra) -> httpx.Response:
    body = {"model": "blade", "messages": [{"role": "user", "content": content}], **extra}
    return httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=30)


def sent(stub) -> list[dict]:
    return stub.requests[-1]["messages"]


# --- what each mode sends upstream ----------------------------------------------------------------------------
def test_passages_mode_sends_the_bm25_top_k_and_no_knowledge(stub, retriever):
    writer = RecordingWriter()
    with serving(stub, "passages", retriever, writer) as server:
        response = ask(server, MC)
        assert response.status_code == 200, response.text
        # as the ablation's BM25 row asks it: the passages, one per line, where the knowledge goes
        assert sent(stub) == [{"role": "user", "content": EN_KNOWLEDGE + "\n".join(MC_TOP3) + "\n\n" + MC_REST}]
        blade = response.json()["blade"]
        assert blade["passages"] == MC_TOP3 and blade["knowledge"] is None and blade["combine"] == "passages"
        assert float(response.headers["x-blade-retrieval-ms"]) >= 0
        response = ask(server, CHAT)
        assert response.status_code == 200, response.text
        assert sent(stub) == [{"role": "system", "content": EN_CHAT_PASSAGES + bullets(CHAT_TOP).rstrip("\n")},
                              {"role": "user", "content": CHAT}]
        # opting out of knowledge opts out of every addition
        assert ask(server, MC, blade={"knowledge": False}).status_code == 200
        assert sent(stub) == [{"role": "user", "content": MC}]
    assert writer.texts == []  # the small model writes nothing in this mode


def test_passages_and_knowledge_sends_both_each_labelled(stub, retriever):
    with serving(stub, "passages+knowledge", retriever) as server:
        response = ask(server, MC)
        assert response.status_code == 200, response.text
        assert sent(stub)[-1]["content"] == (EN_KNOWLEDGE + KNOWLEDGE + "\n\n" + EN_PASSAGES + bullets(MC_TOP3) + "\n"
                                             + MC_REST)
        blade = response.json()["blade"]
        assert (blade["knowledge"], blade["passages"]) == (KNOWLEDGE, MC_TOP3)
        assert ask(server, CHAT).status_code == 200
        assert sent(stub)[0] == {"role": "system", "content": EN_CHAT_KNOWLEDGE + KNOWLEDGE + "\n\n" + EN_CHAT_PASSAGES
                                 + bullets(CHAT_TOP).rstrip("\n")}
        # streamed: the first chunk carries the same blade object
        streamed = ask(server, MC, stream=True)
        assert streamed.status_code == 200 and streamed.text.endswith("data: [DONE]\n\n")
        assert json.loads(streamed.text.split("\n\n")[0][5:])["blade"]["passages"] == MC_TOP3


def test_knowledge_mode_is_todays_knowledge_alone(stub, retriever):
    with serving(stub, "knowledge", None) as server:
        response = ask(server, MC)
        assert response.status_code == 200, response.text
        assert sent(stub)[-1]["content"] == EN_KNOWLEDGE + KNOWLEDGE + "\n\n" + MC_REST
        assert response.json()["blade"] == {"knowledge": KNOWLEDGE, "knowledge_ms": response.json()["blade"][
            "knowledge_ms"], "knowledge_cached": False}
        assert "x-blade-retrieval-ms" not in response.headers
        assert ask(server, CHAT).status_code == 200
        assert sent(stub)[0] == {"role": "system", "content": EN_CHAT_KNOWLEDGE + KNOWLEDGE}


def test_knowledge_as_query_sends_the_passages_its_knowledge_retrieved(stub, retriever):
    writer = RecordingWriter()
    with serving(stub, "knowledge-as-query", retriever, writer) as server:
        response = ask(server, MC)
        assert response.status_code == 200, response.text
        assert sent(stub) == [{"role": "user", "content": EN_KNOWLEDGE + "\n".join(MC_AS_QUERY_TOP3) + "\n\n" + MC_REST}]
        blade = response.json()["blade"]
        assert (blade["knowledge"], blade["passages"]) == (KNOWLEDGE, MC_AS_QUERY_TOP3)
    assert len(writer.texts) == 1 and "Passages" not in writer.texts[0]  # the small model read the question alone


def test_knowledge_from_passages_feeds_the_passages_to_the_small_model_only(stub, retriever):
    writer = RecordingWriter()
    with serving(stub, "knowledge-from-passages", retriever, writer) as server:
        response = ask(server, MC)
        assert response.status_code == 200, response.text
        assert sent(stub)[-1]["content"] == EN_KNOWLEDGE + KNOWLEDGE + "\n\n" + MC_REST
        assert response.json()["blade"]["passages"] == MC_TOP3
    assert writer.texts == ["Write the background knowledge needed to answer this question.\n\n"
                            "Passages from the corpus:\n" + bullets(MC_TOP3) + "\n"
                            "Question: Which drug treats Velmora?\nOptions:\nA. Quintrel\nB. Brassane"]


def test_limits_hold_with_passages(stub, retriever):
    # the question fits the small model's cap, the question with its passages does not: a 400 that says so
    with serving(stub, "knowledge-from-passages", retriever, max_input_tokens=30,
                 input_limit_reason="--max-input-tokens") as server:
        response = ask(server, MC)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "context_length_exceeded" and "with the 3 retrieved passages" in error["message"]
    # a lookup past its deadline: a 503 at once, and the server keeps answering meanwhile
    with serving(stub, "passages", SlowSource(3.0), retrieval_timeout=0.3) as server:
        results = {}
        thread = threading.Thread(target=lambda: results.update(slow=ask(server, MC)))
        thread.start()
        time.sleep(0.1)
        assert httpx.get(f"{server.url}/health", timeout=5).status_code == 200
        thread.join(10)
        error = results["slow"].json()["error"]
        assert results["slow"].status_code == 503 and error["code"] == "retrieval_timeout", results["slow"].text


# --- templates ---------------------------------------------------------------------------------------------------
TODAYS_CHAT_SYSTEM = {  # chat_system.j2 before issue 29, byte for byte
    None: "Background knowledge that may help with the user's request (it may be incomplete or wrong; use it only\n"
          "where it is relevant):\n{{ knowledge }}\n",
    "zh_legal": "以下法律知识可能有助于回答用户的问题（可能不完整或有误，仅在相关时参考）：\n{{ knowledge }}\n",
    "zh_medical": "以下医学知识可能有助于回答用户的问题（可能不完整或有误，仅在相关时参考）：\n{{ knowledge }}\n",
}


@pytest.mark.parametrize("variant", [None, "zh_legal", "zh_medical"])
def test_chat_system_without_passages_renders_as_before_and_labels_them_with(variant, tmp_path):
    (tmp_path / "chat_system.j2").write_text(TODAYS_CHAT_SYSTEM[variant], encoding="utf-8")
    bundled = load_prompts(variant=variant)
    for name in ("answer.j2", "small_model_query.j2", "knowledge_generation.j2"):
        (tmp_path / name).write_bytes((bundled.directory / name).read_bytes())
    before = load_prompts(tmp_path)
    for knowledge in ("Quintrel treats Velmora.", "two\nlines", "", "  padded  "):
        assert bundled.chat_system(knowledge) == before.chat_system(knowledge)
        assert bundled.chat_system(knowledge, []) == before.chat_system(knowledge)
    both = bundled.chat_system("K.", ["p one", "p two"])
    assert both.startswith(before.chat_system("K.") + "\n\n") and both.endswith("\n- p one\n- p two")
    label = "语料摘录" if variant else "Passages from the corpus"
    alone = bundled.chat_system("", ["p one"])
    assert alone.startswith(label) and alone.endswith("\n- p one") and "{" not in alone
    assert before.chat_system("K.").splitlines()[0] not in alone  # no empty knowledge block


# --- the default: the workspace's ablation --------------------------------------------------------------------
def ablation(tmp_path, rows: dict[str, float], name: str = "runs/ablation/ablation.json", skipped=()):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    listed = [{"key": key, "accuracy": acc, "llm_prompt_tokens_per_question": 100.0} for key, acc in rows.items()]
    listed += [{"key": key, "skipped": "no checkpoint"} for key in skipped]
    if name.endswith("report.json"):
        path.write_text(json.dumps({"ablation": listed}), encoding="utf-8")
    else:
        path.write_text(json.dumps({"n_items": 24, "rows": listed}), encoding="utf-8")
    return tmp_path


ROWS = {"llm": 0.2, "dp_kit": 0.30, "blade": 0.33, "retrieval": 0.58, "passages+knowledge": 0.61,
        "knowledge-as-query": 0.55, "knowledge-from-passages": 0.70}


def test_default_is_the_best_ablation_row_this_server_can_run(tmp_path):
    ws = ablation(tmp_path, ROWS)
    plain = ServeInputs(corpus=True, reads_passages=False, soft_prompt=True)
    choice = default_mode(ws, plain)
    assert choice.mode == "passages+knowledge"
    assert "chose passages+knowledge: accuracy 0.610 vs passages 0.580, knowledge-as-query 0.550, knowledge 0.330" \
        in choice.reason and "knowledge-from-passages 0.700 (not runnable here" in choice.reason
    assert default_mode(ws, ServeInputs(corpus=True, reads_passages=True, soft_prompt=True)).mode == \
        "knowledge-from-passages"
    no_corpus = default_mode(ws, ServeInputs(corpus=False, reads_passages=True, soft_prompt=False))
    assert no_corpus.mode == "knowledge" and "accuracy 0.300" in no_corpus.reason  # dp_kit: no soft prompt
    # a run's report.json says the same; a dev ablation comes first (settings are chosen on dev)
    assert default_mode(ablation(tmp_path / "r", ROWS, "report.json"), plain).mode == "passages+knowledge"
    ablation(ws, {"dp_kit": 0.4, "blade": 0.2, "retrieval": 0.3}, "runs/ablation_dev/ablation.json",
             skipped=("passages+knowledge",))
    dev = default_mode(ws, plain)
    assert dev.mode == "passages" and "ablation_dev" in dev.reason  # blade (0.2), not dp_kit: a soft prompt


def test_default_without_an_ablation_is_knowledge_or_both_with_a_corpus(tmp_path):
    choice = default_mode(tmp_path, ServeInputs(corpus=False, reads_passages=False, soft_prompt=False))
    assert choice.mode == "knowledge" and "no ablation result" in choice.reason
    assert default_mode(None, ServeInputs(corpus=True, reads_passages=False, soft_prompt=False)).mode == \
        "passages+knowledge"


# --- startup errors: one line, before the model loads ----------------------------------------------------------
def serve_cli(args: list[str], cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "blade_plugin.cli", "serve", "--llm-base-url", "http://127.0.0.1:9/v1",
                           "--port", "9", *args], check=False, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_startup_errors_are_one_line(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in CORPUS), encoding="utf-8")
    old = tmp_path / "old_templates"
    old.mkdir()
    for name in ("answer.j2", "small_model_query.j2", "knowledge_generation.j2"):
        (old / name).write_bytes((load_prompts().directory / name).read_bytes())
    (old / "chat_system.j2").write_text(TODAYS_CHAT_SYSTEM[None], encoding="utf-8")
    ws = ablation(tmp_path / "ws", {"retrieval": 0.6, "dp_kit": 0.3})
    cases = [
        (["--combine", "passages"], "--combine passages retrieves passages: give --corpus"),
        (["--combine", "knowledge-from-passages", "--corpus", str(corpus)], "trained with retrieved passages"),
        (["--combine", "passages", "--corpus", str(corpus), "--templates-dir", str(old)], "chat_system.j2"),
        (["--workspace", str(ws), "--corpus", str(corpus), "--templates-dir", str(old)], "--combine passages needs"),
    ]
    for args, words in cases:
        result = serve_cli(args, tmp_path)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and lines[-1].startswith("Error: ") and words in lines[-1], result.stderr
        assert all(" INFO " in line for line in lines[:-1]), result.stderr  # the log, then one error line


@pytest.mark.slow
def test_real_server_takes_its_default_from_the_workspace(stub, default_model_dir, tmp_path):
    """`blade-bpo serve --workspace --corpus` with the embedded model: the ablation's best runnable row chooses the
    mode, the log says why, and the upstream request carries the hand-ranked passages."""
    from blade_testing.openai_stub_server import DEFAULT_API_KEY
    from blade_testing.serve_process import ServeProcess

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in CORPUS), encoding="utf-8")
    ws = ablation(tmp_path / "ws", ROWS)
    args = ["--small-model", str(default_model_dir), "--max-new-tokens", "8", "--llm-base-url", stub.base_url,
            "--llm-model", "stub", "--llm-max-retries", "0", "--workspace", str(ws), "--corpus", str(corpus)]
    with ServeProcess(args, tmp_path / "serve.log", env={"OPENAI_API_KEY": DEFAULT_API_KEY}) as process:
        response = httpx.post(f"{process.url}/v1/chat/completions", timeout=120,
                              json={"model": "m", "messages": [{"role": "user", "content": MC}]})
        assert response.status_code == 200, response.text
        log = process.log_text()
    assert "chose passages+knowledge: accuracy 0.610 vs passages 0.580" in log
    content = sent(stub)[-1]["content"]
    # no --corpus-k: the default, 1 passage (the hand-ranked first)
    assert EN_PASSAGES + bullets(MC_TOP3[:1]) + "\n" in content and content.startswith(EN_KNOWLEDGE)
    assert response.json()["blade"]["passages"] == MC_TOP3[:1]
