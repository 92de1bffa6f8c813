"""Bayesian optimisation over z in [-1, 1]^d with botorch: scrambled Sobol start, then a SingleTaskGP
(Standardize outcome transform) and (q)LogExpectedImprovement maximised with optimize_acqf.

Everything is deterministic given (seed, history), also across processes, so a resumed run proposes what
the original would have: Sobol draws are seeded, and each BO round runs under its own `botorch.manual_seed`.
"""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)
DTYPE = torch.float64


def bounds(d: int) -> torch.Tensor:
    """Tensor[2, d]: the search box [-1, 1]^d."""
    return torch.stack([-torch.ones(d, dtype=DTYPE), torch.ones(d, dtype=DTYPE)])


def sobol_points(n: int, d: int, seed: int, skip: int = 0) -> torch.Tensor:
    """Tensor[n, d] of scrambled Sobol points in [-1, 1]^d; `skip` continues the same sequence."""
    engine = torch.quasirandom.SobolEngine(dimension=d, scramble=True, seed=seed)
    if skip:
        engine.fast_forward(skip)
    return engine.draw(n, dtype=DTYPE) * 2 - 1


def round_seed(seed: int, n_evaluated: int) -> int:
    """The seed of the BO round that follows `n_evaluated` points: a pure function of (seed, history size),
    so a run resumed in a new process draws exactly what the uninterrupted run drew."""
    return (seed * 1_000_003 + n_evaluated) % (2**31 - 1)


def fit_gp(X: torch.Tensor, y: torch.Tensor):
    """SingleTaskGP on X: Tensor[n, d] in [-1, 1] (normalised to the unit cube) and raw scores y: Tensor[n].

    botorch's `Standardize` outcome transform is the only standardisation (it guards a zero spread itself);
    the posterior is back in score units.
    """
    from botorch.exceptions.errors import ModelFittingError
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from botorch.models.transforms.input import Normalize
    from botorch.models.transforms.outcome import Standardize
    from gpytorch.mlls import ExactMarginalLogLikelihood

    model = SingleTaskGP(X.to(DTYPE), y.to(DTYPE).unsqueeze(-1),
                         input_transform=Normalize(d=X.shape[-1], bounds=bounds(X.shape[-1])),
                         outcome_transform=Standardize(m=1))
    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    try:
        fit_gpytorch_mll(mll)
    except ModelFittingError as err:  # keep optimising with default hyperparameters rather than abort a paid run
        logger.warning("GP hyperparameter fit failed (%s); using default hyperparameters", err)
    return model.eval()


def _dedupe(candidates: torch.Tensor, X: torch.Tensor, seed: int, tol: float = 1e-6) -> torch.Tensor:
    """Replace proposals that repeat an evaluated point (or each other) with fresh Sobol points."""
    out = []
    filler = sobol_points(len(candidates), candidates.shape[-1], seed=seed + 7919, skip=len(X))
    for i, c in enumerate(candidates):
        pool = torch.cat([X, torch.stack(out)]) if out else X
        if len(pool) and (pool - c).abs().max(dim=-1).values.min() < tol:
            c = filler[i]
        out.append(c)
    return torch.stack(out)


def propose(X: torch.Tensor, y: torch.Tensor, q: int = 1, seed: int = 0, num_restarts: int = 10,
            raw_samples: int = 256) -> torch.Tensor:
    """Tensor[q, d] of next points: maximise LogEI (q=1) or qLogEI (q>1) of a GP fitted to (X, y).

    Every random draw (the fit's restarts, the raw samples and restarts of optimize_acqf, qLogEI's QMC base
    samples) happens inside `botorch.manual_seed(round_seed(seed, len(X)))`, which also restores the global
    RNG afterwards: the proposal depends on (seed, X, y) only, in this process or a resumed one.
    """
    d = X.shape[-1]
    y = y.to(DTYPE)
    if len(X) < 2 or float(y.max() - y.min()) == 0.0:
        # Nothing to model yet (or a flat objective): keep exploring along the Sobol sequence.
        return sobol_points(q, d, seed=seed, skip=len(X))
    from botorch import manual_seed
    from botorch.acquisition import LogExpectedImprovement, qLogExpectedImprovement
    from botorch.optim import optimize_acqf

    with manual_seed(round_seed(seed, len(X))):
        model = fit_gp(X, y)
        best_f = y.max()  # raw units: the outcome transform maps the posterior back to them
        acqf = (LogExpectedImprovement(model, best_f=best_f) if q == 1
                else qLogExpectedImprovement(model, best_f=best_f))
        candidates, _ = optimize_acqf(acqf, bounds=bounds(d), q=q, num_restarts=num_restarts,
                                      raw_samples=raw_samples)
    return _dedupe(candidates.detach().reshape(q, d).clamp(-1, 1), X.to(DTYPE), seed)


class BayesianOptimizer:
    """ask()/tell() over [-1, 1]^d: `n_init` Sobol points first, then GP proposals `q` at a time."""

    def __init__(self, d: int = 10, n_init: int = 5, q: int = 1, seed: int = 0, num_restarts: int = 10,
                 raw_samples: int = 256):
        self.d, self.n_init, self.q, self.seed = d, n_init, q, seed
        self.num_restarts, self.raw_samples = num_restarts, raw_samples
        self.X = torch.empty(0, d, dtype=DTYPE)
        self.y = torch.empty(0, dtype=DTYPE)

    @classmethod
    def from_history(cls, history: list[tuple[list[float], float]], **kwargs) -> BayesianOptimizer:
        opt = cls(**kwargs)
        for z, score in history:
            opt.tell(torch.tensor(z, dtype=DTYPE), score)
        return opt

    @property
    def in_init_phase(self) -> bool:
        return len(self.X) < self.n_init

    def ask(self) -> torch.Tensor:
        """Tensor[k, d]: the remaining initial Sobol points (k <= n_init), or the rest of the current round of
        q GP proposals.

        Rounds start at n_init, n_init + q, ...; a history that ends inside a round (a run killed between
        two evaluations of one q-batch) re-derives that round from the history at its start, so the resumed
        run evaluates exactly the points the uninterrupted one would have.
        """
        n = len(self.X)
        if self.in_init_phase:
            return sobol_points(self.n_init, self.d, self.seed)[n:]
        start = self.n_init + (n - self.n_init) // self.q * self.q
        batch = propose(self.X[:start], self.y[:start], self.q, self.seed, self.num_restarts, self.raw_samples)
        return batch[n - start:]

    def tell(self, z: torch.Tensor, score: float) -> None:
        self.X = torch.cat([self.X, torch.as_tensor(z, dtype=DTYPE).reshape(1, self.d)])
        self.y = torch.cat([self.y, torch.tensor([float(score)], dtype=DTYPE)])

    @property
    def best(self) -> tuple[torch.Tensor, float] | None:
        if len(self.y) == 0:
            return None
        i = int(torch.argmax(self.y))
        return self.X[i], float(self.y[i])
