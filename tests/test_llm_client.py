"""The LLM client against a real HTTP server on 127.0.0.1 (the scripted stub), and the local backend."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from blade_plugin.extras.errors import LLMError
from blade_plugin.llm.client import LLMClient, LLMConfig
from conftest import llm_config

MSG = [{"role": "user", "content": "Which enzyme does aspirin inhibit?"}]


def test_retries_then_success(stub_llm, tmp_path):
    stub_llm.inject_faults([429, 500])
    with LLMClient(llm_config(stub_llm, tmp_path)) as client:
        assert client.complete_many([MSG]) == ["Answer: A"]
        assert client.usage.retries == 2 and client.usage.calls == 3 and client.usage.failures == 0
    assert stub_llm.request_count == 3 and stub_llm.fault_count == 2


def test_persistent_failure_is_loud_and_bounded(stub_llm, tmp_path):
    stub_llm.fail_always(503)
    with LLMClient(llm_config(stub_llm, tmp_path, max_retries=2)) as client:
        with pytest.raises(LLMError) as err:
            client.complete_many([MSG])
    message = str(err.value)
    assert stub_llm.base_url in message and "(model stub)" in message and "3 attempts" in message
    assert "HTTP 503" in message
    assert stub_llm.request_count == 3


def test_client_errors_are_not_retried(stub_llm, tmp_path):
    stub_llm.inject_faults([400])
    with LLMClient(llm_config(stub_llm, tmp_path)) as client:
        with pytest.raises(LLMError, match="HTTP 400.*not retried"):
            client.complete_many([MSG])
    assert stub_llm.request_count == 1


def test_cache_hit_avoids_request_and_survives_new_client(stub_llm, tmp_path):
    with LLMClient(llm_config(stub_llm, tmp_path)) as client:
        client.complete_many([MSG])
        client.complete_many([MSG])
        assert client.usage.cache_hits == 1
    with LLMClient(llm_config(stub_llm, tmp_path)) as client:
        assert client.complete_many([MSG]) == ["Answer: A"]
        assert client.usage.calls == 0 and client.usage.cache_hits == 1
    assert stub_llm.request_count == 1


def test_other_sampling_params_or_model_miss_the_cache(tmp_path):
    from blade_testing.openai_stub_server import StubOpenAIServer

    with StubOpenAIServer(models=["stub", "other-model"]) as server:
        for overrides in ({}, {"temperature": 0.7}, {"max_tokens": 64}, {"model": "other-model"}):
            with LLMClient(llm_config(server, tmp_path, **overrides)) as client:
                client.complete_many([MSG])
        assert server.request_count == 4


def test_no_cache_flag_always_asks(stub_llm, tmp_path):
    with LLMClient(llm_config(stub_llm, tmp_path, use_cache=False)) as client:
        client.complete_many([MSG])
        client.complete_many([MSG])
    assert stub_llm.request_count == 2
    assert not (tmp_path / "cache.sqlite3").exists()


def test_requests_run_concurrently(tmp_path):
    """All n requests are in the server at once: each reply waits until n requests are being served (a barrier),
    which a client sending fewer at a time could never satisfy."""
    import threading

    from blade_testing.openai_stub_server import StubOpenAIServer

    n = 12
    batch = [[{"role": "user", "content": f"question {i}"}] for i in range(n)]
    all_in = threading.Barrier(n, timeout=120)
    with StubOpenAIServer() as server:
        with LLMClient(llm_config(server, tmp_path, concurrency=n, use_cache=False, max_retries=0)) as client:
            client.complete_many(batch[:1])  # warm up the connection
            server.responder = lambda messages, body: (all_in.wait(), "Answer: A")[1]
            answers = client.complete_many(batch)
        assert server.max_in_flight() == n
    assert answers == ["Answer: A"] * n


def test_results_keep_input_order(tmp_path):
    from blade_testing.openai_stub_server import StubOpenAIServer

    with StubOpenAIServer(responder=lambda messages, body: messages[-1]["content"].upper(), latency=0.01) as server:
        batch = [[{"role": "user", "content": f"q{i}"}] for i in range(20)]
        with LLMClient(llm_config(server, tmp_path, concurrency=7)) as client:
            assert client.complete_many(batch) == [f"Q{i}" for i in range(20)]


def test_usable_across_event_loops(stub_llm, tmp_path):
    with LLMClient(llm_config(stub_llm, tmp_path, use_cache=False)) as client:
        for _ in range(3):  # each asyncio.run is a new loop; the HTTP client must follow
            assert asyncio.run(client.acomplete(MSG)) == "Answer: A"


def test_api_key_is_never_stored(tmp_path, monkeypatch):
    from blade_testing.openai_stub_server import StubOpenAIServer

    secret = "sk-test-SECRET-0123456789"
    monkeypatch.setenv("MY_LLM_KEY", secret)
    with StubOpenAIServer(api_key=secret) as server, \
            LLMClient(llm_config(server, tmp_path, api_key_env="MY_LLM_KEY")) as client:
        client.complete_many([MSG])  # the stub refuses any other key: this one was sent
        assert secret not in repr(client.identity())
    for path in tmp_path.iterdir():
        assert secret.encode() not in path.read_bytes(), path


def test_cache_logs_prompt_and_response(stub_llm, tmp_path):
    import json
    import sqlite3

    with LLMClient(llm_config(stub_llm, tmp_path)) as client:
        client.complete_many([MSG])
    row = sqlite3.connect(tmp_path / "cache.sqlite3").execute(
        "SELECT base_url, model, messages, params, response, prompt_tokens FROM responses").fetchone()
    assert row[0] == stub_llm.base_url and row[1] == "stub"
    assert json.loads(row[2]) == MSG and json.loads(row[3])["temperature"] == 0.0
    assert row[4] == "Answer: A" and row[5] > 0


def test_missing_model_name_is_a_clear_error(monkeypatch, tmp_path):
    from blade_plugin.extras.errors import BladeError

    monkeypatch.delenv("BLADE_LLM_MODEL", raising=False)
    with pytest.raises(BladeError, match="--llm-model or set BLADE_LLM_MODEL"):
        LLMClient(LLMConfig(base_url="http://127.0.0.1:9/v1", cache_db=tmp_path / "c.sqlite3"))


@pytest.mark.slow
def test_local_backend_generates_and_caches(default_model_dir, tmp_path):
    config = LLMConfig(backend="local", local_model_dir=str(default_model_dir), max_tokens=8,
                       cache_db=tmp_path / "cache.sqlite3")
    batch = [[{"role": "user", "content": "What is the capital of France?"}],
             [{"role": "user", "content": "Name a vitamin."}]]
    with LLMClient(config) as client:
        first = client.complete_many(batch)
        assert all(text.strip() for text in first) and "Paris" in first[0]
        assert client.usage.calls == 2 and client.usage.completion_tokens > 0
        assert client.complete_many(batch) == first
        assert client.usage.calls == 2 and client.usage.cache_hits == 2


def test_cache_is_safe_across_processes(tmp_path):
    """Several processes write and read one cache file at once (WAL + busy timeout): nothing is lost."""
    import subprocess
    import sys

    from blade_plugin.llm.cache import ResponseCache

    db, rows = tmp_path / "shared.sqlite3", 150
    code = ("import sys\nfrom blade_plugin.llm.cache import ResponseCache\n"
            "cache = ResponseCache(sys.argv[1])\n"
            f"for i in range({rows}):\n"
            "    cache.put(f'{sys.argv[2]}-{i}', 'u', 'm', [{'role': 'user', 'content': str(i)}], {}, str(i), 1, 1)\n"
            "    assert cache.get(f'{sys.argv[2]}-{i // 2}') is not None\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(db), f"p{n}"], stderr=subprocess.PIPE, text=True)
             for n in range(3)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    cache = ResponseCache(db)
    assert len(cache) == 3 * rows and cache.get(f"p2-{rows - 1}") == str(rows - 1)
    cache.close()


def test_max_tokens_default_depends_on_backend_and_explicit_value_wins(default_model_dir, monkeypatch):
    from blade_plugin.llm.options import LOCAL_MAX_TOKENS, OPENAI_MAX_TOKENS, config_from_options

    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    local = str(default_model_dir)
    assert config_from_options(local_llm_model_dir=local).max_tokens == LOCAL_MAX_TOKENS
    assert config_from_options(local_llm_model_dir=local, max_tokens=OPENAI_MAX_TOKENS).max_tokens == OPENAI_MAX_TOKENS
    remote = config_from_options(llm_base_url="http://127.0.0.1:9/v1", llm_model="m")
    assert remote.backend == "openai" and remote.max_tokens == OPENAI_MAX_TOKENS


def test_progress_bar_stays_out_of_non_tty_logs(stub_llm, tmp_path, capfd):
    batch = [[{"role": "user", "content": f"q{i}"}] for i in range(5)]
    with LLMClient(llm_config(stub_llm, tmp_path)) as client:
        assert client.complete_many(batch, desc="answering") == ["Answer: A"] * 5
    assert "answering" not in capfd.readouterr().err


def test_stub_lists_models_and_counts_tokens(stub_llm, tmp_path):
    import json
    import urllib.request

    request = urllib.request.Request(stub_llm.base_url + "/models",
                                     headers={"Authorization": f"Bearer {os.environ['OPENAI_API_KEY']}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        assert [m["id"] for m in json.load(response)["data"]] == ["stub", "o4-mini"]
    with LLMClient(llm_config(stub_llm, tmp_path)) as client:
        client.complete_many([MSG])
        # the stub counts whitespace-separated words: the usage it reports must reach our counters
        words = len(MSG[0]["content"].split())
        assert (client.usage.prompt_tokens, client.usage.completion_tokens) == (words, len("Answer: A".split()))
    assert stub_llm.requests[0]["messages"] == MSG and stub_llm.requests[0]["model"] == "stub"


def _gap_before_retry(server) -> float:
    """Seconds between the refused attempt's end and the retry's start, from the stub's own events (a lower
    bound set by the client's wait: load can only lengthen it)."""
    intervals = server.intervals()
    last = max(intervals)
    return intervals[last][0] - intervals[last - 1][1]


