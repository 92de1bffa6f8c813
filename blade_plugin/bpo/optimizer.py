"""Bayesian optimisation over z in [-1, 1]^d with botorch: scrambled Sobol start, then a SingleTaskGP on
standardised scores and (q)LogExpectedImprovement maximised with optimize_acqf.

Everything is deterministic given (seed, history), so a resumed run proposes what the original would have.
"""

from __future__ import annotations

import logging
import warnings

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


def standardize_scores(y: torch.Tensor) -> torch.Tensor:
    """Tensor[n] -> zero mean, unit variance; all-equal scores give zeros instead of dividing by zero."""
    y = y.to(DTYPE)
    if y.numel() < 2:
        return torch.zeros_like(y)
    std = y.std()
    if not torch.isfinite(std) or std < 1e-9:
        return torch.zeros_like(y)
    return (y - y.mean()) / std


def fit_gp(X: torch.Tensor, y: torch.Tensor):
    """SingleTaskGP on X: Tensor[n, d] in [-1, 1] (normalised to the unit cube) and standardised y: Tensor[n]."""
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from botorch.models.transforms.input import Normalize
    from gpytorch.mlls import ExactMarginalLogLikelihood

    model = SingleTaskGP(X.to(DTYPE), y.to(DTYPE).unsqueeze(-1), input_transform=Normalize(d=X.shape[-1],
                                                                                        bounds=bounds(X.shape[-1])))
    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit_gpytorch_mll(mll)
    except Exception as err:  # keep optimising with default hyperparameters rather than abort a paid run
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
    """Tensor[q, d] of next points: maximise LogEI (q=1) or qLogEI (q>1) of a GP fitted to (X, y)."""
    d = X.shape[-1]
    y_std = standardize_scores(y)
    if len(X) < 2 or torch.all(y_std == 0):
        # Nothing to model yet (or a flat objective): keep exploring along the Sobol sequence.
        return sobol_points(q, d, seed=seed, skip=len(X))
    from botorch.acquisition import LogExpectedImprovement, qLogExpectedImprovement
    from botorch.optim import optimize_acqf

    model = fit_gp(X, y_std)
    best_f = y_std.max()
    acqf = LogExpectedImprovement(model, best_f=best_f) if q == 1 else qLogExpectedImprovement(model, best_f=best_f)
    torch.manual_seed(seed + len(X))  # optimize_acqf's random restarts: deterministic given the history
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
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
        """Tensor[k, d]: the remaining initial Sobol points (k <= n_init), or q GP proposals."""
        if self.in_init_phase:
            return sobol_points(self.n_init, self.d, self.seed)[len(self.X):]
        return propose(self.X, self.y, self.q, self.seed, self.num_restarts, self.raw_samples)

    def tell(self, z: torch.Tensor, score: float) -> None:
        self.X = torch.cat([self.X, torch.as_tensor(z, dtype=DTYPE).reshape(1, self.d)])
        self.y = torch.cat([self.y, torch.tensor([float(score)], dtype=DTYPE)])

    @property
    def best(self) -> tuple[torch.Tensor, float] | None:
        if len(self.y) == 0:
            return None
        i = int(torch.argmax(self.y))
        return self.X[i], float(self.y[i])
