"""The parts of `blade-bpo serve` that need no server: question parsing, knowledge placement, the Prometheus
exposition and the batcher's admission, sharing and caching rules."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest

from blade_plugin.qa.data import QAItem
from blade_plugin.serve.augment import question_of, small_model_text, with_knowledge
from blade_plugin.serve.batcher import GenerationFailed, KnowledgeBatcher, QueueFull
from blade_plugin.serve.metrics import ServeMetrics
from blade_plugin.serve.question import ChatQuestion, parse_question


def test_jecqa_question_as_typed_in_a_chat_box():
    # A raw JEC-QA record (tests/data/jecqa_sample.json), typed the way exam sites print it: full-width
    # letters and full stops.
    from pathlib import Path

    record = json.loads(Path(__file__).with_name("data").joinpath("jecqa_sample.json").read_text(
        encoding="utf-8").splitlines()[0])
    text = record["statement"] + "\n" + "\n".join(
        f"{chr(ord('Ａ') + i)}．{record['option_list'][letter]}" for i, letter in enumerate("ABCD"))
    parsed = parse_question(text)
    assert parsed == ChatQuestion(record["statement"], record["option_list"])


def test_mlecqa_five_options_with_brackets_and_an_instruction():
    text = ("治疗急性心肌梗死最有效的再灌注措施是\n(A) 静脉滴注硝酸甘油\n(B) 经皮冠状动脉介入治疗\n(C) 口服阿司匹林\n"
            "(D) 吸氧\n(E) 卧床休息\n\n请只回答选项字母。")
    parsed = parse_question(text)
    assert parsed.options == {"A": "静脉滴注硝酸甘油", "B": "经皮冠状动脉介入治疗", "C": "口服阿司匹林", "D": "吸氧",
                              "E": "卧床休息"}
    assert parsed.question == "治疗急性心肌梗死最有效的再灌注措施是\n请只回答选项字母。"


def test_wrapped_option_lines_and_free_text_lookalikes():
    wrapped = "Which drug?\nA) Metformin, a biguanide that\n   lowers hepatic glucose output\nB) Insulin"
    assert parse_question(wrapped).options == {"A": "Metformin, a biguanide that lowers hepatic glucose output",
                                               "B": "Insulin"}
    for free in ("Tell me about A. Lincoln and the Civil War.",
                 "Plan:\nA. gather requirements",  # one lettered line is a list item, not options
                 "B. Second\nA. First",  # not in order
                 '{"question": "What is 2+2?", "answer": "4"}',
                 "A.\nB."):  # letters without text
        assert parse_question(free) == ChatQuestion(free.strip(), None), free


def test_knowledge_placement(prompts):
    mc = [{"role": "user", "content": "Which vitamin does warfarin antagonise?\nA. Vitamin C\nB. Vitamin K"}]
    question = question_of(mc)
    item = QAItem(id="q", question="Which vitamin does warfarin antagonise?",
                  options={"A": "Vitamin C", "B": "Vitamin K"}, answer=())
    assert small_model_text(prompts, question) == prompts.small_model_query(item)
    out = with_knowledge(mc, question, "Warfarin inhibits VKORC1.", prompts, prompts)
    assert out == [{"role": "user", "content": prompts.answer(item, "Warfarin inhibits VKORC1.")[-1]["content"]}]
    assert mc[0]["content"].startswith("Which vitamin")  # the caller's list is not modified

    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What does warfarin do?"}]
    out = with_knowledge(chat, question_of(chat), "Warfarin inhibits VKORC1.", prompts, prompts)
    assert out[0] == {"role": "system", "content": "Be brief.\n\n" + prompts.chat_system("Warfarin inhibits VKORC1.")}
    assert out[1] == chat[1] and len(out) == 2
    assert with_knowledge(chat, question_of(chat), "  ", prompts, prompts) == chat  # nothing to add
    # After a tool call the last turn is the tool's: no new question to write knowledge for.
    assert question_of(chat + [{"role": "assistant", "content": None}, {"role": "tool", "content": "42"}]) is None


def test_prometheus_exposition_by_hand():
    metrics = ServeMetrics()
    metrics.batch_size.observe(3)
    metrics.batch_size.observe(16)
    metrics.batch_size.observe(200)
    metrics.requests.inc(route="/v1/chat/completions", code="200")
    metrics.requests.inc(route="/v1/chat/completions", code="200")
    metrics.upstream_tokens.inc(12, kind="prompt")
    text = metrics.registry.exposition()
    expected_batch = """# HELP blade_serve_small_lm_batch_size Questions per small-LM generation (one batched forward pass each).
