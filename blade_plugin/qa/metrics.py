"""Accuracy with bootstrap intervals and paired comparisons between evaluation modes.

The statistics come from scipy (`scipy.stats.bootstrap`, `scipy.stats.binomtest`), not hand-rolled loops;
tests/test_metrics.py checks them against exact closed forms on fixed data.
"""

from __future__ import annotations

from collections.abc import Sequence


def bootstrap_ci(values: Sequence[float], n_resamples: int = 2000, seed: int = 0, level: float = 0.95) -> list[float]:
    """Percentile bootstrap interval of the mean of `values` (e.g. 0/1 correctness), rounded to 4 places.

    `seed` seeds a numpy Generator private to this call (global random state is untouched), so the same
    values always give the same interval. Fewer than two values have no spread to resample: [x, x].
    """
    import numpy as np
    from scipy.stats import bootstrap

    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        return [0.0, 0.0]
    if data.size == 1 or np.all(data == data[0]):
        return [round(float(data[0]), 4)] * 2
    result = bootstrap((data,), np.mean, n_resamples=n_resamples, confidence_level=level, method="percentile",
                       vectorized=True, rng=np.random.default_rng(seed))
    interval = result.confidence_interval
    return [round(float(interval.low), 4), round(float(interval.high), 4)]


def mcnemar_exact_p(b: int, c: int) -> float:
    """Two-sided exact McNemar test on discordant pairs (b: only A right, c: only B right).

    Under H0 each discordant pair is A's with probability 1/2, so this is an exact binomial test.
    """
    from scipy.stats import binomtest

    if b + c == 0:
        return 1.0
    return float(min(1.0, binomtest(min(b, c), b + c, 0.5).pvalue))


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
