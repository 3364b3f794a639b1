"""Prediction from probe sets: saved cross-validation results, else a small one computed here.

Saved results are ``layout.predict_summary_for(kind)`` and ``layout.predict_curves_for(kind)``
(``predict/<kind>/predict_summary.csv`` and ``predict_curves.csv``, written by ``forgetscope predict --kind``
through :meth:`forgetscope.predict.CVResult.save`; ``predict/`` itself for all columns). Without them, and
unless live cross-validation is off, a cross-validation of ``additive``, ``knn`` and ``lowrank`` runs here
(task-grouped folds, three probe draws).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from forgetscope.report import figures as figs
from forgetscope.report.sections.base import ReportContext, Section, Skip, pct

PREDICTORS = ("additive", "knn", "lowrank")
SUMMARY_COLUMNS = ("method", "probe_frac", "inference_skipped", "rmse", "rmse_ratio_vs_additive", "pearson",
                   "spearman", "f1", "precision@10", "delta_pearson_vs_additive", "delta_f1_vs_additive")


def _probe_sizes(n: int) -> list[float | int]:
    sizes = sorted({max(1, round(f * n)) for f in (0.05, 0.2)})
    return [s for s in sizes if s < n - 1] or [1]


def _results(ctx: ReportContext) -> tuple[pd.DataFrame, pd.DataFrame | None, pd.DataFrame | None, str]:
    """(summary, curves, scatter, where they come from)."""
    layout = ctx.layout
    summary_path, curves_path = layout.predict_summary_for(ctx.kind), layout.predict_curves_for(ctx.kind)
    if summary_path.is_file():
        curves = pd.read_csv(curves_path) if curves_path.is_file() else None
        return pd.read_csv(summary_path), curves, None, f"read from {ctx.relative(summary_path)}"
    if ctx.predict is False:
        raise Skip("no saved prediction results and live cross-validation is off")
    m = ctx.need_matrix(3, 10)
    from forgetscope.predict import evaluate

    n_folds = min(4, m.shape[0])
    res = evaluate(m, list(PREDICTORS), probe=_probe_sizes(m.shape[1]), n_folds=n_folds, draws=3, seed=ctx.seed,
                   ks=(10,), scatter_points=1500)
    source = (f"computed for this report: {res.protocol['splits']}, 3 draws of random probe sets; "
              f"save your own with forgetscope predict SWEEP --kind {ctx.kind}")
    return res.summary(), res.curves, res.scatter, source


def build(ctx: ReportContext) -> Section:
    summary, curves, scatter, source = _results(ctx)
    sec = Section("prediction", "Prediction from probe sets",
                  lead="A new task is observed on a probe subset of upstream examples and the rest of its row is "
                       f"predicted from the known rows; scored on the unprobed entries ({source}).")
    fracs = sorted(summary["probe_frac"].unique()) if "probe_frac" in summary else []
    mid = min(fracs, key=lambda f: abs(np.log(f / 0.1))) if fracs else None  # the probe closest to 10%
    if scatter is not None and len(scatter):
        sc = scatter[np.isclose(scatter["probe_frac"], mid)] if mid is not None else scatter
        sub = summary[np.isclose(summary["probe_frac"], mid)] if mid is not None else summary
        best = sub.sort_values("rmse").iloc[0] if "rmse" in sub and sub["rmse"].notna().any() else None
        reading = (f"Probe = {pct(mid)} of examples; " if mid is not None else "") + (
            f"closest to the diagonal: {best['predictor']} (RMSE {best['rmse']:.3g}"
            + (f", Pearson {best['pearson']:.2f})." if "pearson" in best else ").") if best is not None else "")
        sec.figure(figs.pred_scatter(sc), "predicted vs true forgetting", reading)
    if curves is not None and len(curves):
        cv = curves[np.isclose(curves["probe_frac"], mid)] if mid is not None and "probe_frac" in curves else curves
        base_rate = None
        if ctx.matrix is not None:
            from forgetscope.measure.forgetting import forgotten_share

            base_rate = forgotten_share(ctx.matrix.values)
        k_ref = int(cv["k"].iloc[np.argmin(np.abs(np.log(cv["k"].to_numpy(float) / 10)))]) if len(cv) else 10
        at_k = cv[cv["k"] == k_ref].set_index("predictor")["precision"]
        best = at_k.max() if len(at_k) and at_k.notna().any() else None
        tops = ", ".join(str(p) for p in at_k.index[at_k >= best - 0.005]) if best is not None else ""
        reading = ("Share of the k examples predicted most forgotten that truly are forgotten"
                   + (f"; at k = {k_ref}, most precise: {tops} ({best:.2f})" if best is not None else "")
                   + (f", against {base_rate:.2f} for a random pick." if base_rate is not None else "."))
        sec.figure(figs.precision_curves(cv, base_rate), "precision at k curves", reading)
    if "method" not in summary.columns and "predictor" in summary.columns:
        summary = summary.assign(method=summary["predictor"])
    cols = [c for c in SUMMARY_COLUMNS if c in summary.columns and summary[c].notna().any()]
    sec.table(summary[cols] if cols else summary,
              caption="Mean over probe draws (task-grouped folds pooled), against the additive baseline")
    return sec
