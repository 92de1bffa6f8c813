"""The BPO run loop with synthetic objectives: baseline, re-scoring, artifacts, budgets, resume after SIGKILL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from blade_plugin.bpo.run import (TIMING_FIELDS, BPORunConfig, TrialResult, min_detectable_difference, run_bpo,
                                  select, split_half_optimism)
from blade_plugin.extras.errors import BladeError
from blade_plugin.runs.fingerprint import JobFingerprint
from blade_plugin.small_lm.soft_prompt import load_soft_prompt, save_soft_prompt
from helpers import sigkill_when

TARGET = torch.tensor([0.5, -0.5, 0.25], dtype=torch.float64)
N_DEV = 20


def quality(z) -> float:
    """In [0, 1]; the baseline (z=None) sits at 0.5."""
    return 0.5 if z is None else float(1 - ((torch.as_tensor(z) - TARGET) ** 2).sum() / 12)


def objective(z, shift: float = 0.0) -> TrialResult:
    # question i is answered correctly when the prompt's quality clears its difficulty
    correct = [quality(z) > (i + 0.5) / N_DEV + shift for i in range(N_DEV)]
    return TrialResult(score=sum(correct) / N_DEV, usage={"calls": 4}, timings={}, correct=correct)


def rescore_objective(z) -> TrialResult:
    return objective(z, shift=0.1)  # a harder second slice


def make_prompt(z):
    return torch.as_tensor(z, dtype=torch.float32).repeat(2, 4)  # [n_tokens=2, hidden=12]


def cfg(out: Path, **kw) -> BPORunConfig:
    values = dict(out_dir=out, d=3, n_tokens=2, n_init=3, iterations=3, seed=0, num_restarts=2, raw_samples=32)
    values.update(kw)
    return BPORunConfig(**values)


def _trials(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines() if line.strip()]


def test_run_writes_baseline_search_rescore_and_consistent_artifacts(tmp_path):
    out = tmp_path / "run"
    summary = run_bpo(cfg(out), objective, make_prompt, {"base_model": "synthetic"}, progress=False,
                      rescore=rescore_objective)
    trials = _trials(out)
    assert [t["phase"] for t in trials] == ["baseline"] + ["init"] * 3 + ["bo"] * 3 + ["rescore"] * 4
    assert [t["trial"] for t in trials] == list(range(11))
    assert trials[0]["z"] is None and trials[0]["score"] == 0.5
    search = trials[1:7]
    top3 = sorted(search, key=lambda t: (-t["score"], t["trial"]))[:3]
    assert [t["of_trial"] for t in trials[7:]] == [t["trial"] for t in top3] + [0]
    for t in trials:  # each row carries its per-question correctness and a bootstrap CI around its score
        assert len(t["correct_mask"]) == N_DEV and t["correct_mask"].count("1") / N_DEV == t["score"]
        lo, hi = t["ci95"]
        assert 0 <= lo <= hi <= 1
        if 0 < t["score"] < 1:
            assert lo < t["score"] < hi

    rescored = {t["of_trial"]: t["score"] for t in trials[7:]}
    chosen = max(top3, key=lambda t: (rescored[t["trial"]], t["score"], -t["trial"]))
    assert summary.best_trial == chosen["trial"] and summary.selection["selected_by"] == "rescore"
    assert summary.baseline["score"] == 0.5 and summary.baseline["rescore_score"] == rescored[0]
    assert summary.beat_baseline == (rescored[chosen["trial"]] > rescored[0])
    dev_best = top3[0]
    assert summary.selection["expected_optimism"] == round(dev_best["score"] - rescored[dev_best["trial"]], 4)
    assert summary.n_evaluations == 6 and summary.llm_calls == 4 * 11

    saved = json.loads((out / "summary.json").read_text())
    assert saved["status"] == "done" and saved["best_trial"] == chosen["trial"]
    assert saved["stop_reason"] == "budget: iterations done"
    prompt, meta = load_soft_prompt(out / "soft_prompt.safetensors")
    assert torch.equal(prompt, make_prompt(torch.tensor(chosen["z"])))
    assert meta["trial"] == chosen["trial"] and meta["z"] == chosen["z"] and meta["base_model"] == "synthetic"
    assert (out / "convergence.png").read_bytes()[:4] == b"\x89PNG"


def test_selection_prefers_the_rescored_candidate_over_the_dev_best():
    def row(trial, phase, score, **kw):
        return {"trial": trial, "phase": phase, "score": score, "z": [float(trial)], **kw}

    trials = [row(0, "baseline", 0.40), row(1, "init", 0.44), row(2, "init", 0.38), row(3, "bo", 0.42),
              row(4, "bo", 0.42), row(5, "bo", 0.30)]
    # before re-scoring: the dev best
    assert select(trials, 3)["row"]["trial"] == 1
    trials += [row(6, "rescore", 0.25, of_trial=1), row(7, "rescore", 0.40, of_trial=3),
               row(8, "rescore", 0.40, of_trial=4), row(9, "rescore", 0.35, of_trial=0)]
    choice = select(trials, 3)
    # 3 and 4 tie on re-score and on dev: the earlier one wins; the dev best (a lucky start) is dropped
    assert choice["row"]["trial"] == 3 and choice["selected_by"] == "rescore"
    assert [c["trial"] for c in choice["candidates"]] == [1, 3, 4]
    assert select(trials, 0)["selected_by"] == "dev"


def test_noise_figures_against_hand_values():
    # (z_0.975 + z_0.8) * sqrt(2 * 0.25 / 16) = (1.959964 + 0.841621) * 0.1767767
    assert min_detectable_difference(0.5, 16) == pytest.approx(0.495259, abs=1e-5)
    assert min_detectable_difference(0.5, 400) == pytest.approx(0.495259 / 5, abs=1e-5)
    gen = torch.Generator().manual_seed(0)
    noise = (torch.rand(20, 40, generator=gen) < 0.5).tolist()  # 20 prompts that are all equally good
    same = [noise[0]] * 20  # 20 identical prompts: nothing to select
    assert split_half_optimism(noise, seed=0) > 0.05
    assert abs(split_half_optimism(same, seed=0)) < 0.02


def test_budgets_count_search_trials_and_all_llm_calls(tmp_path):
    s = run_bpo(cfg(tmp_path / "a", max_evaluations=4), objective, make_prompt, {}, progress=False)
    assert s.n_evaluations == 4 and s.stop_reason == "budget: max_evaluations"
    assert [t["phase"] for t in _trials(tmp_path / "a")] == ["baseline", "init", "init", "init", "bo"]
    # 4 calls per evaluation: baseline 4, two init trials reach 12 >= 10
    s = run_bpo(cfg(tmp_path / "b", max_llm_calls=10), objective, make_prompt, {}, progress=False)
    assert s.n_evaluations == 2 and s.llm_calls == 12 and s.stop_reason == "budget: max_llm_calls"


def test_resume_is_the_default_and_a_changed_job_refuses_with_one_line(tmp_path):
    out = tmp_path / "run"
    fp = JobFingerprint(dev_items="abc", llm={"model": "m1"})
    run_bpo(cfg(out, iterations=0), objective, make_prompt, {}, progress=False, fingerprint=fp)
    calls = []
    again = run_bpo(cfg(out, iterations=0), lambda z: calls.append(z) or objective(z), make_prompt, {},
                    progress=False, fingerprint=fp)
    assert calls == [] and again.n_evaluations == 3
    with pytest.raises(BladeError, match=r"seed changed.*--restart"):
        run_bpo(cfg(out, seed=1), objective, make_prompt, {}, progress=False, fingerprint=fp)
    with pytest.raises(BladeError, match=r"\(dev_items, llm changed\)") as err:
        run_bpo(cfg(out), objective, make_prompt, {}, progress=False,
                fingerprint=JobFingerprint(dev_items="abd", llm={"model": "m2"}))
    assert "\n" not in str(err.value)
    restarted = run_bpo(cfg(out, seed=1, iterations=0, restart=True), objective, make_prompt, {}, progress=False,
                        fingerprint=fp)
    assert restarted.n_evaluations == 3 and len(_trials(out)) == 4


def test_a_foreign_soft_prompt_in_out_is_never_overwritten(tmp_path):
    out = tmp_path / "run"
    save_soft_prompt(out / "soft_prompt.safetensors", torch.ones(2, 12), {"mine": True})
    before = (out / "soft_prompt.safetensors").read_bytes()
    for restart in (False, True):
        with pytest.raises(BladeError, match="choose another --out"):
            run_bpo(cfg(out, restart=restart), objective, make_prompt, {}, progress=False)
    assert (out / "soft_prompt.safetensors").read_bytes() == before


def _without_timings(trials: list[dict], summary: dict) -> tuple[list[dict], dict]:
    trials = [{k: v for k, v in t.items() if k not in TIMING_FIELDS["trial"]} for t in trials]
    summary = {k: v for k, v in summary.items() if k not in TIMING_FIELDS["summary"]}
    return trials, summary


def _final_state(out: Path):
    prompt, meta = load_soft_prompt(out / "soft_prompt.safetensors")
    return (*_without_timings(_trials(out), json.loads((out / "summary.json").read_text())), prompt, meta)


def test_stale_soft_prompt_and_torn_trial_line_are_repaired_on_resume(tmp_path):
    out = tmp_path / "run"
    run_bpo(cfg(out), objective, make_prompt, {}, progress=False, rescore=rescore_objective)
    reference = _final_state(out)
    # what a kill leaves: a soft prompt and summary from an earlier best, and half a row being appended
    save_soft_prompt(out / "soft_prompt.safetensors", make_prompt(torch.zeros(3)), {"trial": 1})
    (out / "summary.json").write_text('{"status": "running"}')
    with open(out / "trials.jsonl", "a") as f:
        f.write('{"trial": 11, "phase": "resc')
    calls = []
    run_bpo(cfg(out), lambda z: calls.append(z) or objective(z), make_prompt, {}, progress=False,
            rescore=rescore_objective)
    assert calls == []
    state = _final_state(out)
    assert state[:2] == reference[:2] and torch.equal(state[2], reference[2]) and state[3] == reference[3]


CHILD = """
import json, sys, time, torch
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_bpo_run import cfg, make_prompt, objective, rescore_objective
from blade_plugin.bpo.run import run_bpo
torch.manual_seed(int(sys.argv[1]))  # a different global RNG state in every process
torch.rand(100)
def slow_objective(z):
    time.sleep(0.3)
    return objective(z)
