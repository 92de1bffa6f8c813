from __future__ import annotations

import torch

from blade_plugin.bpo.optimizer import BayesianOptimizer, propose, sobol_points, standardize_scores


def test_standardize_never_divides_by_zero():
    assert torch.equal(standardize_scores(torch.tensor([0.5, 0.5, 0.5])), torch.zeros(3, dtype=torch.float64))
    assert torch.equal(standardize_scores(torch.tensor([0.3])), torch.zeros(1, dtype=torch.float64))
    s = standardize_scores(torch.tensor([0.0, 1.0, 2.0]))
    assert abs(float(s.mean())) < 1e-9 and abs(float(s.std()) - 1) < 1e-9


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


def test_flat_objective_keeps_exploring_without_crash():
    opt = BayesianOptimizer(d=4, n_init=3, seed=0, num_restarts=2, raw_samples=32)
    for _ in range(6):
        for z in opt.ask():
            opt.tell(z, 0.25)
    assert len(opt.y) >= 6
    assert len({tuple(x.tolist()) for x in opt.X}) == len(opt.X)


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


def test_rebuilding_from_history_gives_the_same_next_proposal():
    opt = BayesianOptimizer(d=3, n_init=4, seed=2, num_restarts=2, raw_samples=32)
    for z in opt.ask():
        opt.tell(z, float(z.sum()))
    first = opt.ask()
    again = BayesianOptimizer.from_history([(x.tolist(), float(v)) for x, v in zip(opt.X, opt.y)], d=3, n_init=4,
                                           seed=2, num_restarts=2, raw_samples=32).ask()
    assert torch.allclose(first, again)
