"""Scores of predicted rows against true rows, on the entries that were *not* probed.

Why these: RMSE for values; per-task Pearson/Spearman for "does it rank this task's examples right"
(the ranking is what replay uses); F1, precision and recall of the binary "forgotten" view
(``F > threshold``, where the threshold is a noise margin τ rather than the bare sign, see
:func:`forgetscope.predict.evaluate.noise_margin`); and precision/recall@k of the k examples predicted
most forgotten — precision: share of them truly forgotten, recall: share of the truly forgotten they
cover, overlap: share of the true top-k found. For binary forgetting (0/1 truth, predicted
probabilities) :func:`score_binary` adds AUC-ROC, as the reference protocol reports it.

Scores are built from per-row statistics (:func:`row_stats`) and pooled over rows (:func:`pool`), so
rows predicted in different cross-validation folds pool into one score without keeping every
prediction: RMSE and F1 pool the entries of all rows, correlations and @k scores are means over rows.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score


def _at_k_row(t: np.ndarray, s: np.ndarray, k: int, threshold: float) -> tuple[float, float, float]:
    """(precision@k, recall@k, overlap@k) of one row's finite entries; NaN where undefined."""
    if t.size < k or k < 1:
        return float("nan"), float("nan"), float("nan")
    top = np.argpartition(-s, k - 1)[:k]
    forgotten = t > threshold
    prec = float(forgotten[top].mean())
    rec = float(forgotten[top].sum() / forgotten.sum()) if forgotten.any() else float("nan")
    in_true_top = np.zeros(t.size, dtype=bool)
    in_true_top[np.argpartition(-t, k - 1)[:k]] = True
    return prec, rec, float(in_true_top[top].sum()) / k


