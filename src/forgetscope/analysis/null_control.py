"""How much of a forgetting matrix a task-agnostic perturbation already explains.

Each run of a sweep with ``null_control`` has a second row: the forgetting caused by a random-direction
update with the norms of the run's own update (:mod:`forgetscope.experiments.null_control`). Their mean
over runs, the *null profile* ``n̄`` (one value per example), estimates how fragile each example is to any
move of the weights. The questions a reviewer asks of a low-rank claim, answered here:

- per task: how much of its row does the null profile explain (R² of the affine fit ``F_i ≈ a_i + b_i n̄``),
  and how much its own null row (the squared correlation); over the matrix, the share of the within-row
  variance those fits explain (the tasks' different mean forgetting is not credited to the null);
- R²(k) of the matrix, of the null matrix, and of the *task-specific residual* ``F_i − (a_i + b_i n̄)``:
  structure left after generic sensitivity is taken out;
- the correlation of the first right singular vector of ``F`` with ``n̄`` (is rank 1 just fragility?).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from forgetscope.analysis.lowrank import rank_r2
from forgetscope.errors import DataError
from forgetscope.validation import check_matrix


@dataclass
class NullComparison:
    """Result of :func:`null_comparison`; ``table()`` has one row per task, ``rank_table()`` one per k."""

    row_names: list[str]
    mean_forgetting: np.ndarray  # per run: mean F over observed examples
    mean_null: np.ndarray  # per run: mean of its null row
    r2_profile: np.ndarray  # per run: R² of F_i on the null profile (affine fit)
    r2_own: np.ndarray  # per run: squared correlation of F_i with its own null row
    r2_by_rank: np.ndarray  # R²(k) of F
    r2_null_by_rank: np.ndarray  # R²(k) of the null matrix
    r2_residual_by_rank: np.ndarray  # R²(k) of the task-specific residual
    explained_share: float  # share of the within-row variance of F the per-row affine fits on n̄ explain
    v1_profile_corr: float  # correlation of F's first right singular vector with the null profile

    def table(self) -> pd.DataFrame:
        return pd.DataFrame({"run_id": self.row_names, "mean_forgetting": self.mean_forgetting,
                             "mean_null": self.mean_null, "r2_null_profile": self.r2_profile,
                             "r2_own_null": self.r2_own})

    def rank_table(self) -> pd.DataFrame:
        k = np.arange(1, len(self.r2_by_rank) + 1)
        return pd.DataFrame({"k": k, "r2": self.r2_by_rank, "r2_null": self.r2_null_by_rank,
                             "r2_residual": self.r2_residual_by_rank})

    def to_dict(self) -> dict[str, Any]:
        return {"per_run": self.table().to_dict(orient="records"),
                "by_rank": self.rank_table().to_dict(orient="records"),
                "explained_share": self.explained_share, "v1_profile_corr": self.v1_profile_corr,
                "median_r2_null_profile": float(np.nanmedian(self.r2_profile)),
                "mean_forgetting": float(np.nanmean(self.mean_forgetting)),
                "mean_null": float(np.nanmean(self.mean_null))}


def _affine_fit(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Least-squares ``a + b x`` fitted to the observed entries of ``y`` (NaN where ``y`` is missing)."""
    ok = np.isfinite(y) & np.isfinite(x)
    out = np.full_like(y, np.nan)
    if ok.sum() < 2 or np.ptp(x[ok]) == 0:
        out[ok] = np.mean(y[ok]) if ok.any() else np.nan
        return out
    b, a = np.polyfit(x[ok], y[ok], 1)
    out[ok] = a + b * x[ok]
    return out


def _r2(y: np.ndarray, fit: np.ndarray) -> float:
    ok = np.isfinite(y) & np.isfinite(fit)
    sst = float(((y[ok] - y[ok].mean()) ** 2).sum()) if ok.any() else 0.0
    return 1.0 - float(((y[ok] - fit[ok]) ** 2).sum()) / sst if sst > 0 else float("nan")


def _corr2(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return float("nan")
    return float(np.corrcoef(a[ok], b[ok])[0, 1] ** 2)


def null_comparison(F: Any, null: Any | None = None, *, max_rank: int = 5,
                    row_names: list[str] | None = None) -> NullComparison:
    """Compare a forgetting matrix with its null-control rows (see the module docstring).

    ``F`` is an array or a :class:`~forgetscope.store.ForgettingMatrix` (whose ``null`` is used unless
    given); ``null`` has the same shape. A matrix without null rows is a DataError.
    """
    null = getattr(F, "null", None) if null is None else null
    if null is None:
        raise DataError("this sweep has no null-control rows; run it with null_control: true")
    names = row_names or list(getattr(F, "row_names", [])) or [str(i) for i in range(np.shape(F)[0])]
    X, N = check_matrix(F), check_matrix(null, what="null-control matrix")
    if N.shape != X.shape:
        raise DataError(f"null-control matrix has shape {N.shape}, the forgetting matrix {X.shape}")
    profile = np.nanmean(N, axis=0)
    fits = np.vstack([_affine_fit(X[i], profile) for i in range(X.shape[0])])
    residual = np.where(np.isfinite(X), X - fits, np.nan)
    k = max(1, min(max_rank, *X.shape))
    filled = np.where(np.isnan(X), np.nanmean(X, axis=0, keepdims=True), X)
    _, _, vt = np.linalg.svd(np.nan_to_num(filled), full_matrices=False)
    v1 = vt[0] * np.sign(vt[0].sum() or 1.0)
    # within-row variance only: the fits' intercepts a_i would otherwise "explain" the differences between
    # the tasks' mean forgetting, which the null profile says nothing about
    ok = np.isfinite(X)
    centred = X - np.nanmean(X, axis=1, keepdims=True)
    sst = float((centred[ok] ** 2).sum())
    explained = 1.0 - float(((X[ok] - fits[ok]) ** 2).sum()) / sst if sst > 0 else float("nan")
    return NullComparison(
        row_names=names,
        mean_forgetting=np.nanmean(X, axis=1), mean_null=np.nanmean(N, axis=1),
        r2_profile=np.array([_r2(X[i], fits[i]) for i in range(X.shape[0])]),
        r2_own=np.array([_corr2(X[i], N[i]) for i in range(X.shape[0])]),
        r2_by_rank=rank_r2(X, k), r2_null_by_rank=rank_r2(N, k), r2_residual_by_rank=rank_r2(residual, k),
        explained_share=explained,
        v1_profile_corr=float(np.sqrt(_corr2(v1, profile))) * float(np.sign(np.corrcoef(v1, profile)[0, 1])),
    )


__all__ = ["NullComparison", "null_comparison"]
