"""The Batch API path of `knowledge --batch` and the stub's /v1/files and /v1/batches, end to end: real CLI
subprocesses against the stub over HTTP, a real SIGKILL between submit and download."""

from __future__ import annotations

import io
import json
import subprocess

import pytest

from blade_plugin.qa.data import load_qa
from blade_testing.openai_stub_server import StubOpenAIServer
from blade_testing.scripted_llm import QAOracle
from helpers import BIN, run_cli, sigkill_when


@pytest.fixture(scope="module")
def train_items(demo_data_dir):
    return load_qa(demo_data_dir / "demo_qa_train.jsonl")[:8]


@pytest.fixture()
def oracle(train_items, prompts):
    return QAOracle(train_items, prompts, misleading_ids={train_items[1].id, train_items[4].id})


@pytest.fixture()
def train_file(train_items, tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({"id": it.id, "question": it.question, "options": it.options,
                                        "answer": list(it.answer)}) + "\n" for it in train_items))
    return path


def knowledge_args(server, run_dir, train_file, *extra):
    return ["blade-bpo", "knowledge", "--train", str(train_file), "--out", str(run_dir / "kit.jsonl"),
            "--llm-base-url", server.base_url, "--llm-model", "stub", "--cache-db", str(run_dir / "cache.sqlite3"),
            "--max-retries", "1", "--concurrency", "4", *extra]


def knowledge(server, run_dir, train_file, *extra):
    run_dir.mkdir(exist_ok=True)
    return run_cli(knowledge_args(server, run_dir, train_file, *extra), cwd=run_dir)


def test_stub_batch_api_has_the_real_states_shapes_and_validation(oracle, prompts, train_items):
    import openai

    with StubOpenAIServer(oracle) as server:
        sdk = openai.OpenAI(base_url=server.base_url, api_key=server.api_key, max_retries=0)
        with pytest.raises(openai.BadRequestError, match="purpose"):
            sdk.files.create(file=("x.jsonl", io.BytesIO(b"{}\n")), purpose="fine-tune-results")

        def line(custom_id, item):
            return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                               "body": {"model": "stub", "messages": prompts.knowledge_generation(item)}}) + "\n"

        dup = sdk.files.create(file=("d.jsonl", io.BytesIO((line("a", train_items[0]) + line("a", train_items[1])).encode())),
                               purpose="batch")
        batch = sdk.batches.create(input_file_id=dup.id, endpoint="/v1/chat/completions", completion_window="24h")
        assert batch.status == "validating"
        failed = sdk.batches.retrieve(batch.id)
        assert failed.status == "failed" and failed.errors.data[0].line == 2
        assert failed.errors.data[0].code == "duplicate_custom_id" and server.batch_api.lines_run == 0

        server.fail_matching(train_items[2].question)  # that request fails inside the batch: an error-file line
        server.batch_api.expire_after = 3  # and the batch expires after three requests
        good = sdk.files.create(file=("g.jsonl", io.BytesIO("".join(line(f"r{i}", it) for i, it in
                                                                     enumerate(train_items[:5])).encode())),
                                purpose="batch")
        batch = sdk.batches.create(input_file_id=good.id, endpoint="/v1/chat/completions", completion_window="24h")
        states = [sdk.batches.retrieve(batch.id) for _ in range(4)]
        assert [b.status for b in states] == ["in_progress", "finalizing", "expired", "expired"]
        final = states[-1]
        assert final.request_counts.total == 5 and final.request_counts.completed == 2
        assert final.request_counts.failed == 3 and final.expired_at is not None
        output = [json.loads(x) for x in sdk.files.content(final.output_file_id).text.splitlines()]
        errors = [json.loads(x) for x in sdk.files.content(final.error_file_id).text.splitlines()]
        assert [row["custom_id"] for row in output] == ["r0", "r1"]
        assert output[0]["response"]["status_code"] == 200 and output[0]["error"] is None
        assert output[0]["response"]["body"]["choices"][0]["message"]["content"] == \
            oracle(prompts.knowledge_generation(train_items[0]), {})
        assert errors[0]["custom_id"] == "r2" and errors[0]["response"]["status_code"] == 400
        assert [(row["custom_id"], row["error"]["code"]) for row in errors[1:]] == [("r3", "batch_expired"),
                                                                                  ("r4", "batch_expired")]
        with pytest.raises(openai.NotFoundError):
            sdk.batches.retrieve("batch_nope")


