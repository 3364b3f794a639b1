"""Forgetting matrices measured elsewhere: read NPY/CSV/Parquet into a ``ForgettingMatrix``.

Why: analysis and prediction should work on forgetting statistics from any source (another
codebase, a paper's release). Accepted layouts:

- ``.npy``: a 2-D array; names from optional text files (one name per line) or ``row_i``/``col_j``.
- ``.csv`` / ``.parquet`` wide: one row per task, one column per example; a first non-numeric
  column (or a column named ``task``/``run_id``/``row``) holds the row names, headers the columns.
- ``.csv`` / ``.parquet`` long: columns ``run_id``, ``example_id``, ``forgetting`` (a sweep's
  ``forgetting.parquet``), pivoted to a matrix; absent pairs become NaN.

:func:`load_any` accepts either a sweep directory or one of these files; :func:`read_values_file` reads a
JSON mapping ``{example_id: value}`` (a replay oracle's row, a probe's values). Strategies read no files:
:mod:`forgetscope.experiments.strategy_inputs` calls these before it builds one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from forgetscope.errors import DataError
from forgetscope.store import ForgettingMatrix, SweepStore, load_forgetting

SUFFIXES = (".npy", ".csv", ".parquet", ".pq")
_ROW_NAME_COLUMNS = ("run_id", "task", "row", "name")
_LONG = ("run_id", "example_id", "forgetting")


def read_names(path: str | os.PathLike[str] | None) -> list[str] | None:
    """Names from a text file, one per line (blank lines ignored)."""
    if path is None:
        return None
    p = Path(path)
    if not p.is_file():
        raise DataError(f"names file not found: {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        bad = exc.object[exc.start:exc.start + 1].hex()
        raise DataError(f"names file {p} is not UTF-8 text (byte 0x{bad} at offset {exc.start})") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def read_matrix_file(path: str | os.PathLike[str], *, row_names: list[str] | None = None,
                     col_names: list[str] | None = None) -> ForgettingMatrix:
    """Read an external matrix file; explicit names override names found in the file."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"matrix file not found: {p}")
    suffix = p.suffix.lower()
    if suffix == ".npy":
        try:
            values = np.load(p, allow_pickle=False)
        except ValueError as exc:
            raise DataError(f"cannot read {p} as a numeric .npy array: {exc}") from None
        rows = [f"row_{i}" for i in range(values.shape[0])] if values.ndim == 2 else []
        cols = [f"col_{j}" for j in range(values.shape[1])] if values.ndim == 2 else []
    elif suffix in (".csv", ".parquet", ".pq"):
        try:
            df = pd.read_csv(p) if suffix == ".csv" else pd.read_parquet(p)
        except Exception as exc:  # pandas/pyarrow raise many types for a malformed file
            raise DataError(f"cannot read {p}: {exc}") from None
        values, rows, cols = _from_frame(df, p)
    else:
        raise _unsupported(p)
    if values.ndim != 2:
        raise DataError(f"{p.name} holds an array of shape {values.shape}; a matrix must be 2-D")
    if values.dtype.kind not in "fiub":
        raise DataError(f"{p.name} is not numeric (dtype {values.dtype})")
    rows = row_names if row_names is not None else rows
    cols = col_names if col_names is not None else cols
    if len(rows) != values.shape[0]:
        raise DataError(f"{len(rows)} row names for a matrix with {values.shape[0]} rows in {p.name}")
    if len(cols) != values.shape[1]:
        raise DataError(f"{len(cols)} column names for a matrix with {values.shape[1]} columns in {p.name}")
    return ForgettingMatrix(values.astype(np.float64), rows, cols, path=p, meta={"source_file": str(p)})


def _unsupported(p: Path) -> DataError:
    return DataError(f"unsupported matrix file {p.name!r}; use one of {', '.join(SUFFIXES)} or a sweep directory")