def test_retry_after_seconds_and_http_date_are_honoured(stub_llm, tmp_path):
    """The SDK's retry machinery waits as long as the server says (its own first backoff is 0.5-1 s)."""
    from email.utils import formatdate, parsedate_to_datetime

    dates = []  # the retry-after HTTP dates the stub sent

    def three_seconds_ahead() -> dict:
        # computed as the fault goes out (not when the test scripts it), so a slow request cannot turn the date
        # into the past; whole seconds: at least 2 s after the reply
        dates.append(formatdate(time.time() + 3, usegmt=True))
        return {"retry-after": dates[-1]}

    answered = []  # wall-clock time each successful attempt reached the responder
    stub_llm.responder = lambda messages, body: answered.append(time.time()) or "Answer: A"
    with LLMClient(llm_config(stub_llm, tmp_path, use_cache=False)) as client:
        stub_llm.inject_faults([429], headers={"retry-after": "1.5"})
        assert client.complete_many([MSG]) == ["Answer: A"]
        assert _gap_before_retry(stub_llm) >= 1.5
        stub_llm.inject_faults([503], headers=three_seconds_ahead)
        assert client.complete_many([MSG]) == ["Answer: A"]
        # the retry came no earlier than the date named (a lower bound: load can only delay it)
        [date] = dates
        assert answered[-1] >= parsedate_to_datetime(date).timestamp(), (date, answered[-1])
        assert client.usage.retries == 2 and client.usage.calls == 4
    assert stub_llm.fault_count == 2


