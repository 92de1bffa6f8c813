"""The BPO run loop: budgets, artifacts, and resume after a crash or SIGKILL.

Each finished trial is appended (and fsync'd) to trials.jsonl before the next starts; the best soft prompt
and summary are rewritten atomically after every improvement. A resumed run rebuilds the optimiser from
trials.jsonl, and because proposals are deterministic given (seed, history) it continues the same sequence
without evaluating any finished trial again.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .optimizer import BayesianOptimizer
from ..errors import BladeError
from ..io_utils import append_jsonl, atomic_write_json, iter_jsonl

logger = logging.getLogger(__name__)


@dataclass
class BPORunConfig:
    out_dir: Path
    d: int = 10
    n_tokens: int = 5
    n_init: int = 5
    q: int = 1
    iterations: int = 10  # BO rounds after the initial points
    max_evaluations: int | None = None
    max_llm_calls: int | None = None
    seed: int = 0
    resume: bool = False
    num_restarts: int = 10
    raw_samples: int = 256

    def identity(self) -> dict:
        """What must match for a resume to continue the same search."""
        return {"d": self.d, "n_tokens": self.n_tokens, "n_init": self.n_init, "q": self.q, "seed": self.seed}


@dataclass
class TrialResult:
    score: float
    details: dict = field(default_factory=dict)
    usage: dict = field(default_factory=dict)  # e.g. calls, cache_hits, prompt_tokens, completion_tokens
    timings: dict = field(default_factory=dict)


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

    def as_dict(self) -> dict:
        return asdict(self)


def _load_trials(path: Path) -> list[dict]:
    return [row for _, row in iter_jsonl(path, tolerate_truncated_tail=True)] if path.exists() else []


def _prepare_out_dir(config: BPORunConfig) -> list[dict]:
    out = Path(config.out_dir)
    trials_path = out / "trials.jsonl"
    config_path = out / "config.json"
    trials = _load_trials(trials_path)
    if trials and not config.resume:
        raise BladeError(f"{out} already holds {len(trials)} trials; pass --resume to continue that run "
                         "or choose a new --out")
    if config.resume and config_path.exists():
        saved = json.loads(config_path.read_text(encoding="utf-8"))
        mismatched = {k: (saved.get(k), v) for k, v in config.identity().items() if saved.get(k) != v}
        if mismatched:
            detail = ", ".join(f"{k}: saved {a} vs now {b}" for k, (a, b) in mismatched.items())
            raise BladeError(f"cannot resume {out}: the run was started with other settings ({detail})")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(config_path, {**config.identity(), "iterations": config.iterations,
                                    "max_evaluations": config.max_evaluations, "max_llm_calls": config.max_llm_calls})
    return trials


def plot_convergence(trials: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores = [t["score"] for t in trials]
    best = [max(scores[: i + 1]) for i in range(len(scores))]
    xs = list(range(1, len(scores) + 1))
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    colors = ["tab:gray" if t["phase"] == "init" else "tab:blue" for t in trials]
    ax.scatter(xs, scores, c=colors, s=18, label="trial score (grey: Sobol init)")
    ax.step(xs, best, where="post", color="tab:red", label="best so far")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if all(0.0 <= v <= 1.0 for v in scores):  # accuracies: show the whole range so progress reads honestly
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


def run_bpo(
    config: BPORunConfig,
    objective: Callable[[torch.Tensor], TrialResult],
    make_soft_prompt: Callable[[torch.Tensor], torch.Tensor],
    metadata: dict,
    progress: bool = True,
) -> BPOSummary:
    """Optimise z; `objective(z: Tensor[d]) -> TrialResult`, `make_soft_prompt(z) -> Tensor[n_tokens, hidden]`."""
    from ..small_lm.soft_prompt import save_soft_prompt

    started = time.perf_counter()
    out = Path(config.out_dir)
    trials = _prepare_out_dir(config)
    trials_path = out / "trials.jsonl"
    optimizer = BayesianOptimizer.from_history(
        [(t["z"], t["score"]) for t in trials], d=config.d, n_init=config.n_init, q=config.q, seed=config.seed,
        num_restarts=config.num_restarts, raw_samples=config.raw_samples)
    if trials:
        logger.info("Resuming BPO in %s: %d finished trials, best %.4f", out, len(trials), optimizer.best[1])

    total_budget = config.n_init + config.iterations * config.q
    if config.max_evaluations is not None:
        total_budget = min(total_budget, config.max_evaluations)
    llm_calls = sum(int(t.get("usage", {}).get("calls", 0)) for t in trials)
    phase_seconds = {"init": 0.0, "bo": 0.0, "propose": 0.0}
    for t in trials:
        phase_seconds[t["phase"]] += t.get("timings", {}).get("objective_s", 0.0)

    from tqdm.auto import tqdm

    bar = tqdm(total=total_budget, initial=min(len(trials), total_budget), desc="BPO", unit="eval",
               disable=not progress)
    stop_reason = "budget: iterations done"

    def save_best() -> None:
        z, score = optimizer.best
        best_trial = max(trials, key=lambda t: t["score"])["trial"]
        save_soft_prompt(out / "soft_prompt.safetensors", make_soft_prompt(z.to(torch.float64)),
                         {**metadata, "z": [float(v) for v in z], "score": score, "trial": best_trial,
                          "seed": config.seed, "d": config.d, "n_tokens": config.n_tokens})

    try:
        while True:
            if len(trials) >= total_budget:
                stop_reason = ("budget: max_evaluations" if config.max_evaluations is not None
                               and len(trials) >= config.max_evaluations else "budget: iterations done")
                break
            if config.max_llm_calls is not None and llm_calls >= config.max_llm_calls:
                stop_reason = "budget: max_llm_calls"
                break
            phase = "init" if optimizer.in_init_phase else "bo"
            t0 = time.perf_counter()
            batch = optimizer.ask()
            propose_s = time.perf_counter() - t0
            phase_seconds["propose"] += propose_s
            for z in batch[: total_budget - len(trials)]:
                t1 = time.perf_counter()
                result = objective(z.clone())
                objective_s = time.perf_counter() - t1
                optimizer.tell(z, result.score)
                llm_calls += int(result.usage.get("calls", 0))
                phase_seconds[phase] += objective_s
                row = {"trial": len(trials), "phase": phase, "z": [float(v) for v in z], "score": float(result.score),
                       "timings": {**result.timings, "objective_s": round(objective_s, 3),
                                   "propose_s": round(propose_s, 3)},
                       "usage": result.usage, "details": result.details}
                append_jsonl(trials_path, row)
                trials.append(row)
                best = optimizer.best[1]
                logger.info("trial %d (%s): score %.4f, best %.4f", row["trial"], phase, result.score, best)
                bar.update(1)
                bar.set_postfix(score=f"{result.score:.3f}", best=f"{best:.3f}")
                if result.score >= best:
                    save_best()
                propose_s = 0.0
                if config.max_llm_calls is not None and llm_calls >= config.max_llm_calls:
                    break
    finally:
        bar.close()

    if not trials:
        raise BladeError("BPO evaluated nothing: the budget allows no evaluation")
    if not (out / "soft_prompt.safetensors").exists():
        save_best()
    best_row = max(trials, key=lambda t: t["score"])
    summary = BPOSummary(
        best_score=best_row["score"], best_z=best_row["z"], best_trial=best_row["trial"], n_evaluations=len(trials),
        llm_calls=llm_calls, stop_reason=stop_reason, wall_seconds=round(time.perf_counter() - started, 2),
        budgets={"n_init": config.n_init, "iterations": config.iterations, "q": config.q,
                 "max_evaluations": config.max_evaluations, "max_llm_calls": config.max_llm_calls},
        phase_seconds={k: round(v, 2) for k, v in phase_seconds.items()},
    )
    atomic_write_json(out / "summary.json", {**summary.as_dict(), "metadata": metadata})
    plot_convergence(trials, out / "convergence.png")
    return summary
