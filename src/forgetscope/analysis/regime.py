"""Is a sweep a regime worth analysing? Per-family forgetting, seed reliability and sane fine-tunes.

A forgetting matrix supports claims about task–example structure only if (1) the tasks forget at all
(mean F > 0 on most of them, on most entries), (2) it is measured above its noise: two seeds of one task
give rows that agree (their Pearson correlation), and (3) the fine-tunes learned their task (held-out
task loss falls) rather than just wrecking the model. :func:`family_summary` reports all three per task
family; :func:`seed_reliability` gives the per-task seed correlations it averages.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd

from forgetscope.errors import DataError


def _runs(matrix: Any) -> pd.DataFrame:
    runs = getattr(matrix, "runs", None)
    if runs is None or "task" not in runs:
        raise DataError("this matrix has no runs table with tasks (a sweep directory is needed)")
    runs = runs.reset_index(drop=True)
    if len(runs) != matrix.values.shape[0]:
        raise DataError(f"runs table has {len(runs)} rows for a matrix with {matrix.values.shape[0]}")
    return runs


def seed_reliability(matrix: Any) -> pd.DataFrame:
    """Per task with two or more seeds: the mean Pearson correlation between its seeds' rows."""
    runs = _runs(matrix)
    out = []
    for task, idx in runs.groupby("task", sort=False).groups.items():
        rows = list(idx)
        if len(rows) < 2:
            continue
        cors = []
        for a, b in combinations(rows, 2):
            x, y = matrix.values[a], matrix.values[b]
            ok = np.isfinite(x) & np.isfinite(y)
            if ok.sum() >= 3 and np.ptp(x[ok]) > 0 and np.ptp(y[ok]) > 0:
                cors.append(float(np.corrcoef(x[ok], y[ok])[0, 1]))
        out.append({"task": task, "n_seeds": len(rows), "seed_corr": float(np.mean(cors)) if cors else np.nan})
    return pd.DataFrame(out, columns=["task", "n_seeds", "seed_corr"])


def family_summary(matrix: Any) -> pd.DataFrame:
    """One row per task family: tasks, runs, share of tasks with mean F > 0, share of entries F > 0, mean F,
    mean seed correlation (NaN without repeated seeds), share of runs whose held-out task loss fell."""
    runs = _runs(matrix)
    family = runs["family"] if "family" in runs else pd.Series(["(unrecorded)"] * len(runs))
    rel = seed_reliability(matrix).set_index("task")["seed_corr"]
    out = []
    for fam in pd.unique(family):
        idx = np.flatnonzero((family == fam).to_numpy())
        sub = matrix.values[idx]
        tasks = runs.loc[idx, "task"]
        task_means = pd.Series(np.nanmean(sub, axis=1), index=idx).groupby(tasks.to_numpy()).mean()
        learned = (runs.loc[idx, "task_loss_after"] < runs.loc[idx, "task_loss_before"]) \
            if {"task_loss_after", "task_loss_before"} <= set(runs) else pd.Series(dtype=bool)
        seed_corr = rel.reindex(pd.unique(tasks)).dropna()
        out.append({"family": fam, "n_tasks": int(tasks.nunique()), "n_runs": len(idx),
                    "share_tasks_forgetting": float((task_means > 0).mean()),
                    "share_entries_forgotten": float(np.nanmean(sub > 0)),
                    "mean_forgetting": float(np.nanmean(sub)),
                    "seed_corr": float(seed_corr.mean()) if len(seed_corr) else np.nan,
                    "share_runs_learning": float(learned.mean()) if len(learned) else np.nan})
    return pd.DataFrame(out)


__all__ = ["family_summary", "seed_reliability"]
