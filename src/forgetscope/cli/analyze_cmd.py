"""`forgetscope analyze`: low-rank structure of a forgetting matrix and the baselines that keep its marginals
(tables, verdicts, JSON/CSV, figures)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import typer
from rich.table import Table

from forgetscope.cli.app import app, console, emit_json, json_mode, old_out_option, option_alias
from forgetscope.store import AnalysisLayout, ForgettingMatrix
from forgetscope.store.io import write_csv, write_json

if TYPE_CHECKING:
    from forgetscope.analysis.marginals import MarginalReport

KIND_HELP = ("which upstream examples: lm (plain text), instruction (prompt/response) or all "
             "(default: lm when the sweep has plain-text examples, else instruction; all for a matrix "
             "without kinds)")


def default_out(source: Path, name: str, kind: str = "all") -> Path:
    """``SWEEP/<name>/<kind>`` for a sweep directory (``SWEEP/<name>`` for kind ``all``), ``<file stem>_<name>/``
    beside a matrix file."""
    from forgetscope.store import SweepLayout

    if not source.is_dir():
        return source.with_name(f"{source.stem}_{name}")
    layout = SweepLayout(source)
    return {"analysis": layout.analysis_dir_for, "predict": layout.predict_dir_for}[name](kind)


def load_kind(source: Path, kind: str | None) -> tuple[ForgettingMatrix, str]:
    """The matrix of ``source`` restricted to one kind of upstream example (the default kind unless given),
    and that kind; prints which kind it is."""
    from forgetscope.data.types import KIND_LABELS, check_kind
    from forgetscope.importing import load_any

    if kind is not None:
        check_kind(kind)
    matrix = load_any(source)
    kind = kind or matrix.default_kind()
    sub = matrix.select_kind(kind)
    counts = ", ".join(f"{n} {k}" for k, n in matrix.kind_counts().items())
    console.print(f"kind: {kind} = {KIND_LABELS[kind]}; {sub.shape[1]} of {matrix.shape[1]} upstream examples"
                  + (f" (sweep: {counts})" if counts else ""), highlight=False)
    return sub, kind


def _print_format_control(full: ForgettingMatrix, files: AnalysisLayout) -> dict:
    """Print and save how much of each controlled task's row its format-only control already shows, and
    whether a task's seeds agree with each other more than with its format-only runs."""
    from forgetscope.analysis.format_control import format_only_share
    from forgetscope.analysis.study_claims import format_specificity
    from forgetscope.errors import DataError

    share = format_only_share(full)
    write_csv(files.format_control, share.table())
    out: dict[str, Any] = {"interaction_share": share.interaction_share,
                           "interaction_share_all": share.interaction_share_all,
                           "per_task": share.table().to_dict(orient="records")}
    console.print(f"format-only control: its rows explain {share.interaction_share:.1%} of the controlled tasks' "
                  f"interaction ({share.interaction_share_all:.1%} of every task's)", highlight=False)
    try:
        spec = format_specificity(full)
    except DataError as exc:
        console.print(f"  format specificity not tested: {exc}", highlight=False)
        return out
    t = spec["test"]
    verdict = "tasks forget beyond their format" if spec["shown"] else "not shown: no more than the format"
    console.print(f"  {verdict}: seed pairs agree at r {spec['mean_r_seed']:+.3f}, task vs format-only run at "
                  f"{spec['mean_r_format']:+.3f} over {spec['n_tasks']} tasks (difference 95 % CI "
                  f"{t['ci_low']:+.3f} to {t['ci_high']:+.3f})", highlight=False)
    out["specificity"] = spec
    return out


def _print_null(matrix: ForgettingMatrix, max_rank: int, out_dir: Path) -> dict:
    """Print and save the null-control comparison (generic sensitivity against task-specific structure)."""
    from forgetscope.analysis.null_control import null_comparison

    nc = null_comparison(matrix, max_rank=max_rank)
    table = Table(title="null control: a random update of each run's size", caption="residual: F minus each "
                  "run's affine fit on the mean null row (the task-specific part)")
    for col in ("k", "R²(k) F", "R²(k) null", "R²(k) residual"):
        table.add_column(col, justify="right", overflow="fold")
    for row in nc.rank_table().itertuples():
        table.add_row(str(row.k), f"{row.r2:.4f}", f"{row.r2_null:.4f}", f"{row.r2_residual:.4f}")
    console.print(table)
    console.print(f"the null profile (mean null row) explains {nc.explained_share:.1%} of F's within-run "
                  f"variance (per-run affine fits; median per run {float(np.nanmedian(nc.r2_profile)):.1%}); "
                  f"corr(first right singular vector, null profile) = {nc.v1_profile_corr:+.3f}; "
                  f"mean F {float(np.nanmean(nc.mean_forgetting)):+.4f} vs mean null "
                  f"{float(np.nanmean(nc.mean_null)):+.4f} nats", highlight=False)
    files = AnalysisLayout(out_dir)
    write_csv(files.null_per_run, nc.table())
    write_csv(files.null_r2_by_rank, nc.rank_table())
    return nc.to_dict()


