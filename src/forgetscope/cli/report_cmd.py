"""`forgetscope report SWEEP_DIR [SWEEP_DIR ...]`: one sweep's self-contained HTML report, or several side by side."""

from __future__ import annotations

from pathlib import Path

import typer

from forgetscope.cli.app import app, console
from forgetscope.errors import ForgetscopeError


@app.command()
def report(
    sweeps: list[Path] = typer.Argument(..., help="sweep directory (holds manifest.json); several: one page "
                                        "comparing them side by side"),
    output: Path | None = typer.Option(None, "--output", "-o", help="HTML file (default for one sweep: "
                                       "SWEEP/report.html; required for several)"),
    title: str | None = typer.Option(None, help="page title"),
    predict: bool = typer.Option(True, help="run a small prediction cross-validation when no saved results exist"),
    seed: int = typer.Option(0, help="seed of the live cross-validation folds, figure sampling and shuffles"),
    kind: str | None = typer.Option(None, help="only this kind of upstream example: lm, instruction or all "
                                    "(default: one set of heat map, spectrum, fits and prediction sections "
                                    "per kind present, lm first; several sweeps: the first sweep's default "
                                    "kind when every sweep has it)"),
) -> None:
    """Write one self-contained HTML file (opens offline) with every analysis the sweep(s) have data for."""
    from forgetscope.report import build_report, report_kinds
    from forgetscope.store import SweepStore

    if len(sweeps) > 1 and output is None:  # before any sweep is read
        raise ForgetscopeError(f"a report of {len(sweeps)} sweeps needs an output file: -o/--output FILE.html")
    path = build_report(sweeps if len(sweeps) > 1 else sweeps[0], output, title=title,
                        predict="auto" if predict else False, seed=seed, kind=kind)
    shown: list[str] = []
    if len(sweeps) == 1:
        try:
            shown = report_kinds(SweepStore(sweeps[0]).load_matrix(), kind)
        except ForgetscopeError:  # no matrix yet: the report says so
            shown = []
    what = f"{len(sweeps)} sweeps side by side" if len(sweeps) > 1 else "self-contained"
    console.print(f"[bold green]report:[/] {path}  ({path.stat().st_size / 1e6:.1f} MB, {what})"
                  + (f"; kinds: {', '.join(shown)}" if shown else ""), highlight=False)
