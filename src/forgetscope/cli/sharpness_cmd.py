"""`forgetscope sharpness CONFIG.yaml | SWEEP_DIR`: flatness of each fine-tuned model vs its forgetting."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from forgetscope.cli.app import app, console
from forgetscope.data.types import KIND_LABELS


@app.command()
def sharpness(
    source: Path = typer.Argument(..., help="sweep YAML (runs it, measuring sharpness) or a finished sweep dir"),
    output: Path | None = typer.Option(None, "--output", "-o",
                                       help="sweep directory (default: the config's output)"),
    overwrite: bool = typer.Option(False, help="replace a sweep directory holding a different sweep"),
    figures: bool = typer.Option(True, help="write PNG figures"),
    kind: str | None = typer.Option(None, help="the upstream examples mean forgetting averages: lm, instruction "
                                    "or all (default: the config's sharpness.kind, else lm when the sweep has "
                                    "plain-text examples, else instruction)"),
) -> None:
    """Run a sweep that measures each fine-tuned model's sharpness (random perturbations, SAM ascent,
    optional Hessian trace) and correlate it with forgetting; with a sweep directory, only recompute
    SWEEP/sharpness.parquet and SWEEP/sharpness/{correlation.json,...} from the run records."""
    from forgetscope.data.types import check_kind
    from forgetscope.experiments import sharpness as sh
    from forgetscope.store import SweepLayout

    if kind is not None:
        check_kind(kind)
    if source.is_dir():
        table, corr = sh.write_sharpness_results(source, figures=figures, kind=kind)
        where = source
    else:
        from forgetscope.config import load_config

        cfg = load_config(source, model=sh.SharpnessSweepConfig)
        if kind is not None:
            cfg = cfg.model_copy(update={"sharpness": cfg.sharpness.model_copy(update={"kind": kind})})
        where = output or cfg.output
        sh.sharpness_sweep(cfg, output=where, overwrite=overwrite, figures=figures,
                           on_run=lambda spec, rec: console.print(
                               f"  {spec.run_id}: random {rec['sharpness_random_mean']:.4g}, "
                               f"SAM {rec['sharpness_sam_rise']:.4g}, "
                               f"forgetting ({rec['mean_forgetting_kind']}) {rec['mean_forgetting']:.4g}"))
        table, corr = sh.write_sharpness_results(where, figures=figures, kind=cfg.sharpness.kind)
    used = str(table["mean_forgetting_kind"].iloc[0])
    console.print(f"kind: {used} = {KIND_LABELS[used]} (the upstream examples mean forgetting averages)",
                  highlight=False)
    t = Table(title=f"sharpness vs mean forgetting ({used} examples) over {len(table)} runs")
    for col in ("measure", "n", "Spearman", "p", "Pearson", "note"):
        t.add_column(col, justify="right")
    for r in corr.itertuples():
        t.add_row(r.measure.removeprefix("sharpness_"), str(r.n), f"{r.spearman:.3f}", f"{r.spearman_p:.2g}",
                  f"{r.pearson:.3f}", r.note)
    console.print(t)
    layout = SweepLayout(where)
    console.print(f"wrote {layout.sharpness_table} and {layout.sharpness_dir}")