def test_server_can_veto_a_retry_and_409_is_retried(stub_llm, tmp_path):
    with LLMClient(llm_config(stub_llm, tmp_path, use_cache=False)) as client:
        stub_llm.inject_faults([409])
        assert client.complete_many([MSG]) == ["Answer: A"] and client.usage.retries == 1
        stub_llm.inject_faults([500], headers={"x-should-retry": "false"})
        with pytest.raises(LLMError, match="HTTP 500.*not retried"):
            client.complete_many([MSG])
    assert stub_llm.request_count == 3


@pytest.mark.parametrize("reply, counter", [(("Answer: B, because the dose", "length"), "truncated"),
                                            (("", "content_filter"), "filtered"),
                                            (("   ", "stop"), "empty")])
def test_incomplete_replies_are_returned_counted_and_never_cached(tmp_path, reply, counter):
    from blade_testing.openai_stub_server import StubOpenAIServer

    with StubOpenAIServer(responder=lambda messages, body: reply) as server:
        for _ in range(2):
            with LLMClient(llm_config(server, tmp_path)) as client:
                assert client.complete_many([MSG]) == [reply[0]]
                assert getattr(client.usage, counter) == 1 and client.usage.cache_hits == 0
        assert server.request_count == 2  # asked again: nothing was cached
    import sqlite3

    assert sqlite3.connect(tmp_path / "cache.sqlite3").execute("SELECT COUNT(*) FROM responses").fetchone()[0] == 0


def test_trailing_slash_is_one_endpoint(stub_llm, tmp_path):
    with LLMClient(llm_config(stub_llm, tmp_path, base_url=stub_llm.base_url + "/")) as client:
        client.complete_many([MSG])
        assert client.identity()["base_url"] == stub_llm.base_url
    with LLMClient(llm_config(stub_llm, tmp_path)) as client:
        client.complete_many([MSG])
        assert client.usage.cache_hits == 1
    assert stub_llm.request_count == 1
