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


def regime_verdict(matrix: Any, criteria: Any, *, uniform_loss: float,
                   binary: Any | None = None) -> dict[str, Any]:
    """The pre-registered criteria of a usable regime, measured on one candidate's sweep.

    ``matrix`` holds the plain-text (lm) columns with the sweep's runs and upstream tables; ``binary`` the
    binary forgetting matrix of its instruction pairs (or None); ``criteria`` has the fields of
    :class:`forgetscope.experiments.regime_pilot.RegimeCriteria`; ``uniform_loss`` is log(vocabulary size).
    Returns per-run damage, each criterion's value, target and verdict, and ``usable`` (all met)."""
    runs = _runs(matrix)
    if matrix.upstream is None or "loss_before" not in matrix.upstream:
        raise DataError("regime criteria need the base losses (upstream table with loss_before)")
    base = matrix.upstream["loss_before"].to_numpy(dtype=float)
    base_mean = float(np.nanmean(base))
    mean_f = np.nanmean(matrix.values, axis=1)
    after_mean = np.nanmean(matrix.values + base[None, :], axis=1)
    learned = (runs["task_loss_after"] < runs["task_loss_before"]).to_numpy()
    rel = seed_reliability(matrix)["seed_corr"].dropna()
    per_run = pd.DataFrame({"run_id": matrix.row_names, "task": runs["task"], "seed": runs.get("seed"),
                            "task_loss_before": runs["task_loss_before"], "task_loss_after": runs["task_loss_after"],
                            "mean_forgetting": mean_f, "mean_loss_after": after_mean,
                            "forgetting_share_of_base": mean_f / base_mean})
    checks: dict[str, dict[str, Any]] = {}
    if criteria.learns:
        checks["learns"] = {"value": float(learned.mean()), "target": 1.0, "met": bool(learned.all())}
    seed_r = float(rel.mean()) if len(rel) else float("nan")
    checks["seed_r"] = {"value": seed_r, "target": criteria.seed_r_min,
                        "met": bool(np.isfinite(seed_r) and seed_r >= criteria.seed_r_min)}
    worst_share = float(np.nanmax(mean_f / base_mean))
    checks["damage"] = {"value": worst_share, "target": criteria.mean_f_max_share_of_base_loss,
                        "met": bool(worst_share <= criteria.mean_f_max_share_of_base_loss)}
    if criteria.below_uniform:
        worst = float(np.nanmax(after_mean))
        checks["below_uniform"] = {"value": worst, "target": float(uniform_loss), "met": bool(worst <= uniform_loss)}
    if binary is not None:
        b = np.asarray(binary.values, dtype=float)
        known, lost = int(np.isfinite(b).sum()), float(np.nansum(b))
        per_run["answers_known"] = np.isfinite(b).sum(axis=1)
        per_run["answers_lost"] = np.nansum(b, axis=1)
        retained = 1.0 - lost / known if known else float("nan")
        measurable = known >= criteria.answers_min_known * len(runs)
        checks["answers_retained"] = {"value": retained, "target": criteria.answers_retained_min,
                                      "known_before_per_run": known / max(len(runs), 1), "measurable": measurable,
                                      "met": bool(measurable and retained >= criteria.answers_retained_min)}
    else:
        checks["answers_retained"] = {"value": None, "target": criteria.answers_retained_min,
                                      "measurable": False, "met": False}
    return {"n_runs": len(runs), "n_tasks": int(runs["task"].nunique()), "base_mean_loss": base_mean,
            "mean_forgetting": float(np.nanmean(mean_f)),
            "mean_task_loss_after": float(runs["task_loss_after"].mean()),
            "criteria": checks, "usable": all(c["met"] for c in checks.values()), "per_run": per_run}


def select_regime(verdicts: dict[str, dict[str, Any]], *, update_size: dict[str, float],
                  tie_nats: float = 0.01) -> dict[str, Any]:
    """The pre-registered selection rule: among usable candidates, the lowest mean held-out task loss after
    fine-tuning; candidates within ``tie_nats`` of the best are tied and the smallest update (lr x steps)
    wins. Returns the choice (None when no candidate is usable) and why."""
    usable = {k: v for k, v in verdicts.items() if v["usable"]}
    if not usable:
        return {"chosen": None, "reason": "no candidate meets every criterion: no usable regime"}
    best = min(v["mean_task_loss_after"] for v in usable.values())
    tied = sorted((k for k, v in usable.items() if v["mean_task_loss_after"] <= best + tie_nats),
                  key=lambda k: (update_size[k], k))
    return {"chosen": tied[0], "usable": sorted(usable), "tied": tied,
            "reason": f"lowest mean held-out task loss among usable candidates ({best:.4f} nats; ties within "
                      f"{tie_nats} broken by the smaller lr x steps)"}


__all__ = ["family_summary", "regime_verdict", "seed_reliability", "select_regime"]
