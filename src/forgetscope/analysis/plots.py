"""Every figure forgetscope draws, in one module: the CLI writes them as PNG files, the HTML report embeds them.

Each builder takes plain arrays or tables and returns a ``matplotlib.figure.Figure``; :func:`save_figure`
writes one atomically, and the ``write_*`` functions are the CLI's files. Figures are built on
``matplotlib.figure.Figure`` + ``FigureCanvasAgg`` rather than pyplot, so importing this module never
switches a notebook's backend and works headless.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from forgetscope.analysis.lowrank import LowRankReport
from forgetscope.analysis.scaling import ScalingReport, holdout_mask
from forgetscope.store.io import atomic_path

#: heat maps average adjacent columns above this many examples
MAX_HEATMAP_COLS = 600


def save_figure(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Render a pyplot-free figure to PNG, atomically (a crash leaves no half-written file), so notebooks
    keep their backend."""
    p = Path(path)
    FigureCanvasAgg(fig)
    fig.tight_layout()
    with atomic_path(p) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    return p


def bin_columns(values: np.ndarray, max_cols: int) -> np.ndarray:
    """Average adjacent columns so a wide matrix fits a readable heat map."""
    n = values.shape[1]
    if n <= max_cols:
        return values
    edges = np.linspace(0, n, max_cols + 1).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN bins stay NaN
        return np.stack([np.nanmean(values[:, a:b], axis=1) for a, b in zip(edges[:-1], edges[1:])], axis=1)


# ---- builders ----------------------------------------------------------------------------------

def sym_limit(values: np.ndarray) -> float:
    """The colour limit of a heat map: the 98th percentile of |F| over finite entries (1 when there is none)."""
    finite = np.abs(values[np.isfinite(values)])
    lim = float(np.percentile(finite, 98)) if finite.size else 1.0
    return lim if lim > 0 else 1.0


def heatmap(values: np.ndarray, row_order: np.ndarray, col_order: np.ndarray, row_names: list[str]) -> Figure:
    """Forgetting matrix with rows/columns permuted by the fitted factors; red = forgotten."""
    raw = np.asarray(values, float)[np.ix_(row_order, col_order)]
    V = bin_columns(raw, MAX_HEATMAP_COLS)
    lim = sym_limit(V)
    fig = Figure(figsize=(11, max(3.2, min(12.0, 0.22 * V.shape[0] + 2.2))))
    ax = fig.add_subplot()
    im = ax.imshow(np.ma.masked_invalid(V), aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim,
                   interpolation="nearest")
    fig.colorbar(im, ax=ax, label="forgetting (nats/token)", fraction=0.04, pad=0.01)
    binned = raw.shape[1] > MAX_HEATMAP_COLS
    ax.set_xlabel(f"upstream examples, sorted by example effect ({raw.shape[1]}"
                  + (f", averaged into {V.shape[1]} bins)" if binned else ")"))
    ax.set_ylabel("runs, sorted by task effect")
    if len(row_order) <= 45:
        ax.set_yticks(range(len(row_order)), [row_names[i] for i in row_order], fontsize=7)
    else:
        ax.set_yticks([])
    return fig


def spectrum_r2(singular_values: np.ndarray, r2: np.ndarray, additive_r2: float, mult_r2: float) -> Figure:
    fig = Figure(figsize=(10, 3.8))
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    s = np.asarray(singular_values, float)
    ax1.semilogy(np.arange(1, len(s) + 1), np.maximum(s, 1e-12), "o-", ms=4)
    ax1.set_xlabel("k")
    ax1.set_ylabel("singular value")
    ax1.set_title("singular spectrum of F")
    k = np.arange(1, len(r2) + 1)
    ax2.plot(k, r2, "o-", ms=4, label="rank-k SVD")
    if np.isfinite(additive_r2):
        ax2.axhline(additive_r2, color="C1", ls="--", label=f"additive μ+a+b ({additive_r2:.3f})")
    if np.isfinite(mult_r2):
        ax2.axhline(mult_r2, color="C2", ls=":", label=f"multiplicative αβ ({mult_r2:.3f})")
    lo = float(np.nanmin([np.nanmin(r2), additive_r2, mult_r2, 0.0]))
    ax2.set_ylim(lo - 0.02, 1.02)
    ax2.set_xlabel("rank k")
    ax2.set_ylabel("R²")
    ax2.set_title("variance explained R²(k)")
    ax2.legend(fontsize=8, loc="lower right")
    return fig


