"""`answer_items` against the real stub server: per-item errors, the error budget, streaming overlap."""

from __future__ import annotations

import time

import pytest

from blade_plugin.extras.errors import LLMError
from blade_plugin.qa.answering import answer_items, resolve_max_errors
from blade_plugin.llm.client import LLMClient
from blade_plugin.qa.data import load_qa
from blade_plugin.testing.openai_stub_server import StubOpenAIServer
from blade_plugin.testing.scripted_llm import QAOracle
from conftest import llm_config


@pytest.fixture()
def items(demo_data_dir):
    return load_qa(demo_data_dir / "demo_qa_dev.jsonl")[:10]


def test_max_errors_counts_and_fractions():
    assert resolve_max_errors(None, 1000) == 50 and resolve_max_errors(None, 10) == 1
    assert resolve_max_errors(0, 10) == 0 and resolve_max_errors(7, 10) == 7
    assert resolve_max_errors(0.1, 96) == 9 and resolve_max_errors(0.01, 10) == 1
    with pytest.raises(ValueError):
        resolve_max_errors(-1, 10)


def test_a_failing_item_is_an_error_record_not_an_exception(items, prompts, tmp_path):
    bad = items[6]
    seen = []
    with StubOpenAIServer(QAOracle(items, prompts)) as server, \
            LLMClient(llm_config(server, tmp_path, use_cache=False)) as client:
        server.fail_matching(bad.question, 400)
        records, _ = client.run(answer_items(items, prompts, client, max_errors=1, on_record=seen.append))
        assert [r.id for r in records] == [it.id for it in items]  # input order
        assert sorted(r.id for r in seen) == sorted(it.id for it in items)  # each reported once
        failed = [r for r in records if r.error]
        assert [r.id for r in failed] == [bad.id] and not failed[0].correct and failed[0].raw == ""
        assert "HTTP 400" in failed[0].error and "not retried" in failed[0].error
        assert all(r.raw.startswith("Answer: ") for r in records if not r.error)
        # a second failing item is more than the budget allows
        server.fail_matching(items[2].question, 400)
        with pytest.raises(LLMError, match="2 of 10 items failed, more than --max-errors 1"):
            client.run(answer_items(items, prompts, client, max_errors=1))


@pytest.mark.slow
def test_llm_calls_start_while_later_batches_are_generated(items, prompts, generator, tmp_path):
    latency = 0.6
    arrivals = []
    oracle = QAOracle(items, prompts)

    def responder(messages, body):
        arrivals.append(time.perf_counter())
        return oracle(messages, body)

    with StubOpenAIServer(responder, latency=latency) as server, \
            LLMClient(llm_config(server, tmp_path, concurrency=16, use_cache=False)) as client:
        generator.generate([prompts.small_model_query(items[0])])  # warm-up
        started = time.perf_counter()
        records, timings = client.run(answer_items(items[:8], prompts, client, generator, batch_size=2))
    assert len(records) == 8 and all(r.knowledge for r in records)
    # the first answer request reached the server before the 4 generation batches were done ...
    assert arrivals[0] - started < timings.generate_s
    # ... so the whole run costs about generation + one LLM round-trip, not + one round-trip per batch (4)
    assert timings.total_s < timings.generate_s + 2.5 * latency, timings