def at_k(true: np.ndarray, score: np.ndarray, k: int, threshold: float) -> tuple[float, float, float]:
    """Mean over rows of (precision@k, recall@k, overlap@k); NaN where a row has < k entries."""
    vals = np.array([_at_k_row(t[np.isfinite(t)], s[np.isfinite(t)], k, threshold)
                     for t, s in zip(true, score)]).reshape(-1, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = np.nanmean(vals, axis=0) if len(vals) else np.full(3, np.nan)
    return float(out[0]), float(out[1]), float(out[2])


def _rowwise_pearson(T: np.ndarray, P: np.ndarray) -> np.ndarray:
    """Pearson r of each row pair of two equally shaped blocks; NaN for < 3 entries or a constant row."""
    tc = T - T.mean(1, keepdims=True)
    pc = P - P.mean(1, keepdims=True)
    den = np.sqrt((tc**2).sum(1) * (pc**2).sum(1))
    flat = (np.ptp(T, axis=1) == 0) | (np.ptp(P, axis=1) == 0) | (T.shape[1] < 3)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (tc * pc).sum(1) / den
    return np.where(flat | ~np.isfinite(r), np.nan, np.clip(r, -1.0, 1.0))


def _row_correlations(true: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row Pearson and Spearman over each row's finite entries, rows with one mask at a time."""
    pear = np.full(true.shape[0], np.nan)
    spear = np.full(true.shape[0], np.nan)
    masks = np.isfinite(true)
    by_mask: dict[bytes, list[int]] = {}
    for r, mask in enumerate(masks):
        by_mask.setdefault(np.packbits(mask).tobytes(), []).append(r)
    for members in by_mask.values():
        rows = np.asarray(members)
        cols = masks[rows[0]]
        if cols.sum() < 3:
            continue
        T, P = true[np.ix_(rows, cols)], pred[np.ix_(rows, cols)]
        pear[rows] = _rowwise_pearson(T, P)
        spear[rows] = _rowwise_pearson(stats.rankdata(T, axis=1), stats.rankdata(P, axis=1))
    return pear, spear


def row_stats(true: np.ndarray, pred: np.ndarray, *, threshold: float = 0.0, ks: Sequence[int] = (10, 100),
              probability: bool = False) -> pd.DataFrame:
    """One row of sufficient statistics per predicted row (NaN in ``true`` = not scored).

    ``n``, ``sse`` (squared error sum), ``tp``/``fp``/``fn`` of "forgotten" (truth ``> threshold``
    against prediction ``> threshold``, or ``> 0.5`` for probabilities), per-row ``pearson`` and
    ``spearman``, and ``precision@k`` / ``recall@k`` / ``overlap@k``.
    """
    true, pred = np.asarray(true, np.float64), np.asarray(pred, np.float64)
    pred_cut = 0.5 if probability else threshold
    ok = np.isfinite(true)
    t0 = np.where(ok, true, 0.0)
    yt, yp = ok & (t0 > threshold), ok & (pred > pred_cut)
    out: dict[str, np.ndarray] = {"n": ok.sum(1), "sse": np.where(ok, (t0 - pred) ** 2, 0.0).sum(1),
                                  "tp": (yt & yp).sum(1), "fp": (~yt & yp & ok).sum(1), "fn": (yt & ~yp).sum(1)}
    out["pearson"], out["spearman"] = _row_correlations(true, pred)
    for k in ks:
        vals = np.array([_at_k_row(t[m], p[m], k, threshold) for t, p, m in zip(true, pred, ok)]).reshape(-1, 3)
        out[f"precision@{k}"], out[f"recall@{k}"], out[f"overlap@{k}"] = vals[:, 0], vals[:, 1], vals[:, 2]
    return pd.DataFrame(out)


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else 0.0


def pool(rows: pd.DataFrame, *, ks: Sequence[int] = (10, 100), probability: bool = False) -> dict[str, float]:
    """Pool :func:`row_stats` rows into one score: entries pooled for RMSE/F1, means over rows otherwise."""
    n = float(rows["n"].sum())
    tp, fp, fn = (float(rows[c].sum()) for c in ("tp", "fp", "fn"))

    def mean(col: str) -> float:
        v = rows[col].to_numpy(np.float64)
        v = v[np.isfinite(v)]
        return float(v.mean()) if v.size else float("nan")

    out = {
        "rmse": float("nan") if probability or n == 0 else float(np.sqrt(rows["sse"].sum() / n)),
        "pearson": float("nan") if probability else mean("pearson"),
        "spearman": mean("spearman"),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),  # sklearn's f1_score with zero_division=0
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "forgotten_share": float((tp + fn) / n) if n else float("nan"),
    }
    for k in ks:
        for m in ("precision", "recall", "overlap"):
            out[f"{m}@{k}"] = mean(f"{m}@{k}")
    return out


def score_rows(true: np.ndarray, pred: np.ndarray, *, threshold: float = 0.0, ks: tuple[int, ...] = (10, 100),
               probability: bool = False) -> dict[str, float]:
    """All metrics for rows ``true``/``pred`` (same shape; NaN in ``true`` = not scored).

    For probability outputs (``logistic``) only the ranking and binary metrics are meaningful:
    RMSE and Pearson are NaN, "forgotten" is ``pred > 0.5``.
    """
    return pool(row_stats(true, pred, threshold=threshold, ks=ks, probability=probability), ks=ks,
                probability=probability)


def score_binary(true: np.ndarray, score: np.ndarray) -> dict[str, float]:
    """Binary forgetting (truth 0/1, NaN = not scored) against a score in [0, 1], pooled over entries.

    F1, precision and recall of ``score > 0.5`` and AUC-ROC of the raw score (NaN when the scored
    entries hold one class only), all from :mod:`sklearn.metrics`.
    """
    t = np.asarray(true, np.float64)
    ok = np.isfinite(t)
    y, s = t[ok] > 0.5, np.asarray(score, np.float64)[ok]
    yp = s > 0.5
    auc = float(roc_auc_score(y, s)) if 0 < y.sum() < y.size else float("nan")
    return {"f1": float(f1_score(y, yp, zero_division=0)), "precision": float(precision_score(y, yp, zero_division=0)),
            "recall": float(recall_score(y, yp, zero_division=0)), "auc": auc,
            "forgotten_share": float(y.mean()) if y.size else float("nan")}


def precision_curve(true: np.ndarray, score: np.ndarray, ks: np.ndarray, threshold: float, *,
                    sums: bool = False) -> tuple[np.ndarray, ...]:
    """Mean precision@k and recall@k over rows for every k in ``ks`` (one sort per row).

    ``sums=True`` returns the sums and row counts instead ``(prec_sum, n_prec, rec_sum, n_rec)``, so
    curves of several folds pool exactly.
    """
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
    if sums:
        return prec, n_prec, rec, n_rec
    with np.errstate(invalid="ignore", divide="ignore"):
        return prec / n_prec, rec / n_rec