def fit_scatter(F: np.ndarray, fits: dict[str, tuple[np.ndarray, float]], max_points: int = 4000,
                seed: int = 0) -> Figure:
    """Observed vs fitted entries for each model (``fits``: name -> (fitted matrix, R²))."""
    X = np.asarray(F, float)
    ok = np.flatnonzero(np.isfinite(X.ravel()))
    if ok.size > max_points:
        ok = np.random.default_rng(seed).choice(ok, max_points, replace=False)
    fig = Figure(figsize=(3.6 * len(fits), 3.5))
    obs = X.ravel()[ok]
    lo, hi = float(np.min(obs)), float(np.max(obs))
    for i, (name, (fitted, r2)) in enumerate(fits.items()):
        ax = fig.add_subplot(1, len(fits), i + 1)
        ax.scatter(fitted.ravel()[ok], obs, s=3, alpha=0.3, rasterized=True)
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_title(f"{name}: R² = {r2:.3f}", fontsize=9)
        ax.set_xlabel("fitted")
        if i == 0:
            ax.set_ylabel("observed forgetting")
    return fig


def factor_bars(names: list[str], task_effect: np.ndarray, example_effect: np.ndarray,
                task_err: np.ndarray | None = None) -> Figure:
    """Task effects as bars (± spread over seeds when given) beside the histogram of example effects."""
    fig = Figure(figsize=(10, max(3.2, min(9.0, 0.16 * len(names) + 1.5))))
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    order = np.argsort(-task_effect)
    ax1.barh(np.arange(len(order)), task_effect[order], color=np.where(task_effect[order] > 0, "C3", "C0"),
             xerr=None if task_err is None else task_err[order], capsize=2)
    ax1.set_yticks(np.arange(len(order)), [names[i] for i in order] if len(order) <= 30 else [""] * len(order),
                   fontsize=7)
    ax1.invert_yaxis()
    ax1.set_xlabel("task effect a_i (nats)")
    ax1.set_title("additive task effects")
    ax2.hist(example_effect[np.isfinite(example_effect)], bins=40, color="C0")
    ax2.set_xlabel("example effect b_j (nats)")
    ax2.set_ylabel("examples")
    ax2.set_title("additive example effects")
    return fig


def r2_against_shuffles(curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
                        n_shuffles: int) -> Figure:
    """R²(k) of F beside the same R²(k) of its within-row shuffles, one panel per metric: the observed curve,
    the shuffles' mean and their central 95 % band. ``curves`` maps a panel's title to (observed, shuffle
    mean, band low, band high), arrays over k = 1..K. What F has above the band is structure that its
    run scales and row distributions alone would not give."""
    fig = Figure(figsize=(4.2 * len(curves), 3.8))
    for i, (title, (obs, mean, lo, hi)) in enumerate(curves.items()):
        ax = fig.add_subplot(1, len(curves), i + 1)
        k = np.arange(1, len(obs) + 1)
        ax.fill_between(k, lo, hi, color="0.8", label=f"{n_shuffles} shuffles, central 95 %")
        ax.plot(k, mean, "--", color="0.4", label="shuffles, mean")
        ax.plot(k, obs, "o-", ms=4, color="C0", label="F")
        ax.set_xticks(k)
        ax.set_xlabel("rank k")
        ax.set_ylabel("R²(k)")
        ax.set_title(title, fontsize=10)
        ax.set_ylim(min(0.0, float(np.nanmin(lo)), float(np.nanmin(obs))) - 0.02, 1.02)
        if i == 0:
            ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def learning_scatter(learning: np.ndarray, forgetting: np.ndarray, names: list[str]) -> Figure:
    fig = Figure(figsize=(5.5, 4))
    ax = fig.add_subplot()
    ax.scatter(learning, forgetting, s=18)
    if len(names) <= 25:
        for x, y, n in zip(learning, forgetting, names):
            if np.isfinite(x) and np.isfinite(y):
                ax.annotate(n, (x, y), fontsize=6, alpha=0.7, xytext=(2, 2), textcoords="offset points")
    ax.set_xlabel("task learning: held-out loss before − after (nats)")
    ax.set_ylabel("mean upstream forgetting (nats)")
    return fig


