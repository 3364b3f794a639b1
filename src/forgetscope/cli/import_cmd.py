"""`forgetscope import`: turn an external NPY/CSV/Parquet matrix into a sweep directory."""

from __future__ import annotations

from pathlib import Path

import typer

from forgetscope.cli.app import app, console


@app.command("import")
def import_(
    source: Path = typer.Argument(..., help="matrix file: .npy, .csv or .parquet (wide, or long run_id/example_id/forgetting)"),
    dest: Path = typer.Argument(..., help="sweep directory to create"),
    rows: Path | None = typer.Option(None, help="text file with one row (task) name per line"),
    cols: Path | None = typer.Option(None, help="text file with one column (example) name per line"),
    overwrite: bool = typer.Option(False, help="replace a non-empty DEST"),
) -> None:
    """Import a forgetting matrix measured elsewhere so `analyze` and `predict` can read it."""
    from forgetscope.importing import describe, import_matrix, read_names

    matrix = import_matrix(source, dest, row_names=read_names(rows), col_names=read_names(cols),
                           overwrite=overwrite)
    d = describe(matrix)
    console.print(f"imported {d['rows']} x {d['columns']} matrix ({d['missing']} missing) -> {dest}")
