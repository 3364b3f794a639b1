"""Section builders of the HTML report; each returns a :class:`Section`, or raises :class:`Skip` when its data is absent.

Inputs each section looks for (all optional except the manifest):

=====================  ==================================================================================
section                data
=====================  ==================================================================================
provenance             ``manifest.json`` (config, model, versions, seeds), ``upstream.parquet``
runs                   ``runs.parquet`` + ``F.npy``
heatmap                ``F.npy`` sorted by :func:`forgetscope.analysis.lowrank.factor_order`
lowrank                spectrum and R²(k) from :mod:`forgetscope.analysis.lowrank` (computed here)
fits                   additive / multiplicative fits, forgetting vs task learning (computed here)
prediction             ``predict/predict_summary.csv`` + ``predict/predict_curves.csv`` (written by
                       :meth:`forgetscope.predict.CVResult.save`) if present, else a small leave-tasks-out
                       cross-validation run here (``additive``, ``knn``, ``lowrank``)
strategies             a comparison table (``compare/summary.csv`` or similar, see :data:`COMPARE_FILES`),
                       else computed here when ``runs.parquet`` holds several strategies on the same
                       tasks and seeds (mean ± SEM, paired Wilcoxon against ``plain``)
scaling                ``scaling/fit.json`` (+ ``scaling/points.csv|parquet`` or ``points`` in the JSON)
sharpness              ``sharpness.parquet`` (one row per run: ``run_id`` + sharpness metrics)
=====================  ==================================================================================

A builder that fails for any other reason is reported as skipped with the error (the report still
renders); ``build_report(..., strict=True)`` re-raises instead (tests use it).
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from forgetscope.report import figures as figs
from forgetscope.store import ForgettingMatrix, SweepStore

COMPARE_FILES = ("compare/summary.csv", "compare/summary.parquet", "compare/comparison.csv", "compare.csv",
                 "comparison.csv", "compare/summary.json", "compare.json")
PREDICT_FILES = (("predict/predict_summary.csv", "predict/predict_curves.csv"),
                 ("predict_summary.csv", "predict_curves.csv"))
SCALING_FIT = "scaling/fit.json"
SCALING_POINTS = ("scaling/points.parquet", "scaling/points.csv", "scaling/data.csv", "scaling/data.parquet")
SHARPNESS_FILES = ("sharpness.parquet", "sharpness.csv", "sharpness/sharpness.parquet")
MAX_TABLE_ROWS = 60
log = logging.getLogger(__name__)


class Skip(Exception):
    """The section's data does not exist (the section is left out, with this reason)."""


@dataclass
class Section:
    key: str
    title: str
    blocks: list[dict[str, Any]] = field(default_factory=list)
    lead: str = ""

    def text(self, text: str) -> Section:
        self.blocks.append({"kind": "text", "text": text})
        return self

    def figure(self, fig, alt: str, reading: str) -> Section:
        self.blocks.append({"kind": "figure", "figure": figs.render(fig, alt, reading)})
        return self

    def table(self, df: pd.DataFrame, caption: str = "", digits: int = 4, collapse_over: int | None = None
              ) -> Section:
        """A table; longer than ``collapse_over`` rows it is folded into a <details> element."""
        note = ""
        n = len(df)
        if n > MAX_TABLE_ROWS:
            note = f"first {MAX_TABLE_ROWS} of {n} rows"
            df = df.head(MAX_TABLE_ROWS)
        self.blocks.append({"kind": "table", "html": table_html(df, digits), "caption": caption, "note": note,
                            "collapsed": collapse_over is not None and n > collapse_over,
                            "summary": f"{caption or 'Table'} ({n} rows)"})
        return self

    def pairs(self, items: list[tuple[str, Any]]) -> Section:
        self.blocks.append({"kind": "pairs", "items": [(k, _fmt(v)) for k, v in items if v not in (None, "")]})
        return self

    def details(self, summary: str, text: str) -> Section:
        self.blocks.append({"kind": "details", "summary": summary, "text": text})
        return self


