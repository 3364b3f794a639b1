"""Low-rank structure of a forgetting matrix.

Why: if ``F`` is close to low rank, a new task's forgetting is predictable from a few probes
(pillar 3). This module answers "how low-rank?" and "how much is just task strength + example
fragility?":

- :func:`singular_spectrum` and :func:`rank_r2` — R²(k) of the rank-k SVD approximation ``F_k`` of the
  uncentred ``F``, k = 1..K, in two named metrics (:data:`R2_METRICS`): ``global``,
  ``1 − ||F − F_k||² / ||F − mean(F)||²``, and ``reference``, scikit-learn's ``r2_score(F, F_k)`` (an R² per
  column, averaged over columns), the metric of Jin & Ren's released code;
- :func:`fit_additive` — ``F[i, j] ≈ μ + a_i + b_j`` by least squares;
- :func:`fit_multiplicative` — ``F[i, j] ≈ α_i β_j`` (rank 1 on the uncentred ``F``);
- :func:`factor_order` — row/column permutations by the fitted factors (for heat maps);
- :func:`learning_correlation` — per-task mean forgetting vs how much the task was learned;
- :func:`analyze` — all of the above as one :class:`LowRankReport`.

Missing entries (NaN) are allowed everywhere: fits use the observed entries only, SVDs of a
matrix with holes fill them iteratively from the current rank-k fit (hard impute), and every R²
is computed over observed entries.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats

from forgetscope.errors import DataError
from forgetscope.validation import check_matrix

__all__ = [
    "AdditiveFit",
    "LowRankReport",
    "MultiplicativeFit",
    "R2_METRICS",
    "analyze",
    "factor_order",
    "fit_additive",
    "fit_multiplicative",
    "learning_correlation",
    "rank_k_approx",
    "rank_r2",
    "rank_r2_metrics",
    "reference_r2",
    "singular_spectrum",
]

_MAX_ITER = 200
_TOL = 1e-7

R2Metric = Literal["global", "reference"]
#: ``global``: one R² over all entries against the grand mean; ``reference``: scikit-learn's ``r2_score``
#: (an R² per column against that column's mean, averaged uniformly over columns).
R2_METRICS: tuple[R2Metric, ...] = ("global", "reference")


# ---- additive and multiplicative models ----------------------------------------------------


@dataclass
class AdditiveFit:
    """``F ≈ μ + a_i + b_j``; ``a`` and ``b`` sum to zero (weighted by observed counts)."""

    mu: float
    a: np.ndarray
    b: np.ndarray
    r2: float

    def predict(self) -> np.ndarray:
        return self.mu + self.a[:, None] + self.b[None, :]


def fit_additive(F: Any) -> AdditiveFit:
    """Least-squares ``μ + a_i + b_j``; closed form when complete, backfitting when entries are missing.

    Why: the additive model is the baseline every predictor is reported against; its R² says how
    much of forgetting is just "this task is harsh" + "this example is fragile".
    """
    X = check_matrix(F, dtype=None)
    fit = additive_fit_unchecked(X)
    fit.r2 = r2_score_masked(X, fit.predict())
    return fit


def additive_fit_unchecked(X: np.ndarray) -> AdditiveFit:
    """:func:`fit_additive` without input checks or R² (for predictors that checked already)."""
    mask = ~np.isnan(X)
    if mask.all():
        mu = float(X.mean(dtype=np.float64))
        a = X.mean(axis=1, dtype=np.float64) - mu
        b = X.mean(axis=0, dtype=np.float64) - mu
    else:
        Xz = np.where(mask, X, 0.0)
        n_row, n_col = mask.sum(1), mask.sum(0)
        mu = float(Xz.sum() / mask.sum())
        a, b = np.zeros(X.shape[0]), np.zeros(X.shape[1])
        for _ in range(_MAX_ITER):  # Gauss-Seidel on the normal equations; converges linearly
            a_new = ((Xz - mu - b[None, :]) * mask).sum(1) / n_row
            b_new = ((Xz - mu - a_new[:, None]) * mask).sum(0) / n_col
            shift = (a_new * n_row).sum() / n_row.sum()
            a_new -= shift
            mu += shift
            delta = max(np.abs(a_new - a).max(), np.abs(b_new - b).max())
            a, b = a_new, b_new
            if delta < _TOL:
                break
    return AdditiveFit(mu, a, b, r2=float("nan"))


@dataclass
class MultiplicativeFit:
    """``F ≈ α_i β_j`` with ``||β||`` = 1 and the sign chosen so that mean(β) ≥ 0."""

    alpha: np.ndarray
    beta: np.ndarray
    r2: float

    def predict(self) -> np.ndarray:
        return np.outer(self.alpha, self.beta)


def fit_multiplicative(F: Any) -> MultiplicativeFit:
    """Rank-1 least squares on the uncentred ``F`` (leading singular pair; ALS over observed entries).

    Why: "forgetting = task strength × example susceptibility" is the simplest interaction model;
    comparing its R² with the additive one tells which reading of the data fits better.
    """
    X = check_matrix(F)
    mask = ~np.isnan(X)
    if mask.all():
        U, s, Vt = gram_svd(X, 1)
        alpha, beta = U[:, 0] * s[0], Vt[0]
    else:
        Xz = np.where(mask, X, 0.0)
        beta = np.where(mask, X, np.nanmean(X, axis=0)).mean(0)
        beta /= np.linalg.norm(beta) or 1.0
        alpha = np.zeros(X.shape[0])
        for _ in range(_MAX_ITER):
            alpha_new = (Xz @ beta) / np.maximum(mask @ beta**2, 1e-300)
            beta = (Xz.T @ alpha_new) / np.maximum(mask.T @ alpha_new**2, 1e-300)
            norm = np.linalg.norm(beta) or 1.0
            beta /= norm
            delta = np.abs(alpha_new - alpha).max()
            alpha = alpha_new
            if delta < _TOL * max(1.0, np.abs(alpha).max()):
                break
        alpha = (Xz @ beta) / np.maximum(mask @ beta**2, 1e-300)
    if beta.mean() < 0:
        alpha, beta = -alpha, -beta
    fit = MultiplicativeFit(np.asarray(alpha), np.asarray(beta), r2=float("nan"))
    fit.r2 = r2_score_masked(X, fit.predict())
    return fit


# ---- SVD spectrum and R²(k) ----------------------------------------------------------------


def r2_score_masked(X: np.ndarray, approx: np.ndarray) -> float:
    """``1 − SSE / SST`` over the observed (non-NaN) entries of ``X``."""
    mask = ~np.isnan(X)
    x = X[mask]
    sst = float(((x - x.mean()) ** 2).sum())
    sse = float(((x - approx[mask]) ** 2).sum())
    return 1.0 - sse / sst if sst > 0 else float("nan")


def reference_r2(X: np.ndarray, approx: np.ndarray) -> float:
    """scikit-learn's ``r2_score(X, approx)``: R² of each column, averaged uniformly over columns.

    Why: the reference work scores its low-rank fits with this metric; a column's R² is measured against
    that column's mean, so it credits nothing for the differences between columns. With missing entries each
    column is scored over its observed rows (columns with fewer than two are left out).
    """
    from sklearn.metrics import r2_score

    mask = ~np.isnan(X)
    if mask.all():
        return float(r2_score(X, approx))
    full = mask.all(axis=0)
    scores: list[float] = []
    if full.any():
        scores.extend(np.atleast_1d(r2_score(X[:, full], approx[:, full], multioutput="raw_values")).tolist())
    for j in np.flatnonzero(~full):
        ok = mask[:, j]
        if ok.sum() >= 2:
            scores.append(float(r2_score(X[ok, j], approx[ok, j])))
    return float(np.mean(scores)) if scores else float("nan")


def gram_svd(X: np.ndarray, k: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-k SVD ``(U, s, Vt)`` from the eigendecomposition of the short side's Gram matrix.

    Why: for a wide M x N forgetting matrix (M tasks << N examples) this is one M x M product and
    an M x M eigenproblem instead of a full LAPACK SVD, and exact for the leading components.
    """
    m, n = X.shape
    k = min(m, n) if k is None else k
    if m > n:
        V, s, Ut = gram_svd(X.T, k)
        return Ut.T, s, V.T
    vals, vecs = np.linalg.eigh(np.asarray(X @ X.T, dtype=np.float64))
    order = np.argsort(vals)[::-1][:k]
    s = np.sqrt(np.maximum(vals[order], 0.0))
    U = vecs[:, order]
    Vt = (U.T @ X) / np.maximum(s, 1e-300)[:, None]
    Vt[s <= 1e-12 * max(s[0] if s.size else 0.0, 1e-300)] = 0.0
    return U, s, Vt