def _from_frame(df: pd.DataFrame, p: Path) -> tuple[np.ndarray, list[str], list[str]]:
    if df.empty:
        raise DataError(f"{p.name} is empty")
    if set(_LONG) <= set(df.columns):
        wide = df.pivot_table(index="run_id", columns="example_id", values="forgetting", aggfunc="mean",
                              sort=False, dropna=False)
        return wide.to_numpy(np.float64), wide.index.astype(str).tolist(), wide.columns.astype(str).tolist()
    name_col = next((c for c in _ROW_NAME_COLUMNS if c in df.columns), None)
    if name_col is None and not pd.api.types.is_numeric_dtype(df.iloc[:, 0]):
        name_col = df.columns[0]
    rows = df[name_col].astype(str).tolist() if name_col is not None else [f"row_{i}" for i in range(len(df))]
    body = df.drop(columns=[name_col]) if name_col is not None else df
    bad = [c for c in body.columns if not pd.api.types.is_numeric_dtype(body[c])]
    if bad:
        raise DataError(f"{p.name}: non-numeric value column(s) {', '.join(map(str, bad[:5]))}")
    return body.to_numpy(np.float64), rows, [str(c) for c in body.columns]


def check_any(path: str | os.PathLike[str]) -> None:
    """The checks :func:`load_any` makes before it reads anything: a sweep directory, or an existing file
    of a supported kind (cheap, for the checks made before any work starts)."""
    p = Path(path)
    if p.is_dir():
        if not SweepStore(p).exists():
            raise DataError(f"{p} is a directory but not a forgetscope sweep (no manifest.json)")
        return
    if not p.exists():
        raise DataError(f"no such sweep directory or matrix file: {p}")
    if p.suffix.lower() not in SUFFIXES:
        raise _unsupported(p)


def load_any(path: str | os.PathLike[str], *, row_names: list[str] | None = None,
             col_names: list[str] | None = None) -> ForgettingMatrix:
    """A forgetting matrix from a sweep directory or a NPY/CSV/Parquet file."""
    p = Path(path)
    check_any(p)
    if p.is_dir():
        return load_forgetting(p)
    return read_matrix_file(p, row_names=row_names, col_names=col_names)


def check_base_losses(path: str | os.PathLike[str]) -> SweepStore:
    """The sweep store of ``path``, checked to hold upstream base losses (nothing is read)."""
    store = SweepStore(Path(path))
    if not store.exists() or not store.has_upstream():
        raise DataError(f"{path} is not a sweep directory with upstream base losses")
    return store


def load_base_losses(path: str | os.PathLike[str]) -> dict[str, float]:
    """``{example_id: loss_before}`` of a sweep directory's upstream examples (a one-line error when the
    path is not a sweep or has no base losses)."""
    up = check_base_losses(path).read_upstream()
    return dict(zip(up["example_id"].astype(str), up["loss_before"].astype(float), strict=True))


def read_values_file(path: str | os.PathLike[str]) -> tuple[dict[str, float], int | None]:
    """``{example_id: value}`` from a JSON file (either that mapping or ``{"values": ..., "evaluations": n}``)
    and the evaluations it says the values cost (None when it does not say)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"values file not found: {p}")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{p} is not valid JSON: {exc}") from None
    evaluations = None
    if isinstance(data, dict) and "values" in data:
        evaluations = data.get("evaluations")
        data = data["values"]
    if not isinstance(data, dict):
        raise DataError(f"{p}: expected a mapping of example id to value")
    return {str(k): float("nan") if v is None else float(v) for k, v in data.items()}, evaluations


def import_matrix(source: str | os.PathLike[str], dest: str | os.PathLike[str], *,
                  row_names: list[str] | None = None, col_names: list[str] | None = None,
                  overwrite: bool = False) -> ForgettingMatrix:
    """Read ``source`` and write it as a sweep directory at ``dest`` (what ``forgetscope import`` does)."""
    from forgetscope.store import write_matrix_sweep
    from forgetscope.store.io import check_output_dir

    check_output_dir(dest)  # a file or a read-only folder: refused before the matrix is read
    matrix = read_matrix_file(source, row_names=row_names, col_names=col_names)
    write_matrix_sweep(matrix, dest, manifest={"source_file": str(Path(source).resolve())}, overwrite=overwrite)
    return load_forgetting(dest)


def describe(matrix: ForgettingMatrix) -> dict[str, Any]:
    """Shape and missingness, for CLI summaries."""
    v = matrix.values
    return {"rows": v.shape[0], "columns": v.shape[1], "missing": int(np.isnan(v).sum()),
            "mean": float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")}