# TYPE blade_serve_small_lm_batch_size histogram
blade_serve_small_lm_batch_size_bucket{le="1"} 0
blade_serve_small_lm_batch_size_bucket{le="2"} 0
blade_serve_small_lm_batch_size_bucket{le="4"} 1
blade_serve_small_lm_batch_size_bucket{le="8"} 1
blade_serve_small_lm_batch_size_bucket{le="16"} 2
blade_serve_small_lm_batch_size_bucket{le="32"} 2
blade_serve_small_lm_batch_size_bucket{le="64"} 2
blade_serve_small_lm_batch_size_bucket{le="128"} 2
blade_serve_small_lm_batch_size_bucket{le="+Inf"} 3
blade_serve_small_lm_batch_size_sum 219
blade_serve_small_lm_batch_size_count 3
"""
    assert expected_batch in text
    assert '# TYPE blade_serve_requests_total counter\nblade_serve_requests_total{route="/v1/chat/completions",' \
           'code="200"} 2\n' in text
    assert 'blade_serve_upstream_tokens_total{kind="completion"} 0\nblade_serve_upstream_tokens_total{kind="prompt"} 12\n' \
        in text
    with pytest.raises(ValueError):
        metrics.requests.inc(-1, route="x", code="200")


class RecordingWriter:
    """A knowledge writer that answers upper-case and records each batch (the real model is in test_serve.py)."""

    def __init__(self, release: threading.Event | None = None):
        self.batches: list[list[str]] = []
        self.release = release
        self.entered = threading.Event()  # set when a batch reached the writer

    def __call__(self, texts: list[str]) -> list[str]:
        self.entered.set()
        if self.release is not None:
            assert self.release.wait(30)
        self.batches.append(list(texts))
        if any("boom" in t for t in texts):
            raise RuntimeError("CUDA out of memory (simulated)")
        return [t.upper() for t in texts]


def test_batcher_batches_shares_caches_and_refuses_when_full():
    async def scenario():
        release = threading.Event()
        writer = RecordingWriter(release)
        batcher = KnowledgeBatcher(writer, max_batch_size=4, max_wait_s=0.05, max_queue=6, cache_size=2)
        batcher.start()
        first = asyncio.create_task(batcher.knowledge("q0"))
        assert await asyncio.to_thread(writer.entered.wait, 60)  # q0 is generating (blocked) alone
        waiting = [asyncio.create_task(batcher.knowledge(f"q{i}")) for i in range(1, 6)]
        twin = asyncio.create_task(batcher.knowledge("q1"))  # identical question: shares q1's generation
        await asyncio.sleep(0)  # let the new tasks run up to their first await: they are all queued now
        with pytest.raises(QueueFull) as full:
            await batcher.knowledge("q6")  # 6 distinct questions already waiting or generating
        assert full.value.retry_after >= 1
        release.set()
        results = await asyncio.gather(first, *waiting, twin)
        assert results == [("Q0", False), ("Q1", False), ("Q2", False), ("Q3", False), ("Q4", False),
                           ("Q5", False), ("Q1", False)]
        assert writer.batches == [["q0"], ["q1", "q2", "q3", "q4"], ["q5"]]
        assert await batcher.knowledge("q5") == ("Q5", True)  # cached (size 2: q4, q5)
        assert await batcher.knowledge("q1") == ("Q1", False)  # evicted, generated again
        with pytest.raises(GenerationFailed):  # the model's own message stays in the server log
            await batcher.knowledge("boom")
        assert await batcher.knowledge("after") == ("AFTER", False)  # the batcher survives a failed batch
        await batcher.close()
        return batcher.metrics.registry.exposition()

    exposition = asyncio.run(scenario())
    assert "blade_serve_small_lm_batch_size_count 5\n" in exposition  # the failed batch is not counted
    assert 'blade_serve_knowledge_cache_total{result="shared"} 1\n' in exposition
    assert 'blade_serve_knowledge_cache_total{result="hit"} 1\n' in exposition
