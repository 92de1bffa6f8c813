"""`blade-bpo optimize`'s command body in the fast lane: the real command in this process (click's runner) on
the embedded model, a scripted LLM over HTTP, the smallest search that still runs every step (baseline, one
Sobol point, re-scoring, the output files). The full runs and resumes are in test_optimize_cli.py (slow)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from blade_plugin.cli import cli
from blade_plugin.qa.data import load_qa
from blade_plugin.small_lm.soft_prompt import load_soft_prompt
from blade_testing.openai_stub_server import StubOpenAIServer
from blade_testing.scripted_llm import QAOracle


def test_optimize_runs_baseline_search_and_rescoring_and_writes_its_files(demo_data_dir, prompts, tmp_path,
                                                                          default_model_dir):
    dev = demo_data_dir / "demo_qa_dev.jsonl"
    items = load_qa(dev)[:4]
    out = tmp_path / "bpo"
    with StubOpenAIServer(QAOracle(items, prompts, coverage_needed=0.25)) as server:
        result = CliRunner().invoke(cli, [
            "optimize", "--dev", str(dev), "--limit", "4", "--out", str(out), "--n-init", "1", "--iterations", "0",
            "--n-tokens", "2", "--max-new-tokens", "4", "--small-model", str(default_model_dir), "--no-cache",
            "--llm-base-url", server.base_url, "--llm-model", "stub", "--cache-db", str(tmp_path / "c.sqlite3")])
        asked = [r["messages"][-1]["content"] for r in server.requests]
    assert result.exit_code == 0, result.output
    # --holdout 0.25 of 4 questions: 3 searched, 1 held out. The baseline (no soft prompt) and the one Sobol
    # point each ask the 3; re-scoring asks the held-out one for the baseline and the one candidate.
    assert len(asked) == 2 * 3 + 2 * 1
    assert all(sum(item.question in prompt for item in items) == 1 for prompt in asked)
    trials = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines() if line.strip()]
    assert [t["phase"] for t in trials if t["phase"] != "rescore"] == ["baseline", "init"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "done" and summary["llm_calls"] == len(asked) and summary["noise"]["n_dev"] == 3
    soft, metadata = load_soft_prompt(out / "soft_prompt.safetensors", expected_hidden=576)
    assert tuple(soft.shape) == (2, 576) and metadata["max_new_tokens"] == 4