def pred_scatter(pairs: pd.DataFrame) -> Figure:
    names = list(dict.fromkeys(pairs["predictor"]))
    fig = Figure(figsize=(3.2 * max(1, len(names)), 3.4))
    vals = pairs[["true", "pred"]].to_numpy(float)
    vals = vals[np.isfinite(vals).all(1)]
    lo, hi = (float(vals.min()), float(vals.max())) if vals.size else (0.0, 1.0)
    for i, name in enumerate(names):
        ax = fig.add_subplot(1, len(names), i + 1)
        d = pairs[pairs["predictor"] == name]
        ax.scatter(d["true"], d["pred"], s=3, alpha=0.35, rasterized=True)
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_title(str(name), fontsize=9)
        ax.set_xlabel("true forgetting")
        if i == 0:
            ax.set_ylabel("predicted")
    return fig


def precision_curves(curves: pd.DataFrame, base_rate: float | None = None) -> Figure:
    fig = Figure(figsize=(6.5, 4))
    ax = fig.add_subplot()
    for name, d in curves.groupby("predictor", sort=False):
        ax.semilogx(d["k"], d["precision"], label=str(name), marker=".", ms=3)
    if base_rate is not None and np.isfinite(base_rate):
        ax.axhline(base_rate, color="grey", ls=":", lw=1, label=f"random ({base_rate:.2f})")
    ax.set_xlabel("k (examples predicted most forgotten)")
    ax.set_ylabel("precision@k")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    return fig


def strategy_bars(table: pd.DataFrame, value: str, err: str | tuple[str, str] | None, ylabel: str,
                  perf: str | None = None, perf_err: str | None = None, perf_label: str = "") -> Figure:
    """Bars per strategy; ``err`` is a column of ± errors or a (low, high) pair of interval-bound columns."""
    panels = 2 if perf else 1
    fig = Figure(figsize=(4.6 * panels + 1, 3.8))
    names = table["strategy"].astype(str).tolist()
    x = np.arange(len(names))
    for p, (col, ecol, lab) in enumerate([(value, err, ylabel), (perf, perf_err, perf_label)][:panels]):
        ax = fig.add_subplot(1, panels, p + 1)
        y = pd.to_numeric(table[col], errors="coerce").to_numpy(float)
        e = _error_bars(table, y, ecol)
        ax.bar(x, y, yerr=e, capsize=4, color=[f"C{i % 10}" for i in range(len(x))])
        ax.axhline(0, color="k", lw=0.6)
        ax.set_xticks(x, names, rotation=30 if len(names) > 4 else 0, ha="right" if len(names) > 4 else "center")
        ax.set_ylabel(lab)
    return fig


def _error_bars(table: pd.DataFrame, y: np.ndarray, err: str | tuple[str, str] | None) -> np.ndarray | None:
    if err is None:
        return None
    if isinstance(err, str):
        return pd.to_numeric(table[err], errors="coerce").to_numpy(float)
    low, high = (pd.to_numeric(table[c], errors="coerce").to_numpy(float) for c in err)
    return np.abs(np.vstack([y - low, high - y]))


def sharpness_scatter(df: pd.DataFrame, metrics: list[str], target: str = "mean_forgetting") -> Figure:
    fig = Figure(figsize=(3.6 * len(metrics), 3.5))
    for i, m in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), i + 1)
        x = pd.to_numeric(df[m], errors="coerce").to_numpy(float)
        y = pd.to_numeric(df[target], errors="coerce").to_numpy(float)
        ax.scatter(x, y, s=16)
        ok = np.isfinite(x) & np.isfinite(y)
        if ok.sum() >= 2 and np.ptp(x[ok]) > 0:
            slope, icpt = np.polyfit(x[ok], y[ok], 1)
            xs = np.linspace(x[ok].min(), x[ok].max(), 20)
            ax.plot(xs, slope * xs + icpt, "k--", lw=0.8)
        ax.set_xlabel(m)
        if i == 0:
            ax.set_ylabel("mean forgetting (nats)")
    return fig