@dataclass
class ReportContext:
    """What the builders share: the sweep, its matrix (if any) and options."""

    path: Path
    store: SweepStore
    manifest: dict[str, Any]
    matrix: ForgettingMatrix | None
    predict: bool | str = "auto"
    seed: int = 0
    cache: dict[str, Any] = field(default_factory=dict)

    def file(self, *names: str) -> Path | None:
        for n in names:
            p = self.path / n
            if p.is_file():
                return p
        return None

    def need_matrix(self, min_rows: int = 1, min_cols: int = 1) -> ForgettingMatrix:
        m = self.matrix
        if m is None:
            raise Skip("no forgetting matrix (F.npy) yet")
        if m.shape[0] < min_rows or m.shape[1] < min_cols:
            raise Skip(f"matrix {m.shape[0]}×{m.shape[1]} is too small (needs ≥ {min_rows}×{min_cols})")
        if not np.isfinite(m.values).any():
            raise Skip("the matrix has no observed entries")
        return m

    def lowrank(self):
        if "lowrank" not in self.cache:
            from forgetscope.analysis.lowrank import analyze

            m = self.need_matrix(2, 2)
            self.cache["lowrank"] = analyze(m.values, runs=m.runs, max_rank=min(*m.shape, 20))
        return self.cache["lowrank"]


# ---- formatting ------------------------------------------------------------------------------


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return ""
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}" if abs(int(v)) >= 10000 else str(int(v))
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if not math.isfinite(v):
            return "–" if math.isnan(v) else str(v)
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e6):
            return f"{v:.{max(digits - 1, 1)}e}"
        return f"{v:.{digits}g}" if abs(v) >= 1 else f"{v:.{digits}f}".rstrip("0").rstrip(".") or "0"
    if isinstance(v, (dict, list)):
        return json.dumps(v, default=str)
    return str(v)


def table_html(df: pd.DataFrame, digits: int = 4) -> str:
    out = df.copy()
    for c in out.columns:
        out[c] = [_fmt(v, digits) for v in out[c]]
    return out.to_html(index=False, escape=True, border=0, classes="data", na_rep="–")


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%" if np.isfinite(x) else "–"


def _col(df: pd.DataFrame, *names: str) -> str | None:
    lower = {c.lower(): c for c in df.columns}
    for n in names:
        if n.lower() in lower:
            return lower[n.lower()]
    return None


def _read_table(p: Path) -> pd.DataFrame:
    if p.suffix == ".parquet":
        return pd.read_parquet(p)
    if p.suffix == ".json":
        data = json.loads(p.read_text())
        if isinstance(data, dict):
            for key in ("strategies", "summary", "rows", "records", "results"):
                if isinstance(data.get(key), list):
                    return pd.DataFrame(data[key])
            return pd.DataFrame([data])
        return pd.DataFrame(data)
    return pd.read_csv(p)


# ---- sections --------------------------------------------------------------------------------


