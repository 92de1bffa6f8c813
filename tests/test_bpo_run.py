"""The BPO run loop with synthetic objectives: artifacts, budgets, resume after a real SIGKILL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from blade_plugin.bpo.run import BPORunConfig, TrialResult, run_bpo
from blade_plugin.errors import BladeError
from blade_plugin.small_lm.soft_prompt import load_soft_prompt
from helpers import sigkill_when

TARGET = torch.tensor([0.5, -0.5, 0.25], dtype=torch.float64)


def objective(z):
    return TrialResult(score=float(1 - ((z - TARGET) ** 2).sum() / 4), usage={"calls": 4}, timings={})


def make_prompt(z):
    return torch.as_tensor(z, dtype=torch.float32).repeat(2, 4)  # [n_tokens=2, hidden=12]


def cfg(out: Path, **kw) -> BPORunConfig:
    values = dict(out_dir=out, d=3, n_tokens=2, n_init=3, iterations=3, seed=0, num_restarts=2, raw_samples=32)
    values.update(kw)
    return BPORunConfig(**values)


def _trials(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines() if line.strip()]


def test_short_run_writes_all_artifacts(tmp_path):
    out = tmp_path / "run"
    summary = run_bpo(cfg(out), objective, make_prompt, {"base_model": "synthetic"}, progress=False)
    trials = _trials(out)
    assert len(trials) == 6 and [t["phase"] for t in trials] == ["init"] * 3 + ["bo"] * 3
    assert summary.best_score == max(t["score"] for t in trials)
    saved = json.loads((out / "summary.json").read_text())
    assert saved["best_score"] == summary.best_score and saved["stop_reason"] == "budget: iterations done"
    prompt, meta = load_soft_prompt(out / "soft_prompt.safetensors")
    assert torch.equal(prompt, make_prompt(torch.tensor(summary.best_z)))
    assert meta["score"] == summary.best_score and meta["base_model"] == "synthetic" and meta["d"] == 3
    assert (out / "convergence.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "config.json").read_text())["seed"] == 0


def test_budgets_stop_the_run_with_the_right_reason(tmp_path):
    s = run_bpo(cfg(tmp_path / "a", max_evaluations=4), objective, make_prompt, {}, progress=False)
    assert s.n_evaluations == 4 and s.stop_reason == "budget: max_evaluations"
    s = run_bpo(cfg(tmp_path / "b", max_llm_calls=10), objective, make_prompt, {}, progress=False)
    assert s.n_evaluations == 3 and s.llm_calls == 12 and s.stop_reason == "budget: max_llm_calls"


def test_existing_run_needs_resume_and_matching_settings(tmp_path):
    out = tmp_path / "run"
    run_bpo(cfg(out, iterations=0), objective, make_prompt, {}, progress=False)
    with pytest.raises(BladeError, match="pass --resume"):
        run_bpo(cfg(out, iterations=0), objective, make_prompt, {}, progress=False)
    with pytest.raises(BladeError, match="seed: saved 0 vs now 1"):
        run_bpo(cfg(out, seed=1, resume=True), objective, make_prompt, {}, progress=False)


CHILD = """
import json, sys, time, torch
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_bpo_run import cfg, make_prompt, TARGET
from blade_plugin.bpo.run import TrialResult, run_bpo
log = Path({log!r})
def slow_objective(z):
    with open(log, "a") as f:
        f.write(json.dumps([float(v) for v in z]) + "\\n")
    time.sleep(0.6)
    return TrialResult(score=float(1 - ((z - TARGET) ** 2).sum() / 4), usage={{"calls": 1}})
run_bpo(cfg(Path({out!r}), iterations=4), slow_objective, make_prompt, {{}}, progress=False)
"""


def test_resume_after_sigkill_reevaluates_nothing(tmp_path):
    out, log = tmp_path / "run", tmp_path / "calls.jsonl"
    code = CHILD.format(tests=str(Path(__file__).parent), log=str(log), out=str(out))
    proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONUNBUFFERED": "1"})
    sigkill_when(proc, lambda: (out / "trials.jsonl").exists() and len(_trials(out)) >= 4, timeout=120)
    finished = _trials(out)
    assert 4 <= len(finished) < 7

    calls_after_kill = []

    def recording_objective(z):
        calls_after_kill.append([float(v) for v in z])
        return objective(z)

    summary = run_bpo(cfg(out, iterations=4, resume=True), recording_objective, make_prompt, {}, progress=False)
    trials = _trials(out)
    assert summary.n_evaluations == len(trials) == 7
    done_before = {tuple(t["z"]) for t in finished}
    assert all(tuple(z) not in done_before for z in calls_after_kill)
    assert len(calls_after_kill) == 7 - len(finished)
    assert [t["trial"] for t in trials] == list(range(7))
    assert summary.best_score == max(t["score"] for t in trials)
