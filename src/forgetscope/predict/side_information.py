"""Completion that knows the examples: per-example features beside the known rows.

Model (a "dirty" inductive matrix completion: a feature part plus a free low-rank part):

    F[i, j] ≈ μ + a_i + b_j + β_i · z_j + u_i · v_j,

``z_j`` the standardised features of example j (:mod:`forgetscope.predict.features`: by default its base
loss, log length in tokens and, where the upstream table has one, its category one-hot). From the known
rows: the additive fit, each known task's feature coefficients ``β_i`` (least squares of its double-centred
row on Z), and a rank-r SVD of what the features leave (``v``). A new task's offset ``c``, ``β`` and ``u``
are solved jointly on its probe set by ridge regression with Bayesian penalties as in
:mod:`forgetscope.predict.lowrank`: σ² (the residual variance) over the prior variance among the known
tasks — ``var(a_i)`` for the offset, ``s_k²/M`` per component, and the known tasks' covariance of β (a full
matrix) for the features. ``shrinkage`` multiplies the feature and factor penalties (1 = the empirical
prior; large = back to ``additive``).

Why it can beat completion: a component ``v`` is estimated column by column from M noisy known rows, a
feature is known exactly for every column; and an example no known row observed (a new source of
upstream text) still has features: its ``b_j`` and ``v_j`` are regressed on ``z_j`` over the observed
columns, so unprobed columns borrow strength from similar examples. Holes inside observed columns count as
the additive prediction.

``additive-features`` is rank 0 (additive + the feature ridge on the probe residuals); ``lowrank-features``
chooses the rank (0 … ``max_rank``) and then the shrinkage (:data:`SHRINKAGE_GRID`) by task-grouped
cross-validation on the known rows (:mod:`forgetscope.predict.tuning`), unless given.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from forgetscope.analysis.lowrank import additive_fit_unchecked
from forgetscope.errors import ConfigError
from forgetscope.predict.base import Predictor
from forgetscope.predict.factor import truncated_svd
from forgetscope.predict.features import encode_features
from forgetscope.predict.tuning import best_candidate, grouped_cv_rmse

#: multipliers of the empirical prior's feature and factor penalties tried by cross-validation
SHRINKAGE_GRID = (0.1, 0.3, 1.0, 3.0, 10.0, 100.0)


def _ridge_with_intercept(Z: np.ndarray, Y: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """(intercept, coefficients) of ``Y ≈ c + Z W`` (Y: n x q), the intercept unpenalised."""
    zm, ym = Z.mean(0), Y.mean(0)
    Zc = Z - zm
    W = np.linalg.solve(Zc.T @ Zc + lam * np.eye(Z.shape[1]), Zc.T @ (Y - ym))
    return ym - zm @ W, W


def _inverse_psd(S: np.ndarray, rel: float = 1e-8) -> np.ndarray:
    """Inverse of a covariance on its well-determined directions; ~1/rel times larger penalty elsewhere."""
    w, Q = np.linalg.eigh((S + S.T) / 2)
    top = max(float(w.max()), 1e-300) if w.size else 1.0
    return (Q / np.maximum(w, rel * top)) @ Q.T


class LowRankFeaturesPredictor(Predictor):
    """Additive + feature coefficients + rank-r free interaction, the new row solved on its probe set."""

    name = "lowrank-features"
    display = "lowrank + example features"
    needs_upstream = True
    empty_columns = True

    def __init__(self, rank: int | None = None, *, features: Sequence[str] | None = None,
                 shrinkage: float | None = None, max_rank: int = 5, cv_probe: int = 30, cv_draws: int = 2,
                 seed: int = 0) -> None:
        if rank is not None and int(rank) < 0:
            raise ConfigError(f"{self.name} rank must be >= 0 (or None: chosen by cross-validation), got {rank}")
        if shrinkage is not None and not (np.isfinite(shrinkage) and shrinkage > 0):
            raise ConfigError(f"{self.name} shrinkage must be > 0 (or None: chosen by cross-validation), "
                              f"got {shrinkage}")
        if int(max_rank) < 0 or int(cv_probe) < 1 or int(cv_draws) < 1:
            raise ConfigError(f"{self.name} needs max_rank >= 0, cv_probe >= 1 and cv_draws >= 1")
        self.rank = None if rank is None else int(rank)
        self.features = None if features is None else ([features] if isinstance(features, str)
                                                        else [str(f) for f in features])
        self.shrinkage = None if shrinkage is None else float(shrinkage)
        self.max_rank, self.cv_probe, self.cv_draws, self.seed = int(max_rank), int(cv_probe), int(cv_draws), int(seed)

    # ---- fitting ------------------------------------------------------------------------------

    def _fit(self, X: np.ndarray, *, task_texts: Sequence[str] | None,
             example_texts: Sequence[str] | None) -> None:
        Z, self.feature_names_ = encode_features(self._upstream, self.features)
        rank, shrinkage, self.cv_scores_ = self._choose(X)
        self._fit_fixed(X.astype(np.float64), Z, rank, shrinkage)

    def _candidate(self, rank: int, shrinkage: float) -> LowRankFeaturesPredictor:
        return LowRankFeaturesPredictor(rank=rank, features=self.features, shrinkage=shrinkage, seed=self.seed)

    def _choose(self, X: np.ndarray) -> tuple[int, float, pd.DataFrame]:
        """(rank, shrinkage, CV scores): the given ones, else chosen by task-grouped CV, rank first."""
        groups = self._groups if self._groups is not None else np.arange(X.shape[0]).astype(str)
        rank = self.rank if self.rank is not None else 0
        shrinkage = self.shrinkage if self.shrinkage is not None else 1.0
        scores = pd.DataFrame(columns=["rank", "shrinkage", "rmse"])
        if np.unique(groups).size < 2 or X.shape[0] < 3 or (self.rank is not None and self.shrinkage is not None):
            return rank, shrinkage, scores
        kwargs = {"probe": self.cv_probe, "draws": self.cv_draws, "seed": self.seed, "per_row": True,
                  "fit_kwargs": {"upstream": self._upstream}}
        parts = []
        if self.rank is None:
            ranks = list(range(0, max(0, min(self.max_rank, X.shape[0] - 2)) + 1))
            if len(ranks) > 1:
                rmse = grouped_cv_rmse(X, groups, ranks, lambda r: self._candidate(int(r), shrinkage),  # type: ignore[arg-type]
                                       **kwargs)
                rank = int(best_candidate(ranks, rmse))
                parts.append(pd.DataFrame({"rank": ranks, "shrinkage": shrinkage, "rmse": rmse}))
        if self.shrinkage is None:
            grid = list(SHRINKAGE_GRID)
            rmse = grouped_cv_rmse(X, groups, grid, lambda s: self._candidate(rank, float(s)), **kwargs)  # type: ignore[arg-type]
            shrinkage = float(best_candidate(grid, rmse))
            parts.append(pd.DataFrame({"rank": rank, "shrinkage": grid, "rmse": rmse}))
        return rank, shrinkage, pd.concat(parts, ignore_index=True) if parts else scores

    def _fit_fixed(self, X: np.ndarray, Z: np.ndarray, rank: int, shrinkage: float) -> None:
        m, n = X.shape
        p = Z.shape[1]
        obs = np.isfinite(X).any(0)
        Xo, Zo = X[:, obs], Z[obs]
        fit = additive_fit_unchecked(Xo)
        b = np.zeros(n)
        b[obs] = fit.b
        if not obs.all() and p:  # examples no known row observed: their effect from their features
            c0, g = _ridge_with_intercept(Zo, fit.b[:, None], 1.0)
            b[~obs] = c0[0] + Z[~obs] @ g[:, 0]
        mask = np.isfinite(Xo)
        R = np.where(mask, Xo - fit.mu - fit.a[:, None] - fit.b[None, :], 0.0)
        if p:
            B = np.linalg.solve(Zo.T @ Zo + 1e-6 * Zo.shape[0] * np.eye(p), Zo.T @ R.T).T  # (m, p)
            R = np.where(mask, R - B @ Zo.T, 0.0)
        else:
            B = np.zeros((m, 0))
        r = max(0, min(int(rank), m - 1, int(obs.sum()) - 1))
        U, s, Vo = truncated_svd(R, r, seed=self.seed)
        Vt = np.zeros((r, n))
        Vt[:, obs] = Vo
        if r and not obs.all() and p:  # column factors of unobserved examples regressed on their features
            c0, W = _ridge_with_intercept(Zo, Vo.T, 1.0)
            Vt[:, ~obs] = (c0 + Z[~obs] @ W).T
        resid = R - (U * s) @ Vo if r else R
        # each known row's coefficients in units of its own noise sd: the prior is then scale-free, so a
        # quiet task is not shrunk as if it were as noisy as the noisiest ones
        sd = np.sqrt((resid**2).sum(1) / np.maximum(mask.sum(1), 1))
        sd = np.maximum(sd, 1e-3 * max(float(np.median(sd)), 1e-150))
        var_a = float(np.var(fit.a / sd)) if m > 1 else 0.0
        penalty = np.zeros((1 + r + p, 1 + r + p))
        penalty[0, 0] = 1.0 / var_a if var_a > 0 else 1e-6
        if r:
            penalty[1 : 1 + r, 1 : 1 + r] = shrinkage * np.diag(1.0 / np.maximum(
                (((U * s) / sd[:, None]) ** 2).mean(0), 1e-300))
        if p:
            Bn = B / sd[:, None]
            penalty[1 + r :, 1 + r :] = shrinkage * _inverse_psd(Bn.T @ Bn / m)
        self.rank_, self.shrinkage_ = r, float(shrinkage)
        self.col_mean_ = fit.mu + b
        self.basis_ = np.vstack([Vt, Z.T]) if r + p else np.zeros((0, n))  # (r + p, N)
        self.penalty_ = penalty
        self.task_coef_ = B
        self.row_sd_ = sd

    # ---- prediction ---------------------------------------------------------------------------

    def _predict_rows(self, idx: np.ndarray, Y: np.ndarray, *,
                      task_texts: Sequence[str] | None) -> np.ndarray:
        T = Y - self.col_mean_[idx]
        D = np.column_stack([np.ones(idx.size), self.basis_[:, idx].T])
        W = np.linalg.lstsq(D.T @ D + self.penalty_, D.T @ T.T, rcond=None)[0]  # (1 + r + p, R)
        return self.col_mean_[None, :] + W[0][:, None] + W[1:].T @ self.basis_

    @property
    def chosen_params_(self) -> dict[str, float | int]:
        """The rank and shrinkage in use (refits that must not re-tune pass these)."""
        return {"rank": self.rank_, "shrinkage": self.shrinkage_}


class AdditiveFeaturesPredictor(LowRankFeaturesPredictor):
    """``additive`` plus a ridge of the probe residuals on the example features (no free factors)."""

    name = "additive-features"
    display = "additive + example features"

    def __init__(self, *, features: Sequence[str] | None = None, shrinkage: float | None = None,
                 cv_probe: int = 30, cv_draws: int = 2, seed: int = 0) -> None:
        super().__init__(0, features=features, shrinkage=shrinkage, max_rank=0, cv_probe=cv_probe,
                         cv_draws=cv_draws, seed=seed)

    def _candidate(self, rank: int, shrinkage: float) -> LowRankFeaturesPredictor:
        return LowRankFeaturesPredictor(rank=0, features=self.features, shrinkage=shrinkage, seed=self.seed)

    def get_params(self) -> dict[str, object]:
        return {k: v for k, v in super().get_params().items() if k not in ("rank", "max_rank")}

    @property
    def chosen_params_(self) -> dict[str, float | int]:
        return {"shrinkage": self.shrinkage_}
