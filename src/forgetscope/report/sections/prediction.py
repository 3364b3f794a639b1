"""Prediction from probe sets: saved cross-validation results, else a small one computed here.

Saved results are ``layout.predict_summary_for(kind)`` and ``layout.predict_curves_for(kind)``
(``predict/<kind>/predict_summary.csv`` and ``predict_curves.csv``, written by ``forgetscope predict --kind``
through :meth:`forgetscope.predict.CVResult.save`; ``predict/`` itself for all columns). Without them, and
unless live cross-validation is off, a cross-validation of ``additive``, ``knn`` and ``lowrank`` runs here
(task-grouped folds, three probe draws).

Stored forecasts (``forgetscope forecast``: ``layout.forecast_dir(name)``, i.e. ``forecast/<name>/forecast.parquet``
with ``forecast.json`` beside it, named by ``SweepLayout.forecast_files``) of the section's kind each get a table of
the :data:`FORECAST_TOP` examples they predict most forgotten (forecast F > 0, in the forecast's own rank order),
with the text of each example from the upstream table (else the forecast's own ``text`` column). With forecasts
but no cross-validation results, the section holds the forecasts alone; without forecasts it is as before.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from forgetscope.analysis import plots
from forgetscope.report.sections.base import ReportContext, Section, Skip, fmt, pct
from forgetscope.report.sections.examples import example_text, text_table, upstream_texts

PREDICTORS = ("additive", "knn", "lowrank")
SUMMARY_COLUMNS = ("method", "probe_frac", "inference_skipped", "rmse", "rmse_ratio_vs_additive", "pearson",
                   "spearman", "f1", "precision@10", "delta_pearson_vs_additive", "delta_f1_vs_additive")
FORECAST_TOP = 10
FORECAST_FOLD_OVER = 3  # above this many forecasts, each one's table is folded into a <details> element


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


# ---- stored forecasts ---------------------------------------------------------------------------


def stored_forecasts(ctx: ReportContext) -> list[tuple[str, Path, Path]]:
    """(name, forecast.parquet, forecast.json) of every folder under ``forecast/`` that holds a forecast table."""
    root = ctx.layout.forecast_root
    if not root.is_dir():
        return []
    found = []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        table, summary = ctx.layout.forecast_files(d)
        if table.is_file():
            found.append((d.name, table, summary))
    return found


def _forecast_kind(table: pd.DataFrame, info: dict[str, Any]) -> str | None:
    if "kind" in table.columns and len(table):
        return str(table["kind"].iloc[0])
    return (info.get("settings") or {}).get("kind")


def _forecast_caption(name: str, info: dict[str, Any], table: pd.DataFrame) -> str:
    settings = info.get("settings") or {}
    what = next(((label, settings[key]) for key, label in (("task_name", "task"), ("adapter", "adapter"),
                                                          ("model", "model")) if settings.get(key)), None)
    parts = [f"{what[0]} {what[1]}" if what else None]
    predictor = info.get("predictor") or settings.get("predictor")
    if predictor:
        parts.append(f"predictor {predictor}")
    if "observed" in table.columns:
        parts.append(f"{int(table['observed'].sum())} of {len(table)} examples measured on the probe")
    detail = ", ".join(p for p in parts if p)
    return f"Forecast '{name}'" + (f" ({detail})" if detail else "")


def forecast_table(ctx: ReportContext, table: pd.DataFrame, info: dict[str, Any] | None = None,
                   k: int = FORECAST_TOP) -> tuple[list[str], list[list]]:
    """(columns, rows) of the ``k`` examples a forecast predicts most forgotten (forecast F > 0, by rank);
    ``info`` is its forecast.json (for the interval's coverage)."""
    table = table[pd.to_numeric(table["forgetting"], errors="coerce") > 0]
    table = table.sort_values("rank" if "rank" in table.columns else "forgetting",
                              ascending="rank" in table.columns, kind="stable").head(k)
    m = ctx.matrix
    texts: dict[str, str | None] = {}
    if m is not None and m.upstream is not None and len(m.upstream) == m.shape[1]:  # row j describes column j
        shown = upstream_texts(m.upstream)
        if shown is not None:
            texts = dict(zip(m.col_names, shown))
    has = {c: c in table.columns for c in ("uncertainty", "lower", "measured", "observed", "text")}
    columns = ["rank", "example", "forecast F"]
    coverage = (((info or {}).get("settings") or {}).get("interval") or {}).get("coverage")
    columns += ["spread (sd)"] if has["uncertainty"] else []
    columns += [f"{coverage:.0%} interval" if isinstance(coverage, (int, float)) else "interval"] if has["lower"] else []
    columns += ["measured F"] if has["measured"] else []
    columns += ["source"] if has["observed"] else []
    columns += ["text"]
    rows = []
    for _, r in table.iterrows():
        ex = str(r["example_id"])
        text = texts.get(ex) or (example_text({"text": r["text"]}) if has["text"] else None) or "–"
        row: list[Any] = [int(r["rank"]) if "rank" in r else len(rows) + 1, ex, float(r["forgetting"])]
        if has["uncertainty"]:
            row.append(float(r["uncertainty"]))
        if has["lower"]:
            row.append(f"{fmt(float(r['lower']))} to {fmt(float(r['upper']))}")
        if has["measured"]:
            row.append(float(r["measured"]))
        if has["observed"]:
            row.append("measured (probe)" if bool(r["observed"]) else "predicted")
        rows.append(row + [text])
    return columns, rows


def add_forecasts(sec: Section, ctx: ReportContext, forecasts: list[tuple[str, Path, Path]]) -> bool:
    """One table per stored forecast of the section's kind (a line for one that cannot be read, in the section of
    the report's first kind); returns whether anything was added."""
    shown = 0
    unread = []
    for name, table_path, summary_path in forecasts:
        try:
            table = pd.read_parquet(table_path)
            info = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
            kind = _forecast_kind(table, info)
            if ctx.kind != "all" and kind not in (None, ctx.kind):
                continue
            columns, rows = forecast_table(ctx, table, info)
        except Exception as exc:  # a broken forecast leaves only itself out
            unread.append(f"{ctx.relative(table_path)} ({type(exc).__name__}: {exc})")
            continue
        caption = _forecast_caption(name, info, table)
        if rows:
            sec.html_table(text_table(columns, rows, len(columns) - 1), caption,
                           source=ctx.source(table_path, ctx.layout.upstream),
                           collapsed=len(forecasts) > FORECAST_FOLD_OVER)
        else:
            sec.text(f"{caption}: no example with a forecast F > 0.")
        shown += 1
    if unread and ctx.kind in ("all", ctx.headline_kind):
        sec.text("Forecasts that could not be read: " + "; ".join(unread) + ".")
        return True
    return shown > 0


FORECAST_LEAD = ("Forecasts stored under forecast/ (forgetscope forecast): a fine-tuned model measured on a "
                 "probe of upstream examples, the rest of its row predicted from the sweep. Each table lists the "
                 f"examples a forecast predicts most forgotten (up to {FORECAST_TOP}, forecast F > 0 in "
                 "nats/token), with the spread of the prediction, its interval when the forecast has one, the "
                 "measured F when the forecast was verified, and the example's text.")


def build(ctx: ReportContext) -> Section:
    forecasts = stored_forecasts(ctx)
    try:
        summary, curves, scatter, source = _results(ctx)
    except Skip as why:
        if not forecasts:
            raise
        sec = Section("prediction", "Prediction from probe sets", lead=f"No cross-validation of predictors ({why}).")
        sec.text(FORECAST_LEAD)
        if not add_forecasts(sec, ctx, forecasts):
            raise Skip(f"{why}; no stored forecast of {ctx.kind} examples") from None
        return sec
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
        sec.figure(plots.pred_scatter(sc), "predicted vs true forgetting", reading)
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
        sec.figure(plots.precision_curves(cv, base_rate), "precision at k curves", reading)
    if "method" not in summary.columns and "predictor" in summary.columns:
        summary = summary.assign(method=summary["predictor"])
    cols = [c for c in SUMMARY_COLUMNS if c in summary.columns and summary[c].notna().any()]
    summary_path = ctx.layout.predict_summary_for(ctx.kind)
    summary_source = ctx.source(summary_path) if source.startswith("read from") else \
        f"{ctx.source(ctx.layout.matrix)} (cross-validated here)"
    sec.table(summary[cols] if cols else summary,
              caption="Mean over probe draws (task-grouped folds pooled), against the additive baseline",
              source=summary_source)
    if forecasts:
        n = len(sec.blocks)
        sec.text(FORECAST_LEAD)
        if not add_forecasts(sec, ctx, forecasts):
            del sec.blocks[n:]  # no forecast of this kind: nothing new
    return sec