def _project_rank_k(X: np.ndarray, k: int) -> np.ndarray:
    """Best rank-k approximation via the eigenvectors of the small Gram matrix (cheap when M << N)."""
    if X.shape[0] <= X.shape[1]:
        _, vecs = np.linalg.eigh(X @ X.T)
        Uk = vecs[:, -k:]
        return Uk @ (Uk.T @ X)
    return _project_rank_k(X.T, k).T


def _hard_impute(X: np.ndarray, k: int, n_iter: int, start: np.ndarray | None = None) -> np.ndarray:
    """Rank-k approximation fitted to the observed entries: fill holes from the fit, refit, repeat."""
    mask = ~np.isnan(X)
    filled = np.where(mask, X, fit_additive(X).predict() if start is None else start)
    tol = 1e-6 * (np.nanstd(X) + 1e-300)
    approx = filled
    for _ in range(n_iter):
        approx = _project_rank_k(filled, k)
        change = float(np.abs(approx[~mask] - filled[~mask]).max()) if (~mask).any() else 0.0
        filled = np.where(mask, X, approx)
        if change < tol:
            break
    return approx


def rank_k_approx(F: Any, k: int, *, n_iter: int = 100) -> np.ndarray:
    """The rank-k least-squares approximation of ``F`` (Eckart–Young; hard impute if entries are missing)."""
    X = check_matrix(F)
    k = _check_rank(k, X.shape)
    if not np.isnan(X).any():
        return _project_rank_k(X, k)
    return _hard_impute(X, k, n_iter)


