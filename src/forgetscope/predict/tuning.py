"""Choosing a predictor's setting by task-grouped cross-validation on its known rows.

What ``lowrank`` does to pick its rank and the side-information predictors to pick their rank and
shrinkage: each candidate setting is fitted on the other groups' rows of every fold, the held-out rows
are observed on seeded random probes and completed, and the pooled RMSE over their unprobed entries
scores the setting. Rows of one group (a task's seeds) always leave together, as in the evaluation
protocol, so a setting is not chosen for predicting a task from its own other seed.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.model_selection import GroupKFold

from forgetscope.predict.base import Predictor


def grouped_cv_rmse(X: np.ndarray, groups: np.ndarray | None, candidates: Sequence[Hashable],
                    build: Callable[[Hashable], Predictor], *, probe: int = 30, n_folds: int = 5,
                    draws: int = 1, seed: int = 0, fit_kwargs: Mapping[str, Any] | None = None,
                    per_row: bool = False) -> np.ndarray:
    """Pooled held-out RMSE of every candidate (NaN where nothing could be scored); with ``per_row`` the
    geometric mean of each held-out row's RMSE instead, so every task weighs alike in relative terms
    (pooled, the noisiest tasks decide).

    ``build(candidate)`` returns a fresh predictor; it is fitted on each fold's known rows with
    ``fit_kwargs`` (e.g. the upstream table) and completes the held-out rows from ``draws`` probe sets
    of ``probe`` columns (at most N − 1, drawn among the columns some row observed). Fold ``f``'s first
    draw is ``default_rng([seed, f])``, later ones ``default_rng([seed, f, d])``.
    """
    m, n = X.shape
    groups = np.arange(m).astype(str) if groups is None else np.asarray(groups).astype(str)
    observed = np.flatnonzero(np.isfinite(X).any(0))
    size = max(1, min(int(probe), observed.size - 1))
    sse, cnt = np.zeros(len(candidates)), np.zeros(len(candidates))
    logs: list[list[np.ndarray]] = [[] for _ in candidates]
    folds = GroupKFold(n_splits=min(int(n_folds), np.unique(groups).size), shuffle=True, random_state=seed)
    for f, (train, test) in enumerate(folds.split(X, groups=groups)):
        probes = []
        for d in range(int(draws)):
            rng = np.random.default_rng([seed, f] if d == 0 else [seed, f, d])
            idx = np.sort(observed[rng.choice(observed.size, size, replace=False)])
            truth = X[test].astype(np.float64)
            finite = np.isfinite(truth[:, idx]).any(1)
            if not finite.any():
                continue
            truth, held = truth[finite], X[test][finite]
            truth[:, idx] = np.nan
            probes.append((idx, held[:, idx], truth, np.isfinite(truth)))
        if not probes:
            continue
        for k, candidate in enumerate(candidates):
            fitted = build(candidate).fit(X[train], groups=groups[train], **dict(fit_kwargs or {}))
            for idx, values, truth, ok in probes:
                pred = fitted.predict_rows(idx, values)
                sq = np.where(ok, (pred - truth) ** 2, 0.0)
                sse[k] += float(sq.sum())
                cnt[k] += ok.sum()
                rows = ok.any(1)
                logs[k].append(np.log(np.maximum(sq[rows].sum(1) / ok[rows].sum(1), 1e-300)))
    with np.errstate(invalid="ignore", divide="ignore"):
        if per_row:
            return np.array([np.exp(0.5 * np.concatenate(v).mean()) if v else np.nan for v in logs])
        return np.sqrt(sse / cnt)


def best_candidate(candidates: Sequence[Hashable], rmse: np.ndarray) -> Hashable:
    """The candidate with the lowest RMSE; ties (and an all-NaN score) go to the first."""
    if not np.isfinite(rmse).any():
        return candidates[0]
    return candidates[int(np.nanargmin(rmse))]
