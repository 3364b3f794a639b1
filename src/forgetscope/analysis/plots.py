"""Figures for the low-rank analysis and prediction (PNG, rendered with the Agg canvas).

Built on ``matplotlib.figure.Figure`` + ``FigureCanvasAgg`` rather than pyplot, so importing this
module never switches a notebook's backend and works headless. Each function writes one PNG and
returns its path.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from forgetscope.analysis.lowrank import LowRankReport
from forgetscope.store.io import atomic_path

MAX_HEATMAP_COLS = 1000


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


def heatmap(values: np.ndarray, row_order: np.ndarray, col_order: np.ndarray, path: str | os.PathLike[str],
            *, row_names: list[str] | None = None, title: str = "forgetting, sorted by factors") -> Path:
    """Heat map with rows/columns permuted (e.g. by :func:`~forgetscope.analysis.lowrank.factor_order`)."""
    V = bin_columns(np.asarray(values, float)[np.ix_(row_order, col_order)], MAX_HEATMAP_COLS)
    lim = np.nanpercentile(np.abs(V), 98) if np.isfinite(V).any() else 1.0
    fig = Figure(figsize=(9, max(3.0, min(12.0, 0.25 * V.shape[0] + 2))))
    ax = fig.add_subplot()
    im = ax.imshow(V, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
    fig.colorbar(im, ax=ax, label="forgetting (nats)")
    ax.set_xlabel("upstream examples (sorted)" + (" [binned]" if values.shape[1] > MAX_HEATMAP_COLS else ""))
    ax.set_ylabel("tasks (sorted)")
    if row_names is not None and len(row_order) <= 40:
        ax.set_yticks(range(len(row_order)), [row_names[i] for i in row_order], fontsize=7)
    ax.set_title(title)
    return save_figure(fig, path)


def spectrum_r2(report: LowRankReport, path: str | os.PathLike[str]) -> Path:
    """Singular spectrum (log scale) beside the R²(k) curve, with the additive/multiplicative R²."""
    fig = Figure(figsize=(10, 4))
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    s = report.singular_values
    ax1.semilogy(np.arange(1, len(s) + 1), np.maximum(s, 1e-300), "o-", ms=3)
    ax1.set_xlabel("k")
    ax1.set_ylabel("singular value")
    ax1.set_title("singular spectrum")
    k = np.arange(1, len(report.r2_by_rank) + 1)
    ax2.plot(k, report.r2_by_rank, "o-", ms=4, label="rank-k SVD")
    ax2.axhline(report.additive.r2, color="C1", ls="--", label=f"additive ({report.additive.r2:.3f})")
    ax2.axhline(report.multiplicative.r2, color="C2", ls=":",
                label=f"multiplicative ({report.multiplicative.r2:.3f})")
    ax2.set_xlabel("k")
    ax2.set_ylabel("R²")
    ax2.set_ylim(min(0.0, float(np.nanmin(report.r2_by_rank))), 1.0)
    ax2.legend(fontsize=8)
    ax2.set_title("R²(k)")
    return save_figure(fig, path)


def scatter_pred_true(pairs: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Predicted vs true forgetting per predictor (columns predictor, true, pred), one panel each."""
    names = list(dict.fromkeys(pairs["predictor"]))
    fig = Figure(figsize=(3.2 * max(1, len(names)), 3.4))
    for i, name in enumerate(names):
        ax = fig.add_subplot(1, len(names), i + 1)
        d = pairs[pairs["predictor"] == name]
        ax.scatter(d["true"], d["pred"], s=3, alpha=0.35)
        lo, hi = np.nanmin(d[["true", "pred"]].to_numpy()), np.nanmax(d[["true", "pred"]].to_numpy())
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("true")
        if i == 0:
            ax.set_ylabel("predicted")
    return save_figure(fig, path)


def precision_at_k(curves: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Precision@k curves per predictor (columns predictor, k, precision), log-scaled k."""
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    for name, d in curves.groupby("predictor", sort=False):
        ax.semilogx(d["k"], d["precision"], label=str(name))
    ax.set_xlabel("k (most forgotten, predicted)")
    ax.set_ylabel("precision@k")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def strategy_bars(summary: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
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
    return save_figure(fig, path)

