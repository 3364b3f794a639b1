"""Additive and multiplicative models of the forgetting matrix, and forgetting against task learning."""

from __future__ import annotations

import numpy as np
import pandas as pd

from forgetscope.analysis import plots
from forgetscope.report.sections.base import ReportContext, Section


def build(ctx: ReportContext) -> Section:
    rep = ctx.lowrank()
    m = ctx.need_matrix(2, 2)
    add, mul = rep.additive, rep.multiplicative
    sec = Section("fits", "Additive and multiplicative models",
                  lead="Additive: F[i,j] ≈ μ + a_i + b_j (task harshness + example fragility). "
                       "Multiplicative: F[i,j] ≈ α_i β_j (task strength × example susceptibility).")
    better = "additive" if add.r2 >= mul.r2 else "multiplicative"
    sec.figure(plots.fit_scatter(m.values, {"additive": (add.predict(), add.r2),
                                           "multiplicative": (mul.predict(), mul.r2)}, seed=ctx.seed),
               "observed vs fitted forgetting",
               f"Points on the diagonal are explained by the model; the {better} model fits better "
               f"(R² {max(add.r2, mul.r2):.3f} vs {min(add.r2, mul.r2):.3f}).")
    spread_a, spread_b = float(np.std(add.a)), float(np.std(add.b))
    names, a, a_err = m.row_names, add.a, None
    runs = m.runs
    if runs is not None and len(runs) == m.shape[0] and "task" in runs and runs["task"].nunique() < len(runs):
        keys = ["task", "strategy"] if "strategy" in runs and runs["strategy"].nunique() > 1 else ["task"]
        label = runs[keys].astype(str).agg(" / ".join, axis=1)
        g = pd.Series(add.a).groupby(label.to_numpy(), sort=False)
        names, a, a_err = g.mean().index.tolist(), g.mean().to_numpy(), g.std().fillna(0).to_numpy()
    sec.figure(plots.factor_bars(names, a, add.b, a_err), "additive task and example effects",
               f"Task effects spread {spread_a:.3f} nats (std), example effects {spread_b:.3f}: "
               + ("which task is trained matters more than which example is probed."
                  if spread_a > spread_b else "which example is probed matters more than which task is trained."))
    sec.table(pd.DataFrame([{"model": "additive μ + a_i + b_j", "R²": add.r2, "μ": add.mu,
                             "parameters": m.shape[0] + m.shape[1] - 1},
                            {"model": "multiplicative α_i β_j", "R²": mul.r2, "μ": None,
                             "parameters": m.shape[0] + m.shape[1] - 1}]), caption="Fits",
              source=ctx.source(ctx.layout.matrix))
    lc = rep.learning
    if lc is not None and lc.n >= 3:
        sec.figure(plots.learning_scatter(np.asarray(lc.learning), np.asarray(lc.mean_forgetting), m.row_names),
                   "forgetting vs task learning",
                   f"Each point is a run; Pearson r = {lc.pearson:.2f} (p = {lc.pearson_p:.2g}), "
                   f"Spearman ρ = {lc.spearman:.2f} between how much a task was learned and how much it forgot.")
    return sec
