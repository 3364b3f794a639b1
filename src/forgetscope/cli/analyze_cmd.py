"""`forgetscope analyze`: low-rank structure of a forgetting matrix (tables, JSON/CSV, figures)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer
from rich.table import Table

from forgetscope.cli.app import app, console
from forgetscope.store import ForgettingMatrix
from forgetscope.store.io import write_csv, write_json

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


def _print_null(matrix: ForgettingMatrix, max_rank: int, out_dir: Path) -> dict:
    """Print and save the null-control comparison (generic sensitivity against task-specific structure)."""
    from forgetscope.analysis.null_control import null_comparison

    nc = null_comparison(matrix, max_rank=max_rank)
    table = Table(title="null control: a random update of each run's size", caption="residual: F minus each "
                  "run's affine fit on the mean null row (the task-specific part)")
    for col in ("k", "R²(k) F", "R²(k) null", "R²(k) residual"):
        table.add_column(col, justify="right")
    for row in nc.rank_table().itertuples():
        table.add_row(str(row.k), f"{row.r2:.4f}", f"{row.r2_null:.4f}", f"{row.r2_residual:.4f}")
    console.print(table)
    console.print(f"the null profile (mean null row) explains {nc.explained_share:.1%} of F's within-run "
                  f"variance (per-run affine fits; median per run {float(np.nanmedian(nc.r2_profile)):.1%}); "
                  f"corr(first right singular vector, null profile) = {nc.v1_profile_corr:+.3f}; "
                  f"mean F {float(np.nanmean(nc.mean_forgetting)):+.4f} vs mean null "
                  f"{float(np.nanmean(nc.mean_null)):+.4f} nats", highlight=False)
    write_csv(out_dir / "null_per_run.csv", nc.table())
    write_csv(out_dir / "null_r2_by_rank.csv", nc.rank_table())
    return nc.to_dict()


@app.command()
def analyze(
    source: Path = typer.Argument(..., help="sweep directory or matrix file (.npy/.csv/.parquet)"),
    max_rank: int = typer.Option(10, "--max-rank", "-k", help="largest k for R²(k)"),
    order_by: str = typer.Option("additive", help="heat-map ordering: additive, multiplicative or svd"),
    out: Path | None = typer.Option(None, help="output folder (default SWEEP/analysis/KIND)"),
    figures: bool = typer.Option(True, help="write PNG figures"),
    kind: str | None = typer.Option(None, help=KIND_HELP),
) -> None:
    """SVD spectrum, R²(k), additive and multiplicative fits, forgetting-vs-learning correlation."""
    from forgetscope.analysis import lowrank, plots

    matrix, kind = load_kind(source, kind)
    k = min(max_rank, *matrix.shape)
    report = lowrank.analyze(matrix, max_rank=k, order_by=order_by)  # type: ignore[arg-type]
    out_dir = out or default_out(source, "analysis", kind)
    out_dir.mkdir(parents=True, exist_ok=True)

    m, n = report.shape
    console.print(f"[bold]{m} tasks x {n} {kind} examples[/], {report.missing_fraction:.1%} missing")
    table = Table(title="low-rank structure")
    for col in ("k", "singular value", "energy share", "R²(k)"):
        table.add_column(col, justify="right")
    r2 = report.r2_table()
    for row in r2.itertuples():
        table.add_row(str(row.k), f"{row.singular_value:.4g}", f"{row.energy_share:.3f}", f"{row.r2:.4f}")
    console.print(table)
    fits = Table(title="models")
    fits.add_column("model")
    fits.add_column("R²", justify="right")
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
    write_csv(out_dir / "r2_by_rank.csv", r2)
    write_json(out_dir / "analysis.json", result)
    if figures:
        plots.write_heatmap(matrix.values, report.row_order, report.col_order, out_dir / "heatmap.png",
                            matrix.row_names)
        plots.write_spectrum_r2(report, out_dir / "spectrum_r2.png")
    console.print(f"wrote {out_dir}")
