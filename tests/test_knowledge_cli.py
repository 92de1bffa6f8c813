"""`blade-bpo knowledge` end to end: a real CLI subprocess against the scripted LLM over HTTP."""

from __future__ import annotations

import json

import pytest

from blade_plugin.qa.data import load_qa
from blade_testing.openai_stub_server import StubOpenAIServer
from blade_testing.scripted_llm import QAOracle
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


def test_one_item_failing_for_good_is_marked_and_the_run_finishes(prompts, tmp_path):
    """A permanent 400 (e.g. an over-long prompt) on one Chinese JEC-QA item: the other items finish."""
    from pathlib import Path

    from blade_plugin.qa.prompts import load_prompts

    source = Path(__file__).parent / "data" / "jecqa_sample.json"
    items = load_qa(source)
    zh = load_prompts(variant="zh_legal")
    bad = items[2]
    with StubOpenAIServer(QAOracle(items, zh)) as server:
        server.fail_matching(bad.question, 400)
        result = _knowledge(server, tmp_path, source, "--variant", "zh_legal")
        assert result.returncode == 0, result.stderr[-3000:]
        # the failing item was asked once (a 400 is not retried), the others twice each
        assert server.request_count == 2 * (len(items) - 1) + 1
    assert f"kept {len(items) - 1} / {len(items)} items" in result.stdout
    assert "1 item(s) failed after retries" in result.stdout and bad.id in result.stdout
    stats = json.loads((tmp_path / "ws" / "kit.jsonl.stats.json").read_text())
    assert stats["errors"] == 1 and stats["failed"][0]["id"] == bad.id and "HTTP 400" in stats["failed"][0]["error"]
    assert stats["usage"]["failures"] == 1
    rows = [json.loads(line) for line in (tmp_path / "ws" / "kit.jsonl").read_text().splitlines()]
    assert [r["instruction"] for r in rows] == [zh.small_model_query(it) for it in items if it.id != bad.id]
    progress = [json.loads(line) for line in (tmp_path / "ws" / "kit.jsonl.progress.jsonl").read_text().splitlines()]
    assert [r["id"] for r in progress[1:] if r.get("error")] == [bad.id]


def test_more_errors_than_allowed_stop_the_run(train_items, prompts, tmp_path):
    train_file = _write(train_items, tmp_path / "train.jsonl")
    with StubOpenAIServer(QAOracle(train_items, prompts)) as server:
        for item in train_items[:3]:
            server.fail_matching(item.question, 400)
        result = _knowledge(server, tmp_path, train_file, "--max-errors", "0.25")  # 0.25 * 8 = 2 allowed
        assert result.returncode == 1
        assert "3 of 8 items failed, more than --max-errors 2" in result.stderr.strip().splitlines()[-1]
        bad = _knowledge(server, tmp_path, train_file, "--max-errors", "1.5")
        assert bad.returncode == 2 and "a fraction must lie in (0, 1)" in bad.stderr


def _popen_knowledge(server, tmp_path, train_file, out, *extra):
    import os
    import subprocess

    from helpers import BIN

    args = [str(BIN / "blade-bpo"), "knowledge", "--train", str(train_file), "--out", str(out),
            "--llm-base-url", server.base_url, "--llm-model", "stub", "--no-cache", "--concurrency", "2", *extra]
    return subprocess.Popen(args, cwd=tmp_path, env={**os.environ, "BLADE_HOME": str(tmp_path / "home")},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# Fields of the stats file that describe this process's work rather than the result.
KIT_RUN_FIELDS = ("seconds", "usage", "resumed")


@pytest.mark.slow
@pytest.mark.parametrize("kill_after", [1, 9, 17])
def test_sigkill_at_any_point_resumes_to_the_uninterrupted_result(demo_data_dir, prompts, tmp_path, kill_after):
    from helpers import sigkill_when

    train_file = demo_data_dir / "demo_qa_train.jsonl"
    items = load_qa(train_file)
    oracle = QAOracle(items, prompts, misleading_ids={items[3].id, items[10].id})
    with StubOpenAIServer(oracle, latency=0.05) as server:
        clean = _popen_knowledge(server, tmp_path, train_file, tmp_path / "clean" / "kit.jsonl")
        assert clean.wait(timeout=300) == 0, clean.stderr.read()[-2000:]
        out = tmp_path / "killed" / "kit.jsonl"
        progress = out.with_name("kit.jsonl.progress.jsonl")
        proc = _popen_knowledge(server, tmp_path, train_file, out)
        sigkill_when(proc, lambda: progress.exists() and progress.read_bytes().count(b"\n") > kill_after,
                     timeout=120, what="knowledge")
        saved = progress.read_bytes().count(b"\n") - 1
        assert 0 < saved < len(items)
        server.settle()  # the killed run's last request may still be arriving
        server.reset_stats()
        resumed = _popen_knowledge(server, tmp_path, train_file, out)
        assert resumed.wait(timeout=300) == 0, resumed.stderr.read()[-2000:]
        assert server.request_count <= 2 * (len(items) - saved)  # finished items were not asked again
    assert out.read_bytes() == (tmp_path / "clean" / "kit.jsonl").read_bytes()
    stats = json.loads(out.with_name("kit.jsonl.stats.json").read_text())
    clean_stats = json.loads((tmp_path / "clean" / "kit.jsonl.stats.json").read_text())
    assert stats["resumed"] == saved and stats["kept"] == len(items) - 2
    for name in KIT_RUN_FIELDS:
        stats.pop(name), clean_stats.pop(name)
    assert stats == clean_stats
    ids = [json.loads(line)["id"] for line in progress.read_text().splitlines()[1:]]
    assert sorted(set(ids)) == sorted(it.id for it in items) and len(ids) == len(items)  # none lost or doubled


@pytest.mark.slow
def test_changed_inputs_refuse_to_resume_in_one_line(train_items, prompts, tmp_path):
    import shutil

    from blade_plugin.extras.paths import templates_dir

    train_file = _write(train_items, tmp_path / "train.jsonl")
    with StubOpenAIServer(QAOracle(train_items, prompts)) as server:
        assert _knowledge(server, tmp_path, train_file).returncode == 0
        # an option's text changed
        records = [json.loads(line) for line in train_file.read_text().splitlines()]
        records[5]["options"]["C"] += " (revised)"
        changed = tmp_path / "train_changed.jsonl"
        changed.write_text("".join(json.dumps(r) + "\n" for r in records))
        result = _knowledge(server, tmp_path, changed)
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "(items changed)" in lines[0] and "--restart" in lines[0], result.stderr
        # a template changed
        edited = tmp_path / "templates"
        shutil.copytree(templates_dir(), edited, ignore=shutil.ignore_patterns("zh_*"))
        kg = edited / "knowledge_generation.j2"
        kg.write_text(kg.read_text() + "\nBe concise.\n")
        result = _knowledge(server, tmp_path, train_file, "--templates-dir", str(edited))
        assert result.returncode == 1 and "(template knowledge_generation.j2 changed)" in result.stderr
        # the model changed
        result = run_cli(["blade-bpo", "knowledge", "--train", str(train_file), "--out", str(tmp_path / "ws" / "kit.jsonl"),
                          "--llm-base-url", server.base_url + "/", "--llm-model", "stub-2", "--cache-db",
                          str(tmp_path / "cache.sqlite3")], cwd=tmp_path, env={"BLADE_HOME": str(tmp_path / "home")})
        assert result.returncode == 1 and "(llm model changed)" in result.stderr  # the "/" alone changes nothing
        assert _knowledge(server, tmp_path, changed, "--restart").returncode == 0
