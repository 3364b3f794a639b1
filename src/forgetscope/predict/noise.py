"""The noise floor of each task's row, and how much of the gap to it a predictor closes.

Two seeds of one task give two measurements of the same forgetting. No predictor can predict one seed's
row better than the task's expected row does, and that row misses a seed's measurement by the seed
noise σ. With seed rows ``F_s`` of a task the floor is the pooled within-task sd over entries,

    floor² = mean_j Σ_s (F_sj − mean_s F_sj)² / (k − 1),

which for two seeds is ``mean_j (F_0j − F_1j)² / 2``. Rows that differ in anything but the seed (task,
strategy, steps, …: :data:`SEED_INVARIANT`) are never pooled as seeds.
``floor_centred`` is the same after removing each row's mean: a seed that forgets more overall is a level
the probe pins, so it is the floor for a predictor that learns the row's level from its probe.

Per task and predictor, the **share of the gap closed** is

    (RMSE_additive − RMSE_pred) / (RMSE_additive − floor):

0 is no better than ``additive``, 1 is as good as the seed noise allows. It is only read where the gap is
well above noise: a task is **above noise** when additive's RMSE exceeds :data:`ABOVE_NOISE` × its floor
(where additive already sits at the floor the ratio divides noise by noise). Summaries give the median over
the tasks above noise; the pooled RMSE of a table is dominated by the noisiest tasks and is no substitute.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from forgetscope.errors import DataError

#: a task is above noise when additive's RMSE is more than this multiple of its noise floor
ABOVE_NOISE = 1.2
NOISE_COLUMNS = ["task", "n_seeds", "n_entries", "floor", "floor_centred", "seed_corr"]
#: runs-table columns that must agree for two rows to differ "only by seed"
SEED_INVARIANT = ("task", "strategy", "strategy_options", "method", "steps", "lr", "batch_size", "max_length",
                  "lora_rank")


def _seed_sets(runs: pd.DataFrame, keys: Sequence[str]) -> list[tuple[str, np.ndarray]]:
    """(task, row indices) of every set of rows that differ only by seed, with at least 2 distinct seeds."""
    out = []
    runs = runs.reset_index(drop=True)
    for _, idx in runs.groupby(list(keys), dropna=False, sort=False).indices.items():
        idx = np.asarray(idx)
        seeds = runs["seed"].to_numpy()[idx]
        _, first = np.unique(seeds.astype(str), return_index=True)
        if first.size >= 2:
            out.append((str(runs["task"].iloc[idx[0]]), idx[np.sort(first)]))
    return out


def task_noise(matrix: Any, *, required: bool = False) -> pd.DataFrame:
    """Per task with at least 2 seeds: seeds, entries, ``floor``, ``floor_centred`` and the mean Pearson
    correlation of its seeds' rows (``seed_corr``). Empty without such tasks, or a DataError when
    ``required``."""
    X = np.asarray(getattr(matrix, "values", matrix), np.float64)
    runs = getattr(matrix, "runs", None)
    if runs is None or not {"task", "seed"} <= set(runs.columns) or len(runs) != X.shape[0]:
        if required:
            raise DataError("a noise floor needs a runs table with task and seed columns (a sweep directory)")
        return pd.DataFrame(columns=NOISE_COLUMNS)
    keys = [c for c in SEED_INVARIANT if c in runs.columns]
    acc: dict[str, dict[str, Any]] = {}
    for task, rows in _seed_sets(runs, keys):
        V = X[rows]
        ok = np.isfinite(V).all(0)
        V = V[:, ok]
        if V.shape[1] < 2:
            continue
        k = V.shape[0]
        a = acc.setdefault(task, {"ss": 0.0, "ss_c": 0.0, "df": 0.0, "n": 0, "k": 0, "cors": []})
        a["ss"] += float(((V - V.mean(0)) ** 2).sum())
        Vc = V - V.mean(1, keepdims=True)
        a["ss_c"] += float(((Vc - Vc.mean(0)) ** 2).sum())
        a["df"] += (k - 1) * V.shape[1]
        a["n"] += V.shape[1]
        a["k"] = max(a["k"], k)
        a["cors"] += [float(np.corrcoef(V[i], V[j])[0, 1]) for i in range(k) for j in range(i + 1, k)
                      if np.ptp(V[i]) > 0 and np.ptp(V[j]) > 0]
    if not acc and required:
        raise DataError("a noise floor needs at least 2 seeds of a task; no task of this matrix was run with "
                        "several seeds")
    rows = [{"task": t, "n_seeds": a["k"], "n_entries": a["n"], "floor": float(np.sqrt(a["ss"] / a["df"])),
             "floor_centred": float(np.sqrt(a["ss_c"] / a["df"])),
             "seed_corr": float(np.mean(a["cors"])) if a["cors"] else np.nan} for t, a in acc.items()]
    return pd.DataFrame(rows, columns=NOISE_COLUMNS)


def gap_closed(tasks: pd.DataFrame, noise: pd.DataFrame, *, baseline: str = "additive",
               floor: str = "floor") -> pd.DataFrame:
    """Per (probe size, predictor, task with a floor): RMSE, additive's RMSE, the floor, ``above_noise``,
    ``rmse_ratio`` (to additive) and ``gap_closed`` (NaN below noise). ``tasks`` is a per-task error table
    (:attr:`~forgetscope.predict.evaluate.CVResult.tasks`)."""
    cols = ["probe_size", "predictor", "method", "task", "rmse", "rmse_additive", "floor", "above_noise",
            "rmse_ratio", "gap_closed"]
    if not len(tasks) or not len(noise) or baseline not in set(tasks["predictor"]):
        return pd.DataFrame(columns=cols)
    base = tasks.loc[tasks["predictor"] == baseline, ["probe_size", "task", "rmse"]].rename(
        columns={"rmse": "rmse_additive"})
    t = tasks.merge(base, on=["probe_size", "task"]).merge(
        noise[["task", floor]].rename(columns={floor: "floor"}), on="task")
    t["above_noise"] = t["rmse_additive"] > ABOVE_NOISE * t["floor"]
    with np.errstate(invalid="ignore", divide="ignore"):
        t["rmse_ratio"] = t["rmse"] / t["rmse_additive"]
        t["gap_closed"] = np.where(t["above_noise"], (t["rmse_additive"] - t["rmse"])
                                   / (t["rmse_additive"] - t["floor"]), np.nan)
    return t[cols].reset_index(drop=True)


def gap_summary(gaps: pd.DataFrame) -> pd.DataFrame:
    """Per (probe size, predictor): tasks with a floor, tasks above noise, the median and mean share of the
    gap closed over those tasks, the median per-task RMSE ratio to additive over every task with a floor."""
    cols = ["probe_size", "predictor", "method", "n_tasks", "n_above_noise", "gap_closed_median",
            "gap_closed_mean", "rmse_ratio_median", "median_floor_ratio"]
    if not len(gaps):
        return pd.DataFrame(columns=cols)
    out = []
    for (size, label), g in gaps.groupby(["probe_size", "predictor"], sort=False):
        above = g[g["above_noise"]]
        out.append({"probe_size": size, "predictor": label, "method": g["method"].iloc[0], "n_tasks": len(g),
                    "n_above_noise": len(above),
                    "gap_closed_median": float(above["gap_closed"].median()) if len(above) else np.nan,
                    "gap_closed_mean": float(above["gap_closed"].mean()) if len(above) else np.nan,
                    "rmse_ratio_median": float(g["rmse_ratio"].median()),
                    "median_floor_ratio": float((g["floor"] / g["rmse_additive"]).median())})
    return pd.DataFrame(out, columns=cols)
