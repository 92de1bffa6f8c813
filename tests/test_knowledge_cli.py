"""`blade-bpo knowledge` end to end: a real CLI subprocess against the scripted LLM over HTTP."""

from __future__ import annotations

import json

import pytest

from blade_plugin.qa.data import load_qa
from blade_plugin.testing.openai_stub_server import StubOpenAIServer
from blade_plugin.testing.scripted_llm import QAOracle
from helpers import run_cli


@pytest.fixture()
def train_items(demo_data_dir):
    return load_qa(demo_data_dir / "demo_qa_train.jsonl")[:8]


def _knowledge(server, tmp_path, train_file, *extra):
    return run_cli(["blade-bpo", "knowledge", "--train", str(train_file), "--out", str(tmp_path / "ws" / "kit.jsonl"),
                    "--llm-base-url", server.base_url, "--llm-model", "stub", "--cache-db",
                    str(tmp_path / "cache.sqlite3"), "--max-retries", "2", "--concurrency", "4", *extra],
                   cwd=tmp_path, env={"BLADE_HOME": str(tmp_path / "home")})


def _write(items, path):
    with open(path, "w") as f:
        for it in items:
            f.write(json.dumps({"id": it.id, "question": it.question, "options": it.options,
                                "answer": list(it.answer)}) + "\n")
    return path


def test_filter_keeps_only_knowledge_that_leads_to_the_right_answer(train_items, prompts, tmp_path):
    misleading = {train_items[1].id, train_items[4].id}
    oracle = QAOracle(train_items, prompts, misleading_ids=misleading)
    train_file = _write(train_items, tmp_path / "train.jsonl")
    with StubOpenAIServer(oracle) as server:
        result = _knowledge(server, tmp_path, train_file, "--dataset-dir", str(tmp_path / "ws" / "data"),
                            "--dataset-name", "my_kit")
        assert result.returncode == 0, result.stderr[-3000:]
        assert server.request_count == 2 * len(train_items)
    assert "kept 6 / 8 items" in result.stdout
    rows = [json.loads(line) for line in (tmp_path / "ws" / "kit.jsonl").read_text().splitlines()]
    kept_ids = [it.id for it in train_items if it.id not in misleading]
    assert [r["instruction"] for r in rows] == [prompts.small_model_query(it) for it in train_items
                                                if it.id in kept_ids]
    assert all(r["output"].startswith("Relevant knowledge:") and r["input"] == "" for r in rows)
    info = json.loads((tmp_path / "ws" / "data" / "dataset_info.json").read_text())
    assert info["my_kit"]["formatting"] == "alpaca"
    assert (tmp_path / "ws" / "data" / info["my_kit"]["file_name"]).resolve() == (tmp_path / "ws" / "kit.jsonl")


def test_failure_keeps_progress_and_rerun_resumes_without_reasking(train_items, prompts, tmp_path):
    oracle = QAOracle(train_items, prompts)
    train_file = _write(train_items, tmp_path / "train.jsonl")
    with StubOpenAIServer(oracle) as server:
        first = _knowledge(server, tmp_path, train_file, "--no-cache")
        assert first.returncode == 0
        progress = tmp_path / "ws" / "kit.jsonl.progress.jsonl"
        # keep 4 finished items, as if the run had died there, then make the LLM fail for good
        lines = progress.read_text().splitlines()
        progress.write_text("\n".join(lines[:5]) + "\n")  # header + 4 items
        kept_ids = {json.loads(line)["id"] for line in lines[1:5]}
        server.reset_stats()
        server.fail_always(500)
        failed = _knowledge(server, tmp_path, train_file, "--no-cache", "--max-errors", "1")
        assert failed.returncode == 1
        error = failed.stderr.strip().splitlines()[-1]
        assert "2 of 8 items failed, more than --max-errors 1" in error and "failed after 3 attempts" in error
        assert "4 of 8 items are saved" in error and "re-run" in error
        rows = [json.loads(line) for line in progress.read_text().splitlines()[1:]]
        assert {r["id"] for r in rows if not r.get("error")} == kept_ids  # nothing lost
        assert sum(1 for r in rows if r.get("error")) >= 2 and all("HTTP 500" in r["error"] for r in rows if r.get("error"))
        server.fail_always(None)
        server.reset_stats()
        resumed = _knowledge(server, tmp_path, train_file, "--no-cache")
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        assert server.request_count == 2 * 4  # only the 4 unfinished items were asked (the 2 errors retried)
    assert "kept 8 / 8" in resumed.stdout


def test_cache_makes_a_restart_free(train_items, prompts, tmp_path):
    train_file = _write(train_items[:3], tmp_path / "train.jsonl")
    with StubOpenAIServer(QAOracle(train_items, prompts)) as server:
        assert _knowledge(server, tmp_path, train_file).returncode == 0
        asked = server.request_count
        again = _knowledge(server, tmp_path, train_file, "--restart")
        assert again.returncode == 0 and server.request_count == asked
    assert "6 cache hits" in again.stdout


def test_malformed_input_is_reported_with_its_line(tmp_path, stub_llm):
    bad = tmp_path / "train.jsonl"
    bad.write_text('{"id": "1", "question": "Q?", "options": {"A": "a"}, "answer": "A"}\n{"id": "2", "question": \n')
    result = _knowledge(stub_llm, tmp_path, bad)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == f"Error: {bad}:2: invalid JSON (Expecting value at column 25)"
    assert stub_llm.request_count == 0
