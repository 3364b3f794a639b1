"""The sweep store: one directory per sweep, written atomically, readable by every pillar.

Layout (see DESIGN.md, "Storage and interfaces")::

    SWEEP/
      manifest.json        config, versions, seeds, model hash, status
      upstream.parquet     example_id, text/prompt/response/answer, n_tokens, loss_before, em_before
      runs.parquet         one row per finished run (task, strategy, hyperparameters, timings, task loss)
      forgetting.parquet   long format: run_id, example_id, loss_after, em_after, forgetting
      F.npy                cached M x N forgetting matrix, rows in runs.parquet order
      runs/<run_id>.json   per-run record, written when the run finishes (the resume checkpoint)
      runs/<run_id>.parquet per-run long rows

Every file is written to a temporary name in the same folder and renamed into place, so a crash or
Ctrl-C never leaves a half-written file: a killed sweep holds only whole per-run files and resumes
from them. The consolidated tables are rebuilt from the per-run files after each run.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from forgetscope.errors import StoreError

FORMAT = "forgetscope-sweep/1"
MANIFEST = "manifest.json"
UPSTREAM = "upstream.parquet"
RUNS = "runs.parquet"
FORGETTING = "forgetting.parquet"
MATRIX = "F.npy"
RUNS_DIR = "runs"
_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; results should be as readable as any file
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=_json_default, sort_keys=False))


def write_parquet(path: Path, df: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def write_npy(path: Path, arr: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, arr)


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


@dataclass
class ForgettingMatrix:
    """An M x N forgetting matrix with its names; what analysis and prediction consume.

    ``values[i, j]`` is loss_after(row i, example j) - loss_before(example j); NaN marks a missing entry.
    ``runs`` and ``upstream`` carry the sweep's tables when the matrix came from a sweep.
    """

    values: np.ndarray
    row_names: list[str]
    col_names: list[str]
    runs: pd.DataFrame | None = None
    upstream: pd.DataFrame | None = None
    path: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float64)
        if self.values.ndim != 2:
            raise StoreError(f"forgetting matrix must be 2-D, got shape {self.values.shape}")
        m, n = self.values.shape
        self.row_names = [str(r) for r in self.row_names]
        self.col_names = [str(c) for c in self.col_names]
        if len(self.row_names) != m:
            raise StoreError(f"{len(self.row_names)} row names for a matrix with {m} rows")
        if len(self.col_names) != n:
            raise StoreError(f"{len(self.col_names)} column names for a matrix with {n} columns")
        if len(set(self.row_names)) != m:
            raise StoreError("row names are not unique")
        if len(set(self.col_names)) != n:
            raise StoreError("column names are not unique")

    @property
    def shape(self) -> tuple[int, int]:
        return self.values.shape  # type: ignore[return-value]


class SweepStore:
    """Reads and writes one sweep directory. Cheap to construct; touches disk only when asked."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)

    # ---- manifest -------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    def exists(self) -> bool:
        return self.manifest_path.is_file()

    def read_manifest(self) -> dict[str, Any]:
        if not self.path.exists():
            raise StoreError(f"sweep directory not found: {self.path}")
        if not self.manifest_path.is_file():
            raise StoreError(f"not a forgetscope sweep (no {MANIFEST}): {self.path}")
        try:
            manifest = json.loads(self.manifest_path.read_text())
        except json.JSONDecodeError as exc:
            raise StoreError(f"corrupt {MANIFEST} in {self.path}: {exc}") from exc
        if manifest.get("format") != FORMAT:
            raise StoreError(f"unsupported sweep format {manifest.get('format')!r} in {self.path}")
        return manifest

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        manifest = {"format": FORMAT, **{k: v for k, v in manifest.items() if k != "format"}}
        write_json(self.manifest_path, manifest)

    def update_manifest(self, **changes: Any) -> dict[str, Any]:
        manifest = self.read_manifest()
        manifest.update(changes)
        self.write_manifest(manifest)
        return manifest

    # ---- upstream -------------------------------------------------------------------------
    def write_upstream(self, df: pd.DataFrame) -> None:
        if "example_id" not in df.columns:
            raise StoreError("upstream table needs an 'example_id' column")
        write_parquet(self.path / UPSTREAM, df)

    def has_upstream(self) -> bool:
        return (self.path / UPSTREAM).is_file()

    def read_upstream(self) -> pd.DataFrame:
        return self._read_parquet(UPSTREAM)

    # ---- runs -----------------------------------------------------------------------------
    def _run_json(self, run_id: str) -> Path:
        return self.path / RUNS_DIR / f"{run_id}.json"

    def _run_parquet(self, run_id: str) -> Path:
        return self.path / RUNS_DIR / f"{run_id}.parquet"

    def has_run(self, run_id: str) -> bool:
        """A run counts as finished only when both its rows and its record are on disk."""
        return self._run_json(run_id).is_file() and self._run_parquet(run_id).is_file()

    def write_run(self, record: dict[str, Any], rows: pd.DataFrame) -> None:
        """Store one finished run: its long rows first, then its record (the commit point)."""
        run_id = str(record["run_id"])
        missing = {"example_id", "loss_after"} - set(rows.columns)
        if missing:
            raise StoreError(f"run rows lack columns {sorted(missing)}")
        rows = rows.copy()
        rows.insert(0, "run_id", run_id)
        write_parquet(self._run_parquet(run_id), rows)
        write_json(self._run_json(run_id), record)

    def finished_run_ids(self) -> list[str]:
        d = self.path / RUNS_DIR
        if not d.is_dir():
            return []
        return sorted(p.stem for p in d.glob("*.json") if self.has_run(p.stem))

    def read_run_record(self, run_id: str) -> dict[str, Any]:
        return json.loads(self._run_json(run_id).read_text())

    def read_run_rows(self, run_id: str) -> pd.DataFrame:
        return pd.read_parquet(self._run_parquet(run_id))

    def consolidate(self, run_order: list[str] | None = None) -> ForgettingMatrix:
        """Rebuild runs.parquet, forgetting.parquet and F.npy from the per-run files."""
        upstream = self.read_upstream()
        ids = [r for r in (run_order or self.finished_run_ids()) if self.has_run(r)]
        records = [self.read_run_record(r) for r in ids]
        runs = pd.DataFrame([_flatten_record(r) for r in records])
        example_ids = upstream["example_id"].astype(str).tolist()
        before = upstream.set_index(upstream["example_id"].astype(str))["loss_before"]
        long_parts = []
        F = np.full((len(ids), len(example_ids)), np.nan)
        col_index = {e: j for j, e in enumerate(example_ids)}
        for i, run_id in enumerate(ids):
            rows = self.read_run_rows(run_id)
            rows["example_id"] = rows["example_id"].astype(str)
            rows["forgetting"] = rows["loss_after"].to_numpy() - before.loc[rows["example_id"]].to_numpy()
            long_parts.append(rows)
            cols = [col_index[e] for e in rows["example_id"] if e in col_index]
            F[i, cols] = rows["forgetting"].to_numpy()[: len(cols)]
        long = pd.concat(long_parts, ignore_index=True) if long_parts else pd.DataFrame(
            columns=["run_id", "example_id", "loss_after", "forgetting"]
        )
        write_parquet(self.path / RUNS, runs)
        write_parquet(self.path / FORGETTING, long)
        write_npy(self.path / MATRIX, F)
        return ForgettingMatrix(F, ids, example_ids, runs=runs, upstream=upstream, path=self.path)

    def read_runs(self) -> pd.DataFrame:
        return self._read_parquet(RUNS)

    def read_forgetting(self) -> pd.DataFrame:
        return self._read_parquet(FORGETTING)

    def load_matrix(self) -> ForgettingMatrix:
        """The forgetting matrix with names, read from the consolidated files."""
        manifest = self.read_manifest()
        runs = self.read_runs()
        upstream = self.read_upstream()
        F = self._read_matrix()
        row_names = runs["run_id"].astype(str).tolist() if "run_id" in runs else [str(i) for i in range(len(F))]
        col_names = upstream["example_id"].astype(str).tolist()
        if F.shape != (len(row_names), len(col_names)):
            raise StoreError(
                f"{MATRIX} has shape {F.shape} but runs/upstream tables give "
                f"{(len(row_names), len(col_names))} in {self.path}"
            )
        return ForgettingMatrix(F, row_names, col_names, runs=runs, upstream=upstream, path=self.path,
                                meta=manifest)

    def _read_matrix(self) -> np.ndarray:
        p = self.path / MATRIX
        if not p.is_file():
            raise StoreError(f"sweep has no {MATRIX} yet (no finished runs?): {self.path}")
        try:
            return np.load(p, allow_pickle=False)
        except ValueError as exc:
            raise StoreError(f"corrupt {MATRIX} in {self.path}: {exc}") from exc

    def _read_parquet(self, name: str) -> pd.DataFrame:
        p = self.path / name
        if not p.is_file():
            raise StoreError(f"sweep has no {name}: {self.path}")
        try:
            return pd.read_parquet(p)
        except Exception as exc:  # pyarrow raises several types for a damaged file
            raise StoreError(f"cannot read {name} in {self.path}: {exc}") from exc


