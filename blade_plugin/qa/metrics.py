"""Accuracy with bootstrap intervals and paired comparisons between evaluation modes (stdlib only)."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence


def bootstrap_ci(values: Sequence[float], n_resamples: int = 2000, seed: int = 0, level: float = 0.95) -> list[float]:
    """Percentile bootstrap interval of the mean of `values` (e.g. 0/1 correctness)."""
    n = len(values)
    if n == 0:
        return [0.0, 0.0]
    rng = random.Random(seed)
    means = sorted(sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(n_resamples))
    lo = means[int(math.floor((1 - level) / 2 * (n_resamples - 1)))]
    hi = means[int(math.ceil((1 + level) / 2 * (n_resamples - 1)))]
    return [round(lo, 4), round(hi, 4)]


def mcnemar_exact_p(b: int, c: int) -> float:
    """Two-sided exact McNemar test on discordant pairs (b: only A right, c: only B right)."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def accuracy_summary(correct: Sequence[bool], n_resamples: int = 2000, seed: int = 0,
                     unparseable: Sequence[bool] | None = None) -> dict:
    """Accuracy and its bootstrap CI; with `unparseable` (one flag per item) also how many replies had no
    readable answer (already counted as wrong in `correct`)."""
    values = [1.0 if c else 0.0 for c in correct]
    n = len(values)
    summary = {
        "n": n,
        "correct": int(sum(values)),
        "accuracy": round(sum(values) / n, 4) if n else 0.0,
        "ci95": bootstrap_ci(values, n_resamples, seed),
    }
    if unparseable is not None:
        assert len(unparseable) == n, "one unparseable flag per item"
        summary["unparseable"] = sum(1 for u in unparseable if u)
    return summary


def paired_comparison(a: Sequence[bool], b: Sequence[bool], n_resamples: int = 2000, seed: int = 0) -> dict:
    """Compare mode A against mode B on the same items (A - B)."""
    assert len(a) == len(b), "paired comparison needs the same items in both modes"
    diffs = [(1.0 if x else 0.0) - (1.0 if y else 0.0) for x, y in zip(a, b)]
    only_a = sum(1 for x, y in zip(a, b) if x and not y)
    only_b = sum(1 for x, y in zip(a, b) if y and not x)
    n = len(diffs)
    return {
        "n": n,
        "accuracy_diff": round(sum(diffs) / n, 4) if n else 0.0,
        "ci95": bootstrap_ci(diffs, n_resamples, seed),
        "wins": only_a,
        "losses": only_b,
        "mcnemar_p": round(mcnemar_exact_p(only_a, only_b), 6),
    }