def provenance(ctx: ReportContext) -> Section:
    man = ctx.manifest
    sec = Section("provenance", "Provenance")
    model = man.get("model")
    model_s = ", ".join(f"{k}: {v}" for k, v in model.items()) if isinstance(model, dict) else model
    cfg = man.get("config") or {}
    train = cfg.get("train") if isinstance(cfg, dict) else None
    versions = man.get("versions") or {}
    items: list[tuple[str, Any]] = [
        ("sweep directory", str(ctx.path.resolve())),
        ("source", man.get("source")),
        ("status", man.get("status")),
        ("created", man.get("created")),
        ("completed", man.get("completed")),
        ("config fingerprint", man.get("fingerprint")),
        ("base model", model_s),
        ("strategy", cfg.get("strategy") if isinstance(cfg, dict) else None),
        ("fine-tuning", ", ".join(f"{k}={v}" for k, v in train.items() if v is not None) if train else None),
        ("seeds", ", ".join(map(str, man.get("seeds") or [])) or None),
        ("versions", ", ".join(f"{k} {v}" for k, v in versions.items()) or None),
    ]
    m = ctx.matrix
    if m is not None:
        shape = f"{m.shape[0]} runs × {m.shape[1]} upstream examples"
        items.append(("forgetting matrix", f"{shape}, {_pct(float(np.isnan(m.values).mean()))} missing"))
        if m.upstream is not None and "loss_before" in m.upstream and m.upstream["loss_before"].notna().any():
            items.append(("upstream loss before fine-tuning",
                          f"{m.upstream['loss_before'].mean():.3f} nats/token (mean over examples)"))
    sec.pairs(items)
    tasks = man.get("tasks")
    if isinstance(tasks, dict) and tasks:
        sec.table(pd.DataFrame([{"task": k, **(v if isinstance(v, dict) else {"info": v})}
                                for k, v in tasks.items()]), caption="Tasks")
    if cfg:
        import yaml

        sec.details("Full sweep config", yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
    extra = {k: v for k, v in man.items() if k not in {
        "format", "source", "status", "created", "completed", "fingerprint", "model", "config", "seeds",
        "versions", "tasks", "n_upstream"}}
    if extra:
        sec.details("Other manifest fields", json.dumps(extra, indent=2, default=str))
    return sec


def runs_summary(ctx: ReportContext) -> Section:
    m = ctx.need_matrix()
    F = m.values
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        table = pd.DataFrame({"run": m.row_names, "mean F": np.nanmean(F, 1), "share F>0": np.nanmean(F > 0, 1),
                              "max F": np.nanmax(F, 1)})
    runs = m.runs
    if runs is not None and len(runs) == len(table):
        keep = [c for c in ("task", "strategy", "seed", "method", "steps", "trainable_params", "task_loss_before",
                            "task_loss_after", "wall_s") if c in runs.columns]
        for c in keep:
            table[c] = runs[c].to_numpy()
        table = table[["run", *keep, "mean F", "share F>0", "max F"]]
    sec = Section("runs", "Runs", lead="One row per fine-tuning run: what the task learned and what the upstream "
                  "set forgot (F = loss after − loss before, nats/token; positive = forgotten).")
    if len(table) > 12 and "task" in table and "strategy" in table:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            agg = {c: "mean" for c in ("task_loss_before", "task_loss_after", "mean F", "share F>0", "max F")
                   if c in table}
            by = table.groupby(["task", "strategy"], sort=False)
            short = by.agg(agg).reset_index()
            short.insert(2, "runs", by.size().to_numpy())
        sec.table(short, caption="Mean over seeds, per task and strategy")
    sec.table(table, caption="All runs", collapse_over=12)
    return sec


def heatmap(ctx: ReportContext) -> Section:
    m = ctx.need_matrix(1, 1)
    sec = Section("heatmap", "Forgetting heat map")
    if min(m.shape) >= 2:
        from forgetscope.analysis.lowrank import factor_order

        rows, cols = factor_order(m.values, "additive")
        how = "rows and columns sorted by the additive model's task and example effects (largest first)"
    else:
        rows, cols = np.arange(m.shape[0]), np.argsort(-np.nan_to_num(m.values[0], nan=-np.inf))
        how = "columns sorted by forgetting"
    F = m.values
    share = float(np.nanmean(F > 0))
    worst = m.row_names[int(np.nanargmax(np.nanmean(F, 1)))]
    reading = (f"{how}; red = forgotten, blue = improved. {_pct(share)} of entries are forgotten; "
               f"run '{worst}' forgets most on average.")
    sec.figure(figs.heatmap(F, rows, cols, m.row_names), "forgetting heat map", reading)
    return sec


def lowrank(ctx: ReportContext) -> Section:
    rep = ctx.lowrank()
    r2 = np.asarray(rep.r2_by_rank, float)
    sec = Section("lowrank", "Spectrum and R²(k)",
                  lead="How low-rank is forgetting? R²(k) = 1 − ‖F − F_k‖² / ‖F − mean(F)‖² for the rank-k SVD F_k.")
    k90 = int(np.argmax(r2 >= 0.9)) + 1 if (r2 >= 0.9).any() else None
    reading = (f"Rank 1 explains R² = {r2[0]:.3f}"
               + (f", rank 2 {r2[1]:.3f}" if len(r2) > 1 else "")
               + (f"; {k90} component(s) reach R² ≥ 0.9" if k90 else f"; even rank {len(r2)} stays below 0.9")
               + f" (additive {rep.additive.r2:.3f}, multiplicative {rep.multiplicative.r2:.3f}).")
    sec.figure(figs.spectrum_r2(rep.singular_values, r2, rep.additive.r2, rep.multiplicative.r2),
               "singular spectrum and R² curve", reading)
    sec.table(rep.r2_table().head(10), caption="R²(k) for the first ranks")
    return sec


def fits(ctx: ReportContext) -> Section:
    rep = ctx.lowrank()
    m = ctx.need_matrix(2, 2)
    add, mul = rep.additive, rep.multiplicative
    sec = Section("fits", "Additive and multiplicative models",
                  lead="Additive: F[i,j] ≈ μ + a_i + b_j (task harshness + example fragility). "
                       "Multiplicative: F[i,j] ≈ α_i β_j (task strength × example susceptibility).")
    better = "additive" if add.r2 >= mul.r2 else "multiplicative"
    sec.figure(figs.fit_scatter(m.values, {"additive": (add.predict(), add.r2),
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
    sec.figure(figs.factor_bars(names, a, add.b, a_err), "additive task and example effects",
               f"Task effects spread {spread_a:.3f} nats (std), example effects {spread_b:.3f}: "
               + ("which task is trained matters more than which example is probed."
                  if spread_a > spread_b else "which example is probed matters more than which task is trained."))
    sec.table(pd.DataFrame([{"model": "additive μ + a_i + b_j", "R²": add.r2, "μ": add.mu,
                             "parameters": m.shape[0] + m.shape[1] - 1},
                            {"model": "multiplicative α_i β_j", "R²": mul.r2, "μ": None,
                             "parameters": m.shape[0] + m.shape[1] - 1}]), caption="Fits")
    lc = rep.learning
    if lc is not None and lc.n >= 3:
        sec.figure(figs.learning_scatter(np.asarray(lc.learning), np.asarray(lc.mean_forgetting), m.row_names),
                   "forgetting vs task learning",
                   f"Each point is a run; Pearson r = {lc.pearson:.2f} (p = {lc.pearson_p:.2g}), "
                   f"Spearman ρ = {lc.spearman:.2f} between how much a task was learned and how much it forgot.")
    return sec


def _probe_sizes(n: int) -> list[float | int]:
    sizes = sorted({max(1, round(f * n)) for f in (0.05, 0.2)})
    return [s for s in sizes if s < n - 1] or [1]


def prediction(ctx: ReportContext) -> Section:
    summary = curves = scatter = None
    source = ""
    for sfile, cfile in PREDICT_FILES:
        sp, cp = ctx.path / sfile, ctx.path / cfile
        if sp.is_file():
            summary = pd.read_csv(sp)
            curves = pd.read_csv(cp) if cp.is_file() else None
            source = f"read from {sfile}"
            break
    if summary is None:
        if ctx.predict is False:
            raise Skip("no saved prediction results and live cross-validation is off")
        m = ctx.need_matrix(3, 10)
        from forgetscope.predict import evaluate

        n_folds = min(4, m.shape[0])
        res = evaluate(m.values, ["additive", "knn", "lowrank"], probe=_probe_sizes(m.shape[1]), n_folds=n_folds,
                       seed=ctx.seed, ks=(10,), scatter_points=1500)
        summary, curves, scatter = res.summary(), res.curves, res.scatter
        source = (f"computed for this report: {n_folds}-fold leave-tasks-out cross-validation, random probe sets; "
                  "save your own with forgetscope.predict.CVResult.save(SWEEP/predict)")
    sec = Section("prediction", "Prediction from probe sets",
                  lead="A new task is observed on a probe subset of upstream examples and the rest of its row is "
                       f"predicted from the known rows; scored on the unprobed entries ({source}).")
    fracs = sorted(summary["probe_frac"].unique()) if "probe_frac" in summary else []
    mid = min(fracs, key=lambda f: abs(np.log(f / 0.1))) if fracs else None  # the probe closest to 10%
    if scatter is not None and len(scatter):
        sc = scatter[np.isclose(scatter["probe_frac"], mid)] if mid is not None else scatter
        sub = summary[np.isclose(summary["probe_frac"], mid)] if mid is not None else summary
        best = sub.sort_values("rmse").iloc[0] if "rmse" in sub and sub["rmse"].notna().any() else None
        reading = (f"Probe = {_pct(mid)} of examples; " if mid is not None else "") + (
            f"closest to the diagonal: {best['predictor']} (RMSE {best['rmse']:.3g}"
            + (f", Pearson {best['pearson']:.2f})." if "pearson" in best else ").") if best is not None else "")
        sec.figure(figs.pred_scatter(sc), "predicted vs true forgetting", reading)
    if curves is not None and len(curves):
        cv = curves[np.isclose(curves["probe_frac"], mid)] if mid is not None and "probe_frac" in curves else curves
        base_rate = None
        if ctx.matrix is not None:
            base_rate = float(np.nanmean(ctx.matrix.values > 0))
        k_ref = int(cv["k"].iloc[np.argmin(np.abs(np.log(cv["k"].to_numpy(float) / 10)))]) if len(cv) else 10
        at_k = cv[cv["k"] == k_ref].set_index("predictor")["precision"]
        best = at_k.max() if len(at_k) and at_k.notna().any() else None
        tops = ", ".join(str(p) for p in at_k.index[at_k >= best - 0.005]) if best is not None else ""
        reading = ("Share of the k examples predicted most forgotten that truly are forgotten"
                   + (f"; at k = {k_ref}, most precise: {tops} ({best:.2f})" if best is not None else "")
                   + (f", against {base_rate:.2f} for a random pick." if base_rate is not None else "."))
        sec.figure(figs.precision_curves(cv, base_rate), "precision at k curves", reading)
    cols = [c for c in ("predictor", "probe_frac", "inference_skipped", "rmse", "rmse_ratio_vs_additive", "pearson",
                        "spearman", "f1", "precision@10", "delta_pearson_vs_additive", "delta_f1_vs_additive")
            if c in summary.columns and summary[c].notna().any()]
    sec.table(summary[cols] if cols else summary, caption="Mean over folds, against the additive baseline")
    return sec


def _compare_from_file(ctx: ReportContext) -> tuple[pd.DataFrame, str] | None:
    names = list(COMPARE_FILES)
    try:  # the compare module may document its own file name
        from forgetscope.mitigate import compare as cmp  # type: ignore[attr-defined]

        for attr in ("SUMMARY_FILE", "SUMMARY", "RESULTS_FILE", "COMPARE_FILE"):
            if isinstance(getattr(cmp, attr, None), str):
                names.insert(0, getattr(cmp, attr))
    except Exception as exc:  # noqa: BLE001  (module absent or broken: fall back to the known names)
        log.debug("forgetscope.mitigate.compare not usable: %s", exc)
    p = ctx.file(*names)
    if p is None:
        return None
    df = _read_table(p)
    if _col(df, "strategy", "name") is None or df.empty:
        return None
    return df.rename(columns={_col(df, "strategy", "name"): "strategy"}), str(p.relative_to(ctx.path))


def _compare_from_runs(ctx: ReportContext) -> pd.DataFrame:
    from scipy import stats

    m = ctx.need_matrix()
    runs = m.runs
    if runs is None or "strategy" not in runs or runs["strategy"].nunique() < 2:
        raise Skip("one strategy only and no comparison results file")
    runs = runs.reset_index(drop=True).copy()
    runs["_mean"] = np.nanmean(m.values, 1)
    strategies = list(dict.fromkeys(runs["strategy"].astype(str)))
    base = "plain" if "plain" in strategies else strategies[0]
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
                    ex = np.nanmean(diff, 0)
                    ex = ex[np.isfinite(ex)]
                    row["p (examples)"] = float(stats.wilcoxon(ex).pvalue) if ex.size >= 2 and np.any(ex) else np.nan
                    rd = np.nanmean(diff, 1)
                    row["p (runs)"] = float(stats.wilcoxon(rd).pvalue) if rd.size >= 2 and np.any(rd) else np.nan
        out.append(row)
    return pd.DataFrame(out)


def strategies(ctx: ReportContext) -> Section:
    found = _compare_from_file(ctx)
    if found is not None:
        table, source = found
        lead = f"Strategies compared on the same tasks and seeds (read from {source})."
    else:
        table = _compare_from_runs(ctx)
        lead = ("Strategies compared on the same tasks and seeds (from this sweep's runs): mean forgetting ± SEM "
                "over runs; p-values of paired Wilcoxon signed-rank tests against plain fine-tuning, over "
                "examples (per-example mean difference) and over runs (per task × seed).")
    sec = Section("strategies", "Strategy comparison", lead=lead)
    value = _col(table, "mean_forgetting", "forgetting_mean", "forgetting", "mean_f")
    err = _col(table, "forgetting_sem", "sem", "forgetting_se", "forgetting_std", "std", "forgetting_ci")
    perf = _col(table, "task_loss_after", "task_loss", "task_performance", "task_metric")
    perf_err = _col(table, "task_loss_sem", "task_sem", "task_loss_std", "task_std")
    if value is not None:
        t = table.copy()
        best = t.loc[pd.to_numeric(t[value], errors="coerce").idxmin(), "strategy"]
        pcol = next((c for c in t.columns if c.lower().startswith("p") and ("value" in c.lower() or "(" in c
                                                                                  or "_p" in c.lower())), None)
        reading = f"Lower is better; '{best}' forgets least on average"
        if pcol is not None:
            sig = t[pd.to_numeric(t[pcol], errors="coerce") < 0.05]["strategy"].astype(str).tolist()
            reading += (f"; significant at p < 0.05 ({pcol}): {', '.join(sig)}." if sig
                        else f"; no strategy differs from the baseline at p < 0.05 ({pcol}).")
        else:
            reading += "."
        sec.figure(figs.strategy_bars(t, value, err, "mean forgetting (nats)", perf, perf_err,
                                      "task held-out loss after (lower = learned)"),
                   "strategy comparison with error bars", reading)
    sec.table(table)
    return sec


def _flatten(d: Any, prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    if isinstance(d, dict):
        for k, v in d.items():
            if k == "points":
                continue
            out += _flatten(v, f"{prefix}{k}.")
    elif isinstance(d, list) and len(d) <= 4 and all(not isinstance(x, (dict, list)) for x in d):
        out.append((prefix[:-1], ", ".join(_fmt(x) for x in d)))
    elif not isinstance(d, list):
        out.append((prefix[:-1], d))
    return out


def scaling(ctx: ReportContext) -> Section:
    p = ctx.file(SCALING_FIT)
    if p is None:
        raise Skip(f"no {SCALING_FIT}")
    fit = json.loads(p.read_text())
    sec = Section("scaling", "Scaling laws",
                  lead="Forgetting as a shifted power law in fine-tuned parameters P and update steps t "
                       "(Kalajdzievski 2024), fitted by nonlinear least squares.")
    points = None
    pp = ctx.file(*SCALING_POINTS)
    if pp is not None:
        points = _read_table(pp)
    elif isinstance(fit, dict) and isinstance(fit.get("points"), list):
        points = pd.DataFrame(fit["points"])
    if points is not None and len(points):
        x = _col(points, "steps", "t", "update_steps")
        g = _col(points, "trainable_params", "P", "params", "n_params")
        y = _col(points, "forgetting", "observed", "cross_entropy", "mean_forgetting", "loss_increase", "y")
        f = _col(points, "fitted", "predicted", "pred", "fit", "y_fit")
        if x is None and g is not None:
            x, g = g, None
        if x is not None and y is not None:
            held = _col(points, "heldout", "held_out", "test")
            desc = ", ".join(f"{k} = {v}" for k, v in _flatten(fit) if "exponent" in k.lower() or
                             k.split(".")[-1].lower() in ("alpha", "beta"))[:160]
            sec.figure(figs.scaling_plot(points, x, y, f, g if g is not None and points[g].nunique() > 1 else None,
                                         held=held),
                       "forgetting against the scaling variable",
                       f"Points: observed {y}; lines: the fitted law" + (f" ({desc})." if desc else ".")
                       + (" Crosses: points held out of the fit." if held else ""))
            if f is not None:
                o, fv = points[y].to_numpy(float), points[f].to_numpy(float)
                ok = np.isfinite(o) & np.isfinite(fv)
                rmse = float(np.sqrt(np.mean((o[ok] - fv[ok]) ** 2))) if ok.any() else float("nan")
                sec.figure(figs.observed_vs_fitted(o, fv, y), "observed vs fitted scaling law",
                           f"Points on the diagonal are fitted exactly; RMSE {rmse:.3g} over {int(ok.sum())} runs.")
    sec.pairs(_flatten(fit)[:60])
    return sec


def sharpness(ctx: ReportContext) -> Section:
    from scipy import stats

    p = ctx.file(*SHARPNESS_FILES)
    if p is None:
        raise Skip("no sharpness.parquet")
    df = _read_table(p)
    target = _col(df, "mean_forgetting")
    if target is None:
        m = ctx.need_matrix()
        rid = _col(df, "run_id", "run")
        if rid is None:
            raise Skip("sharpness table has neither run_id nor mean_forgetting")
        means = pd.Series(np.nanmean(m.values, 1), index=m.row_names)
        df = df.assign(mean_forgetting=df[rid].astype(str).map(means))
        target = "mean_forgetting"
    skip = {"run_id", "run", "seed", "rho", "radius", "n_samples", "n_directions", "step", "steps",
            "trainable_params", target}
    metrics = [c for c in df.columns if c not in skip and pd.api.types.is_numeric_dtype(df[c])
               and df[c].notna().sum() >= 2]
    if not metrics:
        raise Skip("sharpness table has no numeric metric columns")
    metrics = metrics[:4]
    rows = []
    for mtr in metrics:
        x, y = df[mtr].to_numpy(float), df[target].to_numpy(float)
        ok = np.isfinite(x) & np.isfinite(y)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sr = stats.spearmanr(x[ok], y[ok]) if ok.sum() >= 3 else None
            pr = stats.pearsonr(x[ok], y[ok]) if ok.sum() >= 3 else None
        rows.append({"metric": mtr, "runs": int(ok.sum()),
                     "spearman": float(sr.statistic) if sr else np.nan, "spearman_p": float(sr.pvalue) if sr else np.nan,
                     "pearson": float(pr.statistic) if pr else np.nan, "pearson_p": float(pr.pvalue) if pr else np.nan})
    corr = pd.DataFrame(rows)
    sec = Section("sharpness", "Sharpness and forgetting",
                  lead="Flatness of each fine-tuned minimum (loss rise under random perturbations of relative "
                       "radius ρ and along a SAM ascent step; Li et al. 2024) against the run's mean forgetting.")
    strongest = corr.iloc[corr["spearman"].abs().fillna(-1).argmax()]
    sec.figure(figs.sharpness_scatter(df, metrics, target), "sharpness against mean forgetting",
               f"Each point is a run; strongest rank correlation: {strongest['metric']} "
               f"(Spearman ρ = {strongest['spearman']:.2f}, p = {strongest['spearman_p']:.2g}).")
    sec.table(corr, caption="Correlation of sharpness with mean forgetting")
    return sec


BUILDERS: list[tuple[str, str, Callable[[ReportContext], Section]]] = [
    ("provenance", "Provenance", provenance),
    ("runs", "Runs", runs_summary),
    ("heatmap", "Forgetting heat map", heatmap),
    ("lowrank", "Spectrum and R²(k)", lowrank),
    ("fits", "Additive and multiplicative models", fits),
    ("prediction", "Prediction", prediction),
    ("strategies", "Strategy comparison", strategies),
    ("scaling", "Scaling laws", scaling),
    ("sharpness", "Sharpness", sharpness),
]