def scaling_plot(points: pd.DataFrame, x: str, y: str, fitted: str | None, group: str | None,
                 logx: bool = True, held: str | None = None) -> Figure:
    """Observed forgetting against ``x`` (e.g. steps or parameters), with the fitted law if given."""
    fig = Figure(figsize=(6.5, 4))
    ax = fig.add_subplot()
    groups = points.groupby(group, sort=True) if group else [("all", points)]
    for i, (g, d) in enumerate(groups):
        d = d.sort_values(x)
        label = f"{group} = {_num(g)}" if group else "observed"
        out = d[held].astype(bool).to_numpy() if held else np.zeros(len(d), bool)
        ax.scatter(d[x][~out], d[y][~out], s=16, color=f"C{i % 10}", label=label)
        if out.any():
            ax.scatter(d[x][out], d[y][out], s=30, marker="x", color=f"C{i % 10}")
        if fitted:
            ax.plot(d[x], d[fitted], color=f"C{i % 10}", lw=1.2)
    if logx and (pd.to_numeric(points[x], errors="coerce") > 0).all():
        ax.set_xscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    if group and points[group].nunique() <= 10 or not group:
        ax.legend(fontsize=8)
    return fig


def _num(v) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return f"{f:.3g}" if f != int(f) or abs(f) >= 1e4 else str(int(f))


def observed_vs_fitted(obs: np.ndarray, fit: np.ndarray, label: str) -> Figure:
    fig = Figure(figsize=(4.2, 4))
    ax = fig.add_subplot()
    ax.scatter(fit, obs, s=14)
    both = np.concatenate([obs, fit])
    both = both[np.isfinite(both)]
    if both.size:
        ax.plot([both.min(), both.max()], [both.min(), both.max()], "k--", lw=0.8)
    ax.set_xlabel(f"fitted {label}")
    ax.set_ylabel(f"observed {label}")
    return fig


def sweep_scatter(values: dict[str, np.ndarray], label: str = "mean F per example (nats/token)",
                  max_panels: int = 3) -> Figure:
    """The same upstream examples in several sweeps: each later sweep's value against the first's, one panel
    each (at most ``max_panels``), with the diagonal and Pearson r in the title."""
    names = list(values)
    first, others = names[0], names[1:1 + max_panels]
    fig = Figure(figsize=(4.2 * max(len(others), 1), 4))
    for i, name in enumerate(others):
        ax = fig.add_subplot(1, max(len(others), 1), i + 1)
        x, y = np.asarray(values[first], float), np.asarray(values[name], float)
        ok = np.isfinite(x) & np.isfinite(y)
        ax.scatter(x[ok], y[ok], s=10, alpha=0.6)
        both = np.concatenate([x[ok], y[ok]])
        if both.size:
            ax.plot([both.min(), both.max()], [both.min(), both.max()], "k--", lw=0.8)
        r = np.corrcoef(x[ok], y[ok])[0, 1] if ok.sum() > 2 and np.ptp(x[ok]) > 0 and np.ptp(y[ok]) > 0 else np.nan
        ax.set_title(f"Pearson r = {r:.2f} ({int(ok.sum())} examples)", fontsize=9)
        ax.set_xlabel(f"{first}: {label}", fontsize=8)
        ax.set_ylabel(f"{name}: {label}", fontsize=8)
    return fig