@pytest.mark.slow
def test_batch_and_online_kit_are_byte_identical_with_expired_lines_retried(oracle, train_file, tmp_path):
    with StubOpenAIServer(oracle) as server:
        online = knowledge(server, tmp_path / "online", train_file)
        assert online.returncode == 0, online.stderr[-2000:]
        assert server.request_count == 16 and server.batch_api.http_requests == 0
        server.reset_stats()
        server.batch_api.expire_after = 3  # every batch runs 3 requests, the rest come back batch_expired
        by_batch = knowledge(server, tmp_path / "batch", train_file, "--batch", "--batch-poll-seconds", "0",
                             "--batch-retry", "batch")
        assert by_batch.returncode == 0, by_batch.stderr[-2000:]
        # 8 generation requests in batches of 3, 3, 2, then the 8 checks likewise: nothing asked online
        assert len(server.batch_api.batches) == 6 and server.batch_api.lines_run == 16 == server.request_count
        assert "16 through the Batch API" in by_batch.stdout
        mixed = knowledge(server, tmp_path / "mixed", train_file, "--batch", "--batch-poll-seconds", "0")
        assert mixed.returncode == 0, mixed.stderr[-2000:]
    kit = (tmp_path / "online" / "kit.jsonl").read_bytes()
    assert kit.count(b"\n") == 6
    assert (tmp_path / "batch" / "kit.jsonl").read_bytes() == kit
    assert (tmp_path / "mixed" / "kit.jsonl").read_bytes() == kit  # expired lines retried online
    stats = json.loads((tmp_path / "batch" / "kit.jsonl.stats.json").read_text())
    assert stats["usage"]["batch_calls"] == 16 and stats["kept"] == 6


@pytest.mark.slow
def test_batch_resumes_after_sigkill_between_submit_and_download(oracle, train_file, tmp_path):
    with StubOpenAIServer(oracle) as server:
        assert knowledge(server, tmp_path / "online", train_file).returncode == 0
        server.reset_stats()
        run_dir = tmp_path / "killed"
        run_dir.mkdir()
        progress = run_dir / "kit.jsonl.progress.jsonl"
        args = knowledge_args(server, run_dir, train_file, "--batch", "--batch-poll-seconds", "600")
        proc = subprocess.Popen([str(BIN / args[0]), *args[1:]], cwd=run_dir, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        sigkill_when(proc, lambda: progress.is_file() and '"state": "submitted"' in progress.read_text(), 120,
                     "knowledge --batch")
        assert len(server.batch_api.batches) == 1 and server.batch_api.lines_run == 0  # submitted, not run
        resumed = knowledge(server, run_dir, train_file, "--batch", "--batch-poll-seconds", "0")
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        # the killed run's batch was polled, not paid for again: one generation batch, one check batch
        assert len(server.batch_api.batches) == 2 and server.batch_api.lines_run == 16 == server.request_count
    assert (run_dir / "kit.jsonl").read_bytes() == (tmp_path / "online" / "kit.jsonl").read_bytes()


@pytest.mark.slow
def test_budget_stop_saves_progress_and_resumes_to_the_unstopped_files(oracle, train_file, tmp_path):
    prices = ["--price-input", "1000", "--price-output", "1000", "--max-tokens", "16"]
    with StubOpenAIServer(oracle) as server:
        assert knowledge(server, tmp_path / "online", train_file, *prices).returncode == 0
        full_cost = json.loads((tmp_path / "online" / "kit.jsonl.stats.json").read_text())["usage"]["cost"]
        # the stub bills whitespace words: hand-check one request's cost against the stub's usage line
        assert full_cost == pytest.approx(sum(
            (sum(len(m["content"].split()) for m in r["messages"]) + len(oracle(r["messages"], r).split())) * 1e-3
            for r in server.requests), rel=1e-6)
        server.reset_stats()
        limit = round(full_cost / 3, 4)
        stopped = knowledge(server, tmp_path / "stopped", train_file, *prices, "--max-cost", str(limit))
        assert stopped.returncode == 3, stopped.stderr[-2000:]
        line = stopped.stderr.strip().splitlines()[-1]
        assert line.startswith("Stopped: stopped at the budget (--max-cost") and "re-run the same command" in line
        spent = float(line.split("spent $")[1].split()[0])
        assert 0 < spent <= limit and 0 < server.request_count < 16
        assert not (tmp_path / "stopped" / "kit.jsonl").exists()
        asked = server.request_count
        resumed = knowledge(server, tmp_path / "stopped", train_file, *prices)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        assert server.request_count == 16  # nothing the stopped run paid for was asked again
        assert asked < 16
        server.reset_stats()
        calls = knowledge(server, tmp_path / "calls", train_file, "--max-llm-calls", "5")
        assert calls.returncode == 3 and "--max-llm-calls 5" in calls.stderr and server.request_count == 5
    assert (tmp_path / "stopped" / "kit.jsonl").read_bytes() == (tmp_path / "online" / "kit.jsonl").read_bytes()

