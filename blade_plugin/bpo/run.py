"""The BPO run loop: a baseline, the search, a re-scoring of the top candidates, artifacts, and resume.

trials.jsonl is the single source of truth. Each finished evaluation is appended (and fsync'd) before the
next starts: trial 0 is the baseline (no soft tokens), then the search trials (Sobol "init", GP "bo"), then
"rescore" rows for the top-k candidates and the baseline on a second dev slice. Everything else (the chosen
soft prompt, summary.json, the plot) is a pure function of trials.jsonl and is rewritten from it, soft
prompt first, then summary: a kill between the two (or between an append and the rewrite) is repaired by
the next start, which recomputes the choice and rewrites the soft prompt if its metadata disagrees.

Resuming is the default. A resumed run rebuilds the optimiser from trials.jsonl; proposals are a pure
function of (seed, history) (see optimizer.py), so it continues the same sequence without evaluating a
finished trial again. The run's identity is a JobFingerprint saved in config.json; a mismatch stops with
one line naming what changed and `--restart`.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .optimizer import BayesianOptimizer
from ..extras.errors import BladeError
from ..llm.budget import Budget, BudgetExceeded
from ..runs.atomic_io import atomic_write_json, read_json
from ..runs.fingerprint import JobFingerprint
from ..runs.job_log import JobLog

logger = logging.getLogger(__name__)

SEARCH_PHASES = ("init", "bo")
# Files this loop writes in --out; --restart removes exactly these and nothing else.
ARTIFACTS = ("trials.jsonl", "summary.json", "soft_prompt.safetensors", "convergence.png", "config.json")
# Fields of trials.jsonl rows and summary.json that measure time and so differ between an interrupted and
# an uninterrupted run; everything else is identical.
TIMING_FIELDS = {"trial": ("timings",), "summary": ("wall_seconds", "phase_seconds")}


@dataclass
class BPORunConfig:
    out_dir: Path
    d: int = 10
    n_tokens: int = 5
    n_init: int = 5
    q: int = 1
    iterations: int = 10  # BO rounds after the initial points
    max_evaluations: int | None = None  # search trials (the baseline and re-scoring are not counted)
    max_llm_calls: int | None = None  # every LLM call: baseline, search and re-scoring
    seed: int = 0
    restart: bool = False
    num_restarts: int = 10
    raw_samples: int = 256
    baseline: bool = True  # evaluate trial 0 without soft tokens
    top_k: int = 3  # search candidates re-scored (with the baseline) when a re-score objective is given

    def identity(self) -> dict:
        """The search settings a resume must share (command-specific parts come in `run_bpo(fingerprint=)`)."""
        return {"d": self.d, "n_tokens": self.n_tokens, "n_init": self.n_init, "q": self.q, "seed": self.seed,
                "baseline": self.baseline, "top_k": self.top_k}


@dataclass
class TrialResult:
    score: float
    details: dict = field(default_factory=dict)
    usage: dict = field(default_factory=dict)  # e.g. calls, cache_hits, prompt_tokens, completion_tokens
    timings: dict = field(default_factory=dict)
    correct: list[bool] | None = None  # per-question correctness, for the bootstrap CI and paired tests


@dataclass
class BPOSummary:
    best_score: float
    best_z: list[float]
    best_trial: int
    n_evaluations: int
    llm_calls: int
    stop_reason: str
    wall_seconds: float
    budgets: dict
    phase_seconds: dict
    status: str = "done"
    baseline: dict | None = None
    beat_baseline: bool | None = None
    baseline_comparison: dict | None = None
    selection: dict = field(default_factory=dict)
    noise: dict = field(default_factory=dict)
    errors: int = 0
    spent: dict | None = None  # a budget stop: what this invocation spent (calls, tokens, cost)
    resume: str | None = None  # a budget stop: how to go on

    def as_dict(self) -> dict:
        return asdict(self)


# --- trials.jsonl ----------------------------------------------------------------------------------------
def trial_log(out_dir: Path) -> JobLog:
    """trials.jsonl: no header row (the identity is in config.json, checked below); every row fsync'd."""
    return JobLog(Path(out_dir) / "trials.jsonl", fingerprint=None, sync_interval=0.0)


