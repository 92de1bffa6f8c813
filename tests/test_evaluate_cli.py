"""`blade-bpo evaluate` and `blade-bpo answer` against the scripted LLM over HTTP, embedded small model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from scipy.stats import binom, binomtest

from blade_plugin.qa.data import load_qa
from blade_plugin.small_lm.soft_prompt import SoftPromptSpace, save_soft_prompt
from blade_testing.openai_stub_server import StubOpenAIServer
from blade_testing.scripted_llm import QAOracle
from helpers import run_cli


@pytest.fixture()
def setup(demo_data_dir, prompts, generator, tmp_path):
    test_file = demo_data_dir / "demo_qa_test.jsonl"
    items = load_qa(test_file)[:8]
    space = SoftPromptSpace.for_generator(generator, n_tokens=5, d=10, seed=0)
    soft = tmp_path / "soft_prompt.safetensors"
    save_soft_prompt(soft, space.to_soft_prompt(torch.full((10,), 0.4)), generator.model_fingerprint)
    with StubOpenAIServer(QAOracle(items, prompts, coverage_needed=0.25)) as server:
        yield server, test_file, items, soft, tmp_path


def _evaluate(server, test_file, out, tmp_path, model_dir, *extra):
    return run_cli(["blade-bpo", "evaluate", "--test", str(test_file), "--limit", "8", "--out", str(out),
                    "--max-new-tokens", "24", "--llm-base-url", server.base_url, "--llm-model", "stub",
                    "--cache-db", str(tmp_path / "cache.sqlite3"), "--bootstrap", "500", *extra],
                   cwd=tmp_path, env={"BLADE_DEFAULT_MODEL_DIR": str(model_dir)})


@pytest.mark.slow
def test_all_modes_and_metrics_follow_from_predictions(setup, default_model_dir):
    server, test_file, items, soft, tmp_path = setup
    out = tmp_path / "eval"
    result = _evaluate(server, test_file, out, tmp_path, default_model_dir, "--soft-prompt", str(soft))
    assert result.returncode == 0, result.stderr[-3000:]
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [(p["mode"], p["id"]) for p in predictions] == [(m, it.id) for m in ("llm", "knowledge", "blade")
                                                           for it in items]
    assert all(p["knowledge"] == "" for p in predictions if p["mode"] == "llm")
    assert all(p["knowledge"] for p in predictions if p["mode"] != "llm")
    knowledge = {p["id"]: p["knowledge"] for p in predictions if p["mode"] == "knowledge"}
    blade = {p["id"]: p["knowledge"] for p in predictions if p["mode"] == "blade"}
    assert knowledge != blade  # the soft prompt changed what the small LM wrote

    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"modes", "paired", "errors", "seconds", "llm_usage", "inputs"} and metrics["errors"] == []
    by = {(p["mode"], p["id"]): p for p in predictions}
    for mode in ("llm", "knowledge", "blade"):
        rows = [by[(mode, it.id)] for it in items]
        m = metrics["modes"][mode]
        k, n = sum(p["correct"] for p in rows), len(rows)
        assert (m["n"], m["correct"], m["accuracy"], m["errors"]) == (n, k, round(k / n, 4), 0)
        assert m["unparseable"] == sum(1 for p in rows if p["unparseable"])
        # percentile bootstrap of 0/1 data: a resample's mean is exactly Binomial(n, k/n) / n (within one step)
        exact = binom(n, k / n)
        for bound, q in zip(m["ci95"], (0.025, 0.975)):
            assert abs(bound - exact.ppf(q) / n) <= 1 / n + 1e-9
        single = [by[(mode, it.id)]["correct"] for it in items if not it.is_multi_answer]
        multi = [by[(mode, it.id)]["correct"] for it in items if it.is_multi_answer]
        if single and multi:
            assert (m["single_answer"]["n"], m["single_answer"]["correct"]) == (len(single), sum(single))
            assert (m["multi_answer"]["n"], m["multi_answer"]["correct"]) == (len(multi), sum(multi))
    assert set(metrics["paired"]) == {"knowledge_vs_llm", "blade_vs_llm"}
    for mode in ("knowledge", "blade"):
        paired = metrics["paired"][f"{mode}_vs_llm"]
        pairs = [(by[(mode, it.id)]["correct"], by[("llm", it.id)]["correct"]) for it in items]
        wins, losses = sum(1 for a, b in pairs if a and not b), sum(1 for a, b in pairs if b and not a)
        assert (paired["n"], paired["wins"], paired["losses"]) == (len(items), wins, losses)
        assert paired["accuracy_diff"] == round((sum(a for a, _ in pairs) - sum(b for _, b in pairs)) / len(items), 4)
        # exact McNemar = two-sided binomial test of the discordant pairs at 1/2 (scipy), 1 when there are none
        expected_p = binomtest(min(wins, losses), wins + losses, 0.5).pvalue if wins + losses else 1.0
        assert paired["mcnemar_p"] == pytest.approx(min(1.0, expected_p), abs=1e-6)
        low, high = paired["ci95"]
        assert -1 <= low <= paired["accuracy_diff"] <= high <= 1
    assert "| LLM + BLADE (soft prompt) |" in (out / "report.md").read_text()
    # one real request per distinct (question, knowledge): identical knowledge in two modes is a cache hit
    assert server.request_count == len({(p["id"], p["knowledge"]) for p in predictions})


def test_rerun_resumes_from_saved_predictions(setup, default_model_dir):
    server, test_file, items, soft, tmp_path = setup
    out = tmp_path / "eval"
    assert _evaluate(server, test_file, out, tmp_path, default_model_dir, "--modes", "llm", "--no-cache").returncode == 0
    server.reset_stats()
    again = _evaluate(server, test_file, out, tmp_path, default_model_dir, "--modes", "llm", "--no-cache")
    assert again.returncode == 0 and server.request_count == 0
    other = _evaluate(server, test_file, out, tmp_path, default_model_dir, "--modes", "llm", "--no-cache",
                      "--templates-dir", str(tmp_path / "nope"))
    assert other.returncode == 2  # click rejects a missing --templates-dir before any work


@pytest.mark.slow
def test_bad_arguments_fail_in_one_line(setup, default_model_dir):
    server, test_file, items, soft, tmp_path = setup
    result = _evaluate(server, test_file, tmp_path / "e", tmp_path, default_model_dir, "--modes", "blade")
    assert result.returncode == 1 and result.stderr.strip().endswith("--modes includes blade but no --soft-prompt was given")
    result = _evaluate(server, test_file, tmp_path / "e", tmp_path, default_model_dir, "--small-model",
                       str(tmp_path / "missing"))
    assert result.returncode == 1 and f"{tmp_path / 'missing'}: no such directory" in result.stderr
    (tmp_path / "not_a_model").mkdir(exist_ok=True)
    result = _evaluate(server, test_file, tmp_path / "e", tmp_path, default_model_dir, "--small-model",
                       str(tmp_path / "not_a_model"))
    assert result.returncode == 1 and "not an HF model directory (no config.json)" in result.stderr
    result = _evaluate(server, test_file, tmp_path / "e", tmp_path, default_model_dir, "--template", "no_such")
    assert result.returncode == 1 and "Template no_such does not exist" in result.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_answer_single_question_and_stdin_batch(setup, default_model_dir):
    server, test_file, items, soft, tmp_path = setup
    item = items[0]
    args = ["blade-bpo", "answer", "--llm-base-url", server.base_url, "--llm-model", "stub", "--max-new-tokens", "16",
            "--cache-db", str(tmp_path / "cache.sqlite3"), "--soft-prompt", str(soft)]
    one = run_cli([*args, "--question", item.question, *[f"--option={k}={v}" for k, v in item.options.items()]],
                  cwd=tmp_path, env={"BLADE_DEFAULT_MODEL_DIR": str(default_model_dir)})
    assert one.returncode == 0, one.stderr[-2000:]
    assert "Knowledge (small LM):" in one.stdout and "LLM answer:\nAnswer: " in one.stdout

    lines = "\n".join(json.dumps({"id": it.id, "question": it.question, "options": it.options}) for it in items[:3])
    proc = subprocess.run([str(Path(sys.executable).parent / "blade-bpo"), *args[1:]], input=lines + "\n",
                          capture_output=True, text=True, cwd=tmp_path,
                          env={**__import__("os").environ, "BLADE_DEFAULT_MODEL_DIR": str(default_model_dir)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["id"] for r in rows] == [it.id for it in items[:3]]
    assert all(r["knowledge"] and r["llm_output"].startswith("Answer: ") and r["answer"] for r in rows)


def _popen_evaluate(server, test_file, out, tmp_path, model_dir, *extra):
    import os

    from helpers import BIN

    args = [str(BIN / "blade-bpo"), "evaluate", "--test", str(test_file), "--out", str(out), "--max-new-tokens", "8",
            "--limit", "8",
            "--llm-base-url", server.base_url, "--llm-model", "stub", "--no-cache", "--bootstrap", "200",
            "--modes", "llm,knowledge", "--concurrency", "2", "--batch-size", "4", *extra]
    return subprocess.Popen(args, cwd=tmp_path, env={**os.environ, "BLADE_DEFAULT_MODEL_DIR": str(model_dir)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# Fields that describe this process's work, not the result: metrics.json "seconds" and "llm_usage", and the
# "LLM usage:" line of report.md.
def _without_run_fields(out: Path) -> tuple[str, dict, str]:
    metrics = json.loads((out / "metrics.json").read_text())
    metrics.pop("seconds"), metrics.pop("llm_usage")
    report = "\n".join(line for line in (out / "report.md").read_text().splitlines() if not line.startswith("LLM usage:"))
    return (out / "predictions.jsonl").read_text(), metrics, report


@pytest.mark.slow
@pytest.mark.parametrize("kill_after", [2, 11])  # 16 predictions: 8 llm, then 8 knowledge
def test_sigkill_at_any_point_resumes_to_the_uninterrupted_result(demo_data_dir, prompts, default_model_dir, tmp_path,
                                                                  kill_after):
    from helpers import sigkill_when

    test_file = demo_data_dir / "demo_qa_test.jsonl"
    items = load_qa(test_file, limit=8)
    with StubOpenAIServer(QAOracle(items, prompts, coverage_needed=0.25), latency=0.2) as server:
        clean = _popen_evaluate(server, test_file, tmp_path / "clean", tmp_path, default_model_dir)
        assert clean.wait(timeout=600) == 0, clean.stderr.read()[-2000:]
        out = tmp_path / "killed"
        progress = out / "predictions.progress.jsonl"
        proc = _popen_evaluate(server, test_file, out, tmp_path, default_model_dir)
        sigkill_when(proc, lambda: progress.exists() and progress.read_bytes().count(b"\n") > kill_after,
                     timeout=900, what="evaluate")
        saved = progress.read_bytes().count(b"\n") - 1
        assert 0 < saved < 2 * len(items)
        server.settle()  # the killed run's last request may still be arriving
        server.reset_stats()
        resumed = _popen_evaluate(server, test_file, out, tmp_path, default_model_dir)
        assert resumed.wait(timeout=600) == 0, resumed.stderr.read()[-2000:]
        assert server.request_count <= 2 * len(items) - saved
    assert (out / "predictions.jsonl").read_bytes() == (tmp_path / "clean" / "predictions.jsonl").read_bytes()
    assert _without_run_fields(out) == _without_run_fields(tmp_path / "clean")


def test_failed_prediction_is_an_error_in_outputs_and_a_change_refuses_resume(setup, default_model_dir):
    server, test_file, items, soft, tmp_path = setup
    out = tmp_path / "eval"
    bad = items[4]
    server.fail_matching(bad.question, 400)
    result = _evaluate(server, test_file, out, tmp_path, default_model_dir, "--modes", "llm")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "1 prediction(s) failed after retries" in result.stdout
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    failed = [p for p in predictions if p["error"]]
    assert [p["id"] for p in failed] == [bad.id] and failed[0]["correct"] is False and "HTTP 400" in failed[0]["error"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["modes"]["llm"]["errors"] == 1 and metrics["errors"][0]["id"] == bad.id
    assert metrics["modes"]["llm"]["accuracy"] == round(sum(p["correct"] for p in predictions) / len(predictions), 4)
    report = (out / "report.md").read_text()
    assert "## Errors (1 predictions" in report and f"| llm | {bad.id} | LLM request" in report
    # a changed item (the answer of one question) refuses the saved predictions, in one line
    records = [json.loads(line) for line in test_file.read_text().splitlines()][:8]
    records[2]["answer"] = "D" if records[2]["answer"] != "D" else "C"
    changed = tmp_path / "test_changed.jsonl"
    changed.write_text("".join(json.dumps(r) + "\n" for r in records))
    refused = _evaluate(server, changed, out, tmp_path, default_model_dir, "--modes", "llm")
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 1 and len(lines) == 1 and "(items changed)" in lines[0] and "--restart" in lines[0]
    # the LLM's temperature changed
    refused = _evaluate(server, test_file, out, tmp_path, default_model_dir, "--modes", "llm", "--temperature", "0.5")
    assert refused.returncode == 1 and "(llm sampling changed)" in refused.stderr
