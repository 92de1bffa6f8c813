from __future__ import annotations

import torch

import json
import subprocess
import sys
import textwrap
import warnings

import pytest

from blade_plugin.bpo.optimizer import BayesianOptimizer, fit_gp, propose, sobol_points


def test_gp_standardises_once_and_predicts_in_score_units():
    # scores on an offset scale: a second (manual) standardisation, or none, would put the posterior mean
    # in the wrong units; botorch's Standardize alone maps it back to the scores it was fitted on
    X = sobol_points(12, 2, seed=0)
    y = 40.0 + 3.0 * X[:, 0] - 2.0 * X[:, 1]
    model = fit_gp(X, y)
    assert type(model.outcome_transform).__name__ == "Standardize"
    mean = model.posterior(X).mean.squeeze(-1).detach()
    assert torch.allclose(mean, y, atol=0.15)  # spread of y is 6; a manually standardised y would give ~0
    train_targets = model.train_targets  # what the GP sees: standardised exactly once
    assert abs(float(train_targets.mean())) < 1e-6 and abs(float(train_targets.std()) - 1) < 1e-6


def test_sobol_points_in_box_deterministic_and_continuable():
    a = sobol_points(8, 10, seed=3)
    assert a.shape == (8, 10) and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, sobol_points(8, 10, seed=3))
    assert not torch.equal(a, sobol_points(8, 10, seed=4))
    assert torch.equal(sobol_points(3, 10, seed=3, skip=5), a[5:])


def test_proposals_in_bounds_and_not_repeating_evaluated_points():
    X = sobol_points(6, 3, seed=0)
    y = -(X ** 2).sum(-1)
    z = propose(X, y, q=3, seed=0, num_restarts=2, raw_samples=32)
    assert z.shape == (3, 3) and z.min() >= -1 and z.max() <= 1
    distances = torch.cdist(z, torch.cat([X, z]))
    assert (distances[:, : len(X)] > 1e-6).all()


def test_flat_objective_keeps_exploring_along_the_sobol_sequence():
    # all scores equal: nothing to model, so the next points are the Sobol sequence's continuation
    opt = BayesianOptimizer(d=4, n_init=3, seed=0, num_restarts=2, raw_samples=32)
    for _ in range(4):
        for z in opt.ask():
            opt.tell(z, 0.25)
    assert opt.X.shape == (6, 4)
    assert torch.equal(opt.X, sobol_points(6, 4, seed=0))


@pytest.mark.slow
def test_proposals_leave_the_global_random_state_alone_and_ignore_it():
    X = sobol_points(6, 3, seed=0)
    y = -(X ** 2).sum(-1)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = propose(X, y, q=2, seed=5, num_restarts=2, raw_samples=32)
    assert torch.equal(torch.get_rng_state(), state)
    torch.rand(17)  # a different global state must not change the proposal
    assert torch.equal(propose(X, y, q=2, seed=5, num_restarts=2, raw_samples=32), first)


def test_no_blanket_warning_suppression(monkeypatch):
    """A warning raised inside a BO round (here by optimize_acqf, which propose imports when called) reaches
    the caller's filters, and propose leaves no blanket "ignore" behind for warnings raised after it."""
    import botorch.optim

    real = botorch.optim.optimize_acqf

    def warning_optimize_acqf(*args, **kwargs):
        warnings.warn("sentinel inside propose", UserWarning)
        return real(*args, **kwargs)

    monkeypatch.setattr(botorch.optim, "optimize_acqf", warning_optimize_acqf)
    X = sobol_points(6, 3, seed=0)
    y = -(X ** 2).sum(-1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        propose(X, y, q=1, seed=0, num_restarts=2, raw_samples=32)
        warnings.warn("sentinel after propose", UserWarning)
    messages = [str(w.message) for w in caught]
    assert "sentinel inside propose" in messages and "sentinel after propose" in messages


@pytest.mark.slow
def test_finds_better_point_than_the_initial_design():
    target = torch.tensor([0.4, -0.3, 0.2, 0.5], dtype=torch.float64)

    def f(z):
        return float(-((z - target) ** 2).sum())

    opt = BayesianOptimizer(d=4, n_init=5, seed=1, num_restarts=4, raw_samples=64)
    while len(opt.y) < 15:
        for z in opt.ask():
            opt.tell(z, f(z))
    best_init = float(opt.y[:5].max())
    assert opt.best[1] > best_init + 0.1


@pytest.mark.slow
def test_rebuilding_from_history_gives_the_same_next_proposal():
    opt = BayesianOptimizer(d=3, n_init=4, seed=2, num_restarts=2, raw_samples=32)
    for z in opt.ask():
        opt.tell(z, float(z.sum()))
    first = opt.ask()
    again = BayesianOptimizer.from_history([(x.tolist(), float(v)) for x, v in zip(opt.X, opt.y)], d=3, n_init=4,
                                           seed=2, num_restarts=2, raw_samples=32).ask()
    assert torch.allclose(first, again)


_CHILD = textwrap.dedent("""
    import json, sys, torch
    from blade_plugin.bpo.optimizer import BayesianOptimizer
    target = torch.tensor([0.3, -0.6, 0.1], dtype=torch.float64)
    history, stop, noise = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "noise"
    if noise:  # a resumed process whose global RNG is in another state
        torch.manual_seed(999); torch.rand(1000)
    opt = BayesianOptimizer.from_history(history, d=3, n_init=3, q=2, seed=4, num_restarts=2, raw_samples=32)
    while len(opt.y) < stop:
        for z in opt.ask()[: stop - len(opt.y)]:
            opt.tell(z, float(-((z - target) ** 2).sum()))
    print(json.dumps([[x.tolist(), float(v)] for x, v in zip(opt.X, opt.y)]))
""")


def _child(history: list, stop: int, noise: bool = False) -> list:
    result = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(history), str(stop), "noise" if noise else "-"],
                            capture_output=True, text=True, timeout=300, check=True)
    return json.loads(result.stdout)


@pytest.mark.slow
def test_resumed_process_proposes_exactly_what_one_process_would():
    whole = _child([], 7)
    first = _child([], 4)  # stops inside the first q=2 BO round (3 Sobol points + 1 of 2 proposals)
    resumed = _child(first, 7, noise=True)
    assert resumed[:4] == first == whole[:4]
    assert resumed == whole  # bit-identical z and scores, JSON round-trip included
