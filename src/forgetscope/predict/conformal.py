"""Forecast intervals with a stated coverage: split-conformal over task-grouped held-out rows.

A completed row needs an interval a reader can trust: "90 %" should mean that about 90 % of the
unprobed examples' true forgetting falls inside. The spread of neighbour rows or of bootstrap refits does
not promise that. Split-conformal prediction does, under one assumption — the new task is exchangeable
with the known ones — and needs no model of the errors:

1. hold out each known task in turn (all its rows), fit the predictor on the other tasks, and complete
   the held-out rows from their values on the *same probe examples* the new task was observed on;
2. the residuals on the unprobed examples give the conformity scores;
3. the half-width comes from their ⌈(n + 1)·c⌉ / n empirical quantile for coverage ``c`` (n scores), so
   the interval covers a new entry with probability ≥ c — *marginally*, over tasks and examples pooled.

**Two kinds of interval** (``interval=``):

* ``absolute``: scores ``|y − ŷ|``, one half-width ``q`` for every row. Pooled coverage holds, but a
  task whose row is noisier than most is under-covered and a quiet one over-covered (docs/replication.md
  gives the numbers on the SmolLM2 study).
* ``normalized`` (the default): difficulty-scaled scores ``|y − ŷ| / σ̂``, where ``σ̂`` of a row is the
  RMS of the predictor's residuals on that row's *probe* entries (observed − completed; known at
  prediction time), floored at :data:`SCALE_FLOOR` of the calibration rows' median σ̂ so that a row
  the predictor happens to fit exactly on the probe keeps a usable width. The half-width of a row is
  ``q · σ̂``: rows that stray from the predictor where they were measured get wider intervals. Pooled
  coverage holds as before (the scores are exchangeable in the same way); per-task coverage is much
  closer to the target.

Entries of one row are not independent, so coverage holds over tasks on average, not per example:
report per-task coverage (:func:`task_coverage`: min, 10th percentile, share of tasks below
``c − 0.1``) beside the pooled, marginal one. At least :data:`MIN_TASKS` known tasks are needed; with
fewer there is nothing to calibrate on.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from forgetscope.errors import ConfigError, DataError

DEFAULT_COVERAGE = 0.9
MIN_TASKS = 3
#: interval kinds (module doc); ``normalized`` is the default
INTERVALS = ("absolute", "normalized")
DEFAULT_INTERVAL = "normalized"
#: the smallest σ̂ of a normalized interval, as a share of the calibration rows' median σ̂
SCALE_FLOOR = 0.25
#: a task counts as under-covered below ``coverage − UNDER_MARGIN``
UNDER_MARGIN = 0.1

#: fit on (rows, their groups) and complete R rows from their values on ``idx`` -> R x N predictions
FitPredict = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]
#: one held-out known task: (its rows' measured values, their completion by a fit without the task), R x N each
HeldOut = tuple[np.ndarray, np.ndarray]


def check_coverage(coverage: float) -> float:
    """``coverage`` if it is in (0, 1), else a one-line ConfigError."""
    if not (isinstance(coverage, (int, float)) and 0 < float(coverage) < 1):
        raise ConfigError(f"interval coverage must be between 0 and 1 (exclusive), got {coverage}")
    return float(coverage)


def check_interval(interval: str) -> str:
    """``interval`` if it is one of :data:`INTERVALS`, else a one-line ConfigError."""
    if interval not in INTERVALS:
        raise ConfigError(f"unknown interval {interval!r}; choose {' or '.join(INTERVALS)}")
    return str(interval)


def conformal_quantile(scores: np.ndarray, coverage: float) -> float:
    """The ⌈(n + 1)·c⌉ / n empirical quantile of ``scores`` (inf when n is too small for that level)."""
    s = np.sort(np.asarray(scores, np.float64)[np.isfinite(scores)])
    n = s.size
    rank = int(np.ceil((n + 1) * check_coverage(coverage)))
    return float("inf") if n == 0 or rank > n else float(s[rank - 1])


def probe_scale(observed: np.ndarray, completed: np.ndarray) -> np.ndarray:
    """Per row, the RMS of ``observed − completed`` over its finite probe entries (R x |S| each; NaN
    for a row with none): how far the row strays from the predictor where it was measured."""
    r = np.atleast_2d(np.asarray(observed, np.float64)) - np.atleast_2d(np.asarray(completed, np.float64))
    count = np.isfinite(r).sum(1)
    sq = np.nansum(r**2, axis=1)
    return np.sqrt(np.divide(sq, count, out=np.full(r.shape[0], np.nan), where=count > 0))


def _unprobed(n: int, idx: np.ndarray) -> np.ndarray:
    mask = np.ones(n, dtype=bool)
    mask[np.asarray(idx, dtype=np.intp)] = False
    return mask


@dataclass(frozen=True)
class Band:
    """A calibrated interval: ``quantile`` of the scores, and the σ̂ floor (normalized; 0 for absolute).

    A row's half-width is ``quantile · scale`` (:meth:`halfwidth`); scale is 1 for ``absolute``.
    """

    interval: str
    coverage: float
    quantile: float
    floor: float
    n_scores: int
    n_tasks: int

    def scale(self, observed: np.ndarray, completed: np.ndarray) -> np.ndarray:
        """σ̂ per row from its probe values and their completion (R x |S| each); ones for ``absolute``."""
        rows = np.atleast_2d(np.asarray(observed, np.float64)).shape[0]
        if self.interval == "absolute":
            return np.ones(rows)
        s = probe_scale(observed, completed)
        return np.maximum(np.where(np.isfinite(s), s, self.floor), self.floor)

    def halfwidth(self, observed: np.ndarray, completed: np.ndarray) -> np.ndarray:
        """The half-width of each row's interval (R), from its probe values and their completion."""
        return self.quantile * self.scale(observed, completed)

    def describe(self) -> str:
        """One line on how the interval is made, for settings and reports."""
        if self.interval == "absolute":
            return ("split-conformal, absolute: one half-width from the absolute residuals on the unprobed "
                    "entries of each known task, completed by a fit on the other tasks from the same probe examples")
        return ("split-conformal, normalized: residuals on the unprobed entries of each known task (completed by a "
                "fit on the other tasks from the same probe examples) divided by the RMS of that row's probe "
                f"residuals (floored at {SCALE_FLOOR:g} × the median); a row's half-width is the quantile × its own "
                "probe-residual RMS")