def singular_spectrum(F: Any) -> np.ndarray:
    """Singular values of ``F`` (holes filled by the additive model), largest first."""
    X = check_matrix(F)
    if np.isnan(X).any():
        X = np.where(np.isnan(X), fit_additive(X).predict(), X)
    return gram_svd(X)[1]


def rank_r2(F: Any, max_rank: int | None = None, *, n_iter: int = 100,
            metric: R2Metric = "global") -> np.ndarray:
    """``R²(k)`` in one metric of :data:`R2_METRICS` for k = 1..max_rank (default: min(M, N, 20)); entry
    ``k−1`` is rank k."""
    return rank_r2_metrics(F, max_rank, n_iter=n_iter, metrics=(metric,))[metric]


def rank_r2_metrics(F: Any, max_rank: int | None = None, *, n_iter: int = 100,
                    metrics: tuple[R2Metric, ...] = R2_METRICS) -> dict[str, np.ndarray]:
    """``{metric: R²(k) for k = 1..max_rank}`` from one sequence of rank-k approximations.

    Why one pass: with missing entries every rank is a hard-impute fit, too slow to repeat per metric.
    """
    X = check_matrix(F)
    K = _check_rank(max_rank if max_rank is not None else min(*X.shape, 20), X.shape)
    unknown = set(metrics) - set(R2_METRICS)
    if unknown:
        raise DataError(f"unknown R² metric {sorted(unknown)[0]!r}; choose one of {', '.join(R2_METRICS)}")
    out: dict[str, list[float] | np.ndarray] = {m: [] for m in metrics}
    if not np.isnan(X).any():
        U, s, Vt = gram_svd(X)
        if "global" in metrics:
            total = float(np.einsum("ij,ij->", X, X, dtype=np.float64))
            sst = total - X.size * float(X.mean(dtype=np.float64)) ** 2
            sst = sst if sst > 1e-12 * max(total, 1e-300) else 0.0
            # ||F - F_k||² = sum of the squared singular values left out
            tail = np.sum(s**2) - np.cumsum(s**2)[:K]
            out["global"] = 1.0 - np.maximum(tail, 0.0) / sst if sst > 0 else np.full(K, np.nan)
        if "reference" in metrics:
            approx = np.zeros_like(X, dtype=np.float64)
            for k in range(K):
                approx += np.outer(U[:, k] * s[k], Vt[k])
                out["reference"].append(reference_r2(X, approx))  # type: ignore[union-attr]
        return {m: np.asarray(v, dtype=float) for m, v in out.items()}
    approx = None
    for k in range(1, K + 1):  # warm start each rank from the previous one
        approx = _hard_impute(X, k, n_iter, start=approx)
        for m in metrics:
            out[m].append(r2_score_masked(X, approx) if m == "global" else reference_r2(X, approx))  # type: ignore[union-attr]
    return {m: np.asarray(v, dtype=float) for m, v in out.items()}


