"""Runs: one row per fine-tuning run (``runs.parquet`` + ``F.npy``), with per task × strategy means."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from forgetscope.report.sections.base import ReportContext, Section

RUN_COLUMNS = ("task", "strategy", "seed", "method", "steps", "trainable_params", "task_loss_before",
               "task_loss_after", "wall_s")
FOLD_OVER = 12


def forgetting_columns(m) -> dict[str, np.ndarray]:
    """Per run: mean F, share of measured entries forgotten and max F, for each kind of upstream example."""
    from forgetscope.measure.forgetting import forgotten_share

    cols: dict[str, np.ndarray] = {}
    for kind in list(m.kind_counts()) or ["all"]:
        F = m.select_kind(kind).values
        suffix = "" if kind == "all" else f" ({kind})"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            cols[f"mean F{suffix}"] = np.nanmean(F, 1)
            cols[f"share F>0{suffix}"] = np.array([forgotten_share(r) for r in F])
            cols[f"max F{suffix}"] = np.nanmax(F, 1)
    return cols


def build(ctx: ReportContext) -> Section:
    m = ctx.need_matrix()
    fcols = forgetting_columns(m)
    source = ctx.source(ctx.layout.runs_table, ctx.layout.matrix)
    table = pd.DataFrame({"run": m.row_names, **fcols})
    runs = m.runs
    if runs is not None and len(runs) == len(table):
        keep = [c for c in RUN_COLUMNS if c in runs.columns]
        for c in keep:
            table[c] = runs[c].to_numpy()
        table = table[["run", *keep, *fcols]]
    sec = Section("runs", "Runs", lead="One row per fine-tuning run: what the task learned and what the upstream "
                  "set forgot (F = loss after − loss before, nats/token; positive = forgotten; the share of "
                  "F > 0 counts measured entries only), per kind of upstream example when the sweep records it.")
    if len(table) > FOLD_OVER and "task" in table and "strategy" in table:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            agg = {c: "mean" for c in ("task_loss_before", "task_loss_after", *fcols) if c in table}
            by = table.groupby(["task", "strategy"], sort=False)
            short = by.agg(agg).reset_index()
            short.insert(2, "runs", by.size().to_numpy())
        sec.table(short, caption="Mean over seeds, per task and strategy", source=source)
    sec.table(table, caption="All runs", collapse_over=FOLD_OVER, source=source)
    return sec
