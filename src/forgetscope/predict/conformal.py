"""Forecast intervals with a stated coverage: split-conformal over task-grouped held-out rows.

A completed row needs an interval a reader can trust: "90 %" should mean that about 90 % of the
unprobed examples' true forgetting falls inside. The spread of neighbour rows or of bootstrap refits does
not promise that. Split-conformal prediction does, under one assumption — the new task is exchangeable
with the known ones — and needs no model of the errors:

1. hold out each known task in turn (all its rows), fit the predictor on the other tasks, and complete
   the held-out rows from their values on the *same probe examples* the new task was observed on;
2. the absolute residuals on the unprobed examples are the conformity scores;
3. the half-width is their ⌈(n + 1)·c⌉ / n empirical quantile for coverage ``c`` (n scores), so the
   interval ``F̂ ± q`` covers a new entry with probability ≥ c (marginally, over tasks and examples).

Entries of one row are not independent, so coverage holds over tasks on average, not per example. At
least :data:`MIN_TASKS` known tasks are needed; with fewer there is nothing to calibrate on.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from forgetscope.errors import ConfigError, DataError

DEFAULT_COVERAGE = 0.9
MIN_TASKS = 3

#: fit on (rows, their groups) and complete R rows from their values on ``idx`` -> R x N predictions
FitPredict = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def check_coverage(coverage: float) -> float:
    """``coverage`` if it is in (0, 1), else a one-line ConfigError."""
    if not (isinstance(coverage, (int, float)) and 0 < float(coverage) < 1):
        raise ConfigError(f"interval coverage must be between 0 and 1 (exclusive), got {coverage}")
    return float(coverage)


def conformal_quantile(scores: np.ndarray, coverage: float) -> float:
    """The ⌈(n + 1)·c⌉ / n empirical quantile of ``scores`` (inf when n is too small for that level)."""
    s = np.sort(np.asarray(scores, np.float64)[np.isfinite(scores)])
    n = s.size
    rank = int(np.ceil((n + 1) * check_coverage(coverage)))
    return float("inf") if n == 0 or rank > n else float(s[rank - 1])


def task_out_scores(known: np.ndarray, groups: np.ndarray, idx: np.ndarray, fit_predict: FitPredict) -> np.ndarray:
    """Absolute residuals on the unprobed entries of every known row, each predicted by a fit on the other
    tasks from its own values on the probe examples ``idx``."""
    groups = np.asarray(groups)
    names = np.unique(groups)
    if names.size < MIN_TASKS:
        raise DataError(f"forecast intervals need at least {MIN_TASKS} known tasks to calibrate on, the sweep has "
                        f"{names.size}; run more tasks or forecast without intervals")
    unprobed = np.ones(known.shape[1], dtype=bool)
    unprobed[idx] = False
    scores = []
    for g in names:
        held = groups == g
        pred = fit_predict(known[~held], groups[~held], idx, known[held][:, idx], np.flatnonzero(held))
        res = np.abs(known[held][:, unprobed] - pred[:, unprobed])
        scores.append(res[np.isfinite(res)])
    return np.concatenate(scores)


__all__ = ["DEFAULT_COVERAGE", "MIN_TASKS", "check_coverage", "conformal_quantile", "task_out_scores"]
