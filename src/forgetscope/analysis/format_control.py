"""How much of a task's forgetting its format-only control already shows.

A task with ``control: shuffled_responses`` is the task's prompts paired with other examples' responses
(:mod:`forgetscope.data.controls`): a run on it learns the form of the answers without their content. Its
runs record ``control`` and ``control_of`` (the task it controls). :func:`format_only_share` compares each
controlled task's row with its format-only row, seeds averaged (tasks are the unit):

- Pearson r and the R² of the affine fit ``F_task ≈ a + b · F_format`` (with one regressor, r²);
- the share of the task's mean F that the format-only row reaches (``mean F_format / mean F_task``);
- on the interaction (F double-centred with the real tasks' row and column means, the part that says
  *which* examples a task forgets beyond how much it forgets and how fragile each example is), the same
  affine fit per task, and pooled: the share of the paired tasks' interaction sum of squares the format-only
  rows explain (``interaction_share``), and of every real task's (``interaction_share_all``; unpaired tasks
  contribute nothing explained).

If the format-only rows explain a task's row, its forgetting is a format shift, not task content.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from forgetscope.analysis.null_control import _affine_fit, _r2
from forgetscope.analysis.regime import _runs
from forgetscope.errors import DataError


@dataclass
class FormatOnlyShare:
    """Result of :func:`format_only_share`; ``table()`` has one row per controlled task."""

    per_task: pd.DataFrame
    interaction_share: float  # share of the paired tasks' interaction SS explained by their format-only rows
    interaction_share_all: float  # the same explained SS over every real task's interaction SS

    def table(self) -> pd.DataFrame:
        return self.per_task.copy()

    def to_dict(self) -> dict[str, Any]:
        return {"per_task": self.per_task.to_dict(orient="records"),
                "interaction_share": self.interaction_share,
                "interaction_share_all": self.interaction_share_all}


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return float("nan")
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def _task_rows(values: np.ndarray, tasks: pd.Series) -> dict[str, np.ndarray]:
    """Each task's row, averaged over its runs (seeds)."""
    out: dict[str, np.ndarray] = {}
    for task, idx in tasks.groupby(tasks.to_numpy(), sort=False).groups.items():
        with np.errstate(all="ignore"):
            out[str(task)] = np.nanmean(values[list(idx)], axis=0) if len(idx) > 1 else values[idx[0]]
    return out


def format_only_share(matrix: Any, pairs: dict[str, str] | None = None) -> FormatOnlyShare:
    """Compare every task that has a format-only control with that control (see the module docstring).

    ``matrix`` is a :class:`~forgetscope.store.ForgettingMatrix` whose runs table has ``task``, ``control``
    and ``control_of``; ``pairs`` (control task → task) replaces ``control_of``. A matrix without a
    format-only row, or whose controls name no task of the matrix, is a DataError.
    """
    runs = _runs(matrix)
    values = np.asarray(matrix.values, dtype=float)
    is_control = matrix.control_mask()  # the one definition of a control row
    if not is_control.any():
        raise DataError("this matrix has no format-only rows; add a task with control: shuffled_responses")
    if pairs is None:
        of = runs["control_of"] if "control_of" in runs else pd.Series([None] * len(runs))
        pairs = {str(t): str(o) for t, o in zip(runs["task"][is_control], of[is_control], strict=True)
                 if isinstance(o, str) and o}
    real = _task_rows(values[~is_control], runs["task"][~is_control].reset_index(drop=True))
    controls = _task_rows(values[is_control], runs["task"][is_control].reset_index(drop=True))
    pairs = {c: t for c, t in pairs.items() if c in controls and t in real}
    if not pairs:
        raise DataError("no format-only row names a task of this matrix (control_of); "
                        "pass pairs= to match them")
    R = np.vstack(list(real.values()))
    with np.errstate(all="ignore"):
        col = np.nanmean(R, axis=0) - np.nanmean(R)  # column effects of the real tasks

    def interaction(row: np.ndarray) -> np.ndarray:
        return row - np.nanmean(row) - col

    out, sse, sst_paired = [], 0.0, 0.0
    for ctl, task in pairs.items():
        t, c = real[task], controls[ctl]
        d, e = interaction(t), interaction(c)
        fit = _affine_fit(d, e)
        ok = np.isfinite(d) & np.isfinite(fit)
        sse += float(((d[ok] - fit[ok]) ** 2).sum())
        sst_paired += float((d[ok] ** 2).sum())
        r = _pearson(t, c)
        mean_t, mean_c = float(np.nanmean(t)), float(np.nanmean(c))
        out.append({"task": task, "control_task": ctl, "mean_forgetting": mean_t, "mean_format_only": mean_c,
                    "share_of_mean": mean_c / mean_t if mean_t != 0 else float("nan"),
                    "pearson_r": r, "r2": _r2(t, _affine_fit(t, c)),
                    "interaction_r": _pearson(d, e), "interaction_r2": _r2(d, fit)})
    inter_all = np.vstack([interaction(row) for row in real.values()])
    sst_all = float(np.nansum(inter_all ** 2))
    explained = sst_paired - sse
    return FormatOnlyShare(
        per_task=pd.DataFrame(out),
        interaction_share=explained / sst_paired if sst_paired > 0 else float("nan"),
        interaction_share_all=explained / sst_all if sst_all > 0 else float("nan"))


__all__ = ["FormatOnlyShare", "format_only_share"]