def read_categories(path: Path, col_names: list[str]) -> tuple[str, list[object]]:
    """(column, label per matrix column) from a records file whose rows have an id (``id`` or ``example_id``)
    and a ``category`` or ``source`` field; columns the file does not name get no label."""
    from forgetscope.analysis.marginals import CATEGORY_COLUMNS
    from forgetscope.data.records import read_records
    from forgetscope.errors import DataError

    records = read_records(path)
    column = next((c for c in CATEGORY_COLUMNS if any(c in r for r in records)), None)
    id_field = next((f for f in ("id", "example_id") if any(f in r for r in records)), None)
    if column is None or id_field is None:
        raise DataError(f"{path}: records need an id (id or example_id) and a {' or '.join(CATEGORY_COLUMNS)} field")
    labels = {str(r.get(id_field)): r.get(column) for r in records}
    if not any(c in labels for c in col_names):
        raise DataError(f"{path}: none of its ids names a column of the matrix")
    return column, [labels.get(c) for c in col_names]


def _print_marginals(mr: MarginalReport, out_dir: Path) -> dict:
    """Print and save the baselines that keep F's marginals, with one verdict per claim."""
    files = AnalysisLayout(out_dir)
    sp = mr.split
    console.print(f"variance of F: between runs {sp.runs:.1%}, between examples {sp.examples:.1%}, "
                  f"interaction {sp.interaction:.1%}", highlight=False)
    if mr.permutation is not None:
        p, n = mr.permutation, mr.permutation.n_shuffles
        table = Table(title=f"R²(k) against {n} within-row shuffles (each run's values kept)",
                      caption="band: central 95 % of the shuffles; interaction: double-centred F, "
                              "R² relative to its own variance")
        for col in ("k", "global", "shuffles", "reference", "shuffles", "interaction", "shuffles"):
            table.add_column(col, justify="right", overflow="fold")
        bands = {m: p.band(m) for m in p.observed}
        inter = mr.interaction
        for i in range(len(p.observed["global"])):
            cells = [str(i + 1)]
            for m in ("global", "reference"):
                lo, hi = bands[m]
                cells += [f"{p.observed[m][i]:.4f}", f"{p.mean(m)[i]:.3f} [{lo[i]:.3f}, {hi[i]:.3f}]"]
            if inter is not None and i < len(inter.observed["global"]):
                lo, hi = inter.band("global")
                cells += [f"{inter.observed['global'][i]:.4f}",
                          f"{inter.mean('global')[i]:.3f} [{lo[i]:.3f}, {hi[i]:.3f}]"]
            else:
                cells += ["", ""]
            table.add_row(*cells)
        console.print(table)
        write_csv(files.marginals_by_rank, mr.rank_table())
    if mr.seeds.n_tasks:
        write_csv(files.interaction_seed_reliability, mr.seeds.per_task)
    console.print("[bold]verdicts[/] (from the baselines that keep F's marginals):")
    for v in mr.verdicts():
        console.print(f"  - {v['line']}", highlight=False, soft_wrap=True)
    return mr.to_dict()


