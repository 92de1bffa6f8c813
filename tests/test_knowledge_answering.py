"""`answer_items` against the real stub server: per-item errors, the error budget, streaming overlap."""

from __future__ import annotations


import pytest

from blade_plugin.extras.errors import LLMError
from blade_plugin.qa.answering import answer_items, resolve_max_errors
from blade_plugin.llm.client import LLMClient
from blade_plugin.qa.data import load_qa
from blade_testing.openai_stub_server import StubOpenAIServer
from blade_testing.scripted_llm import QAOracle
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
    """Event order, not time: batch k's answer requests are in the server while batch k+1 is being generated."""
    import threading

    events: list[tuple[str, int]] = []  # generation batches and the stub's requests, in the order they happened
    lock = threading.Lock()

    def record(kind: str, number: int) -> None:
        with lock:
            events.append((kind, number))

    class RecordingWriter:
        batches = 0

        def generate(self, queries, soft_prompt=None):
            self.batches += 1
            number = self.batches
            record("gen_start", number)
            try:
                return generator.generate(queries, soft_prompt)
            finally:
                record("gen_end", number)

    with StubOpenAIServer(QAOracle(items, prompts), latency=0.6) as server, \
            LLMClient(llm_config(server, tmp_path, concurrency=16, use_cache=False)) as client:
        begin, event = server._begin, server._event
        server._begin = lambda body: (n := begin(body), record("request_start", n))[0]
        server._event = lambda kind, n: (event(kind, n), record("request_end", n))[0]
        records, _ = client.run(answer_items(items[:8], prompts, client, RecordingWriter(), batch_size=2))
    assert len(records) == 8 and all(r.knowledge for r in records)
    assert [e for e in events if e[0].startswith("gen")] == [(k, b) for b in (1, 2, 3, 4) for k in ("gen_start", "gen_end")]
    assert sum(1 for kind, _ in events if kind == "request_start") == 8
    # the first answer request reached the server before batch 2 was done ...
    assert events.index(("request_start", 1)) < events.index(("gen_end", 2))
    # ... and each later batch began before the previous batch's answers were back (2 asks per batch, each
    # >= 0.6 s in the server): a pipeline that waited for the LLM between batches would have all 2(k-1) back
    for batch in (2, 3, 4):
        before = events[:events.index(("gen_start", batch))]
        assert sum(1 for kind, _ in before if kind == "request_end") < 2 * (batch - 1), events
