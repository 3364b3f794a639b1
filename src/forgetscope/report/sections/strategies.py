"""Strategy comparison: ``layout.compare_summary`` if ``forgetscope compare`` wrote one, else from the runs.

``compare/summary.csv`` is the table of :func:`forgetscope.experiments.compare.summarize` (one row per
strategy: held-out forgetting with its bootstrap CI, task loss, run-level paired tests against plain).
Without it, a sweep whose ``runs.parquet`` holds several strategies on the same tasks and seeds is
compared here by :func:`compare_runs` on one kind of upstream example (the report's kind, else the
sweep's default kind, ``lm`` when it has plain-text examples: the two kinds are separate experiments),
with the statistics of the comparison
(:func:`forgetscope.analysis.stats.paired_run_test` and :func:`~forgetscope.analysis.stats.holm`): the
unit is the run, paired with the baseline run on the same task and seed. An example-level p-value stays
in the table only as a labelled description: examples of one run share one fine-tuned model, so
pooling them is pseudo-replication and never a test result.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from forgetscope.analysis import plots
from forgetscope.analysis.stats import MIN_PAIRS_T, MIN_PAIRS_WILCOXON, paired_tests, wilcoxon_p
from forgetscope.report.sections.base import ReportContext, Section, Skip, label

BASELINE = "plain"
TASK_LOSS_LABEL = "task held-out loss after (lower = learned)"
NOT_TESTABLE = "not testable"
PAIR_KEYS = ("task", "seed")
#: Columns of :func:`compare_runs` (the fallback table).
P_WILCOXON = "p Wilcoxon (runs, Holm)"
P_T = "p t (runs, Holm)"
P_EXAMPLES = "p examples (descriptive)"
#: Run-level p-value columns of either table, shown as "not testable" where the test was not run.
TEST_COLUMNS = (P_WILCOXON, P_T, "p_wilcoxon", "p_t", "p_wilcoxon_holm", "p_t_holm")


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
                   P_WILCOXON)


def _from_summary(ctx: ReportContext) -> tuple[pd.DataFrame, str] | None:
    path = ctx.layout.compare_summary
    if not path.is_file():
        return None
    table = pd.read_csv(path)
    if "strategy" not in table.columns:
        raise ValueError(f"{ctx.relative(path)} has no 'strategy' column")
    if table.empty:
        raise Skip(f"{ctx.relative(path)} has no rows")
    kinds = table["upstream_kind"].dropna().astype(str).unique() if "upstream_kind" in table else []
    which = f" of kind '{kinds[0]}'" if len(kinds) == 1 and kinds[0] != "all" else ""
    lead = (f"Strategies compared on the same tasks and seeds (read from {ctx.relative(path)}): mean forgetting "
            f"on the held-out upstream examples{which} with its 95% bootstrap CI, task loss after ± sd over runs; "
            "run-level p-values (paired Wilcoxon signed-rank over task x seed runs against plain fine-tuning, "
            "Holm-adjusted across every reported comparison; 'not testable' with too few runs).")
    return table, lead


def compare_runs(matrix, baseline: str = BASELINE, *, kind: str | None = None,
                 n_resamples: int = 9999) -> pd.DataFrame:
    """One row per strategy of ``matrix.runs``: mean forgetting ± SEM over runs, task loss, and each
    strategy against ``baseline`` (the first strategy when there is no ``baseline``) paired over runs.

    Only the upstream examples of ``kind`` count (``lm``, ``instruction`` or ``all``; None: the matrix's
    default kind). A run's value is its mean forgetting over the examples every run measured (replayed
    examples are missing in the runs that replayed them), so every run averages the same examples.
    Tests are :func:`~forgetscope.analysis.stats.paired_tests` at the run level, the comparison's own
    (Wilcoxon from 6 pairs, t from 2, Holm's adjustment across the strategies compared here, one family
    per test); NaN where a test is not testable (``note`` says why). ``p examples (descriptive)`` pools
    the examples of every paired run and is not a valid test.
    """
    from scipy import stats

    runs = matrix.runs
    if runs is None or "strategy" not in runs or runs["strategy"].nunique() < 2:
        raise ValueError("compare_runs needs a runs table with two or more strategies")
    if len(runs) != matrix.shape[0]:
        raise ValueError(f"runs table has {len(runs)} rows for a matrix with {matrix.shape[0]} rows")
    runs = runs.reset_index(drop=True)
    values = matrix.select_kind(kind or matrix.default_kind()).values
    strategy = runs["strategy"].astype(str)
    strategies = list(dict.fromkeys(strategy))
    base = baseline if baseline in strategies else strategies[0]
    keys = [k for k in PAIR_KEYS if k in runs]
    if not keys:
        raise Skip("runs.parquet has neither task nor seed: runs cannot be paired")
    key_of = [tuple(r) for r in runs[keys].itertuples(index=False)]
    base_rows = [i for i in range(len(runs)) if strategy[i] == base]
    index = {key_of[i]: i for i in base_rows}
    if len(index) != len(base_rows):
        raise Skip(f"several '{base}' runs share a {' × '.join(keys)}: runs cannot be paired")
    perf = "task_loss_after" if "task_loss_after" in runs else None
    # a run's forgetting: its mean over the examples every run measured (replayed examples are NaN in
    # the runs that replayed them), so all runs average the same examples
    common = np.isfinite(values).all(axis=0)
    cols = common if common.any() else np.ones(values.shape[1], dtype=bool)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        run_mean = np.nanmean(values[:, cols], 1)
    per_run = pd.DataFrame({"strategy": strategy.to_numpy(), "value": run_mean,
                            "task": runs["task"].astype(str) if "task" in runs else "all",
                            "seed": runs["seed"] if "seed" in runs else 0})
    others = [s for s in strategies if s != base]
    tests = paired_tests(per_run, [(s, base) for s in others], ["value"], levels=("run",),
                         n_resamples=n_resamples).set_index("strategy")
    out: list[dict[str, Any]] = []
    for s in [base] + others:
        rows = [i for i in range(len(runs)) if strategy[i] == s]
        vals = run_mean[rows]
        row: dict[str, Any] = {"strategy": s, "runs": len(rows), "mean_forgetting": float(np.nanmean(vals)),
                               "forgetting_sem": float(stats.sem(vals, nan_policy="omit")) if len(vals) > 1 else 0.0}
        if perf:
            pv = pd.to_numeric(runs.loc[rows, perf], errors="coerce").to_numpy(float)
            row["task_loss_after"] = float(np.nanmean(pv))
            row["task_loss_sem"] = float(stats.sem(pv, nan_policy="omit")) if len(pv) > 1 else 0.0
        if s != base:
            t = tests.loc[s]
            row.update({"paired_runs": int(t["n_pairs"]), f"Δ vs {base}": t["mean_diff"], "Δ CI low": t["ci_low"],
                        "Δ CI high": t["ci_high"], "d_z": t["dz"], P_WILCOXON: t["p_wilcoxon_holm"],
                        P_T: t["p_t_holm"], "note": t["note"]})
            pooled = [values[i][cols] - values[index[key_of[i]]][cols] for i in rows if key_of[i] in index]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                row[P_EXAMPLES] = wilcoxon_p(np.concatenate(pooled)) if pooled else float("nan")
        out.append(row)
    table = pd.DataFrame(out)
    for c in (P_WILCOXON, P_T):
        if c not in table:
            table[c] = np.nan
    front = [c for c in table.columns if c not in (P_EXAMPLES, "note")]
    return table[front + [c for c in (P_EXAMPLES, "note") if c in table]]


def _from_runs(ctx: ReportContext) -> tuple[pd.DataFrame, str]:
    m = ctx.need_matrix()
    if m.runs is None or "strategy" not in m.runs or m.runs["strategy"].nunique() < 2:
        raise Skip(f"one strategy only and no {ctx.relative(ctx.layout.compare_summary)}")
    kind = ctx.headline_kind
    table = compare_runs(m, kind=kind)
    base = str(table["strategy"].iloc[0])
    which = "every upstream example" if kind == "all" else f"every '{kind}' upstream example"
    lead = (f"Strategies compared on the same tasks and seeds (from this sweep's runs; "
            f"{ctx.relative(ctx.layout.compare_summary)} absent): mean forgetting ± SEM over runs, a run's "
            f"forgetting being its mean over {which} it was measured on. Each strategy is paired "
            f"with the '{base}' run on the same task and seed; Δ is the mean paired difference with a 95% "
            f"bootstrap CI over runs, and the p-values are run-level (paired Wilcoxon signed-rank from "
            f"{MIN_PAIRS_WILCOXON} pairs, paired t from {MIN_PAIRS_T}; Holm-adjusted across the strategies "
            f"compared here; '{NOT_TESTABLE}' with too few paired runs). The example-level p pools the examples "
            "of every run, which share one fine-tuned model: it is descriptive only, never a test.")
    return table, lead


def _baseline(table: pd.DataFrame) -> str:
    names = table["strategy"].astype(str)
    return BASELINE if (names == BASELINE).any() else str(names.iloc[0])


def _reading(table: pd.DataFrame, chart: Chart) -> str:
    best = table.loc[pd.to_numeric(table[chart.value], errors="coerce").idxmin(), "strategy"]
    reading = f"Lower is better; '{best}' forgets least on average"
    if chart.p not in table:
        return reading + "."
    base = _baseline(table)
    others = table[table["strategy"].astype(str) != base]
    p = pd.to_numeric(others[chart.p], errors="coerce")
    test = f"run-level paired Wilcoxon, Holm-adjusted; column '{label(chart.p)}'"
    if not p.notna().any():
        return reading + (f"; not testable against '{base}' ({test}): too few paired runs, the test needs "
                          f"{MIN_PAIRS_WILCOXON}.")
    sig = others[p < 0.05]["strategy"].astype(str).tolist()
    return reading + (f"; differs from '{base}' at p < 0.05 ({test}): {', '.join(sig)}." if sig
                      else f"; no strategy differs from '{base}' at p < 0.05 ({test}).")


def _shown(table: pd.DataFrame) -> pd.DataFrame:
    """The table as displayed: a run-level p that was not computed reads 'not testable' (baseline row blank)."""
    out = table.copy()
    others = out["strategy"].astype(str) != _baseline(out)
    for c in TEST_COLUMNS:
        if c in out:
            p = pd.to_numeric(out[c], errors="coerce")
            out[c] = [(NOT_TESTABLE if o else None) if np.isnan(v) else v for v, o in zip(p, others)]
    return out


def build(ctx: ReportContext) -> Section:
    found = _from_summary(ctx)
    if found is not None:
        (table, lead), chart = found, SUMMARY_CHART
    else:
        (table, lead), chart = _from_runs(ctx), RUNS_CHART
    sec = Section("strategies", "Strategy comparison", lead=lead)
    source = ctx.source(ctx.layout.compare_summary) if found is not None else \
        ctx.source(ctx.layout.runs_table, ctx.layout.matrix)
    if chart.value in table:
        err_cols = (chart.err,) if isinstance(chart.err, str) else chart.err
        err = chart.err if all(c in table for c in err_cols) else None
        perf = chart.perf if chart.perf in table else None
        perf_err = chart.perf_err if perf and chart.perf_err in table else None
        sec.figure(plots.strategy_bars(table, chart.value, err, chart.value_label, perf, perf_err, TASK_LOSS_LABEL),
                   "strategy comparison with error bars", _reading(table, chart))
    sec.table(_shown(table), source=source)
    return sec