def _prepare_out_dir(config: BPORunConfig, fingerprint: JobFingerprint) -> tuple[JobLog, list[dict]]:
    out = Path(config.out_dir)
    config_path = out / "config.json"
    if not config_path.exists() and any((out / name).exists() for name in ("soft_prompt.safetensors", "summary.json")):
        raise BladeError(f"{out} holds a soft prompt or summary that no BPO run config.json describes; "
                         "choose another --out (nothing was overwritten)")
    if config.restart:
        removed = [name for name in ARTIFACTS if (out / name).exists()]
        for name in removed:
            (out / name).unlink()
        if removed:
            logger.info("--restart: removed %s from %s", ", ".join(removed), out)
    log = trial_log(out)
    trials = log.rows()
    if trials:
        saved = None
        if config_path.exists():
            saved = (read_json(config_path) or {}).get("fingerprint")
        message = fingerprint.mismatch_message(saved, str(out))
        if message:
            raise BladeError(message)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(config_path, {"fingerprint": fingerprint.to_json(), "iterations": config.iterations,
                                    "max_evaluations": config.max_evaluations, "max_llm_calls": config.max_llm_calls})
    return log, trials


# --- selection and statistics (pure functions of the trial rows) ---------------------------------------
def _rank_key(row: dict) -> tuple:
    return (-row["score"], row["trial"])  # best score first; ties go to the earlier trial


def select(trials: list[dict], top_k: int) -> dict | None:
    """The chosen search trial and why: the best re-scored candidate once every top-k candidate has been
    re-scored (ties: better dev score, then earlier), else the best dev score."""
    search = sorted((t for t in trials if t["phase"] in SEARCH_PHASES), key=_rank_key)
    if not search:
        return None
    candidates = search[:top_k]
    rescored = {t["of_trial"]: t for t in trials if t["phase"] == "rescore"}
    if top_k > 0 and all(c["trial"] in rescored for c in candidates):
        chosen = min(candidates, key=lambda c: (-rescored[c["trial"]]["score"], -c["score"], c["trial"]))
        return {"row": chosen, "selected_by": "rescore", "rescore": rescored[chosen["trial"]],
                "candidates": candidates, "rescored": rescored, "dev_best": search[0]}
    return {"row": search[0], "selected_by": "dev", "rescore": None, "candidates": candidates,
            "rescored": rescored, "dev_best": search[0]}


def _mask(row: dict | None) -> list[bool] | None:
    mask = (row or {}).get("correct_mask")
    return None if mask is None else [c == "1" for c in mask]