def scaling_figures(points: pd.DataFrame, report: ScalingReport, target: str) -> dict[str, Figure]:
    """A scaling fit's figures by name: ``scaling_fit`` (per-rank curves with the fitted law and its
    extrapolation), ``forgetting_vs_task_loss`` (when the points hold task losses) and
    ``predicted_vs_observed`` (held-out points marked; when the shifted law was fitted)."""
    figs: dict[str, Figure] = {}
    fits = report.fits.get(target, {})
    pts = points[(points["t"] > 0) & points[target].notna()].reset_index(drop=True)
    mask = holdout_mask(pts, report.holdout_rule) if report.holdout_rule != "random" else np.zeros(len(pts), bool)

    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.add_subplot(1, 1, 1)
    Ps = sorted(pts["P"].unique())
    colors = [f"C{i % 10}" for i in range(len(Ps))]
    tmax = float(pts["t"].max()) if len(pts) else 1.0
    grid = np.geomspace(max(float(pts["t"].min()), 1e-9) if len(pts) else 1.0, 3 * tmax, 100)
    for P, col in zip(Ps, colors):
        sel = pts["P"] == P
        lab = f"P={int(P):,}" + (f" (r={int(pts.loc[sel, 'rank'].iloc[0])})" if "rank" in pts.columns else "")
        ax.scatter(pts.loc[sel & ~mask, "t"], pts.loc[sel & ~mask, target], color=col, s=18, label=lab)
        ax.scatter(pts.loc[sel & mask, "t"], pts.loc[sel & mask, target], color=col, s=40, marker="x")
        if "shifted" in fits:
            y = fits["shifted"].predict(np.full_like(grid, P), grid)
            ax.plot(grid[grid <= tmax], y[grid <= tmax], color=col, lw=1.2)
            ax.plot(grid[grid >= tmax], y[grid >= tmax], color=col, lw=1.2, ls="--")
    if "shifted" in fits:
        f = fits["shifted"]
        ax.set_title(f"{target}: B + A(P/P0)^{f.params['alpha']:.3g}(t/t0)^{f.params['beta']:.3g}  "
                     f"R²={f.goodness['r2']:.3f}", fontsize=9)
    ax.set_xscale("log")
    ax.set_xlabel("update steps t (dashed: extrapolation, x: held out)")
    ax.set_ylabel(target)
    ax.legend(fontsize=7)
    figs["scaling_fit"] = fig

    if "task_loss" in pts.columns and pts["task_loss"].notna().any():
        fig = Figure(figsize=(5.2, 4.2))
        ax = fig.add_subplot(1, 1, 1)
        for P, col in zip(Ps, colors):
            sel = pts["P"] == P
            ax.scatter(pts.loc[sel, "task_loss"], pts.loc[sel, target], color=col, s=18, label=f"P={int(P):,}")
        if "linear" in fits:
            f = fits["linear"]
            xs = np.linspace(pts["task_loss"].min(), pts["task_loss"].max(), 50)
            ax.plot(xs, f.predict(x=xs), color="k", lw=1)
            ax.set_title(f"{target} = {f.params['c']:.3g}·task_loss + {f.params['d']:.3g}  "
                         f"R²={f.goodness['r2']:.3f}", fontsize=9)
        ax.set_xlabel("fine-tuning (held-out task) loss")
        ax.set_ylabel(target)
        ax.legend(fontsize=7)
        figs["forgetting_vs_task_loss"] = fig

    if "shifted" in fits:
        fig = Figure(figsize=(4.6, 4.4))
        ax = fig.add_subplot(1, 1, 1)
        pred = fits["shifted"].predict(pts["P"], pts["t"])
        ax.scatter(pts.loc[~mask, target], pred[~mask], s=16, label="fitted")
        if mask.any():
            ax.scatter(pts.loc[mask, target], pred[mask], s=30, marker="x", color="C3", label="held out")
        lo, hi = float(min(pts[target].min(), pred.min())), float(max(pts[target].max(), pred.max()))
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8)
        ax.set_xlabel(f"observed {target}")
        ax.set_ylabel("predicted (shifted power law)")
        ax.legend(fontsize=8)
        figs["predicted_vs_observed"] = fig
    return figs


def comparison_bars(summary: pd.DataFrame) -> Figure:
    """A comparison's two panels: held-out forgetting per strategy (mean over runs, 95 % bootstrap CI over
    runs) and the target task's loss (± sd over runs); baseline grey, graceful forgetting orange."""
    labels = summary["strategy"].tolist()
    x = np.arange(len(labels))
    fig = Figure(figsize=(max(8, 1.6 * len(labels)), 4.2))
    axes = fig.subplots(1, 2)
    m = summary["forgetting_heldout"].to_numpy()
    err = np.vstack([m - summary["forgetting_ci_low"].to_numpy(), summary["forgetting_ci_high"].to_numpy() - m])
    colors = ["#888888" if k == "baseline" else "#c07a2c" if k == "graceful forgetting" else "#3b75af"
              for k in summary.get("kind", pd.Series(["mitigation"] * len(labels)))]
    axes[0].bar(x, m, yerr=np.nan_to_num(np.abs(err)), capsize=4, color=colors)
    kind = str(summary["upstream_kind"].iloc[0]) if "upstream_kind" in summary else "all"
    axes[0].set_ylabel("mean forgetting on held-out upstream (nats)" if kind == "all"
                       else f"mean forgetting on held-out {kind} upstream (nats)")
    axes[0].axhline(m[0], color="#888888", ls="--", lw=0.8)
    t = summary["task_loss_after"].to_numpy()
    sd = np.nan_to_num(summary["task_loss_sd"].to_numpy())
    axes[1].bar(x, t, yerr=sd, capsize=4, color=colors)
    axes[1].set_ylabel("task held-out loss after fine-tuning (nats)")
    lo = np.nanmin(t - sd)
    axes[1].set_ylim(bottom=max(0.0, lo - 0.1 * abs(lo)))
    for ax in axes:
        ax.set_xticks(x)
        ax.set_xticklabels(labels, rotation=30, ha="right")
    fig.suptitle("strategies vs plain fine-tuning (error bars: 95% bootstrap CI over runs / sd over runs)")
    return fig


