"""`forgetscope report SWEEP_DIR`: write the sweep's self-contained HTML report."""

from __future__ import annotations

from pathlib import Path

import typer

from forgetscope.cli.app import app, console
from forgetscope.errors import ForgetscopeError


@app.command()
def report(
    sweep: Path = typer.Argument(..., help="sweep directory (holds manifest.json)"),
    output: Path | None = typer.Option(None, "--output", "-o", help="HTML file (default: SWEEP/report.html)"),
    title: str | None = typer.Option(None, help="page title"),
    predict: bool = typer.Option(True, help="run a small prediction cross-validation when no saved results exist"),
    seed: int = typer.Option(0, help="seed of the live cross-validation folds and figure sampling"),
    kind: str | None = typer.Option(None, help="only this kind of upstream example: lm, instruction or all "
                                    "(default: one set of heat map, spectrum, fits and prediction sections "
                                    "per kind present, lm first)"),
) -> None:
    """Write one self-contained HTML file (opens offline) with every analysis the sweep has data for."""
    from forgetscope.report import build_report, report_kinds
    from forgetscope.store import SweepStore

    path = build_report(sweep, output, title=title, predict="auto" if predict else False, seed=seed, kind=kind)
    try:
        shown = report_kinds(SweepStore(sweep).load_matrix(), kind)
    except ForgetscopeError:  # no matrix yet: the report says so
        shown = []
    console.print(f"[bold green]report:[/] {path}  ({path.stat().st_size / 1e6:.1f} MB, self-contained)"
                  + (f"; kinds: {', '.join(shown)}" if shown else ""), highlight=False)
