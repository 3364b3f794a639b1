"""`forgetscope sharpness CONFIG.yaml | SWEEP_DIR`: flatness of each fine-tuned model vs its forgetting."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from forgetscope.cli.app import app, console


@app.command()
def sharpness(
    source: Path = typer.Argument(..., help="sweep YAML (runs it, measuring sharpness) or a finished sweep dir"),
    output: Path | None = typer.Option(None, help="sweep directory (default: the config's output)"),
    overwrite: bool = typer.Option(False, help="replace a sweep directory holding a different sweep"),
    figures: bool = typer.Option(True, help="write PNG figures"),
) -> None:
    """Run a sweep that measures each fine-tuned model's sharpness (random perturbations, SAM ascent,
    optional Hessian trace) and correlate it with forgetting; with a sweep directory, only recompute
    SWEEP/sharpness.parquet and SWEEP/sharpness/{correlation.json,...} from the run records."""
    from forgetscope.experiments import sharpness as sh
    from forgetscope.store import SweepLayout

    if source.is_dir():
        table, corr = sh.write_sharpness_results(source, figures=figures)
        where = source
    else:
        from forgetscope.config import load_config

        cfg = load_config(source, model=sh.SharpnessSweepConfig)
        where = output or cfg.output
        sh.sharpness_sweep(cfg, output=where, overwrite=overwrite, figures=figures,
                           on_run=lambda spec, rec: console.print(
                               f"  {spec.run_id}: random {rec['sharpness_random_mean']:.4g}, "
                               f"SAM {rec['sharpness_sam_rise']:.4g}, forgetting {rec['mean_forgetting']:.4g}"))
        table, corr = sh.write_sharpness_results(where, figures=figures)
    t = Table(title=f"sharpness vs mean forgetting over {len(table)} runs")
    for col in ("measure", "n", "Spearman", "p", "Pearson", "note"):
        t.add_column(col, justify="right")
    for r in corr.itertuples():
        t.add_row(r.measure.removeprefix("sharpness_"), str(r.n), f"{r.spearman:.3f}", f"{r.spearman_p:.2g}",
                  f"{r.pearson:.3f}", r.note)
    console.print(t)
    layout = SweepLayout(where)
    console.print(f"wrote {layout.sharpness_table} and {layout.sharpness_dir}")
