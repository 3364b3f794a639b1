"""Spectrum and R²(k) of the forgetting matrix, from :mod:`forgetscope.analysis.lowrank` (computed here)."""

from __future__ import annotations

import numpy as np

from forgetscope.analysis import plots
from forgetscope.report.sections.base import ReportContext, Section


def build(ctx: ReportContext) -> Section:
    rep = ctx.lowrank()
    r2 = np.asarray(rep.r2_by_rank, float)
    sec = Section("lowrank", "Spectrum and R²(k)",
                  lead="How low-rank is forgetting? R²(k) = 1 − ‖F − F_k‖² / ‖F − mean(F)‖² for the rank-k SVD F_k.")
    k90 = int(np.argmax(r2 >= 0.9)) + 1 if (r2 >= 0.9).any() else None
    reading = (f"Rank 1 explains R² = {r2[0]:.3f}"
               + (f", rank 2 {r2[1]:.3f}" if len(r2) > 1 else "")
               + (f"; {k90} component(s) reach R² ≥ 0.9" if k90 else f"; even rank {len(r2)} stays below 0.9")
               + f" (additive {rep.additive.r2:.3f}, multiplicative {rep.multiplicative.r2:.3f}).")
    sec.figure(plots.spectrum_r2(rep.singular_values, r2, rep.additive.r2, rep.multiplicative.r2),
               "singular spectrum and R² curve", reading)
    sec.table(rep.r2_table().head(10), caption="R²(k) for the first ranks", source=ctx.source(ctx.layout.matrix))
    return sec
