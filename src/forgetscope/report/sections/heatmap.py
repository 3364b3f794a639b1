"""Forgetting heat map: ``F.npy`` sorted by :func:`forgetscope.analysis.lowrank.factor_order`."""

from __future__ import annotations

import numpy as np

from forgetscope.report import figures as figs
from forgetscope.report.sections.base import ReportContext, Section, pct


def build(ctx: ReportContext) -> Section:
    m = ctx.need_matrix(1, 1)
    sec = Section("heatmap", "Forgetting heat map")
    if min(m.shape) >= 2:
        from forgetscope.analysis.lowrank import factor_order

        rows, cols = factor_order(m.values, "additive")
        how = "rows and columns sorted by the additive model's task and example effects (largest first)"
    else:
        rows, cols = np.arange(m.shape[0]), np.argsort(-np.nan_to_num(m.values[0], nan=-np.inf))
        how = "columns sorted by forgetting"
    from forgetscope.measure.forgetting import forgotten_share

    F = m.values
    share = forgotten_share(F)
    worst = m.row_names[int(np.nanargmax(np.nanmean(F, 1)))]
    reading = (f"{how}; red = forgotten, blue = improved. {pct(share)} of measured entries are forgotten; "
               f"run '{worst}' forgets most on average.")
    sec.figure(figs.heatmap(F, rows, cols, m.row_names), "forgetting heat map", reading)
    return sec