def _check_rank(k: int, shape: tuple[int, int]) -> int:
    k = int(k)
    if not 1 <= k <= min(shape):
        raise DataError(f"rank must be between 1 and min(M, N) = {min(shape)}, got {k}")
    return k


# ---- orderings and learning ----------------------------------------------------------------


def factor_order(F: Any, by: Literal["additive", "multiplicative", "svd"] = "additive"
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Row and column permutations that sort by the fitted factors, most forgetting first.

    Why: a heat map sorted this way shows at a glance whether forgetting is "harsh tasks ×
    fragile examples" (a smooth gradient) or has block structure the factors do not explain.
    """
    X = check_matrix(F)
    if by == "additive":
        fit = fit_additive(X)
        r, c = fit.a, fit.b
    elif by == "multiplicative":
        mfit = fit_multiplicative(X)
        r, c = mfit.alpha, mfit.beta
    elif by == "svd":
        filled = np.where(np.isnan(X), fit_additive(X).predict(), X)
        U, _, Vt = gram_svd(filled - filled.mean(), 1)
        r, c = U[:, 0], Vt[0]
        if c @ (np.nanmean(X, 0) - np.nanmean(X)) < 0:  # orient: high score = more forgetting
            r, c = -r, -c
    else:
        raise DataError(f"unknown ordering {by!r}; choose additive, multiplicative or svd")
    return np.argsort(-r, kind="stable"), np.argsort(-c, kind="stable")


@dataclass
class LearningCorrelation:
    """Per-task mean forgetting vs task learning (``task_loss_before − task_loss_after``)."""

    n: int
    pearson: float
    pearson_p: float
    spearman: float
    spearman_p: float
    learning: list[float]
    mean_forgetting: list[float]


def learning_correlation(F: Any, runs: pd.DataFrame | None) -> LearningCorrelation | None:
    """Correlate each task's mean forgetting with how much it learned; ``None`` if not recorded.

    Why: a task that moves the model more (bigger loss drop) is expected to forget more; when the
    correlation is weak, forgetting is about *what* was learned, not *how much*.
    """
    cols = {"task_loss_before", "task_loss_after"}
    if runs is None or not cols <= set(runs.columns):
        return None
    X = check_matrix(F)
    if len(runs) != X.shape[0]:
        raise DataError(f"runs table has {len(runs)} rows but the matrix has {X.shape[0]}")
    learning = (pd.to_numeric(runs["task_loss_before"], errors="coerce")
                - pd.to_numeric(runs["task_loss_after"], errors="coerce")).to_numpy(float)
    forgetting = np.nanmean(X, axis=1)
    ok = np.isfinite(learning) & np.isfinite(forgetting)
    if ok.sum() < 3 or np.std(learning[ok]) == 0 or np.std(forgetting[ok]) == 0:
        return LearningCorrelation(int(ok.sum()), *([float("nan")] * 4),
                                   learning.tolist(), forgetting.tolist())
    pr = stats.pearsonr(learning[ok], forgetting[ok])
    sr = stats.spearmanr(learning[ok], forgetting[ok])
    return LearningCorrelation(int(ok.sum()), float(pr.statistic), float(pr.pvalue),
                               float(sr.statistic), float(sr.pvalue),
                               learning.tolist(), forgetting.tolist())


# ---- everything at once --------------------------------------------------------------------


@dataclass
class LowRankReport:
    """What ``forgetscope analyze`` prints and saves."""

    shape: tuple[int, int]
    missing_fraction: float
    singular_values: np.ndarray
    r2_by_rank: np.ndarray  # the global metric
    additive: AdditiveFit
    multiplicative: MultiplicativeFit
    learning: LearningCorrelation | None = None
    row_order: np.ndarray = field(default_factory=lambda: np.array([], int))
    col_order: np.ndarray = field(default_factory=lambda: np.array([], int))
    r2_reference_by_rank: np.ndarray | None = None  # the reference metric (sklearn r2_score), when computed

    def r2_table(self) -> pd.DataFrame:
        """One row per rank k with R²(k) (``r2``: global; ``r2_reference`` when computed), the singular value
        and its share of energy."""
        s = self.singular_values
        k = np.arange(1, len(self.r2_by_rank) + 1)
        table = pd.DataFrame({"k": k, "singular_value": s[: len(k)],
                              "energy_share": (s**2 / np.sum(s**2))[: len(k)],
                              "r2": self.r2_by_rank})
        if self.r2_reference_by_rank is not None:
            table["r2_reference"] = self.r2_reference_by_rank
        return table

    def to_dict(self) -> dict[str, Any]:
        out = {
            "shape": list(self.shape),
            "missing_fraction": self.missing_fraction,
            "singular_values": self.singular_values.tolist(),
            "r2_by_rank": self.r2_by_rank.tolist(),
            "r2_by_rank_by_metric": {"global": self.r2_by_rank.tolist()},
            "additive": {"r2": self.additive.r2, "mu": self.additive.mu},
            "multiplicative": {"r2": self.multiplicative.r2},
            "learning_correlation": None,
        }
        if self.r2_reference_by_rank is not None:
            out["r2_by_rank_by_metric"]["reference"] = self.r2_reference_by_rank.tolist()
        if self.learning is not None:
            out["learning_correlation"] = asdict(self.learning)
        return out


def analyze(F: Any, *, max_rank: int | None = None, runs: pd.DataFrame | None = None,
            order_by: Literal["additive", "multiplicative", "svd"] = "additive") -> LowRankReport:
    """Run every low-rank analysis on ``F`` (an array or a ``ForgettingMatrix``)."""
    if runs is None:
        runs = getattr(F, "runs", None)
    X = check_matrix(F)
    row_order, col_order = factor_order(X, order_by)
    r2 = rank_r2_metrics(X, max_rank)
    return LowRankReport(
        shape=(int(X.shape[0]), int(X.shape[1])),
        missing_fraction=float(np.isnan(X).mean()),
        singular_values=singular_spectrum(X),
        r2_by_rank=r2["global"],
        r2_reference_by_rank=r2["reference"],
        additive=fit_additive(X),
        multiplicative=fit_multiplicative(X),
        learning=learning_correlation(X, runs),
        row_order=row_order,
        col_order=col_order,
    )