@app.command()
def analyze(
    source: Path = typer.Argument(..., help="sweep directory or matrix file (.npy/.csv/.parquet)"),
    max_rank: int = typer.Option(10, "--max-rank", "-k", help="largest k for R²(k)"),
    order_by: str = typer.Option("additive", help="heat-map ordering: additive, multiplicative or svd"),
    output: Path | None = typer.Option(None, "--output", "-o", help="output folder (default SWEEP/analysis/KIND)"),
    out: Path | None = old_out_option(),
    figures: bool = typer.Option(True, help="write PNG figures"),
    kind: str | None = typer.Option(None, help=KIND_HELP),
    shuffles: int = typer.Option(20, help="within-row shuffles of F for the R²(k) baseline (at least 20)"),
    seed: int = typer.Option(0, help="seed of the shuffles"),
    categories: Path | None = typer.Option(None, help="records file (JSONL/CSV/...) with an id and a category "
                                           "or source per upstream example, when the sweep's upstream table "
                                           "has neither column"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON document (analysis.json with the kind "
                                 "and output folder) on stdout; tables and info go to stderr"),
) -> None:
    """SVD spectrum, R²(k) (global and reference metrics) against within-row shuffles, the variance split and
    the interaction, additive and multiplicative fits, forgetting-vs-learning correlation."""
    from forgetscope.analysis import lowrank, plots
    from forgetscope.analysis.marginals import marginal_analysis
    from forgetscope.errors import DataError
    from forgetscope.store.io import check_output_dir

    json_mode(as_json)
    out_dir = option_alias(output, out, old="--out", new="--output")
    if out_dir is not None:
        check_output_dir(out_dir)  # a file or a read-only folder: refused before the matrix is read
    full, kind = load_kind(source, kind)
    matrix = full.without_controls()  # every claim below is about the tasks; control rows are compared apart
    if matrix.shape[0] < full.shape[0]:
        console.print(f"{full.shape[0] - matrix.shape[0]} control rows (format-only) set aside: every analysis "
                      "below is of the task rows; the controls are compared at the end", highlight=False)
    if matrix.shape[0] < 2:
        raise DataError(f"analyze needs at least 2 rows (runs) to compare; {source} has {matrix.shape[0]} "
                        f"for kind {kind}")
    out_dir = check_output_dir(out_dir or default_out(source, "analysis", kind))
    k = min(max_rank, *matrix.shape)
    report = lowrank.analyze(matrix, max_rank=k, order_by=order_by)  # type: ignore[arg-type]
    column, labels = read_categories(categories, matrix.col_names) if categories else ("category", None)
    marginals = marginal_analysis(matrix, max_rank=k, categories=labels, category_column=column,
                                  n_shuffles=shuffles, seed=seed)
    out_dir.mkdir(parents=True, exist_ok=True)

    m, n = report.shape
    console.print(f"[bold]{m} tasks x {n} {kind} examples[/], {report.missing_fraction:.1%} missing")
    table = Table(title="low-rank structure")
    for col in ("k", "singular value", "energy share", "R²(k) global", "R²(k) reference"):
        table.add_column(col, justify="right", overflow="fold")
    r2 = report.r2_table()
    for row in r2.itertuples():
        table.add_row(str(row.k), f"{row.singular_value:.4g}", f"{row.energy_share:.3f}", f"{row.r2:.4f}",
                      f"{row.r2_reference:.4f}")
    table.caption = ("global: 1 − ‖F − F_k‖² / ‖F − mean F‖²; reference: sklearn r2_score(F, F_k), "
                     "an R² per column averaged over columns")
    console.print(table)
    fits = Table(title="models")
    fits.add_column("model")
    fits.add_column("R²", justify="right", overflow="fold")
    fits.add_row("additive  μ + a_i + b_j", f"{report.additive.r2:.4f}")
    fits.add_row("multiplicative  α_i β_j", f"{report.multiplicative.r2:.4f}")
    console.print(fits)
    if report.learning is not None:
        lc = report.learning
        console.print(f"forgetting vs learning over {lc.n} tasks: Pearson {lc.pearson:.3f} (p={lc.pearson_p:.2g}), "
                      f"Spearman {lc.spearman:.3f} (p={lc.spearman_p:.2g})")
    else:
        console.print("forgetting vs learning: not recorded (runs lack task_loss_before/after)")

    result = report.to_dict()
    if matrix.null is not None:
        result["null_control"] = _print_null(matrix, k, out_dir)
    result["marginals"] = _print_marginals(marginals, out_dir)
    files = AnalysisLayout(out_dir)
    if full.control_mask().any():
        result["format_control"] = _print_format_control(full, files)
    write_csv(files.r2_by_rank, r2)
    write_json(files.summary, result)
    if figures:
        plots.write_heatmap(matrix.values, report.row_order, report.col_order, files.heatmap, matrix.row_names)
        plots.write_spectrum_r2(report, files.spectrum)
        if marginals.permutation is not None:
            plots.write_r2_against_shuffles(marginals.permutation, marginals.interaction, files.r2_vs_shuffles)
    console.print(f"wrote {out_dir}")
    if as_json:
        emit_json({"source": str(source), "kind": kind, "output": str(out_dir), **result})
