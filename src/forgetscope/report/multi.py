"""Several sweeps on one page (``forgetscope report A B ... -o FILE``).

What a reader compares across sweeps (another model, another method, another learning rate on the same
tasks), each section built from the sweeps' own files through their :class:`~forgetscope.store.SweepLayout`:

- **Sweeps side by side**: one row per sweep (model, runs, tasks, seeds, strategies, upstream examples, mean F,
  share forgotten, the null's mean F, mean loss before).
- **Per example** (when the sweeps share their upstream examples: the same ids, with the same text where both
  store texts, for at least :data:`MIN_SHARED` examples and half of the smaller set): each example's mean F in
  each sweep (over its baseline runs, tasks weighted equally), their pairwise Pearson and Spearman
  correlations, a scatter against the first sweep and the examples forgotten most in any sweep, with text.
- **Per task**: each task's mean F and share forgotten in every sweep that ran it, side by side.
- **Strategies against plain**: each sweep's ``compare/summary.csv`` (``forgetscope compare``), else its runs
  when they hold several strategies (:func:`~forgetscope.report.sections.strategies.compare_runs`): each arm's
  mean F, its difference from plain and the run-level Holm-adjusted Wilcoxon p.
- Each sweep's headline (:mod:`~forgetscope.report.sections.headline`), then each sweep's provenance.

All comparisons use one kind of upstream example: the report's ``kind``, else the first sweep's default kind
when every sweep has it, else every column.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from forgetscope.errors import StoreError
from forgetscope.report.sections import ReportContext, Section, Skip
from forgetscope.report.sections import headline as headline_section
from forgetscope.report.sections import provenance as provenance_section
from forgetscope.report.sections.base import fmt, pct
from forgetscope.report.sections.examples import example_text, task_forgetting, task_rows, text_table
from forgetscope.store import SweepStore

MIN_SHARED = 3
TOP_EXAMPLES = 15
log = logging.getLogger(__name__)


@dataclass
class SweepEntry:
    """One sweep of the page: its label (unique on the page), context and the matrix of the shared kind."""

    label: str
    ctx: ReportContext
    matrix: Any  # ForgettingMatrix of the shared kind


def sweep_labels(paths: Sequence[Path]) -> list[str]:
    """Short unique names: each directory's name, with its parent's where two names collide."""
    resolved = [p.resolve() for p in paths]
    labels = [p.name for p in resolved]
    for depth in (2, 3):
        if len(set(labels)) == len(labels):
            break
        labels = ["/".join(p.parts[-depth:]) if labels.count(lab) > 1 else lab for p, lab in zip(resolved, labels)]
    if len(set(labels)) != len(labels):
        labels = [f"{lab} ({i + 1})" for i, lab in enumerate(labels)]
    return labels


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "sweep"


def shared_kind(matrices: Sequence[Any], kind: str | None) -> str:
    """The kind every comparison uses: ``kind``; else the first matrix's default kind when every matrix has it
    (then each other kind of the first, in order); else ``all``."""
    if kind is not None:
        for m in matrices:
            m.select_kind(kind)  # a kind a sweep lacks: a one-line DataError before anything is written
        return kind
    first = matrices[0]
    counts = first.kind_counts()
    order = [first.default_kind(), *(k for k in counts if k != first.default_kind())] if counts else []
    for k in order:
        if all(k in m.kind_counts() for m in matrices):
            return k
    return "all"


def load_entries(paths: Sequence[Path], kind: str | None, seed: int = 0) -> tuple[list[SweepEntry], str]:
    """Each sweep's context (its matrix required) and the kind the page compares."""
    stores = [SweepStore(p) for p in paths]
    manifests = [s.read_manifest() for s in stores]  # a missing/foreign directory: a one-line StoreError
    matrices = []
    for s in stores:
        if not s.layout.matrix.is_file():
            raise StoreError(f"{s.path} has no forgetting matrix ({s.layout.matrix.name}) yet")
        matrices.append(s.load_matrix())
    k = shared_kind(matrices, kind)
    entries = []
    for label, store, manifest, m in zip(sweep_labels(paths), stores, manifests, matrices):
        ctx = ReportContext(path=store.path, store=store, manifest=manifest, matrix=m, predict=False, seed=seed,
                            headline_kind=k, kinds=(k,), label=label)
        entries.append(SweepEntry(label, ctx, m.select_kind(k)))
    return entries, k


def _files(entries: Sequence[SweepEntry], *attrs: str) -> str:
    names = [getattr(entries[0].ctx.layout, a).name for a in attrs]
    return " + ".join(names) + " of each sweep"


