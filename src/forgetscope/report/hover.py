"""A heat map the reader can hover without any script: inline SVG, one ``<rect>`` per cell, each with a native
``<title>`` tooltip (run, task, example id, F and the first words of the example's text).

The report shows it below the PNG heat map when the matrix has at most :data:`MAX_ROWS` rows, :data:`MAX_COLS`
columns and :data:`MAX_CELLS` cells: each cell is then one run × one upstream example (the PNG averages columns
into bins only above :data:`forgetscope.analysis.plots.MAX_HEATMAP_COLS`, more than :data:`MAX_COLS`). Rows and
columns are in the PNG's order and the colours are the PNG's (``RdBu_r``, symmetric at the 98th percentile of
|F|). The SVG is markup inside the page: no script, no reference to another file or element, no ``id``, so the
page's Content-Security-Policy (``default-src 'none'``) has nothing to block. Every text in it is escaped.

A matrix of at most :data:`ANNOTATE_ROWS` rows and :data:`ANNOTATE_COLS` columns also carries each cell's value
written in the cell, so it reads without hovering; the colour scale has labelled ticks.

A cell costs about 150 to 250 bytes (its tooltip repeats the run and the start of the text; F is in nats/token,
as the caption says), so :data:`MAX_CELLS` keeps the SVG under about 2.5 MB.
"""

from __future__ import annotations

import html
import math

import numpy as np

from forgetscope.analysis.plots import sym_limit

MAX_ROWS = 60
MAX_COLS = 400
MAX_CELLS = 10_000
WIDTH = 1060  # the viewBox width in px; the element scales down to a narrower page
CMAP = "RdBu_r"
MISSING = "#d9dce1"
LEGEND_STEPS = 11
ANNOTATE_ROWS = 40
ANNOTATE_COLS = 24


def fits(shape: tuple[int, int]) -> bool:
    """Whether a matrix of ``shape`` gets a hoverable heat map."""
    rows, cols = shape
    return rows <= MAX_ROWS and cols <= MAX_COLS and rows * cols <= MAX_CELLS


def annotated(shape: tuple[int, int]) -> bool:
    """Whether the hoverable map of a matrix of ``shape`` also writes each value in its cell."""
    return shape[0] <= ANNOTATE_ROWS and shape[1] <= ANNOTATE_COLS


def limits_text() -> str:
    return f"at most {MAX_ROWS} runs, {MAX_COLS} examples and {MAX_CELLS:,} cells"


def _palette(n: int = 256) -> list[str]:
    from matplotlib import colormaps

    rgb = (np.asarray(colormaps[CMAP](np.linspace(0, 1, n)))[:, :3] * 255).round().astype(int)
    return [f"#{r:02x}{g:02x}{b:02x}" for r, g, b in rgb]


def _colours(V: np.ndarray, lim: float, palette: list[str]) -> np.ndarray:
    n = len(palette)
    pos = np.clip((np.nan_to_num(V, nan=0.0) + lim) / (2 * lim), 0, 1)
    idx = np.round(pos * (n - 1)).astype(int)
    out = np.asarray(palette, dtype=object)[idx]
    out[~np.isfinite(V)] = MISSING
    return out


def _num(v: float) -> str:
    """A coordinate with at most 2 decimals, no trailing zeros."""
    return f"{v:.2f}".rstrip("0").rstrip(".")