def _flatten_record(record: dict[str, Any]) -> dict[str, Any]:
    """Runs table rows: scalars as columns, nested dicts as JSON strings (Parquet-friendly)."""
    out: dict[str, Any] = {}
    for k, v in record.items():
        out[k] = json.dumps(v, default=_json_default) if isinstance(v, (dict, list)) else v
    return out


def write_matrix_sweep(matrix: ForgettingMatrix, path: str | os.PathLike[str], *,
                       manifest: dict[str, Any] | None = None, overwrite: bool = False) -> SweepStore:
    """Write a bare matrix (e.g. imported from elsewhere) as a sweep directory analysis can read."""
    store = SweepStore(path)
    if store.path.exists() and any(store.path.iterdir()) and not overwrite:
        raise StoreError(f"refusing to overwrite non-empty directory {store.path} (use overwrite)")
    store.path.mkdir(parents=True, exist_ok=True)
    upstream = matrix.upstream if matrix.upstream is not None else pd.DataFrame(
        {"example_id": matrix.col_names, "loss_before": np.nan}
    )
    runs = matrix.runs if matrix.runs is not None else pd.DataFrame(
        {"run_id": matrix.row_names, "task": matrix.row_names}
    )
    store.write_upstream(upstream)
    write_parquet(store.path / RUNS, runs)
    rr, cc = np.meshgrid(np.arange(matrix.shape[0]), np.arange(matrix.shape[1]), indexing="ij")
    long = pd.DataFrame({
        "run_id": np.asarray(matrix.row_names, dtype=object)[rr.ravel()],
        "example_id": np.asarray(matrix.col_names, dtype=object)[cc.ravel()],
        "forgetting": matrix.values.ravel(),
    })
    write_parquet(store.path / FORGETTING, long)
    write_npy(store.path / MATRIX, matrix.values)
    store.write_manifest({"source": "import", "status": "complete", **(manifest or {})})
    return store


def load_forgetting(path: str | os.PathLike[str]) -> ForgettingMatrix:
    """Load a forgetting matrix from a sweep directory (the one entry point analysis/predict use)."""
    return SweepStore(path).load_matrix()
