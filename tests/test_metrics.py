"""qa/metrics.py against independent expectations: exact binomial distributions, hand-computed p-values,
and scipy itself (same resamples and seed semantics)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from scipy import stats

from blade_plugin.qa.metrics import accuracy_summary, bootstrap_ci, mcnemar_exact_p, paired_comparison


def _exact_bootstrap_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """For 0/1 data with k ones, a bootstrap resample's mean is exactly Binomial(n, k/n) / n."""
    dist = stats.binom(n, k / n)
    return dist.ppf((1 - level) / 2) / n, dist.ppf((1 + level) / 2) / n


@pytest.mark.parametrize("k,n", [(26, 40), (3, 16), (15, 16), (50, 100)])
def test_bootstrap_ci_matches_the_exact_bootstrap_distribution_of_01_data(k, n):
    values = [1.0] * k + [0.0] * (n - k)
    random.Random(k).shuffle(values)
    lo, hi = bootstrap_ci(values, n_resamples=20000, seed=1)
    exact_lo, exact_hi = _exact_bootstrap_interval(k, n)
    # A Monte-Carlo percentile of a lattice distribution (step 1/n) lands on the exact quantile or, with
    # np.percentile's interpolation at a lattice boundary, within one step of it.
    assert abs(lo - exact_lo) <= 1 / n + 1e-9 and abs(hi - exact_hi) <= 1 / n + 1e-9
    # and it is not a Wald interval: for k=3, n=16 Wald gives a negative lower bound, the bootstrap cannot
    assert lo >= 0.0 and hi <= 1.0


def test_bootstrap_ci_hand_computed_small_cases():
    # [0, 1]: resampled means 0, 0.5, 1 with probability 1/4, 1/2, 1/4 -> the 2.5%/97.5% points are 0 and 1
    assert bootstrap_ci([0.0, 1.0], n_resamples=4000, seed=0) == [0.0, 1.0]
    # [1, 1, 1, 0]: Binomial(4, 3/4)/4; P(mean <= 0.25) = 13/256 = 0.051 > 0.025 > P(mean = 0) = 1/256,
    # and P(mean = 1) = 81/256 > 0.025, so the interval is [0.25, 1.0]
    assert bootstrap_ci([1.0, 1.0, 1.0, 0.0], n_resamples=4000, seed=0) == [0.25, 1.0]
    assert bootstrap_ci([1.0] * 7) == [1.0, 1.0]
    assert bootstrap_ci([0.5]) == [0.5, 0.5]
    assert bootstrap_ci([]) == [0.0, 0.0]


def test_bootstrap_ci_equals_scipy_percentile_bootstrap_with_the_same_generator():
    values = [1, 0, 1, 1, 0, 1, 0, 0, 1, 1, 1, 0, 1]
    ref = stats.bootstrap((np.array(values, dtype=float),), np.mean, n_resamples=3000, method="percentile",
                          confidence_level=0.9, rng=np.random.default_rng(7)).confidence_interval
    assert bootstrap_ci(values, n_resamples=3000, seed=7, level=0.9) == [round(ref.low, 4), round(ref.high, 4)]


def test_bootstrap_ci_is_seeded_and_leaves_global_random_state_alone():
    values = [1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0]
    np_state, py_state = np.random.get_state()[1].copy(), random.getstate()
    a = bootstrap_ci(values, n_resamples=500, seed=3)
    assert np.array_equal(np.random.get_state()[1], np_state) and random.getstate() == py_state
    assert a == bootstrap_ci(values, n_resamples=500, seed=3)
    # a narrower level gives a strictly narrower interval on this data
    b = bootstrap_ci(values, n_resamples=500, seed=3, level=0.5)
    assert a[0] < b[0] and b[1] < a[1]


def _mcnemar_by_hand(b: int, c: int) -> float:
    n = b + c
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2 ** n)


@pytest.mark.parametrize("b,c,expected", [(1, 5, 14 / 64), (0, 6, 2 / 64), (3, 3, 1.0), (2, 10, 158 / 4096),
                                          (0, 0, 1.0), (7, 0, 2 / 128)])
def test_mcnemar_hand_computed(b, c, expected):
    assert mcnemar_exact_p(b, c) == pytest.approx(expected, abs=1e-12)


def test_mcnemar_agrees_with_scipy_binomtest_and_the_binomial_sum():
    for b in range(16):
        for c in range(16):
            p = mcnemar_exact_p(b, c)
            assert p == pytest.approx(_mcnemar_by_hand(b, c), abs=1e-12)
            if b + c:
                assert p == pytest.approx(stats.binomtest(b, b + c, 0.5, alternative="two-sided").pvalue, abs=1e-12)


def test_paired_comparison_hand_written():
    a = [True, True, False, True, False, True, True, False]
    b = [False, True, False, False, True, True, False, False]
    result = paired_comparison(a, b, n_resamples=2000, seed=0)
    # only-a right at 0, 3, 6; only-b right at 4; accuracy 5/8 vs 3/8
    assert (result["n"], result["wins"], result["losses"]) == (8, 3, 1)
    assert result["accuracy_diff"] == 0.25
    assert result["mcnemar_p"] == 0.625  # 2 * (C(4,0) + C(4,1)) / 16
    # the differences take values -1, 0, 1; their bootstrap mean is bounded by [-1, 1] and the interval
    # cannot be the degenerate point estimate
    lo, hi = result["ci95"]
    assert -1 <= lo < 0.25 < hi <= 1


def test_accuracy_summary_hand_written():
    correct = [True] * 9 + [False] * 7
    result = accuracy_summary(correct, n_resamples=20000, seed=2)
    assert (result["n"], result["correct"], result["accuracy"]) == (16, 9, 0.5625)
    exact_lo, exact_hi = _exact_bootstrap_interval(9, 16)
    assert abs(result["ci95"][0] - exact_lo) <= 1 / 16 + 1e-9 and abs(result["ci95"][1] - exact_hi) <= 1 / 16 + 1e-9
