"""`forgetscope scaling CONFIG.yaml`: the LoRA-rank x steps scaling sweep and its forgetting laws."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from forgetscope.cli.app import app, console


def _fmt_ci(ci) -> str:
    return "—" if ci is None else f"[{ci[0]:.3g}, {ci[1]:.3g}]"


@app.command()
def scaling(
    config: Path = typer.Argument(..., help="scaling sweep YAML (see configs/scaling_demo.yaml)"),
    output: Path | None = typer.Option(None, "--output", "-o",
                                       help="results directory (default: the config's output)"),
    overwrite: bool = typer.Option(False, help="replace results of a different config"),
    refit: bool = typer.Option(False, help="only refit the laws to the finished runs (no training)"),
    holdout: str | None = typer.Option(None, help="held-out points: none, largest_t, largest_p or random"),
    figures: bool = typer.Option(True, help="write PNG figures"),
    check: bool = typer.Option(False, "--check", help="only validate the config and print the plan "
                               "(runs, ranks, checkpoints); nothing is trained or written"),
) -> None:
    """Fine-tune with LoRA at several ranks, evaluate forgetting at checkpoints, fit the scaling laws.

    Writes OUTPUT/scaling/{points.parquet,points.csv,fit.json,*.png}.
    """
    from forgetscope.experiments import scaling as ss

    overrides = {"holdout": holdout, "figures": figures if not figures else None}
    cfg = ss.load_scaling_config(config, **overrides)
    out = output or cfg.output
    if check:
        from forgetscope.experiments.validate import validate_scaling

        validate_scaling(cfg)
        runs = len(cfg.tasks) * len(cfg.seed_list) * len(cfg.ranks)
        console.print(f"{config}: ok ({runs} runs: {len(cfg.tasks)} tasks x {len(cfg.seed_list)} seeds x ranks "
                      f"{cfg.ranks}, checkpoints at steps {cfg.eval_steps}, hold-out {cfg.holdout}; output {out})")
        return
    if refit:
        points = ss.read_points(out)
    else:
        points = ss.run_scaling_sweep(
            cfg, output=out, overwrite=overwrite,
            on_run=lambda rid, rows: console.print(f"  finished {rid}: {len(rows)} checkpoints"))
    report, paths = ss.fit_and_write(points, cfg, out)
    table = Table(title=f"scaling fits ({report.n_points} points, {report.n_heldout} held out: {report.holdout_rule})")
    for col in ("target", "fit", "α (P)", "95% CI", "β (t)", "95% CI", "shift B / slope c", "R²", "held-out RMSE"):
        table.add_column(col, justify="right")
    for target, fits in report.fits.items():
        for name, f in fits.items():
            p = f.params
            extra = p.get("B", p.get("c"))
            table.add_row(target, name, f"{p['alpha']:.3g}" if "alpha" in p else "—", _fmt_ci(f.ci95.get("alpha")),
                          f"{p['beta']:.3g}" if "beta" in p else "—", _fmt_ci(f.ci95.get("beta")),
                          "—" if extra is None else f"{extra:.4g}", f"{f.goodness.get('r2', float('nan')):.3f}",
                          f"{f.heldout.get('rmse', float('nan')):.3g}")
    console.print(table)
    for target, comp in report.heldout_comparison.items():
        scores = ", ".join(f"{name} {e['rmse']:.3g}" for name, e in comp.items())
        console.print(f"held-out RMSE of {target} on the same {next(iter(comp.values()))['n']} points: {scores}")
    if report.criteria:
        c = report.criteria
        met = ", ".join(f"{k} {v}/{c['n_tasks']}" for k, v in c["tasks_meeting"].items())
        console.print(f"criteria ({c['law']} law on {c['target']}, at least {c['min_tasks']} tasks): {met} -> "
                      f"{'supported' if c['supported'] else 'not supported'}")
    for note in report.notes:
        console.print(f"[yellow]note:[/] {note}")
    console.print(f"wrote {paths['fit'].parent}")
