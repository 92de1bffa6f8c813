"""`blade-bpo optimize` end to end: embedded model (real forward passes) + scripted LLM over HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from blade_plugin.qa.data import load_qa
from blade_plugin.small_lm.soft_prompt import SoftPromptSpace, load_soft_prompt
from blade_plugin.testing.openai_stub_server import StubOpenAIServer
from blade_plugin.testing.scripted_llm import QAOracle
from helpers import run_cli, sigkill_when

BIN = Path(sys.executable).parent


@pytest.fixture()
def dev_setup(demo_data_dir, prompts, tmp_path):
    dev_file = demo_data_dir / "demo_qa_dev.jsonl"
    items = load_qa(dev_file)[:6]
    oracle = QAOracle(items, prompts, coverage_needed=0.25)
    with StubOpenAIServer(oracle) as server:
        yield server, dev_file, tmp_path


def _args(server, dev_file, out, tmp_path, *extra):
    return ["optimize", "--dev", str(dev_file), "--limit", "6", "--out", str(out), "--n-init", "3",
            "--iterations", "2", "--max-new-tokens", "24", "--llm-base-url", server.base_url, "--llm-model", "stub",
            "--cache-db", str(tmp_path / "cache.sqlite3"), "--concurrency", "8", *extra]


def _trials(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines() if line.strip()]


def test_short_run_writes_artifacts_and_best_is_max(dev_setup, default_model_dir, generator):
    server, dev_file, tmp_path = dev_setup
    out = tmp_path / "bpo"
    result = run_cli(["blade-bpo", *_args(server, dev_file, out, tmp_path)], cwd=tmp_path,
                     env={"BLADE_DEFAULT_MODEL_DIR": str(default_model_dir)})
    assert result.returncode == 0, result.stderr[-3000:]
    trials = _trials(out)
    assert len(trials) == 5
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best_score"] == max(t["score"] for t in trials)
    assert summary["n_evaluations"] == 5 and summary["llm_calls"] == sum(t["usage"]["calls"] for t in trials)
    assert all(t["timings"]["generate_s"] > 0 for t in trials)
    assert (out / "convergence.png").is_file() and "best dev accuracy" in result.stdout

    prompt, meta = load_soft_prompt(out / "soft_prompt.safetensors", expected_hidden=576)
    assert prompt.shape == (5, 576)
    assert meta["base_model"] == str(default_model_dir) and meta["template"] == "blade_chatml"
    assert meta["z"] == summary["best_z"] and meta["score"] == summary["best_score"]
    # the artifact is exactly p = A z for the recorded seed and z, and drives generation the same way
    space = SoftPromptSpace.for_generator(generator, n_tokens=meta["n_tokens"], d=meta["d"], seed=meta["seed"])
    rebuilt = space.to_soft_prompt(torch.tensor(meta["z"]))
    assert torch.allclose(prompt, rebuilt)
    texts = ["What does aspirin inhibit?"]
    assert generator.generate(texts, soft_prompt=prompt) == generator.generate(texts, soft_prompt=rebuilt)


def test_sigkill_then_resume_reevaluates_nothing(dev_setup, default_model_dir):
    server, dev_file, tmp_path = dev_setup
    out = tmp_path / "bpo"
    env = {**os.environ, "BLADE_DEFAULT_MODEL_DIR": str(default_model_dir)}
    proc = subprocess.Popen([str(BIN / "blade-bpo"), *_args(server, dev_file, out, tmp_path, "--no-cache")],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sigkill_when(proc, lambda: (out / "trials.jsonl").exists() and len(_trials(out)) >= 2, timeout=240,
                 what="optimize")
    before = _trials(out)
    assert 2 <= len(before) < 5

    rerun = run_cli(["blade-bpo", *_args(server, dev_file, out, tmp_path, "--no-cache")], cwd=tmp_path, env=env)
    assert rerun.returncode == 1 and "pass --resume" in rerun.stderr

    server.reset_stats()
    resumed = run_cli(["blade-bpo", *_args(server, dev_file, out, tmp_path, "--no-cache", "--resume")],
                      cwd=tmp_path, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = _trials(out)
    assert len(after) == 5 and after[: len(before)] == before
    assert [t["trial"] for t in after] == list(range(5))
    # only the unfinished trials asked the LLM: one request per dev question each
    assert server.request_count == 6 * (5 - len(before))
