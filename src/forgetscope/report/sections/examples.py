"""Which texts were forgotten: each task's most-forgotten and most-improved upstream examples, with their text.

The matrix's upstream table (``layout.upstream``: upstream.parquet) describes column j in row j; its
``text`` column holds a plain-text example, ``prompt`` and ``response`` a prompt/response pair (shown as
``prompt → response``). Rows of the matrix are grouped by task (``runs.parquet``'s ``task`` column, each run
alone without one); the runs of one task are averaged over seeds. When the runs hold several strategies,
only the baseline strategy's runs count (``plain``, else the first strategy): a mitigation strategy would
blur which texts fine-tuning on the task itself forgets. Each task's table lists its :data:`TOP_K` most-forgotten
examples (largest F > 0) and, in a second labelled group of rows (``<tbody class="improved">``), its :data:`TOP_K`
most-improved ones (most negative F: the loss fell). Texts are escaped and shortened to :data:`TEXT_LIMIT`
characters; the table is written here so that the text column can be left-aligned with an inline style (the page
stays free of external assets). :func:`short_texts` gives the first few words of each example, for tooltips.
"""

from __future__ import annotations

import html
import re
import warnings
from typing import Any

import numpy as np
import pandas as pd

from forgetscope.report.sections.base import ReportContext, Section, Skip, fmt
from forgetscope.report.sections.strategies import BASELINE

TOP_K = 5
TEXT_LIMIT = 300
COMMON_ROWS = 10
FOLD_OVER = 12  # above this many tasks, each task's table is folded into a <details> element
ELLIPSIS = "…"
PAIR_SEP = " → "
TEXT_COLUMNS = ("text", "prompt", "response")
FORGOTTEN_LABEL = "Most forgotten (largest F > 0: the loss rose)"
IMPROVED_LABEL = "Most improved (most negative F: the loss fell)"
TOOLTIP_WORDS = 8  # the start of an example's text in a tooltip (the hoverable heat map)
TOOLTIP_CHARS = 60


# ---- texts --------------------------------------------------------------------------------------


def _clean(value: Any) -> str | None:
    """A cell of the upstream table as one line of text (whitespace runs collapsed); None when absent."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    return re.sub(r"\s+", " ", str(value)).strip()


def shorten(text: str, limit: int = TEXT_LIMIT) -> str:
    """``text`` cut to at most ``limit`` characters, ending in an ellipsis when cut (at a word boundary
    when one is near)."""
    if len(text) <= limit:
        return text
    cut = text[: max(limit - 1, 0)]
    space = cut.rfind(" ")
    if space >= limit - 30:
        cut = cut[:space]
    return cut.rstrip() + ELLIPSIS


def example_text(row: pd.Series | dict[str, Any], limit: int = TEXT_LIMIT) -> str | None:
    """The display text of one upstream row: its ``text``, else ``prompt → response``; at most ``limit``
    characters (a long pair keeps at least half of the room for the response). None when the row has none."""
    text = _clean(row.get("text"))
    if text:
        return shorten(text, limit)
    prompt, response = _clean(row.get("prompt")), _clean(row.get("response"))
    if not response:
        return shorten(prompt, limit) if prompt else None
    if not prompt:
        return shorten(response, limit)
    room = limit - len(PAIR_SEP)
    p = shorten(prompt, max(room - len(response), room // 2))
    return p + PAIR_SEP + shorten(response, room - len(p))


def upstream_texts(upstream: pd.DataFrame | None, limit: int = TEXT_LIMIT) -> list[str | None] | None:
    """The display text of each upstream row, or None when the table stores no text at all."""
    if upstream is None or not any(c in upstream.columns for c in TEXT_COLUMNS):
        return None
    texts = [example_text(row, limit) for _, row in upstream.iterrows()]
    return texts if any(t for t in texts) else None


def first_words(text: str | None, words: int = TOOLTIP_WORDS, limit: int = TOOLTIP_CHARS) -> str | None:
    """The first ``words`` words of ``text`` (at most ``limit`` characters), ending in an ellipsis when cut."""
    if not text:
        return None
    parts = text.split()
    short = " ".join(parts[:words])
    cut = len(parts) > words
    if len(short) > limit:
        short, cut = short[: limit - 1].rstrip(), True
    return short.removesuffix(ELLIPSIS) + ELLIPSIS if cut else short


def short_texts(upstream: pd.DataFrame | None, words: int = TOOLTIP_WORDS) -> list[str | None] | None:
    """The first ``words`` words of each upstream row's display text (None where it has none), or None when the
    table stores no text at all."""
    texts = upstream_texts(upstream, limit=words * 40)
    return None if texts is None else [first_words(t, words) for t in texts]


# ---- the forgetting of each task ----------------------------------------------------------------


def task_rows(m) -> tuple[list[str], list[np.ndarray], str]:
    """(task names, the matrix rows of each task, a note on which runs count) for ``m``."""
    runs = m.runs
    if runs is None or len(runs) != m.shape[0] or "task" not in runs.columns:
        return list(m.row_names), [np.array([i]) for i in range(m.shape[0])], "one block per run"
    keep = np.ones(len(runs), bool)
    note = "runs of one task averaged over seeds"
    if "strategy" in runs.columns and runs["strategy"].nunique() > 1:
        strategies = runs["strategy"].astype(str)
        base = BASELINE if (strategies == BASELINE).any() else str(strategies.iloc[0])
        keep = (strategies == base).to_numpy()
        note += f", and only the '{base}' runs of the sweep's {runs['strategy'].nunique()} strategies"
    tasks = runs["task"].astype(str).to_numpy()
    names = list(dict.fromkeys(tasks[keep]))
    return names, [np.flatnonzero(keep & (tasks == t)) for t in names], note


def task_forgetting(values: np.ndarray, groups: list[np.ndarray]) -> np.ndarray:
    """One row per task: the mean of its runs' rows (NaN where none of them measured the example)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.stack([np.nanmean(values[g], 0) for g in groups])


