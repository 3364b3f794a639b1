"""``lowrank``: additive model + rank-r interaction, the new task's factor solved on the probe set.

Model: ``F[i, j] ≈ μ + a_i + b_j + u_i · v_j``. Known rows are double-centred by the additive fit
and the residual is factored (truncated SVD, or ridge ALS over observed entries). A new task
contributes an offset ``c`` and a factor ``u``, fitted on the probe set by ridge regression whose
penalties are the Bayesian ones: the noise variance σ² over the prior variance of each coefficient
among the known tasks (``var(a_i)`` for the offset, ``s_k²/M`` for component k). So with a tiny
probe set the prediction shrinks to the additive one instead of overfitting, and ``ridge`` is a
dimensionless multiplier (1 = the empirical prior, 0 = plain least squares).

Rank: given, or (``rank=None``, the default) chosen at ``fit`` by task-grouped cross-validation on
the known rows (:func:`choose_rank`): every rank in ``1 .. min(max_rank, M − 1)`` is scored by the
pooled RMSE of held-out rows completed from ``cv_probe`` random probes, where rows of one group (the
``groups`` given to ``fit``, e.g. each row's task) leave together; the smallest rank with the lowest
RMSE wins. With fewer than 2 groups, or fewer than 3 known rows, the rank is 1. The choice costs up to
``max_rank × 5`` extra fits (slow with missing entries, where each fit iterates); pass ``rank`` to skip it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd

from forgetscope.analysis.lowrank import AdditiveFit, additive_fit_unchecked
from forgetscope.errors import ConfigError
from forgetscope.predict.base import Predictor
from forgetscope.predict.factor import als_ridge, residual_mean_square, truncated_svd
from forgetscope.predict.tuning import best_candidate, grouped_cv_rmse

Method = Literal["auto", "svd", "als"]


def double_centered(X: np.ndarray) -> tuple[AdditiveFit, np.ndarray, np.ndarray | None]:
    """The additive fit, the residual ``X − μ − a − b`` (0 at missing entries) and the mask (None if complete)."""
    fit = additive_fit_unchecked(X)
    R = X - np.asarray(fit.mu + fit.b, dtype=X.dtype)[None, :]
    R -= np.asarray(fit.a, dtype=X.dtype)[:, None]
    mask = None
    if np.isnan(X).any():
        mask = ~np.isnan(X)
        R[~mask] = 0.0
    return fit, R, mask


def residual_basis(X: np.ndarray, rank: int, *, method: Method = "auto", lam: float = 0.05,
                   n_iter: int = 15, seed: int = 0) -> dict:
    """Factor the double-centred known rows: returns additive fit, singular values, Vt and noise σ².

    ``svd`` with missing entries runs hard impute (refill holes from the rank-r fit, n_iter times).
    """
    m, n = X.shape
    r = max(0, min(int(rank), m - 1, n - 1))
    complete = not np.isnan(X).any()
    if method == "auto":
        method = "svd" if complete else "als"
    if method not in ("svd", "als"):
        raise ConfigError(f"unknown lowrank method {method!r}; choose auto, svd or als")
    if method == "svd" and complete:
        # double centring applied inside the SVD's products: no M x N copy; σ² from the ANOVA identity
        fit = additive_fit_unchecked(X)
        U, s, Vt = truncated_svd(X, r, seed=seed, row_shift=fit.a, col_shift=fit.mu + fit.b)
        total = float(np.einsum("ij,ij->", X, X, dtype=np.float64))
        ss_resid = total - m * n * fit.mu**2 - m * float(fit.b @ fit.b) - n * float(fit.a @ fit.a)
        sigma2 = max(ss_resid - float(s @ s), 0.0) / (m * n)
        return _basis(fit, U * s, Vt, sigma2, m, X.dtype)
    fit, R, mask = double_centered(X)
    if method == "svd":
        U, s, Vt = truncated_svd(R, r, seed=seed)
        if mask is not None and r > 0:
            for _ in range(n_iter):
                R = np.where(mask, R, ((U * s) @ Vt).astype(R.dtype))
                U, s, Vt = truncated_svd(R, r, seed=seed)
            R = np.where(mask, R, 0.0).astype(R.dtype)
        Uf, Vf = U * s, Vt
    else:
        Uf, Vf = als_ridge(R, mask, r, lam=lam, n_iter=n_iter, seed=seed)
    sigma2 = residual_mean_square(R, mask, Uf, Vf)
    return _basis(fit, Uf, Vf, sigma2, m, X.dtype)


def _basis(fit: AdditiveFit, Uf: np.ndarray, Vf: np.ndarray, sigma2: float, m: int, dtype: np.dtype) -> dict:
    """Orthonormal right basis and singular values of the fitted interaction ``Uf @ Vf``."""
    r, n = Vf.shape
    # orthonormal basis of the fitted interaction: U V = Qu (Ru Rv^T) Qv^T, SVD of the small core
    if r > 0:
        Qu, Ru = np.linalg.qr(np.asarray(Uf, np.float64))
        Qv, Rv = np.linalg.qr(np.asarray(Vf, np.float64).T)
        _, s, Wt = np.linalg.svd(Ru @ Rv.T)
        Vt = (Wt @ Qv.T).astype(dtype)
    else:
        s, Vt = np.zeros(0), np.zeros((0, n), dtype)
    return {"additive": fit, "s": s, "Vt": Vt, "sigma2": max(sigma2, 1e-30), "m": m}


def choose_rank(X: np.ndarray, groups: np.ndarray | None = None, *, max_rank: int = 10, probe: int = 30,
                n_folds: int = 5, seed: int = 0, **params: object) -> tuple[int, pd.DataFrame]:
    """The rank with the lowest task-grouped CV RMSE on the known rows ``X``, and the score per rank.

    Each fold fits ``LowRankPredictor(rank=r, **params)`` on the other groups' rows, observes the
    held-out rows on ``probe`` seeded random columns (at most N − 1) and scores the rest, pooled over
    folds. Ties go to the smaller rank.
    """
    m, n = X.shape
    groups = np.arange(m).astype(str) if groups is None else np.asarray(groups).astype(str)
    n_groups = np.unique(groups).size
    ranks = list(range(1, max(1, min(int(max_rank), m - 1)) + 1))
    if len(ranks) == 1 or n_groups < 2 or n < 2:
        return 1, pd.DataFrame({"rank": [1], "rmse": [np.nan]})
    rmse = grouped_cv_rmse(X, groups, ranks, lambda r: LowRankPredictor(rank=int(r), **params),  # type: ignore[arg-type]
                           probe=probe, n_folds=n_folds, seed=seed)
    return int(best_candidate(ranks, rmse)), pd.DataFrame({"rank": ranks, "rmse": rmse})


class LowRankPredictor(Predictor):
    """Matrix completion of a new row: additive + rank-r interaction (SVD or ridge ALS)."""

    name = "lowrank"

    def __init__(self, rank: int | None = None, *, method: Method = "auto", ridge: float = 1.0,
                 als_lambda: float = 0.05, n_iter: int = 15, seed: int = 0, max_rank: int = 10,
                 cv_probe: int = 30) -> None:
        if rank is not None and int(rank) < 1:
            raise ConfigError(f"lowrank rank must be >= 1 (or None: chosen by cross-validation), got {rank}")
        if int(max_rank) < 1 or int(cv_probe) < 1:
            raise ConfigError(f"lowrank max_rank and cv_probe must be >= 1, got {max_rank} and {cv_probe}")
        if ridge < 0 or als_lambda < 0:
            raise ConfigError("lowrank ridge and als_lambda must be >= 0")
        if method not in ("auto", "svd", "als"):
            raise ConfigError(f"unknown lowrank method {method!r}; choose auto, svd or als")
        self.rank = None if rank is None else int(rank)
        self.method, self.ridge = method, float(ridge)
        self.als_lambda, self.n_iter, self.seed = float(als_lambda), int(n_iter), int(seed)
        self.max_rank, self.cv_probe = int(max_rank), int(cv_probe)

    def _fit(self, X: np.ndarray, *, task_texts: Sequence[str] | None,
             example_texts: Sequence[str] | None) -> None:
        if self.rank is None:
            self.rank_, self.rank_scores_ = choose_rank(
                X, getattr(self, "_groups", None), max_rank=self.max_rank, probe=self.cv_probe, seed=self.seed,
                method=self.method, ridge=self.ridge, als_lambda=self.als_lambda, n_iter=self.n_iter)
        else:
            self.rank_ = self.rank
        basis = residual_basis(X, self.rank_, method=self.method, lam=self.als_lambda,
                               n_iter=self.n_iter, seed=self.seed)
        fit: AdditiveFit = basis["additive"]
        self.col_mean_ = np.asarray(fit.mu + fit.b, dtype=X.dtype)
        self.Vt_ = basis["Vt"]
        self.s_ = basis["s"]
        sigma2, m = basis["sigma2"], basis["m"]
        var_a = float(np.var(fit.a)) if m > 1 else 0.0
        prior_var = np.concatenate([[var_a if var_a > 0 else 1e6 * sigma2], self.s_**2 / m])
        self.penalty_ = sigma2 / np.maximum(prior_var, 1e-300)

    def _predict_rows(self, idx: np.ndarray, Y: np.ndarray, *,
                      task_texts: Sequence[str] | None) -> np.ndarray:
        T = Y - self.col_mean_[idx].astype(np.float64)
        Z = np.column_stack([np.ones(idx.size), self.Vt_[:, idx].T.astype(np.float64)])
        A = Z.T @ Z + np.diag(self.ridge * self.penalty_)
        W = np.linalg.lstsq(A, Z.T @ T.T, rcond=None)[0]  # (r+1, R); lstsq copes with |S| < r+1
        out = (W[1:].T.astype(self.Vt_.dtype) @ self.Vt_) if self.Vt_.shape[0] else 0.0
        return (self.col_mean_[None, :] + W[0][:, None] + out).astype(np.float64, copy=False)