def _baseline_means(m) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(per-example mean F over the baseline runs' tasks, task names, per-task rows)."""
    names, groups, _ = task_rows(m)
    G = task_forgetting(m.values, groups)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(G, 0), names, G


# ---- sweeps side by side ------------------------------------------------------------------------


def sweeps_section(entries: Sequence[SweepEntry], kind: str) -> Section:
    from forgetscope.measure.forgetting import forgotten_share

    rows = []
    for e in entries:
        m, man = e.matrix, e.ctx.manifest
        runs = m.runs if m.runs is not None and len(m.runs) == m.shape[0] else None
        model = man.get("model")
        model = model.get("name") or model.get("location") if isinstance(model, dict) else model
        cfg = man.get("config") if isinstance(man.get("config"), dict) else {}
        train = cfg.get("train") if isinstance(cfg.get("train"), dict) else {}
        row: dict[str, Any] = {
            "sweep": e.label, "model": str(model or "–"), "method": train.get("method"), "lr": train.get("lr"),
            "runs": m.shape[0], "tasks": runs["task"].nunique() if runs is not None and "task" in runs else None,
            "seeds": ", ".join(map(str, sorted(runs["seed"].unique()))) if runs is not None and "seed" in runs
            else None,
            "strategies": ", ".join(map(str, dict.fromkeys(runs["strategy"]))) if runs is not None
            and "strategy" in runs else None,
            "examples": m.shape[1], "mean F": float(np.nanmean(m.values)) if np.isfinite(m.values).any()
            else float("nan"),
            "share F > 0": pct(forgotten_share(m.values)),
        }
        if m.null is not None and np.isfinite(m.null).any():
            row["null mean F"] = float(np.nanmean(m.null))
        if m.upstream is not None and "loss_before" in m.upstream:
            row["loss before"] = float(m.upstream["loss_before"].mean())
        row["fingerprint"] = str(man.get("fingerprint") or "–")[:12]
        rows.append(row)
    table = pd.DataFrame(rows)
    what = "every upstream example" if kind == "all" else f"the {kind} upstream examples"
    sec = Section("sweeps", "Sweeps side by side",
                  lead=f"One row per sweep; F over {what} (loss after − loss before, nats/token; positive = "
                       "forgotten), every run of the sweep. Each sweep's own report: forgetscope report DIR.")
    worst = table.loc[table["mean F"].idxmax()] if table["mean F"].notna().any() else None
    if worst is not None and len(table) > 1:
        best = table.loc[table["mean F"].idxmin()]
        sec.finding(f"'{worst['sweep']}' forgets most (mean F {worst['mean F']:+.3g}), '{best['sweep']}' least "
                    f"({best['mean F']:+.3g}).")
    sec.table(table, caption="Sweeps", source=_files(entries, "manifest", "runs_table", "matrix"))
    return sec


# ---- per example --------------------------------------------------------------------------------


def shared_examples(entries: Sequence[SweepEntry]) -> list[str]:
    """The example ids every sweep measured, with the same text wherever two sweeps store one; empty when
    fewer than :data:`MIN_SHARED`, or fewer than half of the smallest sweep's examples."""
    common = set(entries[0].matrix.col_names)
    for e in entries[1:]:
        common &= set(e.matrix.col_names)
    texts: dict[str, str] = {}
    differ: set[str] = set()
    for e in entries:
        up = e.matrix.upstream
        if up is None or len(up) != e.matrix.shape[1]:
            continue
        for j, ex in enumerate(e.matrix.col_names):
            if ex in common:
                t = example_text(up.iloc[j])
                if t is not None and texts.setdefault(ex, t) != t:
                    differ.add(ex)
    ids = [c for c in entries[0].matrix.col_names if c in common and c not in differ]
    smallest = min(e.matrix.shape[1] for e in entries)
    return ids if len(ids) >= MIN_SHARED and len(ids) >= smallest / 2 else []


def _corr(x: np.ndarray, y: np.ndarray) -> tuple[float, float, int]:
    from scipy import stats

    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return float("nan"), float("nan"), int(ok.sum())
    return float(stats.pearsonr(x[ok], y[ok])[0]), float(stats.spearmanr(x[ok], y[ok])[0]), int(ok.sum())


def examples_section(entries: Sequence[SweepEntry], ids: list[str]) -> Section:
    from forgetscope.analysis import plots

    per: dict[str, np.ndarray] = {}
    for e in entries:
        mean, _, _ = _baseline_means(e.matrix)
        pos = {c: j for j, c in enumerate(e.matrix.col_names)}
        per[e.label] = mean[[pos[c] for c in ids]]
    sec = Section("per-example", "Per example across sweeps",
                  lead=f"The {len(ids)} upstream examples every sweep measured: each example's mean F in each "
                       "sweep (over the sweep's baseline runs, seeds averaged, tasks weighted equally). A high "
                       "correlation says the sweeps forget the same examples, whatever their overall level.")
    pairs = []
    labels = list(per)
    for a in range(len(labels)):
        for b in range(a + 1, len(labels)):
            r, rho, n = _corr(per[labels[a]], per[labels[b]])
            pairs.append({"sweep": labels[a], "other sweep": labels[b], "shared examples": n, "Pearson r": r,
                          "Spearman ρ": rho})
    corr = pd.DataFrame(pairs)
    first = corr.iloc[0]
    sec.finding(f"Per-example mean F of '{first['sweep']}' and '{first['other sweep']}' correlates at Pearson r = "
                f"{fmt(first['Pearson r'])} (Spearman ρ = {fmt(first['Spearman ρ'])}) over "
                f"{first['shared examples']} shared examples.")
    sec.figure(plots.sweep_scatter(per), "per-example forgetting in each sweep against the first",
               f"Each point is one upstream example; on the diagonal it forgets as much in both sweeps. Pearson r "
               f"with '{labels[0]}': " + ", ".join(f"'{r['other sweep']}' {fmt(r['Pearson r'])}"
                                                     for _, r in corr[corr["sweep"] == labels[0]].iterrows()) + ".")
    sec.table(corr, caption="Correlation of per-example mean F between sweeps",
              source=_files(entries, "matrix", "runs_table", "upstream"))
    M = np.column_stack([per[k] for k in labels])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        top = np.argsort(-np.nan_to_num(np.nanmax(M, 1), nan=-np.inf), kind="stable")[:TOP_EXAMPLES]
    up = entries[0].matrix.upstream
    pos = {c: j for j, c in enumerate(entries[0].matrix.col_names)}
    rows = []
    for i in top:
        text = example_text(up.iloc[pos[ids[i]]]) if up is not None and len(up) == entries[0].matrix.shape[1] \
            else None
        rows.append([ids[i], *(fmt(v) for v in M[i]), text or "–"])
    columns = ["example", *(f"mean F ({k})" for k in labels), "text"]
    sec.html_table(text_table(columns, rows, len(columns) - 1),
                   f"The {len(top)} examples forgotten most in any sweep (largest mean F in one of them)",
                   source=_files(entries, "matrix", "runs_table", "upstream"))
    return sec


# ---- per task -----------------------------------------------------------------------------------


def tasks_section(entries: Sequence[SweepEntry]) -> Section:
    from forgetscope.measure.forgetting import forgotten_share

    tables = {}
    for e in entries:
        names, groups, _ = task_rows(e.matrix)
        tables[e.label] = {n: (float(np.nanmean(e.matrix.values[g])) if np.isfinite(e.matrix.values[g]).any()
                               else float("nan"), forgotten_share(e.matrix.values[g])) for n, g in zip(names, groups)}
    tasks = list(dict.fromkeys(t for v in tables.values() for t in v))
    rows = []
    for t in tasks:
        row: dict[str, Any] = {"task": t}
        for label, v in tables.items():
            mean, share = v.get(t, (float("nan"), float("nan")))
            row[f"mean F ({label})"] = mean
            row[f"share F > 0 ({label})"] = pct(share)
        rows.append(row)
    shared = [t for t in tasks if all(t in v for v in tables.values())]
    sec = Section("per-task", "Per task across sweeps",
                  lead="Each task's mean F and share of entries forgotten in every sweep that ran it (the "
                       "baseline runs, seeds averaged); a dash where a sweep did not run the task.")
    if len(shared) >= 3 and len(entries) >= 2:
        a, b = list(tables)[:2]
        r, rho, n = _corr(np.array([tables[a][t][0] for t in shared]), np.array([tables[b][t][0] for t in shared]))
        sec.finding(f"{len(shared)} task(s) ran in every sweep; their mean F in '{a}' and '{b}' correlates at "
                    f"Pearson r = {fmt(r)} (Spearman ρ = {fmt(rho)}).")
    sec.table(pd.DataFrame(rows), caption="Per task", source=_files(entries, "matrix", "runs_table"))
    return sec


# ---- strategies against plain -------------------------------------------------------------------


def _arms(e: SweepEntry) -> tuple[pd.DataFrame, str] | None:
    """(strategy, mean F, Δ vs plain, p) of one sweep, and the file it came from; None without arms."""
    from forgetscope.report.sections.strategies import P_WILCOXON, compare_runs

    layout = e.ctx.layout
    if layout.compare_summary.is_file():
        s = pd.read_csv(layout.compare_summary)
        if "strategy" not in s or s.empty:
            return None
        get = lambda c: s[c] if c in s else np.nan  # noqa: E731
        return pd.DataFrame({"strategy": s["strategy"].astype(str), "F": get("forgetting_heldout"),
                             "Δ": get("diff_forgetting"), "p": get("p_wilcoxon_holm")}), \
            e.ctx.source(layout.compare_summary)
    runs = e.matrix.runs
    if runs is None or "strategy" not in runs or runs["strategy"].nunique() < 2:
        return None
    t = compare_runs(e.matrix, kind="all")
    base = str(t["strategy"].iloc[0])
    return pd.DataFrame({"strategy": t["strategy"].astype(str), "F": t["mean_forgetting"],
                         "Δ": t.get(f"Δ vs {base}", np.nan), "p": t.get(P_WILCOXON, np.nan)}), \
        e.ctx.source(layout.runs_table, layout.matrix)


def strategies_section(entries: Sequence[SweepEntry]) -> Section:
    found = {}
    for e in entries:
        arms = _arms(e)
        if arms is not None:
            found[e.label] = arms
    if not found:
        raise Skip("no sweep holds a compare/summary.csv or several strategies")
    strategies = list(dict.fromkeys(s for t, _ in found.values() for s in t["strategy"]))
    rows = []
    for s in strategies:
        row: dict[str, Any] = {"strategy": s}
        for label, (t, _) in found.items():
            hit = t[t["strategy"] == s]
            r = hit.iloc[0] if len(hit) else None
            row[f"mean F ({label})"] = r["F"] if r is not None else np.nan
            row[f"Δ vs plain ({label})"] = r["Δ"] if r is not None else np.nan
            row[f"p ({label})"] = r["p"] if r is not None else np.nan
        rows.append(row)
    sec = Section("strategies", "Strategies against plain",
                  lead="Each sweep's arms against plain fine-tuning on the same tasks and seeds: mean forgetting "
                       "(compare/summary.csv: on the held-out upstream examples), the mean paired difference "
                       "from plain and the run-level paired Wilcoxon p, Holm-adjusted within each sweep's "
                       "comparison (a dash: not in that sweep, or not testable).")
    sec.table(pd.DataFrame(rows), caption="Arms against plain",
              source="; ".join(f"{src}" for _, src in found.values()))
    return sec


# ---- the page -----------------------------------------------------------------------------------


def collect_multi_sections(paths: Sequence[Path], *, kind: str | None = None, seed: int = 0, strict: bool = False
                           ) -> tuple[list[Section], list[tuple[str, str, str]], list[SweepEntry], str]:
    """(sections, skipped as (key, title, reason), the sweeps, the compared kind) of a page of several sweeps."""
    entries, k = load_entries(paths, kind, seed)
    ids = shared_examples(entries)
    plan: list[tuple[str, str, Callable[[], Section]]] = [("sweeps", "Sweeps side by side",
                                                           lambda: sweeps_section(entries, k))]
    if ids:
        plan.append(("per-example", "Per example across sweeps", lambda: examples_section(entries, ids)))
    plan += [("per-task", "Per task across sweeps", lambda: tasks_section(entries)),
             ("strategies", "Strategies against plain", lambda: strategies_section(entries))]
    for e in entries:
        plan.append((f"headline-{slug(e.label)}", f"What was found — {e.label}",
                     lambda e=e: _titled(headline_section.build(e.ctx), e.label)))
    for e in entries:
        plan.append((f"provenance-{slug(e.label)}", f"Provenance — {e.label}",
                     lambda e=e: _titled(provenance_section.build(e.ctx), e.label)))
    sections, skipped = [], []
    for key, title, build in plan:
        try:
            sec = build()
            sec.key = key
            sections.append(sec)
        except Skip as why:
            skipped.append((key, title, str(why)))
        except Exception as exc:
            if strict:
                raise
            log.warning("report section %s failed: %s: %s", key, type(exc).__name__, exc)
            skipped.append((key, title, f"failed: {type(exc).__name__}: {exc}"))
    return sections, skipped, entries, k


def _titled(sec: Section, label: str) -> Section:
    sec.title = f"{sec.title} — {label}"
    return sec