def _label(name: str, limit: int = 34) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def heatmap_svg(values: np.ndarray, row_order: np.ndarray, col_order: np.ndarray, row_names: list[str],
                col_names: list[str], *, tasks: list[str] | None = None, texts: list[str | None] | None = None,
                x_label: str = "upstream examples, sorted by example effect") -> str:
    """The inline ``<svg>`` of ``values[row_order][:, col_order]``; ``tasks[i]`` names run i's task and
    ``texts[j]`` the start of example j's text (both optional, in the matrix's own order)."""
    V = np.asarray(values, float)[np.ix_(row_order, col_order)]
    R, C = V.shape
    lim = sym_limit(V)
    palette = _palette()
    fill = _colours(V, lim, palette)
    labels = [_label(row_names[i]) for i in row_order]
    label_w = min(240, 6 * max(len(s) for s in labels) + 14)
    rh = float(np.clip(360 / R, 9, 18))
    top, pw, ph = 4, WIDTH - label_w - 8, R * rh
    height = math.ceil(top + ph + 66)
    esc = html.escape
    out = [f'<svg class="hover" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" '
           f'height="{height}" font-size="10" aria-label="forgetting heat map, one cell per run and example; '
           f'hover a cell for its values">']
    for r, name in enumerate(labels):  # row labels
        out.append(f'<text x="{label_w - 6}" y="{_num(top + (r + 0.5) * rh + 3.5)}" text-anchor="end">'
                   f"{esc(name)}</text>")
    out.append(f'<svg x="{label_w}" y="{top}" width="{_num(pw)}" height="{_num(ph)}" viewBox="0 0 {C} {R}" '
               'preserveAspectRatio="none" shape-rendering="crispEdges"><g class="cells">')
    for r, i in enumerate(row_order):
        run = f"run {row_names[i]}" + (f" (task {tasks[i]})" if tasks is not None and tasks[i] != row_names[i]
                                       else "")
        for c, j in enumerate(col_order):
            v = V[r, c]
            value = f"F = {v:.4g}" if np.isfinite(v) else "F not measured"
            tip = f"{run}\nexample {col_names[j]}\n{value}"
            if texts is not None and texts[j]:
                tip += f"\n“{texts[j]}”"
            out.append(f'<rect x="{c}" y="{r}" width="1" height="1" fill="{fill[r, c]}"><title>{esc(tip)}</title>'
                       "</rect>")
    out.append("</g></svg>")
    if annotated((R, C)):  # values written in the cells: readable without hovering
        cw = pw / C
        size = _num(float(np.clip(min(cw / 4.2, rh * 0.62), 6, 11)))
        for r in range(R):
            for c in range(C):
                v = V[r, c]
                if not np.isfinite(v):
                    continue
                dark = abs(v) > 0.55 * lim
                out.append(f'<text x="{_num(label_w + (c + 0.5) * cw)}" y="{_num(top + (r + 0.5) * rh + 3.5)}" '
                           f'text-anchor="middle" font-size="{size}" fill="{"#ffffff" if dark else "#1d2330"}" '
                           f'pointer-events="none">{v:+.2g}</text>')
    out.append(f'<rect x="{label_w}" y="{top}" width="{_num(pw)}" height="{_num(ph)}" fill="none" stroke="#8a93a3" '
               'stroke-width="0.6" pointer-events="none"/>')
    y = top + ph + 15
    out.append(f'<text x="{_num(label_w + pw / 2)}" y="{_num(y)}" text-anchor="middle">{esc(x_label)} ({C}); '
               "hover a cell for its run, example, F and text</text>")
    # the colour scale: LEGEND_STEPS swatches from −lim (blue, improved) to +lim (red, forgotten)
    sw, x0, y0 = 26, label_w + pw / 2 - LEGEND_STEPS * 13, y + 10
    for s, v in enumerate(np.linspace(-lim, lim, LEGEND_STEPS)):
        colour = palette[round((v + lim) / (2 * lim) * (len(palette) - 1))]
        out.append(f'<rect x="{_num(x0 + s * sw)}" y="{_num(y0)}" width="{sw}" height="10" fill="{colour}">'
                   f"<title>F = {v:.3g} nats/token</title></rect>")
    for v in (-lim, -lim / 2, 0.0, lim / 2, lim):  # labelled ticks under the scale
        x = x0 + (v + lim) / (2 * lim) * LEGEND_STEPS * sw
        out.append(f'<line x1="{_num(x)}" x2="{_num(x)}" y1="{_num(y0 + 10)}" y2="{_num(y0 + 13)}" stroke="#4a5468" '
                   'stroke-width="0.6"/>')
        out.append(f'<text x="{_num(x)}" y="{_num(y0 + 21)}" text-anchor="middle" font-size="8">{v:+.2g}</text>')
    out.append(f'<text x="{_num(x0 - 6)}" y="{_num(y0 + 9)}" text-anchor="end">−{lim:.3g} improved</text>')
    out.append(f'<text x="{_num(x0 + LEGEND_STEPS * sw + 6)}" y="{_num(y0 + 9)}">+{lim:.3g} forgotten '
               "(nats/token; beyond is clipped)</text>")
    out.append("</svg>")
    return "".join(out)
