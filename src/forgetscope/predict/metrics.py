"""Scores of predicted rows against true rows, on the entries that were *not* probed.

Why these: RMSE for values; per-task Pearson/Spearman for "does it rank this task's examples right"
(the ranking is what replay uses); F1 of the binary "forgotten" view (F > threshold); and
precision/recall@k of the k examples predicted most forgotten — precision: share of them truly
forgotten, recall: share of the truly forgotten they cover, overlap: share of the true top-k found.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import stats
from sklearn.metrics import f1_score


def _rowwise_corr(true: np.ndarray, pred: np.ndarray, method: str) -> float:
    vals = []
    for t, p in zip(true, pred):
        ok = np.isfinite(t)
        t, p = t[ok], p[ok]
        if t.size < 3 or np.ptp(t) == 0 or np.ptp(p) == 0:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = stats.pearsonr(t, p)[0] if method == "pearson" else stats.spearmanr(t, p)[0]
        if np.isfinite(r):
            vals.append(r)
    return float(np.mean(vals)) if vals else float("nan")


def at_k(true: np.ndarray, score: np.ndarray, k: int, threshold: float) -> tuple[float, float, float]:
    """Mean over rows of (precision@k, recall@k, overlap@k); NaN where a row has < k entries."""
    prec, rec, ovl = [], [], []
    for t, s in zip(true, score):
        ok = np.isfinite(t)
        t, s = t[ok], s[ok]
        if t.size < k or k < 1:
            continue
        top = np.argpartition(-s, k - 1)[:k]
        forgotten = t > threshold
        prec.append(forgotten[top].mean())
        if forgotten.any():
            rec.append(forgotten[top].sum() / forgotten.sum())
        true_top = np.argpartition(-t, k - 1)[:k]
        ovl.append(np.intersect1d(top, true_top).size / k)
    def mean(v: list[float]) -> float:
        return float(np.mean(v)) if v else float("nan")

    return mean(prec), mean(rec), mean(ovl)


def score_rows(true: np.ndarray, pred: np.ndarray, *, threshold: float = 0.0, ks: tuple[int, ...] = (10, 100),
               probability: bool = False) -> dict[str, float]:
    """All metrics for rows ``true``/``pred`` (same shape; NaN in ``true`` = not scored).

    For probability outputs (``logistic``) only the ranking and binary metrics are meaningful:
    RMSE and Pearson are NaN, "forgotten" is ``pred > 0.5``.
    """
    ok = np.isfinite(true)
    t, p = true[ok], pred[ok]
    out: dict[str, float] = {
        "rmse": float("nan") if probability else float(np.sqrt(np.mean((t - p) ** 2))),
        "pearson": float("nan") if probability else _rowwise_corr(true, pred, "pearson"),
        "spearman": _rowwise_corr(true, pred, "spearman"),
        "f1": float(f1_score(t > threshold, p > (0.5 if probability else threshold), zero_division=0)),
        "forgotten_share": float(np.mean(t > threshold)),
    }
    for k in ks:
        out[f"precision@{k}"], out[f"recall@{k}"], out[f"overlap@{k}"] = at_k(true, pred, k, threshold)
    return out


def precision_curve(true: np.ndarray, score: np.ndarray, ks: np.ndarray, threshold: float
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Mean precision@k and recall@k over rows for every k in ``ks`` (one sort per row)."""
    prec = np.zeros(len(ks))
    rec = np.zeros(len(ks))
    n_prec = np.zeros(len(ks))
    n_rec = np.zeros(len(ks))
    for t, s in zip(true, score):
        ok = np.isfinite(t)
        forgotten = (t[ok] > threshold)[np.argsort(-s[ok], kind="stable")]
        hits = np.cumsum(forgotten)
        valid = ks <= forgotten.size
        kk = ks[valid]
        prec[valid] += hits[kk - 1] / kk
        n_prec[valid] += 1
        if forgotten.any():
            rec[valid] += hits[kk - 1] / forgotten.sum()
            n_rec[valid] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return prec / n_prec, rec / n_rec