def calibrate(held_out: Sequence[HeldOut], idx: np.ndarray, coverage: float,
              interval: str = DEFAULT_INTERVAL) -> Band:
    """The :class:`Band` at ``coverage`` from the held-out known tasks (one (values, completion) pair each)."""
    check_interval(interval)
    check_coverage(coverage)
    if not held_out:
        raise DataError(f"forecast intervals need at least {MIN_TASKS} known tasks to calibrate on, got none")
    n = held_out[0][0].shape[1]
    idx = np.asarray(idx, dtype=np.intp)
    unprobed = _unprobed(n, idx)
    floor = 0.0
    if interval == "normalized":
        scales = np.concatenate([probe_scale(y[:, idx], p[:, idx]) for y, p in held_out])
        scales = scales[np.isfinite(scales)]
        floor = max(SCALE_FLOOR * float(np.median(scales)) if scales.size else 0.0, 1e-12)
    unit = Band(interval, float(coverage), 1.0, floor, 0, len(held_out))  # half-width = σ̂: the score's divisor
    scores = []
    for y, p in held_out:
        y, p = np.asarray(y, np.float64), np.asarray(p, np.float64)
        s = np.abs(y[:, unprobed] - p[:, unprobed]) / unit.scale(y[:, idx], p[:, idx])[:, None]
        scores.append(s[np.isfinite(s)])
    flat = np.concatenate(scores)
    return Band(interval, float(coverage), conformal_quantile(flat, coverage), floor, int(flat.size), len(held_out))


def task_out_predictions(known: np.ndarray, groups: np.ndarray, idx: np.ndarray,
                         fit_predict: FitPredict) -> list[HeldOut]:
    """Every known task's rows and their completion by a fit on the other tasks, from the rows' own values
    on the probe examples ``idx``; at least :data:`MIN_TASKS` tasks."""
    groups = np.asarray(groups)
    names = np.unique(groups)
    if names.size < MIN_TASKS:
        raise DataError(f"forecast intervals need at least {MIN_TASKS} known tasks to calibrate on, the sweep has "
                        f"{names.size}; run more tasks or forecast without intervals")
    out = []
    for g in names:
        held = groups == g
        rows = np.asarray(known[held], np.float64)
        out.append((rows, fit_predict(known[~held], groups[~held], idx, rows[:, idx], np.flatnonzero(held))))
    return out


def task_out_scores(known: np.ndarray, groups: np.ndarray, idx: np.ndarray, fit_predict: FitPredict) -> np.ndarray:
    """Absolute residuals on the unprobed entries of every known row, each predicted by a fit on the other
    tasks from its own values on the probe examples ``idx``."""
    unprobed = _unprobed(known.shape[1], idx)
    res = [np.abs(y[:, unprobed] - p[:, unprobed]) for y, p in task_out_predictions(known, groups, idx, fit_predict)]
    return np.concatenate([r[np.isfinite(r)] for r in res])


