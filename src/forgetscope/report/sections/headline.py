"""What was found: the report's first section, per kind of upstream example.

Per task (its baseline runs, seeds averaged, as in :func:`~forgetscope.report.sections.examples.task_rows`):
how much it forgot (mean F, the share of measured entries with F > 0, max F), of which examples (the
:data:`TOP_TEXTS` it forgets most, with their words), and against its controls:

- the **null row** where the sweep has one (``F_null.npy``: a random update of each run's size): its mean F
  beside the run's, and their ratio;
- the **within-row shuffle** of :mod:`forgetscope.analysis.marginals`: a shuffle keeps each run's values and
  forgets which example each belongs to. Per task with two seeds, the correlation of the seeds' interaction
  rows (:func:`~forgetscope.analysis.marginals.interaction_seed_reliability`) beside the 95th percentile of
  the same correlation with one seed's row shuffled (:data:`N_SHUFFLES` seeded shuffles): above it, the task
  forgets the same examples again. For the sweep, :func:`~forgetscope.analysis.marginals.marginal_analysis`'s
  variance split and its verdicts (low rank beyond row scale; a reproducible interaction).

Everything is computed from ``F.npy``, ``runs.parquet``, ``upstream.parquet`` and ``F_null.npy``; nothing is
read from an analysis folder, so the headline always describes the matrix the report shows.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd

from forgetscope.report.sections.base import ReportContext, Section, Skip, fmt, pct
from forgetscope.report.sections.examples import (
    example_text,
    task_forgetting,
    task_rows,
    text_table,
    top_forgotten,
)

TOP_TEXTS = 3
TEXT_CHARS = 110  # each of the top texts in the headline table
N_SHUFFLES = 200  # shuffles of one seed's row for a task's seed-agreement band
KIND_NAMES = {"lm": "plain-text (lm)", "instruction": "prompt/response (instruction)", "all": "upstream"}


def _mean(x: np.ndarray) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanmean(x)) if np.size(x) else float("nan")


def baseline_matrix(m):
    """``m`` restricted to the runs :func:`task_rows` keeps (the baseline strategy's), and those groups."""
    names, groups, note = task_rows(m)
    keep = np.concatenate(groups) if groups else np.array([], int)
    return names, groups, note, keep


def shuffle_band(a: np.ndarray, b: np.ndarray, n: int = N_SHUFFLES, seed: int = 0, q: float = 0.95) -> float:
    """The ``q`` quantile of corr(shuffled ``a``, ``b``) over ``n`` within-row shuffles of ``a``."""
    from forgetscope.analysis.marginals import shuffle_within_rows

    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return float("nan")
    rng = np.random.default_rng(seed)
    x, y = a[ok][None, :], b[ok]
    rs = [np.corrcoef(shuffle_within_rows(x, rng)[0], y)[0, 1] for _ in range(n)]
    return float(np.quantile(rs, q))


def seed_agreement(F: np.ndarray, runs: pd.DataFrame | None, seed: int = 0) -> dict[str, tuple[float, float]]:
    """Per task with two seeds: (r of the seeds' interaction rows, its within-row shuffle 95th percentile)."""
    from forgetscope.analysis.marginals import interaction, interaction_seed_reliability

    if runs is None or F.shape[0] < 2 or F.shape[1] < 3:
        return {}
    rel = interaction_seed_reliability(F, runs)
    if not rel.n_tasks:
        return {}
    E = interaction(F)
    runs = runs.reset_index(drop=True)
    out = {}
    for r in rel.per_task.itertuples():
        rows = runs.index[(runs["task"].astype(str) == str(r.task))]
        a = rows[runs.loc[rows, "seed"].to_numpy() == r.seed_a]
        b = rows[runs.loc[rows, "seed"].to_numpy() == r.seed_b]
        if len(a) and len(b):
            out[str(r.task)] = (float(r.r_interaction), shuffle_band(E[a[0]], E[b[0]], seed=seed))
    return out


def task_table(m, seed: int = 0) -> tuple[pd.DataFrame, str]:
    """One row per task of ``m``'s baseline runs: runs, mean F, share F > 0, max F (of the seed-averaged row),
    the null rows' mean F and the ratio where ``m`` has them, seed agreement and its shuffle band, and the
    column indices of the task's :data:`TOP_TEXTS` most-forgotten examples (``top``)."""
    from forgetscope.measure.forgetting import forgotten_share

    names, groups, note, keep = baseline_matrix(m)
    G = task_forgetting(m.values, groups)
    runs = m.runs.reset_index(drop=True) if m.runs is not None and len(m.runs) == m.shape[0] else None
    agree = seed_agreement(m.values[keep], runs.iloc[keep] if runs is not None else None, seed) \
        if runs is not None and {"task", "seed"} <= set(runs.columns) else {}
    null = m.null if m.null is not None and np.isfinite(m.null).any() else None
    rows: list[dict[str, Any]] = []
    for t, (name, g) in enumerate(zip(names, groups)):
        row: dict[str, Any] = {"task": name, "runs": len(g), "mean F": _mean(m.values[g]),
                               "share F > 0": forgotten_share(m.values[g]),
                               "max F": float(np.nanmax(G[t])) if np.isfinite(G[t]).any() else float("nan")}
        if null is not None:
            row["null mean F"] = _mean(null[g])
            # a ratio only where both forget: a negative one reads as nothing sensible
            row["× null"] = row["mean F"] / row["null mean F"] if row["null mean F"] > 0 < row["mean F"] \
                else float("nan")
        r, band = agree.get(name, (float("nan"), float("nan")))
        row["seed r"], row["shuffle 95%"] = r, band
        row["top"] = top_forgotten(G[t], TOP_TEXTS)
        rows.append(row)
    table = pd.DataFrame(rows)
    if not table.empty and table["seed r"].isna().all():  # no task with two seeds: nothing to show
        table = table.drop(columns=["seed r", "shuffle 95%"])
    return table, note


def _texts(m, idx: np.ndarray, G_row: np.ndarray) -> str:
    up = m.upstream if m.upstream is not None and len(m.upstream) == m.shape[1] else None
    parts = []
    for j in idx:
        text = example_text(up.iloc[j], TEXT_CHARS) if up is not None else None
        parts.append(f"“{text}” ({G_row[j]:+.3g})" if text else f"{m.col_names[j]} ({G_row[j]:+.3g})")
    return "  ·  ".join(parts) if parts else "none with F > 0"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _finding(table: pd.DataFrame, m, kind: str) -> str:
    n_runs = int(table["runs"].sum())
    mean = _mean(table["mean F"].to_numpy(float))
    share = _mean(table["share F > 0"].to_numpy(float))
    forgetting = int((table["mean F"] > 0).sum())
    what = KIND_NAMES.get(kind, kind)
    text = (f"Across {plural(len(table), 'task')} ({plural(n_runs, 'run')}) on {m.shape[1]} {what} examples, "
            f"fine-tuning changed the upstream loss by {mean:+.3g} nats/token on average (mean F; {pct(share)} of "
            f"entries forgotten); {forgetting} of {plural(len(table), 'task')} forget on average (mean F > 0).")
    if len(table) > 1:
        worst = table.loc[table["mean F"].idxmax()]
        best = table.loc[table["mean F"].idxmin()]
        text += (f" '{worst['task']}' forgets most ({worst['mean F']:+.3g}), '{best['task']}' least "
                 f"({best['mean F']:+.3g}).")
    return text


def control_lines(table: pd.DataFrame, m, runs: pd.DataFrame | None, seed: int = 0) -> list[str]:
    """The null control and the within-row shuffle baseline, one statement each."""
    from forgetscope.analysis.marginals import MIN_PERMUTATION_ROWS, marginal_analysis

    lines = []
    if "null mean F" in table:
        mean, null = _mean(table["mean F"].to_numpy(float)), _mean(table["null mean F"].to_numpy(float))
        ratio = f": the runs change the loss {mean / null:.3g}× as much" if null > 0 else ""
        how = "matched in norm, a lower bound" if runs is None or "null_match_status" not in runs or \
            not (runs["null_match_status"].astype(str) == "matched").any() else "scaled to the run's effect"
        lines.append(f"Null control (a random update of each run's size, {how}): mean F {null:+.3g} against the "
                     f"runs' {mean:+.3g}{ratio}.")
    else:
        lines.append("No null control in this sweep (null_control: true measures a random update of each run's "
                     "size beside it).")
    _, _, _, keep = baseline_matrix(m)
    F = m.values[keep]
    sub_runs = runs.iloc[keep].reset_index(drop=True) if runs is not None else None
    if F.shape[0] < MIN_PERMUTATION_ROWS or F.shape[1] < 2:
        lines.append(f"Within-row shuffle baseline: needs at least {MIN_PERMUTATION_ROWS} runs and 2 examples "
                     f"(this kind has {F.shape[0]} × {F.shape[1]}).")
        return lines
    rep = marginal_analysis(F, runs=sub_runs, max_rank=min(5, *F.shape), seed=seed)
    s = rep.split
    lines.append(f"F's variance: {s.runs:.0%} between runs (how much each forgets), {s.examples:.0%} between "
                 f"examples (how fragile each is), {s.interaction:.0%} interaction (which task forgets which "
                 "example).")
    verdicts = rep.verdicts()
    lines += [f"Within-row shuffle baseline — {verdicts[0]['line']}.", f"Seeds — {verdicts[1]['line']}."]
    return lines


def kind_block(sec: Section, ctx: ReportContext, m, kind: str, caption_prefix: str = "") -> pd.DataFrame:
    """The finding, the per-task table and the control statements of one kind's matrix ``m``."""
    table, note = task_table(m, ctx.seed)
    if table.empty:
        raise Skip("no task rows to summarise")
    sec.finding(caption_prefix + _finding(table, m, kind))
    names, groups, _, _ = baseline_matrix(m)
    G = task_forgetting(m.values, groups)
    columns = [c for c in table.columns if c != "top"] + [f"most forgotten (top {TOP_TEXTS}, F)"]
    rows = [[*(fmt(v) if isinstance(v, (float, np.floating)) else v for v in r.drop("top")),
             _texts(m, r["top"], G[i])] for i, (_, r) in enumerate(table.iterrows())]
    for r in rows:  # shares as percentages
        k = columns.index("share F > 0")
        r[k] = pct(float(r[k])) if r[k] != "–" else r[k]
    files = [ctx.layout.matrix, ctx.layout.runs_table, ctx.layout.upstream] + (
        [ctx.layout.null_matrix] if "null mean F" in table else [])
    caption = f"Per task ({note})" + (f" — {KIND_NAMES.get(kind, kind)} examples" if kind != "all" else "")
    notes = []
    if "seed r" in table:
        notes.append("seed r: correlation of two seeds' rows of the interaction (F without its run and example "
                     "means); shuffle 95%: the same with one row shuffled across examples, 95th percentile of "
                     f"{N_SHUFFLES} shuffles.")
    if "× null" in table:
        notes.append("× null: mean F over the null's mean F (where both are positive).")
    sec.html_table(text_table(columns, rows, len(columns) - 1), caption, source=ctx.source(*files),
                   note=" ".join(notes))
    runs = m.runs.reset_index(drop=True) if m.runs is not None and len(m.runs) == m.shape[0] else None
    sec.items(control_lines(table, m, runs, ctx.seed))
    return table


def build(ctx: ReportContext) -> Section:
    m = ctx.need_matrix()
    sec = Section("headline", "What was found",
                  lead="How much each task forgot, of which upstream examples, and against its controls (F = "
                       "loss after − loss before, nats/token; positive = forgotten). The sections below hold "
                       "the details; provenance is at the end.")
    for kind in ctx.kinds:
        sub = m.select_kind(kind)
        if sub.shape[1] and np.isfinite(sub.values).any():
            kind_block(sec, ctx, sub, kind)
    if not sec.blocks:
        raise Skip("the matrix has no observed entries")
    return sec
