"""`evaluate --batch` end to end: real CLI subprocesses against the strict stub's /v1/files and /v1/batches
over HTTP, each compared with an online `evaluate` of the same items (its own cache, so nothing is shared)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from blade_plugin.qa.data import load_qa
from blade_testing.openai_stub_server import StubOpenAIServer
from blade_testing.scripted_llm import QAOracle
from helpers import BIN, run_cli, sigkill_when

N_ITEMS = 6


@pytest.fixture()
def stub(demo_data_dir, prompts):
    test_file = demo_data_dir / "demo_qa_test.jsonl"
    items = load_qa(test_file, limit=N_ITEMS)
    with StubOpenAIServer(QAOracle(items, prompts, coverage_needed=0.25)) as server:
        yield server, test_file


def evaluate_args(server, test_file: Path, run_dir: Path, *extra: str) -> list[str]:
    return ["blade-bpo", "evaluate", "--test", str(test_file), "--limit", str(N_ITEMS), "--out", str(run_dir / "eval"),
            "--max-new-tokens", "8", "--batch-size", "4", "--llm-base-url", server.base_url, "--llm-model", "stub",
            "--cache-db", str(run_dir / "cache.sqlite3"), "--bootstrap", "200", "--max-retries", "1", *extra]


def evaluate(server, test_file: Path, run_dir: Path, model_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    run_dir.mkdir(exist_ok=True)
    return run_cli(evaluate_args(server, test_file, run_dir, *extra), cwd=run_dir,
                   env={"BLADE_DEFAULT_MODEL_DIR": str(model_dir)})


def outputs(run_dir: Path) -> tuple[bytes, dict, str]:
    """predictions.jsonl as bytes; metrics.json and report.md without what describes the process rather than
    the result ("seconds", "llm_usage": batch calls are billed and counted apart, the "LLM usage:" line)."""
    out = run_dir / "eval"
    metrics = json.loads((out / "metrics.json").read_text())
    metrics.pop("seconds"), metrics.pop("llm_usage")
    report = "\n".join(line for line in (out / "report.md").read_text().splitlines() if not line.startswith("LLM usage:"))
    return (out / "predictions.jsonl").read_bytes(), metrics, report


@pytest.mark.slow  # ~35 s: two small-LM knowledge passes
def test_batch_and_online_evaluation_are_byte_identical(stub, default_model_dir, tmp_path):
    server, test_file = stub
    modes = ("--modes", "llm,knowledge")
    online = evaluate(server, test_file, tmp_path / "online", default_model_dir, *modes)
    assert online.returncode == 0, online.stderr[-2000:]
    assert server.request_count == 2 * N_ITEMS and server.batch_api.http_requests == 0
    server.reset_stats()
    by_batch = evaluate(server, test_file, tmp_path / "batch", default_model_dir, *modes, "--batch",
                        "--batch-poll-seconds", "0")
    assert by_batch.returncode == 0, by_batch.stderr[-2000:]
    # both modes' answers in one batch (the small LM wrote the knowledge locally first); nothing asked online
    assert len(server.batch_api.batches) == 1 and server.batch_api.lines_run == 2 * N_ITEMS == server.request_count
    assert outputs(tmp_path / "batch") == outputs(tmp_path / "online")
    usage = json.loads((tmp_path / "batch" / "eval" / "metrics.json").read_text())["llm_usage"]
    assert usage["batch_calls"] == 2 * N_ITEMS
    predictions = [json.loads(line) for line in (tmp_path / "online" / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert all(p["knowledge"] for p in predictions if p["mode"] == "knowledge")  # the knowledge mode was exercised


def test_batch_resumes_after_sigkill_between_submit_and_download(stub, default_model_dir, tmp_path):
    server, test_file = stub
    assert evaluate(server, test_file, tmp_path / "online", default_model_dir, "--modes", "llm").returncode == 0
    server.reset_stats()
    run_dir = tmp_path / "killed"
    run_dir.mkdir()
    progress = run_dir / "eval" / "predictions.progress.jsonl"
    # a long poll interval: the run sits between submit and download when it is killed
    args = evaluate_args(server, test_file, run_dir, "--modes", "llm", "--batch", "--batch-poll-seconds", "600")
    proc = subprocess.Popen([str(BIN / args[0]), *args[1:]], cwd=run_dir, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "BLADE_DEFAULT_MODEL_DIR": str(default_model_dir)})
    sigkill_when(proc, lambda: progress.is_file() and '"state": "submitted"' in progress.read_text(), 120,
                 "evaluate --batch")
    assert len(server.batch_api.batches) == 1 and server.batch_api.lines_run == 0  # submitted, not run
    resumed = evaluate(server, test_file, run_dir, default_model_dir, "--modes", "llm", "--batch",
                       "--batch-poll-seconds", "0")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    # the killed run's batch was polled and downloaded, not paid for again
    assert len(server.batch_api.batches) == 1 and server.batch_api.lines_run == N_ITEMS == server.request_count
    assert outputs(run_dir) == outputs(tmp_path / "online")
    rows = [json.loads(line) for line in progress.read_text().splitlines()[1:]]
    assert [r["state"] for r in rows if r.get("type") == "batch"] == ["submitted", "collected"]


@pytest.mark.parametrize("retry", ["online", "batch"])
def test_expired_batch_lines_are_retried_to_the_online_files(stub, default_model_dir, tmp_path, retry):
    server, test_file = stub
    assert evaluate(server, test_file, tmp_path / "online", default_model_dir, "--modes", "llm").returncode == 0
    server.reset_stats()
    server.batch_api.expire_after = 2  # every batch runs 2 requests, the rest come back batch_expired
    run = evaluate(server, test_file, tmp_path / "expired", default_model_dir, "--modes", "llm", "--batch",
                   "--batch-poll-seconds", "0", "--batch-retry", retry)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "ended expired" in run.stderr
    if retry == "online":  # one batch ran 2 lines, the other 4 were asked online
        assert len(server.batch_api.batches) == 1 and server.batch_api.lines_run == 2
    else:  # three batches of 2 (the most --batch-retry batch submits): nothing online
        assert len(server.batch_api.batches) == 3 and server.batch_api.lines_run == N_ITEMS
    assert server.request_count == N_ITEMS
    assert outputs(tmp_path / "expired") == outputs(tmp_path / "online")


def test_batch_dry_run_prices_at_half(stub, default_model_dir, tmp_path):
    server, test_file = stub
    prices = ("--modes", "llm", "--price-input", "1000", "--price-output", "1000")
    figures = {}
    for name, extra in (("online", ()), ("batch", ("--batch",))):
        report = tmp_path / f"{name}.json"
        result = evaluate(server, test_file, tmp_path / name, default_model_dir, *prices, *extra,
                          "--dry-run-json", str(report))
        assert result.returncode == 0, result.stderr[-2000:]
        figures[name] = json.loads(report.read_text())
    assert server.request_count == 0 and server.batch_api.http_requests == 0
    online, batch = figures["online"]["total"], figures["batch"]["total"]
    assert batch["requests"] == online["requests"] == N_ITEMS and batch["prompt_tokens"] == online["prompt_tokens"]
    assert batch["cost_estimate"] == pytest.approx(online["cost_estimate"] / 2)
    assert batch["cost_max"] == pytest.approx(online["cost_max"] / 2)


def test_budget_stop_in_a_batch_saves_progress_and_resumes_to_the_online_files(stub, default_model_dir, tmp_path):
    server, test_file = stub
    assert evaluate(server, test_file, tmp_path / "online", default_model_dir, "--modes", "llm").returncode == 0
    server.reset_stats()
    batch = ("--modes", "llm", "--batch", "--batch-poll-seconds", "0")
    stopped = evaluate(server, test_file, tmp_path / "stopped", default_model_dir, *batch, "--max-llm-calls", "4")
    assert stopped.returncode == 3, stopped.stderr[-2000:]
    line = stopped.stderr.strip().splitlines()[-1]
    assert "stopped at the budget (--max-llm-calls 4)" in line and "re-run the same command" in line
    assert server.batch_api.lines_run == 4 and not (tmp_path / "stopped" / "eval" / "predictions.jsonl").exists()
    resumed = evaluate(server, test_file, tmp_path / "stopped", default_model_dir, *batch)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert server.request_count == N_ITEMS  # the 4 answers the stopped run paid for were not asked again
    assert outputs(tmp_path / "stopped") == outputs(tmp_path / "online")