def mean_over_others(G: np.ndarray) -> np.ndarray:
    """``out[t, j]``: the mean F of example j over every task but t (NaN with one task)."""
    finite = np.isfinite(G)
    total, count = np.where(finite, G, 0.0).sum(0), finite.sum(0)
    others_total = total[None, :] - np.where(finite, G, 0.0)
    others_count = count[None, :] - finite
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(others_count > 0, others_total / np.maximum(others_count, 1), np.nan)


def top_forgotten(row: np.ndarray, k: int = TOP_K) -> np.ndarray:
    """Indices of the ``k`` largest positive (forgotten) entries of ``row``, largest first."""
    idx = np.flatnonzero(np.isfinite(row) & (row > 0))
    return idx[np.argsort(-row[idx], kind="stable")][:k]


def top_improved(row: np.ndarray, k: int = TOP_K) -> np.ndarray:
    """Indices of the ``k`` most negative (improved: the loss fell) entries of ``row``, most negative first."""
    idx = np.flatnonzero(np.isfinite(row) & (row < 0))
    return idx[np.argsort(row[idx], kind="stable")][:k]


def most_common(G: np.ndarray, rows: int = COMMON_ROWS) -> np.ndarray:
    """Examples forgotten (F > 0) by the most tasks, ties broken by the larger mean F over tasks."""
    count = (np.isfinite(G) & (G > 0)).sum(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(G, 0)
    idx = np.flatnonzero(count > 0)
    order = np.lexsort((-np.nan_to_num(mean[idx], nan=-np.inf), -count[idx]))
    return idx[order][:rows]


# ---- HTML ---------------------------------------------------------------------------------------


def _cells(row: list[Any], text_col: int) -> str:
    cells = []
    for i, v in enumerate(row):
        s = html.escape(v if isinstance(v, str) else fmt(v), quote=True)
        if i == text_col:
            cells.append(f'<td style="text-align:left;white-space:normal;min-width:24em">{s}</td>')
        else:
            cells.append(f"<td>{s}</td>")
    return "".join(cells)


def _group_row(label: str, n_cols: int, cls: str = "") -> str:
    c = f"group {cls}".strip()
    return f'<tr class="{c}"><th colspan="{n_cols}">{html.escape(label)}</th></tr>'


def text_table(columns: list[str], rows: list[list[Any]], text_col: int, label: str = "",
                more: tuple[tuple[str, str, list[list[Any]]], ...] = ()) -> str:
    """A ``table.data`` with every cell escaped; the text column left-aligned and wrapping.

    ``label`` heads ``rows`` with a row naming them; ``more`` holds further groups of rows (label, class, rows),
    each in its own ``<tbody class=...>`` whose rows carry the class too (an empty group is left out)."""
    left = ' style="text-align:left"'
    head = "".join(f"<th{left if i == text_col else ''}>{html.escape(c)}</th>" for i, c in enumerate(columns))
    body = "".join("<tr>" + _cells(r, text_col) + "</tr>" for r in rows)
    if label and rows:
        body = _group_row(label, len(columns)) + body
    out = [f'<table border="0" class="dataframe data"><thead><tr style="text-align: right;">{head}</tr></thead>',
           f"<tbody>{body}</tbody>"]
    for glabel, cls, grows in more:
        if grows:
            out.append(f'<tbody class="{cls}">' + _group_row(glabel, len(columns), cls)
                       + "".join(f'<tr class="{cls}">' + _cells(r, text_col) + "</tr>" for r in grows) + "</tbody>")
    return "".join(out) + "</table>"


def _table_block(sec: Section, columns: list[str], rows: list[list[Any]], text_col: int, caption: str,
                 collapsed: bool = False, note: str = "", label: str = "",
                 more: tuple[tuple[str, str, list[list[Any]]], ...] = (), source: str = "") -> None:
    sec.html_table(text_table(columns, rows, text_col, label, more), caption, source=source, note=note,
                   collapsed=collapsed)


def build(ctx: ReportContext, k: int = TOP_K, limit: int = TEXT_LIMIT) -> Section:
    m = ctx.need_matrix()
    texts = upstream_texts(m.upstream, limit)
    if texts is None:
        raise Skip(f"the upstream table ({ctx.layout.upstream.name}) stores no example texts, only ids")
    names, groups, note = task_rows(m)
    G = task_forgetting(m.values, groups)
    others = mean_over_others(G)
    ids = m.col_names
    source = ctx.source(ctx.layout.matrix, ctx.layout.runs_table, ctx.layout.upstream)
    sec = Section("examples", "Which texts were forgotten",
                  lead=f"The upstream examples each task forgets most ({note}): F in nats/token (loss after − "
                       "loss before), beside the mean F of the same example over the other tasks. An example with "
                       "a much smaller mean over the other tasks is forgotten by this task in particular; one with "
                       "a similar mean is fragile under any fine-tuning. Below them, under their own heading, the "
                       f"examples the task improved most (most negative F). Up to {k} of each; texts are "
                       f"shortened to {limit} characters; a prompt/response pair reads prompt → response.")
    n_tasks = len(names)
    common = most_common(G)
    if n_tasks > 1 and len(common):
        count = (np.isfinite(G) & (G > 0)).sum(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(G, 0)
        rows = [[ids[j], f"{count[j]} of {n_tasks}", mean[j], texts[j] or "–"] for j in common]
        _table_block(sec, ["example", "tasks with F > 0", "mean F over tasks", "text"], rows, 3,
                     "Forgotten by the most tasks", source=source)
    # with one task there is no other task to compare with
    columns = ["example", "F", "mean F, other tasks", "text"] if n_tasks > 1 else ["example", "F", "text"]

    def rows_of(idx: np.ndarray, t: int) -> list[list[Any]]:
        return [[ids[j], G[t, j], *([others[t, j]] if n_tasks > 1 else []), texts[j] or "–"] for j in idx]

    empty, none_improved = [], []
    for t, name in enumerate(names):
        top, best = top_forgotten(G[t], k), top_improved(G[t], k)
        n_runs = len(groups[t])
        caption = f"Task '{name}'" + (f" (mean of {n_runs} runs)" if n_runs > 1 else "")
        if not len(top):
            empty.append(name)
        if not len(best):
            none_improved.append(name)
        if not len(top) and not len(best):
            continue
        _table_block(sec, columns, rows_of(top, t), len(columns) - 1, caption, collapsed=n_tasks > FOLD_OVER,
                     label=FORGOTTEN_LABEL, more=((IMPROVED_LABEL, "improved", rows_of(best, t)),), source=source)
    if empty:
        sec.text("No upstream example with F > 0 for task(s): " + ", ".join(f"'{n}'" for n in empty) + ".")
    if none_improved:
        sec.text("No upstream example with F < 0 for task(s): " + ", ".join(f"'{n}'" for n in none_improved) + ".")
    return sec