def landscape_lines(landscape: pd.DataFrame, *, label_col: str = "run_id",
                    title: str = "1-D loss landscape (random direction)") -> Figure:
    """Loss against α, one line per run (``landscape`` has columns alpha, loss and ``label_col``)."""
    fig = Figure(figsize=(6.0, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    groups = landscape.groupby(label_col, sort=False) if label_col in landscape.columns else [("model", landscape)]
    for name, g in groups:
        ax.plot(g["alpha"], g["loss"], marker="o", ms=2.5, lw=1, label=str(name))
    ax.set_xlabel("α (relative step along the direction)")
    ax.set_ylabel("task loss (nats)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=6)
    return fig


def sharpness_vs_forgetting(table: pd.DataFrame, corr: pd.DataFrame) -> Figure:
    """Each measure against mean forgetting, titled with its Spearman correlation (``corr``)."""
    ms = [m for m in corr["measure"] if table[m].notna().any()] or list(corr["measure"])[:1]
    fig = Figure(figsize=(4.0 * max(1, len(ms)), 3.8))
    for k, m in enumerate(ms):
        ax = fig.add_subplot(1, max(1, len(ms)), k + 1)
        ax.scatter(table[m], table["mean_forgetting"], s=18)
        r = corr.set_index("measure").loc[m]
        ax.set_title(f"Spearman {r['spearman']:.2f} (p={r['spearman_p']:.2g})", fontsize=9)
        ax.set_xlabel(m.removeprefix("sharpness_"))
        ax.set_ylabel("mean forgetting")
    return fig


# ---- the CLI's files ---------------------------------------------------------------------------

def write_heatmap(values: np.ndarray, row_order: np.ndarray, col_order: np.ndarray, path: str | os.PathLike[str],
                  row_names: list[str]) -> Path:
    """:func:`heatmap` as a PNG file."""
    return save_figure(heatmap(values, row_order, col_order, row_names), path)


def write_spectrum_r2(report: LowRankReport, path: str | os.PathLike[str]) -> Path:
    """:func:`spectrum_r2` of a low-rank report as a PNG file."""
    return save_figure(spectrum_r2(report.singular_values, report.r2_by_rank, report.additive.r2,
                                   report.multiplicative.r2), path)


def write_r2_against_shuffles(permutation, interaction, path: str | os.PathLike[str]) -> Path:
    """:func:`r2_against_shuffles` of a marginal analysis's permutation baselines (``PermutationBaseline``:
    F's two metrics, and the double-centred interaction's global R² when given) as a PNG file."""
    titles = {"global": "global R²(k)", "reference": "reference R²(k) (per-column mean)"}
    curves = {titles.get(m, m): (permutation.observed[m], permutation.mean(m), *permutation.band(m))
              for m in permutation.observed}
    if interaction is not None:
        curves["interaction (double-centred F), global"] = (
            interaction.observed["global"], interaction.mean("global"), *interaction.band("global"))
    return save_figure(r2_against_shuffles(curves, permutation.n_shuffles), path)


def write_pred_scatter(pairs: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """:func:`pred_scatter` as a PNG file."""
    return save_figure(pred_scatter(pairs), path)


def write_precision_curves(curves: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """:func:`precision_curves` as a PNG file."""
    return save_figure(precision_curves(curves), path)


def write_comparison(summary: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """:func:`comparison_bars` as a PNG file."""
    return save_figure(comparison_bars(summary), path)


def write_landscape(landscape: pd.DataFrame, path: str | os.PathLike[str], **kwargs: str) -> Path:
    """:func:`landscape_lines` as a PNG file."""
    return save_figure(landscape_lines(landscape, **kwargs), path)


def write_sharpness_vs_forgetting(table: pd.DataFrame, corr: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """:func:`sharpness_vs_forgetting` as a PNG file."""
    return save_figure(sharpness_vs_forgetting(table, corr), path)


def write_scaling_figures(points: pd.DataFrame, report: ScalingReport, path_for: Callable[[str], Path], *,
                          target: str) -> dict[str, Path]:
    """:func:`scaling_figures` as PNG files, each at ``path_for(name)``; returns name -> path."""
    figs = scaling_figures(points, report, target)
    return {name: save_figure(fig, path_for(name)) for name, fig in figs.items()}
