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
    holdout: str | None = typer.Option(None, help="held-out points: none, largest_t, largest_p or random; a "
                                       "rule other than the config's is a secondary analysis, written to "
                                       "fit_<rule>.json beside the primary fit.json"),
    figures: bool = typer.Option(True, help="write PNG figures"),
    check: bool = typer.Option(False, "--check", help="only validate the config and print the plan "
                               "(runs, ranks, checkpoints); nothing is trained or written"),
) -> None:
    """Fine-tune with LoRA at several ranks, evaluate forgetting at checkpoints, fit the scaling laws.

    Writes OUTPUT/scaling/{points.parquet,points.csv,fit.json,*.png}; with --holdout other than the
    config's, OUTPUT/scaling/fit_<rule>.json and *_<rule>.png (secondary).
    """
    from forgetscope.experiments import scaling as ss

    cfg = ss.load_scaling_config(config, figures=figures if not figures else None)
    rule = ss.check_holdout(cfg, holdout)
    out = output or cfg.output
    if check:
        from forgetscope.experiments.validate import validate_scaling

        validate_scaling(cfg)
        runs = len(cfg.tasks) * len(cfg.seed_list) * len(cfg.ranks)
        extra = f", secondary hold-out {rule}" if rule != cfg.holdout else ""
        console.print(f"{config}: ok ({runs} runs: {len(cfg.tasks)} tasks x {len(cfg.seed_list)} seeds x ranks "
                      f"{cfg.ranks}, checkpoints at steps {cfg.eval_steps}, hold-out {cfg.holdout}{extra}; "
                      f"output {out})")
        return
    if refit:
        points = ss.read_points(out)
        rules = [rule]
    else:
        points = ss.run_scaling_sweep(
            cfg, output=out, overwrite=overwrite,
            on_run=lambda rid, rows: console.print(f"  finished {rid}: {len(rows)} checkpoints"))
        rules = list(dict.fromkeys([cfg.holdout, rule]))  # a run always writes the primary fit
    for r in rules:
        _fit_and_print(ss, points, cfg, out, r)


def _fit_and_print(ss, points, cfg, out: Path, holdout: str) -> None:
    """Fit with one hold-out rule, write its files and print the fits and the verdict."""
    report, paths = ss.fit_and_write(points, cfg, out, holdout=holdout)
    role = f" ({report.holdout_role})" if report.holdout_role else ""
    table = Table(title=f"scaling fits ({report.n_points} points, {report.n_heldout} held out: "
                        f"{report.holdout_rule}{role}; CIs: least squares, descriptive)")
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
        console.print(f"criteria, {c.get('criteria_role', 'primary')} ({c['law']} law on {c['target']}, at least "
                      f"{c['min_tasks']} tasks; CIs: {c['ci_used']}): {met} -> "
                      f"{'supported' if c['supported'] else 'not supported'}")
        _print_agreement(c.get("exponent_agreement"))
    for note in report.notes:
        console.print(f"[yellow]note:[/] {note}")
    console.print(f"wrote {paths['fit']}")


def _print_agreement(agreement: dict | None) -> None:
    """The per-task exponents of the judged law and Cochran's Q for each (a description, not a criterion)."""
    if not agreement or not agreement.get("per_task"):
        return
    table = Table(title=f"exponents per task ({agreement['law']} law; jackknife SE over runs; descriptive)")
    for col in ("task", "α (P)", "95% CI", "β (t)", "95% CI"):
        table.add_column(col, justify="right")
    for task, row in agreement["per_task"].items():
        if row is None:
            table.add_row(task, "no fit", "—", "no fit", "—")
            continue
        table.add_row(task, f"{row['alpha']['estimate']:.3g}", _fmt_ci(row["alpha"]["ci95"]),
                      f"{row['beta']['estimate']:.3g}", _fmt_ci(row["beta"]["ci95"]))
    console.print(table)
    for p in ("alpha", "beta"):
        h = agreement[p]
        console.print(f"agreement of {p} across {h['k']} tasks: Cochran's Q {h['Q']:.3g} on {h['df']} df, "
                      f"p {h['p']:.3g}, I² {h['I2']:.2f}"
                      + (f" (excluded: {', '.join(h['excluded'])})" if h["excluded"] else ""))