def min_detectable_difference(p: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest accuracy difference two prompts must have to be told apart on n questions (two-sided test at
    `alpha` with `power`; normal approximation for two proportions around accuracy p)."""
    from scipy.stats import norm

    p = min(max(p, 0.5 / n), 1 - 0.5 / n)
    return float((norm.ppf(1 - alpha / 2) + norm.ppf(power)) * math.sqrt(2 * p * (1 - p) / n))


def split_half_optimism(masks: list[list[bool]], seed: int, repeats: int = 200) -> float | None:
    """Expected optimism of picking the best of N trials, from repeated random halves of the dev set: choose
    the best trial on one half, score it on the other; the mean gap, scaled by 1/sqrt(2) from n/2 to n
    questions (selection optimism shrinks like the standard error, ~1/sqrt(n))."""
    import numpy as np

    matrix = np.asarray(masks, dtype=np.float64)  # [trials, questions]
    n = matrix.shape[1] if matrix.ndim == 2 else 0
    if len(masks) < 2 or n < 4:
        return None
    rng = np.random.default_rng(seed)
    gaps = []
    for _ in range(repeats):
        order = rng.permutation(n)
        a, b = order[: n // 2], order[n // 2:]
        score_a, score_b = matrix[:, a].mean(axis=1), matrix[:, b].mean(axis=1)
        best = int(np.argmax(score_a))
        gaps.append(score_a[best] - score_b[best])
    return round(float(np.mean(gaps)) / math.sqrt(2), 4)


def _paired(a: list[bool] | None, b: list[bool] | None, where: str) -> dict | None:
    from ..qa.metrics import paired_comparison

    if a is None or b is None or len(a) != len(b) or not a:
        return None
    return {"on": where, **paired_comparison(a, b)}


def _statistics(trials: list[dict], choice: dict | None, seed: int) -> dict:
    """Baseline comparison, selection report and noise figures for summary.json."""
    baseline = next((t for t in trials if t["phase"] == "baseline"), None)
    search = [t for t in trials if t["phase"] in SEARCH_PHASES]
    stats: dict = {"baseline": None, "beat_baseline": None, "baseline_comparison": None, "selection": {},
                   "noise": {}}
    if choice is None:
        return stats
    chosen, rescored = choice["row"], choice["rescored"]
    base_rescore = rescored.get(baseline["trial"]) if baseline else None
    if baseline is not None:
        stats["baseline"] = {"trial": baseline["trial"], "score": baseline["score"], "ci95": baseline.get("ci95"),
                             "rescore_score": base_rescore["score"] if base_rescore else None}
        if choice["rescore"] is not None and base_rescore is not None:
            stats["beat_baseline"] = choice["rescore"]["score"] > base_rescore["score"]
            stats["baseline_comparison"] = _paired(_mask(choice["rescore"]), _mask(base_rescore), "rescore")
        else:
            stats["beat_baseline"] = chosen["score"] > baseline["score"]
            stats["baseline_comparison"] = _paired(_mask(chosen), _mask(baseline), "dev")
    dev_best = choice["dev_best"]
    selection = {
        "selected_by": choice["selected_by"], "chosen_trial": chosen["trial"],
        "dev_best_trial": dev_best["trial"], "dev_best_score": dev_best["score"],
        "candidates": [{"trial": c["trial"], "dev_score": c["score"], "ci95": c.get("ci95"),
                        "rescore_score": rescored[c["trial"]]["score"] if c["trial"] in rescored else None}
                       for c in choice["candidates"]],
        "expected_optimism": None, "optimism_vs_baseline": None,
    }
    if dev_best["trial"] in rescored:
        selection["expected_optimism"] = round(dev_best["score"] - rescored[dev_best["trial"]]["score"], 4)
        if baseline is not None and base_rescore is not None:
            # gains over the baseline cancel a difference in difficulty between the two question sets
            dev_gain = dev_best["score"] - baseline["score"]
            rescore_gain = rescored[dev_best["trial"]]["score"] - base_rescore["score"]
            selection["optimism_vs_baseline"] = round(dev_gain - rescore_gain, 4)
    stats["selection"] = selection
    masks = [_mask(t) for t in search]
    if all(m is not None for m in masks) and masks and len(masks[0]):
        n = len(masks[0])
        scores = [t["score"] for t in search]
        mdd = min_detectable_difference(sum(scores) / len(scores), n)
        spread = max(scores) - min(scores)
        stats["noise"] = {"n_dev": n, "min_detectable_difference": round(mdd, 4),
                          "trial_score_spread": round(spread, 4), "dev_too_small": mdd > spread,
                          "split_half_optimism": split_half_optimism(masks, seed)}
    return stats


# --- artifacts ---------------------------------------------------------------------------------------------
def _json_roundtrip(obj):
    return json.loads(json.dumps(obj, default=str))


def _ensure_soft_prompt(path: Path, choice: dict, make_soft_prompt, metadata: dict) -> None:
    """Write the chosen soft prompt unless the file already holds exactly it (same metadata)."""
    from ..small_lm.soft_prompt import load_soft_prompt, save_soft_prompt

    expected = _json_roundtrip(metadata)
    if path.exists():
        try:
            _, current = load_soft_prompt(path)
        except BladeError:
            current = None
        if current is not None and {k: v for k, v in current.items() if k != "format"} == expected:
            return
    z = torch.tensor(choice["row"]["z"], dtype=torch.float64)
    save_soft_prompt(path, make_soft_prompt(z), metadata)


def plot_convergence(trials: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    search = [t for t in trials if t["phase"] in SEARCH_PHASES]
    baseline = next((t for t in trials if t["phase"] == "baseline"), None)
    scores = [t["score"] for t in search]
    best = [max(scores[: i + 1]) for i in range(len(scores))]
    xs = list(range(1, len(scores) + 1))
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    colors = ["tab:gray" if t["phase"] == "init" else "tab:blue" for t in search]
    ax.scatter(xs, scores, c=colors, s=18, label="trial score (grey: Sobol init)")
    ax.step(xs, best, where="post", color="tab:red", label="best so far")
    if baseline is not None:
        ax.axhline(baseline["score"], color="black", linestyle="--", linewidth=1, label="baseline (no soft prompt)")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    all_scores = scores + ([baseline["score"]] if baseline else [])
    if all(0.0 <= v <= 1.0 for v in all_scores):  # accuracies: show the whole range so progress reads honestly
        ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("evaluation")
    ax.set_ylabel("dev accuracy")
    ax.set_title("BPO convergence")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


def _all_rescored(trials: list[dict], top_k: int) -> bool:
    """Every top-k candidate and the baseline have their re-score row (nothing left for a resume to do)."""
    choice = select(trials, top_k)
    if choice is None:
        return True
    baseline = next((t for t in trials if t["phase"] == "baseline"), None)
    return all(c["trial"] in choice["rescored"] for c in choice["candidates"] + ([baseline] if baseline else []))


def _row(trial: int, phase: str, z, result: TrialResult, seconds: dict, seed: int, **extra) -> dict:
    from ..qa.metrics import bootstrap_ci

    row = {"trial": trial, "phase": phase, **extra, "z": None if z is None else [float(v) for v in z],
           "score": float(result.score)}
    if result.correct is not None:
        row["n"] = len(result.correct)
        row["correct_mask"] = "".join("1" if c else "0" for c in result.correct)
        row["ci95"] = bootstrap_ci([1.0 if c else 0.0 for c in result.correct], n_resamples=1000, seed=seed)
    row.update({"timings": {**result.timings, **seconds}, "usage": result.usage, "details": result.details})
    return row


def run_bpo(
    config: BPORunConfig,
    objective: Callable[[torch.Tensor | None], TrialResult],
    make_soft_prompt: Callable[[torch.Tensor], torch.Tensor],
    metadata: dict,
    progress: bool = True,
    fingerprint: JobFingerprint | None = None,
    rescore: Callable[[torch.Tensor | None], TrialResult] | None = None,
    spend: Budget | None = None,
) -> BPOSummary:
    """Optimise z and choose the soft prompt.

    `objective(z: Tensor[d] | None) -> TrialResult` scores the soft prompt `make_soft_prompt(z)`
    (Tensor[n_tokens, hidden]) on the search dev set, or no soft prompt for z=None (the baseline);
    `rescore` is the same on a second dev slice (None: choose on the search scores alone);
    `fingerprint` holds the command's inputs (dev items, templates, models, LLM) for resume checks;
    `spend` is the LLM client's budget (--max-cost): when it stops a trial, summary.json says "stopped" and
    what was spent, and BudgetExceeded is raised with the one-line resume hint. A stop on
    `config.max_llm_calls` (counted over trials.jsonl, between trials) writes "stopped" too and returns.
    A re-run with a larger budget continues to the trials an unstopped run writes.
    """
    started = time.perf_counter()
    out = Path(config.out_dir)
    identity = JobFingerprint(**config.identity())
    for name, value in (fingerprint.parts if fingerprint is not None else {}).items():
        identity.add(name, value)
    log, trials = _prepare_out_dir(config, identity)
    soft_prompt_path = out / "soft_prompt.safetensors"
    search = [t for t in trials if t["phase"] in SEARCH_PHASES]
    optimizer = BayesianOptimizer.from_history(
        [(t["z"], t["score"]) for t in search], d=config.d, n_init=config.n_init, q=config.q, seed=config.seed,
        num_restarts=config.num_restarts, raw_samples=config.raw_samples)

    total_budget = config.n_init + config.iterations * config.q
    if config.max_evaluations is not None:
        total_budget = min(total_budget, config.max_evaluations)
    llm_calls = sum(int(t.get("usage", {}).get("calls", 0)) for t in trials)

    def out_of_calls() -> bool:
        return config.max_llm_calls is not None and llm_calls >= config.max_llm_calls

    def soft_prompt_metadata(choice: dict) -> dict:
        row = choice["row"]
        return {**metadata, "z": row["z"], "score": row["score"], "trial": row["trial"],
                "selected_by": choice["selected_by"],
                "rescore_score": choice["rescore"]["score"] if choice["rescore"] else None,
                "seed": config.seed, "d": config.d, "n_tokens": config.n_tokens, "job": identity.to_json()["digest"]}

    def write_artifacts(status: str, stop_reason: str, spent: dict | None = None,
                        resume: str | None = None) -> BPOSummary | None:
        """Soft prompt first, then summary.json: both follow from `trials` alone."""
        choice = select(trials, config.top_k if rescore is not None else 0)
        if choice is None:
            return None
        _ensure_soft_prompt(soft_prompt_path, choice, make_soft_prompt, soft_prompt_metadata(choice))
        phase_seconds = {"baseline": 0.0, "init": 0.0, "bo": 0.0, "propose": 0.0, "rescore": 0.0}
        for t in trials:
            phase_seconds[t["phase"]] += t.get("timings", {}).get("objective_s", 0.0)
            phase_seconds["propose"] += t.get("timings", {}).get("propose_s", 0.0)
        row = choice["row"]
        summary = BPOSummary(
            best_score=row["score"], best_z=row["z"], best_trial=row["trial"],
            n_evaluations=sum(t["phase"] in SEARCH_PHASES for t in trials), llm_calls=llm_calls,
            stop_reason=stop_reason, wall_seconds=round(time.perf_counter() - started, 2),
            budgets={"n_init": config.n_init, "iterations": config.iterations, "q": config.q,
                     "max_evaluations": config.max_evaluations, "max_llm_calls": config.max_llm_calls,
                     "top_k": config.top_k},
            phase_seconds={k: round(v, 2) for k, v in phase_seconds.items()}, status=status,
            errors=sum(int(t.get("details", {}).get("errors", 0)) for t in trials), spent=spent, resume=resume,
            **_statistics(trials, choice, config.seed))
        atomic_write_json(out / "summary.json", {**summary.as_dict(), "metadata": _json_roundtrip(metadata)})
        return summary

    def evaluate(fn, z, phase: str, propose_s: float = 0.0, **extra) -> dict:
        nonlocal llm_calls
        t0 = time.perf_counter()
        result = fn(None if z is None else z.clone())
        seconds = {"objective_s": round(time.perf_counter() - t0, 3), "propose_s": round(propose_s, 3)}
        row = _row(len(trials), phase, z, result, seconds, config.seed, **extra)
        log.append(row)
        trials.append(row)
        llm_calls += int(result.usage.get("calls", 0))
        return row

    if trials:
        logger.info("Resuming BPO in %s: %d finished evaluations", out, len(trials))
        write_artifacts("running", "running")  # repairs a soft prompt a kill left behind the trials

    from ..runs.progress import tqdm

    bar = tqdm(total=total_budget, initial=min(len(search), total_budget), desc="BPO", unit="eval",
               disable=not progress)
    budget_stop: BudgetExceeded | None = None
    try:
        if config.baseline and not any(t["phase"] == "baseline" for t in trials) and not out_of_calls():
            row = evaluate(objective, None, "baseline")
            logger.info("baseline (no soft prompt): score %.4f", row["score"])
        while len(search) < total_budget and not out_of_calls():
            phase = "init" if optimizer.in_init_phase else "bo"
            t0 = time.perf_counter()
            batch = optimizer.ask()
            propose_s = time.perf_counter() - t0
            for z in batch[: total_budget - len(search)]:
                row = evaluate(objective, z, phase, propose_s)
                optimizer.tell(z, row["score"])
                search.append(row)
                propose_s = 0.0
                best = max(t["score"] for t in search)
                logger.info("trial %d (%s): score %.4f, best %.4f", row["trial"], phase, row["score"], best)
                bar.update(1)
                bar.set_postfix(score=f"{row['score']:.3f}", best=f"{best:.3f}")
                write_artifacts("running", "running")
                if out_of_calls():
                    break
        if rescore is not None and search:
            choice = select(trials, config.top_k)
            baseline = next((t for t in trials if t["phase"] == "baseline"), None)
            for candidate in choice["candidates"] + ([baseline] if baseline else []):
                if candidate["trial"] in choice["rescored"] or out_of_calls():
                    continue
                z = None if candidate["z"] is None else torch.tensor(candidate["z"], dtype=torch.float64)
                row = evaluate(rescore, z, "rescore", of_trial=candidate["trial"])
                logger.info("re-scored trial %d: %.4f on the second dev slice (dev %.4f)", candidate["trial"],
                            row["score"], candidate["score"])
    except BudgetExceeded as err:  # the unfinished trial is not recorded; its answers are in the cache
        budget_stop = err
    finally:
        bar.close()

    if budget_stop is not None:
        message = spend.stop_message(str(out / "trials.jsonl")) if spend is not None else \
            f"{budget_stop}; progress is saved in {out / 'trials.jsonl'}; re-run the same command to resume"
        reason = spend.closed if spend is not None and spend.closed else str(budget_stop)
        write_artifacts("stopped", f"budget: {reason}", spend.spent.as_dict() if spend is not None else None,
                        "re-run the same command (with a larger budget) to resume")
        raise BudgetExceeded(message) from None
    if not search:
        raise BladeError("BPO evaluated no soft prompt: the budget allows no search trial")
    if len(search) >= total_budget:
        stop_reason = ("budget: max_evaluations" if config.max_evaluations is not None
                       and len(search) >= config.max_evaluations else "budget: iterations done")
    else:
        stop_reason = "budget: max_llm_calls"
    stopped = stop_reason == "budget: max_llm_calls" or (rescore is not None and out_of_calls()
                                                          and not _all_rescored(trials, config.top_k))
    if stopped:
        stop_reason = "budget: max_llm_calls"
        resume = (f"re-run the same command with a larger --max-llm-calls (this run's {config.max_llm_calls} "
                  f"are spent: {llm_calls} calls in {out / 'trials.jsonl'}) to resume")
        logger.warning("BPO stopped at the budget (--max-llm-calls %s) after %d search trials; %s",
                       config.max_llm_calls, len(search), resume)
        summary = write_artifacts("stopped", stop_reason, {"calls": llm_calls}, resume)
    else:
        summary = write_artifacts("done", stop_reason)
    if summary.noise.get("dev_too_small"):
        logger.warning("The dev set (%d questions) is too small for the differences BPO is chasing: telling two "
                       "soft prompts apart needs about %.3f accuracy, the trial scores span only %.3f",
                       summary.noise["n_dev"], summary.noise["min_detectable_difference"],
                       summary.noise["trial_score_spread"])
    plot_convergence(trials, out / "convergence.png")
    return summary
