"""Sharpness and forgetting: ``layout.sharpness_table`` (``sharpness.parquet``, one row per run).

The table is the one :func:`forgetscope.experiments.sharpness.write_sharpness_results` writes: ``run_id``,
``mean_forgetting`` (over the upstream examples of the kind named in ``mean_forgetting_kind``; tables
written before kinds were recorded lack that column) and the ``sharpness_*`` measures of
:data:`forgetscope.analysis.sharpness.MEASURES`; their correlation with mean forgetting comes from
:func:`forgetscope.analysis.sharpness.correlate_with_forgetting`.
"""

from __future__ import annotations

import pandas as pd

from forgetscope.analysis import plots
from forgetscope.report.sections.base import ReportContext, Section, Skip

TARGET = "mean_forgetting"


def build(ctx: ReportContext) -> Section:
    from forgetscope.analysis.sharpness import MEASURES, correlate_with_forgetting

    path = ctx.need_file(ctx.layout.sharpness_table)
    df = pd.read_parquet(path)
    name = ctx.relative(path)
    if TARGET not in df:
        raise Skip(f"{name} has no {TARGET} column")
    measures = [c for c in MEASURES if c in df and pd.to_numeric(df[c], errors="coerce").notna().sum() >= 2]
    if not measures:
        raise Skip(f"{name} has no sharpness measure with two or more values")
    corr = correlate_with_forgetting(df, measures, target=TARGET)
    kinds = df["mean_forgetting_kind"].dropna().astype(str).unique() if "mean_forgetting_kind" in df else []
    over = "" if len(kinds) != 1 else " over all its upstream examples" if kinds[0] == "all" else \
        f" over its {kinds[0]} upstream examples"
    sec = Section("sharpness", "Sharpness and forgetting",
                  lead="Flatness of each fine-tuned minimum (loss rise under random perturbations of relative "
                       "radius ρ and along a SAM ascent step; Li et al. 2024) against the run's mean "
                       f"forgetting{over}.")
    strongest = corr.iloc[corr["spearman"].abs().fillna(-1).argmax()]
    sec.figure(plots.sharpness_scatter(df, measures, TARGET), "sharpness against mean forgetting",
               f"Each point is a run; strongest rank correlation: {strongest['measure']} "
               f"(Spearman ρ = {strongest['spearman']:.2f}, p = {strongest['spearman_p']:.2g}).")
    sec.table(corr, caption="Correlation of sharpness with mean forgetting", source=ctx.source(path))
    return sec
