"""Strategy comparison: ``layout.compare_summary`` if ``forgetscope compare`` wrote one, else from the runs.

``compare/summary.csv`` is the table of :func:`forgetscope.experiments.compare.summarize` (one row per
strategy: held-out forgetting with its bootstrap CI, task loss, paired tests against plain). Without it,
a sweep whose ``runs.parquet`` holds several strategies on the same tasks and seeds is compared here:
mean forgetting ± SEM over runs and paired Wilcoxon tests against ``plain``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from forgetscope.analysis.stats import wilcoxon_p
from forgetscope.report import figures as figs
from forgetscope.report.sections.base import ReportContext, Section, Skip

BASELINE = "plain"
TASK_LOSS_LABEL = "task held-out loss after (lower = learned)"


@dataclass(frozen=True)
class Chart:
    """The columns of a comparison table that the bar chart and its reading use."""

    value: str
    value_label: str
    err: str | tuple[str, str]
    perf: str
    perf_err: str
    p: str


SUMMARY_CHART = Chart("forgetting_heldout", "mean forgetting on held-out upstream (nats)",
                      ("forgetting_ci_low", "forgetting_ci_high"), "task_loss_after", "task_loss_sd", "p_wilcoxon_holm")
RUNS_CHART = Chart("mean_forgetting", "mean forgetting (nats)", "forgetting_sem", "task_loss_after", "task_loss_sem",
                   "p (examples)")


def _from_summary(ctx: ReportContext) -> tuple[pd.DataFrame, str] | None:
    path = ctx.layout.compare_summary
    if not path.is_file():
        return None
    table = pd.read_csv(path)
    if "strategy" not in table.columns:
        raise ValueError(f"{ctx.relative(path)} has no 'strategy' column")
    if table.empty:
        raise Skip(f"{ctx.relative(path)} has no rows")
    lead = (f"Strategies compared on the same tasks and seeds (read from {ctx.relative(path)}): mean forgetting "
            "on the held-out upstream examples with its 95% bootstrap CI, task loss after ± sd over runs; "
            "run-level p-values (paired Wilcoxon signed-rank over task x seed runs against plain fine-tuning, "
            "Holm-adjusted across every reported comparison; 'not testable' with too few runs).")
    return table, lead


def _from_runs(ctx: ReportContext) -> pd.DataFrame:
    from scipy import stats

    m = ctx.need_matrix()
    runs = m.runs
    if runs is None or "strategy" not in runs or runs["strategy"].nunique() < 2:
        raise Skip(f"one strategy only and no {ctx.relative(ctx.layout.compare_summary)}")
    runs = runs.reset_index(drop=True).copy()
    runs["_mean"] = np.nanmean(m.values, 1)
    strategies = list(dict.fromkeys(runs["strategy"].astype(str)))
    base = BASELINE if BASELINE in strategies else strategies[0]
    keys = [k for k in ("task", "seed") if k in runs]
    index = {tuple(r[k] for k in keys): i for i, r in runs[runs["strategy"] == base].iterrows()}
    perf = "task_loss_after" if "task_loss_after" in runs else None
    out = []
    for s in [base] + [s for s in strategies if s != base]:
        sub = runs[runs["strategy"].astype(str) == s]
        vals = sub["_mean"].to_numpy(float)
        row: dict[str, Any] = {"strategy": s, "runs": len(sub), "mean_forgetting": float(np.nanmean(vals)),
                               "forgetting_sem": float(stats.sem(vals, nan_policy="omit")) if len(vals) > 1 else 0.0}
        if perf:
            pv = pd.to_numeric(sub[perf], errors="coerce").to_numpy(float)
            row["task_loss_after"] = float(np.nanmean(pv))
            row["task_loss_sem"] = float(stats.sem(pv, nan_policy="omit")) if len(pv) > 1 else 0.0
        if s != base:
            pairs = [(i, index[tuple(r[k] for k in keys)]) for i, r in sub.iterrows()
                     if tuple(r[k] for k in keys) in index]
            row["paired_runs"] = len(pairs)
            if pairs:
                diff = np.stack([m.values[i] - m.values[j] for i, j in pairs])  # runs × examples
                row["Δ vs " + base] = float(np.nanmean(diff))
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    row["p (examples)"] = wilcoxon_p(_finite(np.nanmean(diff, 0)))
                    row["p (runs)"] = wilcoxon_p(_finite(np.nanmean(diff, 1)))
        out.append(row)
    return pd.DataFrame(out)


def _finite(x: np.ndarray) -> np.ndarray:
    return x[np.isfinite(x)]


def _reading(table: pd.DataFrame, chart: Chart) -> str:
    best = table.loc[pd.to_numeric(table[chart.value], errors="coerce").idxmin(), "strategy"]
    reading = f"Lower is better; '{best}' forgets least on average"
    if chart.p not in table:
        return reading + "."
    sig = table[pd.to_numeric(table[chart.p], errors="coerce") < 0.05]["strategy"].astype(str).tolist()
    return reading + (f"; significant at p < 0.05 ({chart.p}): {', '.join(sig)}." if sig
                      else f"; no strategy differs from the baseline at p < 0.05 ({chart.p}).")


def build(ctx: ReportContext) -> Section:
    found = _from_summary(ctx)
    if found is not None:
        (table, lead), chart = found, SUMMARY_CHART
    else:
        table, chart = _from_runs(ctx), RUNS_CHART
        lead = ("Strategies compared on the same tasks and seeds (from this sweep's runs): mean forgetting ± SEM "
                "over runs; p-values of paired Wilcoxon signed-rank tests against plain fine-tuning, over "
                "examples (per-example mean difference) and over runs (per task × seed).")
    sec = Section("strategies", "Strategy comparison", lead=lead)
    if chart.value in table:
        err_cols = (chart.err,) if isinstance(chart.err, str) else chart.err
        err = chart.err if all(c in table for c in err_cols) else None
        perf = chart.perf if chart.perf in table else None
        perf_err = chart.perf_err if perf and chart.perf_err in table else None
        sec.figure(figs.strategy_bars(table, chart.value, err, chart.value_label, perf, perf_err, TASK_LOSS_LABEL),
                   "strategy comparison with error bars", _reading(table, chart))
    sec.table(table)
    return sec
