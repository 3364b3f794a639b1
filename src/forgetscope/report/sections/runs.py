"""Runs: one row per fine-tuning run (``runs.parquet`` + ``F.npy``), with per task × strategy means."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from forgetscope.report.sections.base import ReportContext, Section

RUN_COLUMNS = ("task", "strategy", "seed", "method", "steps", "trainable_params", "task_loss_before",
               "task_loss_after", "wall_s")
FOLD_OVER = 12


def build(ctx: ReportContext) -> Section:
    m = ctx.need_matrix()
    F = m.values
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        table = pd.DataFrame({"run": m.row_names, "mean F": np.nanmean(F, 1), "share F>0": np.nanmean(F > 0, 1),
                              "max F": np.nanmax(F, 1)})
    runs = m.runs
    if runs is not None and len(runs) == len(table):
        keep = [c for c in RUN_COLUMNS if c in runs.columns]
        for c in keep:
            table[c] = runs[c].to_numpy()
        table = table[["run", *keep, "mean F", "share F>0", "max F"]]
    sec = Section("runs", "Runs", lead="One row per fine-tuning run: what the task learned and what the upstream "
                  "set forgot (F = loss after − loss before, nats/token; positive = forgotten).")
    if len(table) > FOLD_OVER and "task" in table and "strategy" in table:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            agg = {c: "mean" for c in ("task_loss_before", "task_loss_after", "mean F", "share F>0", "max F")
                   if c in table}
            by = table.groupby(["task", "strategy"], sort=False)
            short = by.agg(agg).reset_index()
            short.insert(2, "runs", by.size().to_numpy())
        sec.table(short, caption="Mean over seeds, per task and strategy")
    sec.table(table, caption="All runs", collapse_over=FOLD_OVER)
    return sec