def slow_rescore(z):
    time.sleep(0.3)  # re-scoring rows come last and are cheap: without this a kill "during re-scoring" can miss
    return rescore_objective(z)
def slow_prompt(z):
    time.sleep(0.4)  # widens the window between appending a trial and rewriting the soft prompt
    return make_prompt(z)
run_bpo(cfg(Path({out!r}), iterations=2, q=2), slow_objective, slow_prompt, {{}}, progress=False,
        rescore=slow_rescore)
"""


def _spawn(out: Path, salt: int) -> subprocess.Popen:
    code = CHILD.format(tests=str(Path(__file__).parent), out=str(out))
    return subprocess.Popen([sys.executable, "-c", code, str(salt)], env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.slow
def test_sigkill_at_several_points_resumes_to_the_uninterrupted_result(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    reference = _spawn(whole, 0)
    assert reference.wait(timeout=600) == 0, reference.stderr.read().decode()[-3000:]

    # after the baseline; inside the Sobol points; inside a q=2 BO round; during re-scoring
    for salt, kill_at in enumerate((1, 3, 7, 9), start=1):
        proc = _spawn(killed, salt)
        sigkill_when(proc, lambda k=kill_at: (killed / "trials.jsonl").exists() and len(_trials(killed)) >= k,
                     timeout=600, what=f"run killed at {kill_at}")
        assert kill_at <= len(_trials(killed)) < 12
    final = _spawn(killed, 99)
    assert final.wait(timeout=600) == 0, final.stderr.read().decode()[-3000:]

    trials, summary, prompt, meta = _final_state(killed)
    ref_trials, ref_summary, ref_prompt, ref_meta = _final_state(whole)
    assert len(trials) == 12 and [t["trial"] for t in trials] == list(range(12))
    assert trials == ref_trials  # same z, scores, CIs, usage: nothing evaluated twice or differently
    assert summary == ref_summary
    assert torch.equal(prompt, ref_prompt) and meta == ref_meta


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def _same_final_state(a: Path, b: Path) -> bool:
    trials, summary, prompt, meta = _final_state(a)
    ref_trials, ref_summary, ref_prompt, ref_meta = _final_state(b)
    return trials == ref_trials and summary == ref_summary and torch.equal(prompt, ref_prompt) and meta == ref_meta


def test_max_llm_calls_stop_says_stopped_and_a_larger_budget_resumes_to_the_unstopped_run(tmp_path):
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    run_bpo(cfg(whole), objective, make_prompt, {}, progress=False, rescore=rescore_objective)
    # 4 calls per evaluation: the baseline and two Sobol trials reach 12 >= 10
    s = run_bpo(cfg(stopped, max_llm_calls=10), objective, make_prompt, {}, progress=False, rescore=rescore_objective)
    saved = _summary(stopped)
    assert saved["status"] == "stopped" == s.status and saved["stop_reason"] == "budget: max_llm_calls"
    assert saved["spent"] == {"calls": 12} and "larger --max-llm-calls" in saved["resume"]
    assert [t["phase"] for t in _trials(stopped)] == ["baseline", "init", "init"]
    # the search done, the re-scoring cut short: still stopped, not done
    run_bpo(cfg(stopped, max_llm_calls=32), objective, make_prompt, {}, progress=False, rescore=rescore_objective)
    assert _summary(stopped)["status"] == "stopped" and _trials(stopped)[-1]["phase"] == "rescore"
    done = run_bpo(cfg(stopped), objective, make_prompt, {}, progress=False, rescore=rescore_objective)
    assert done.status == "done" and done.spent is None and done.resume is None
    assert _same_final_state(stopped, whole)


def test_spend_budget_stop_mid_trial_writes_stopped_and_resumes_to_the_unstopped_run(tmp_path):
    from blade_plugin.llm.budget import Budget, BudgetExceeded, Prices

    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    run_bpo(cfg(whole), objective, make_prompt, {}, progress=False, rescore=rescore_objective)
    # a client budget of $0.60 at $10 per million tokens: each request reserves 10k tokens (0.10 $) worst
    # case and is billed 5k; an evaluation makes 4 requests, so the stop lands inside an evaluation
    budget = Budget(max_cost=0.60 + 1e-9, prices=Prices(10.0, 0.0))
    asked = []

    def paying(z):
        for _ in range(4):
            reserved = budget.reserve(10_000, 0)
            budget.settle(reserved, 5_000, 0)
        asked.append(z)
        return objective(z)

    with pytest.raises(BudgetExceeded) as err:
        run_bpo(cfg(stopped), paying, make_prompt, {}, progress=False, rescore=rescore_objective, spend=budget)
    message = str(err.value)
    assert "\n" not in message and message.startswith("stopped at the budget (--max-cost 0.6)")
    assert "re-run the same command to resume" in message and str(stopped / "trials.jsonl") in message
    saved = _summary(stopped)
    assert saved["status"] == "stopped" and saved["stop_reason"] == "budget: --max-cost 0.6"
    assert saved["spent"]["calls"] == budget.spent.calls and saved["spent"]["cost"] == pytest.approx(budget.spent.cost)
    assert len(_trials(stopped)) == len(asked) == 2  # the evaluation the budget cut is not recorded
    run_bpo(cfg(stopped), objective, make_prompt, {}, progress=False, rescore=rescore_objective)
    assert _same_final_state(stopped, whole)
