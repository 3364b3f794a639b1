"""Forgetting heat map: ``F.npy`` sorted by :func:`forgetscope.analysis.lowrank.factor_order`.

The PNG figure always (its colour bar has labelled ticks), and a table of the :data:`TOP_CELLS` largest entries
(run, task, example, F, text), so the map's strongest values read without hovering; below them, for a matrix
within :func:`forgetscope.report.hover.fits`, the same map as inline SVG whose cells show a tooltip on hover (run,
task, example id, F, the first words of the example's text from the upstream table), a small one with each value
written in its cell. A larger matrix gets a line saying why the hoverable map is left out.
"""

from __future__ import annotations

import numpy as np

from forgetscope.analysis import plots
from forgetscope.report import hover
from forgetscope.report.sections.base import ReportContext, Section, pct
from forgetscope.report.sections.examples import example_text, short_texts, text_table

TOP_CELLS = 10
TOP_TEXT_CHARS = 120


def top_cells(F: np.ndarray, k: int = TOP_CELLS) -> list[tuple[int, int]]:
    """(row, column) of the ``k`` largest finite entries of ``F`` (largest first; only F > 0)."""
    flat = np.where(np.isfinite(F), F, -np.inf).ravel()
    order = np.argsort(-flat, kind="stable")[:k]
    return [divmod(int(i), F.shape[1]) for i in order if flat[i] > 0]


def _top_table(ctx: ReportContext, sec: Section, m) -> None:
    cells = top_cells(m.values)
    if not cells:
        return
    runs = m.runs if m.runs is not None and len(m.runs) == m.shape[0] else None
    up = m.upstream if m.upstream is not None and len(m.upstream) == m.shape[1] else None
    rows = [[m.row_names[i], str(runs["task"].iloc[i]) if runs is not None and "task" in runs else "–",
             m.col_names[j], m.values[i, j],
             (example_text(up.iloc[j], TOP_TEXT_CHARS) if up is not None else None) or "–"] for i, j in cells]
    sec.html_table(text_table(["run", "task", "example", "F", "text"], rows, 4),
                   f"The {len(cells)} largest entries of the map (the reddest cells)",
                   source=ctx.source(ctx.layout.matrix, ctx.layout.runs_table, ctx.layout.upstream))


def build(ctx: ReportContext) -> Section:
    m = ctx.need_matrix(1, 1)
    sec = Section("heatmap", "Forgetting heat map")
    if min(m.shape) >= 2:
        from forgetscope.analysis.lowrank import factor_order

        rows, cols = factor_order(m.values, "additive")
        how = "rows and columns sorted by the additive model's task and example effects (largest first)"
    else:
        rows, cols = np.arange(m.shape[0]), np.argsort(-np.nan_to_num(m.values[0], nan=-np.inf))
        how = "columns sorted by forgetting"
    from forgetscope.measure.forgetting import forgotten_share

    F = m.values
    share = forgotten_share(F)
    worst = m.row_names[int(np.nanargmax(np.nanmean(F, 1)))]
    reading = (f"{how}; red = forgotten, blue = improved. {pct(share)} of measured entries are forgotten; "
               f"run '{worst}' forgets most on average.")
    sec.figure(plots.heatmap(F, rows, cols, m.row_names), "forgetting heat map", reading)
    _top_table(ctx, sec, m)
    if hover.fits(m.shape):
        runs = m.runs
        tasks = runs["task"].astype(str).tolist() if runs is not None and len(runs) == m.shape[0] \
            and "task" in runs.columns else None
        aligned = m.upstream is not None and len(m.upstream) == m.shape[1]  # row j describes column j
        texts = short_texts(m.upstream) if aligned else None
        svg = hover.heatmap_svg(F, rows, cols, m.row_names, m.col_names, tasks=tasks, texts=texts,
                                x_label="upstream examples, sorted by example effect" if min(m.shape) >= 2
                                else "upstream examples, sorted by forgetting")
        sec.hover(svg, f"Hover over a cell: the same map, {m.shape[0]} runs × {m.shape[1]} examples, one cell each",
                  ("Each cell shows F (nats/token); its tooltip adds " if hover.annotated(m.shape) else
                   "Each cell's tooltip gives ") + "the run and its task, the example id, F in nats/token"
                  + (" and the first words of the example's text." if texts is not None else "."))
    else:
        sec.text(f"The hoverable version of this map is drawn for {hover.limits_text()}; this matrix has "
                 f"{m.shape[0]} × {m.shape[1]}. The next section lists the texts behind the strongest cells.")
    return sec
