"""What every section builder shares: :class:`Section`, :class:`Skip`, :class:`ReportContext` and formatting."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from forgetscope.report import figures as figs
from forgetscope.store import ForgettingMatrix, SweepLayout, SweepStore

MAX_TABLE_ROWS = 60
DIGITS = 3  # significant digits of a number in a table: enough to compare, few enough to read

#: How a stored field reads as a table header. A name not listed here reads with its underscores as spaces
#: (:func:`label`), so no header shows a raw field name.
LABELS = {
    "run_id": "run", "task_loss_before": "task loss before", "task_loss_after": "task loss after",
    "task_loss_sd": "task loss sd", "task_loss_sem": "task loss SEM", "trainable_params": "trainable parameters",
    "wall_s": "wall time (s)", "eval_wall_s": "evaluation time (s)", "train_wall_s": "training time (s)",
    "singular_value": "singular value", "energy_share": "share of energy", "r2": "R²",
    "r2_reference": "R² (per-column mean, reference)", "mean_forgetting": "mean F", "forgetting_sem": "F SEM",
    "forgetting_heldout": "mean F (held-out)", "forgetting_ci_low": "F CI low", "forgetting_ci_high": "F CI high",
    "forgotten_share_heldout": "share F > 0 (held-out)", "diff_forgetting": "Δ F vs plain",
    "diff_ci_low": "Δ CI low", "diff_ci_high": "Δ CI high", "dz": "effect size dz", "d_z": "effect size dz",
    "paired_runs": "paired runs",
    "p_wilcoxon": "p Wilcoxon", "p_t": "p t", "p_wilcoxon_holm": "p Wilcoxon (Holm)", "p_t_holm": "p t (Holm)",
    "task_p_wilcoxon_holm": "p Wilcoxon over tasks (Holm)", "p_examples_descriptive": "p examples (descriptive)",
    "upstream_kind": "upstream kind", "upstream_evaluations": "upstream evaluations", "n": "n",
    "spearman": "Spearman ρ", "spearman_p": "p (Spearman)", "pearson": "Pearson r", "pearson_p": "p (Pearson)",
    "method": "method", "probe_frac": "probe share", "inference_skipped": "inference skipped", "rmse": "RMSE",
    "rmse_ratio_vs_additive": "RMSE / additive", "f1": "F1", "precision@10": "precision@10",
    "delta_pearson_vs_additive": "Δ Pearson vs additive", "delta_f1_vs_additive": "Δ F1 vs additive",
    "n_train": "training examples", "n_heldout": "held-out examples", "control_of": "control of",
}


def label(name: object) -> str:
    """The header a column ``name`` is shown under (:data:`LABELS`, else underscores read as spaces)."""
    text = str(name)
    return LABELS.get(text, text.replace("_", " "))


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

    def finding(self, text: str) -> Section:
        """A sentence in larger type: what the section found."""
        self.blocks.append({"kind": "finding", "text": text})
        return self

    def items(self, items: list[str]) -> Section:
        """A bulleted list of short statements."""
        if items:
            self.blocks.append({"kind": "list", "items": list(items)})
        return self

    def figure(self, fig, alt: str, reading: str) -> Section:
        self.blocks.append({"kind": "figure", "figure": figs.render(fig, alt, reading)})
        return self

    def table(self, df: pd.DataFrame, caption: str = "", digits: int = DIGITS, collapse_over: int | None = None,
              *, source: str = "") -> Section:
        """A table (headers through :func:`label`, numbers to ``digits`` significant digits) naming the file(s)
        it was read from (``source``, e.g. ``runs.parquet``); longer than ``collapse_over`` rows it is folded
        into a <details> element."""
        note = ""
        n = len(df)
        if n > MAX_TABLE_ROWS:
            note = f"first {MAX_TABLE_ROWS} of {n} rows"
            df = df.head(MAX_TABLE_ROWS)
        return self.html_table(table_html(df, digits), caption, source=source, note=note,
                               collapsed=collapse_over is not None and n > collapse_over,
                               summary=f"{caption or 'Table'} ({n} rows)")

    def html_table(self, html: str, caption: str = "", *, source: str = "", note: str = "",
                   collapsed: bool = False, summary: str = "") -> Section:
        """A table already written as HTML (escaped), e.g. one with a column of texts."""
        self.blocks.append({"kind": "table", "html": html, "caption": caption, "note": note, "source": source,
                            "collapsed": collapsed, "summary": summary or caption or "Table"})
        return self

    def pairs(self, items: list[tuple[str, Any]]) -> Section:
        self.blocks.append({"kind": "pairs", "items": [(k, fmt(v)) for k, v in items if v not in (None, "")]})
        return self

    def hover(self, svg: str, summary: str, caption: str = "") -> Section:
        """Inline SVG markup (already escaped, e.g. :func:`forgetscope.report.hover.heatmap_svg`) in an open
        <details> element headed ``summary``."""
        self.blocks.append({"kind": "hover", "svg": svg, "summary": summary, "caption": caption})
        return self

    def details(self, summary: str, text: str) -> Section:
        self.blocks.append({"kind": "details", "summary": summary, "text": text})
        return self


@dataclass
class ReportContext:
    """What the builders share: the sweep, its matrix (if any) and options.

    Every file a builder reads is named by :attr:`layout` (a :class:`~forgetscope.store.SweepLayout`).
    """

    path: Path
    store: SweepStore
    manifest: dict[str, Any]
    matrix: ForgettingMatrix | None
    predict: bool | str = "auto"
    seed: int = 0
    cache: dict[str, Any] = field(default_factory=dict)
    kind: str = "all"  # the kind of upstream example ``matrix`` holds (lm, instruction, or all columns)
    headline_kind: str = "all"  # the kind a section not split by kind averages: the report's kind, else the default
    kinds: tuple[str, ...] = ("all",)  # the kinds the report shows, the headline kind first
    label: str = ""  # the sweep's name in a report of several sweeps (prefixes the files tables name)

    def for_kind(self, kind: str) -> ReportContext:
        """The same sweep with the matrix restricted to one kind of upstream example (its own cache)."""
        from dataclasses import replace

        matrix = self.matrix.select_kind(kind) if self.matrix is not None else None
        return replace(self, matrix=matrix, kind=kind, cache={})

    @property
    def layout(self) -> SweepLayout:
        return self.store.layout

    def relative(self, path: Path) -> str:
        """``path`` as written in the report: relative to the sweep directory."""
        return path.relative_to(self.path).as_posix()

    def source(self, *paths: Path) -> str:
        """The files a table was read from, as its caption names them (``runs.parquet + F.npy``; in a report of
        several sweeps prefixed with the sweep's name)."""
        names = [self.relative(p) for p in paths]
        return " + ".join(f"{self.label}/{n}" if self.label else n for n in names)

    def need_file(self, path: Path) -> Path:
        """``path`` if it exists, else :class:`Skip` naming it."""
        if not path.is_file():
            raise Skip(f"no {self.relative(path)}")
        return path

    def need_matrix(self, min_rows: int = 1, min_cols: int = 1) -> ForgettingMatrix:
        m = self.matrix
        if m is None:
            raise Skip(f"no forgetting matrix ({self.layout.matrix.name}) yet")
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


def fmt(v: Any, digits: int = DIGITS) -> str:
    """A cell's text: integers whole (thousands separated from 10,000), floats to ``digits`` significant
    digits (scientific below 0.001 and from a million), NaN as a dash."""
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
        if abs(v) >= 10 ** (digits - 1):  # a whole number carries the digits: no exponent below a million
            return f"{round(v):,}" if abs(v) >= 10000 else str(round(v))
        return f"{v:.{digits}g}" if abs(v) >= 1 else f"{v:.{digits}f}".rstrip("0").rstrip(".") or "0"
    if isinstance(v, (dict, list)):
        return json.dumps(v, default=str)
    return str(v)


def table_html(df: pd.DataFrame, digits: int = DIGITS) -> str:
    """``df`` as a ``table.data`` (escaped; headers through :func:`label`; sortable in the page)."""
    out = df.copy()
    for c in out.columns:
        out[c] = [fmt(v, digits) for v in out[c]]
    out.columns = [label(c) for c in out.columns]
    return out.to_html(index=False, escape=True, border=0, classes="data", na_rep="–")


def pct(x: float) -> str:
    return f"{100 * x:.0f}%" if np.isfinite(x) else "–"


def col(df: pd.DataFrame, *names: str) -> str | None:
    """The first of ``names`` that is a column of ``df`` (case-insensitive)."""
    lower = {c.lower(): c for c in df.columns}
    for n in names:
        if n.lower() in lower:
            return lower[n.lower()]
    return None