def task_coverage(per_task: Mapping[Any, float] | Sequence[float] | np.ndarray, coverage: float) -> dict[str, float]:
    """Summary of per-task coverages: ``task_min``, ``task_p10`` (the 10th percentile, numpy's linear
    interpolation), ``tasks_below`` (the share of tasks below ``coverage − UNDER_MARGIN``) and ``n_tasks``."""
    values = list(per_task.values()) if isinstance(per_task, Mapping) else list(per_task)
    cov = np.asarray(values, np.float64)
    cov = cov[np.isfinite(cov)]
    if not cov.size:
        return {"task_min": float("nan"), "task_p10": float("nan"), "tasks_below": float("nan"), "n_tasks": 0}
    return {"task_min": float(cov.min()), "task_p10": float(np.quantile(cov, 0.1)),
            "tasks_below": float(np.mean(cov < check_coverage(coverage) - UNDER_MARGIN)), "n_tasks": int(cov.size)}


class CoverageTally:
    """Entries inside intervals, pooled and per task, summed over splits (what :func:`coverage_metrics` reads)."""

    def __init__(self) -> None:
        self.inside: dict[str, float] = defaultdict(float)
        self.total: dict[str, float] = defaultdict(float)
        self.width = 0.0

    def add(self, truth: np.ndarray, pred: np.ndarray, half: np.ndarray, tasks: Sequence[Any]) -> None:
        """Count the finite entries of ``truth`` (R x N; NaN = not scored) within ``pred ± half`` (half: R)."""
        ok = np.isfinite(truth) & np.isfinite(pred)
        half = np.asarray(half, np.float64)
        inside = (np.abs(np.where(ok, truth - pred, 0.0)) <= half[:, None]) & ok
        scored = ok.sum(1)
        for task, k, total in zip(tasks, inside.sum(1), scored):
            self.inside[str(task)] += float(k)
            self.total[str(task)] += float(total)
        self.width += float(np.sum(np.where(scored > 0, 2 * half * scored, 0.0)))

    def per_task(self) -> dict[str, float]:
        """Coverage of each task's scored entries."""
        return {t: self.inside[t] / self.total[t] for t in self.total if self.total[t]}

    def metrics(self, coverage: float) -> dict[str, float]:
        """``coverage`` (pooled over every entry: marginal), ``interval_width`` (mean full width per entry) and
        the per-task summary ``coverage_task_min``, ``coverage_task_p10``, ``coverage_tasks_below``."""
        total = sum(self.total.values())
        summary = task_coverage(self.per_task(), coverage)
        return {"coverage": sum(self.inside.values()) / total if total else float("nan"),
                "interval_width": self.width / total if total else float("nan"),
                "coverage_task_min": summary["task_min"], "coverage_task_p10": summary["task_p10"],
                "coverage_tasks_below": summary["tasks_below"]}


def coverage_text(pooled: float, task_min: float, task_p10: float, tasks_below: float, coverage: float) -> str:
    """One line for reports: the pooled coverage called marginal, beside the per-task summary."""
    def pct(x: float, spec: str = ".1%") -> str:
        return "–" if x != x else format(x, spec)

    return (f"{pct(pooled)} marginal (pooled over tasks); per task min {pct(task_min)}, 10th percentile "
            f"{pct(task_p10)}, {pct(tasks_below, '.0%')} of tasks below {pct(coverage - UNDER_MARGIN, '.0%')}")


def held_out_coverage(held_out: Sequence[HeldOut], idx: np.ndarray, coverage: float,
                      interval: str = DEFAULT_INTERVAL) -> dict[str, float]:
    """Per-task coverage on the known tasks: each one's unprobed entries against a band calibrated on the
    others (:func:`calibrate`), pooled (marginal) and summarised per task (:func:`task_coverage`)."""
    idx = np.asarray(idx, dtype=np.intp)
    tally = CoverageTally()
    for i, (y, p) in enumerate(held_out):
        others = [h for j, h in enumerate(held_out) if j != i]
        if len(others) < MIN_TASKS - 1:
            continue
        band = calibrate(others, idx, coverage, interval)
        truth = np.asarray(y, np.float64).copy()
        truth[:, idx] = np.nan
        tally.add(truth, p, band.halfwidth(y[:, idx], p[:, idx]), [str(i)] * y.shape[0])
    return tally.metrics(coverage)


__all__ = ["DEFAULT_COVERAGE", "DEFAULT_INTERVAL", "INTERVALS", "MIN_TASKS", "SCALE_FLOOR", "UNDER_MARGIN", "Band",
           "CoverageTally", "calibrate", "check_coverage", "check_interval", "conformal_quantile", "coverage_text",
           "held_out_coverage", "probe_scale", "task_coverage", "task_out_predictions", "task_out_scores"]
