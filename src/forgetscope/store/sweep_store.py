"""The sweep store: reads and writes one sweep directory, atomically, for every pillar.

File names come from :class:`~forgetscope.store.layout.SweepLayout`; writes go through
:mod:`forgetscope.store.io`, so a killed sweep holds only whole per-run files and resumes from them.
The consolidated tables (``runs.parquet``, ``forgetting.parquet``, ``F.npy``) are rebuilt from the
per-run files after each run; forgetting itself is defined in :mod:`forgetscope.measure.forgetting`.
Each run's record holds the sha256 of its rows file (``rows_sha256``), checked whenever the rows are read
back, so a rows file changed or damaged after its run finished is refused by name, never consolidated;
:meth:`SweepStore.damaged_files` finds every such file before a resume loads a model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from forgetscope.data.examples import examples_from_records
from forgetscope.data.types import Example
from forgetscope.errors import DataError, StoreError
from forgetscope.measure.forgetting import forgetting
from forgetscope.measure.record import EvalRecord
from forgetscope.store.io import (
    check_output_dir,
    json_default,
    sha256_of,
    write_json,
    write_npy,
    write_parquet,
)
from forgetscope.store.layout import FORMAT, SweepLayout
from forgetscope.store.matrix import ForgettingMatrix

#: the upstream table's columns an :class:`Example` is rebuilt from
UPSTREAM_TEXT_COLUMNS = ("example_id", "text", "prompt", "response", "answer", "prompt_messages")

#: The record key holding the sha256 of the run's rows file (runs without it, written earlier, are accepted).
CHECKSUM = "rows_sha256"


class DamagedFileError(StoreError):
    """A stored file of a sweep cannot be read back whole (truncated, not JSON/Parquet, or changed since its
    checksum was taken); ``run_id`` is None for the upstream table."""

    def __init__(self, store: SweepStore, path: Path, why: str, run_id: str | None = None):
        self.path, self.why, self.run_id = path, why, run_id
        super().__init__(f"{path.relative_to(store.path).as_posix()} in {store.path} is damaged: {why}")


class SweepStore:
    """Reads and writes one sweep directory. Cheap to construct; touches disk only when asked."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.layout = SweepLayout(self.path)

    # ---- manifest -------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.layout.manifest

    def exists(self) -> bool:
        return self.manifest_path.is_file()

    def read_manifest(self) -> dict[str, Any]:
        if not self.path.exists():
            raise StoreError(f"sweep directory not found: {self.path}")
        if not self.manifest_path.is_file():
            raise StoreError(f"not a forgetscope sweep (no {self.layout.manifest.name}): {self.path}")
        try:
            manifest = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise StoreError(f"corrupt {self.layout.manifest.name} in {self.path}: {exc}") from exc
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

    def eval_record(self) -> EvalRecord:
        """How this sweep measured its upstream examples, read back from the manifest's ``eval`` entry
        (:meth:`EvalRecord.from_manifest`); a StoreError when it records no encoding (an imported matrix)."""
        return EvalRecord.from_manifest(self.read_manifest(), where=f"the sweep {self.path}")

    # ---- upstream -------------------------------------------------------------------------
    def write_upstream(self, df: pd.DataFrame) -> None:
        if "example_id" not in df.columns:
            raise StoreError("upstream table needs an 'example_id' column")
        write_parquet(self.layout.upstream, df)

    def has_upstream(self) -> bool:
        return self.layout.upstream.is_file()

    def read_upstream(self) -> pd.DataFrame:
        return self._read_parquet(self.layout.upstream)

    def _upstream_rows(self, ids: list[str] | None, table: pd.DataFrame | None) -> pd.DataFrame:
        """The upstream table (``table``: already read; default: read it) in the order of ``ids`` (default: as
        stored); a DataError when it is empty or lacks one of them."""
        table = self.read_upstream() if table is None else table
        if table.empty:
            raise DataError(f"the sweep {self.path} has an empty upstream table")
        if "example_id" not in table.columns or not table["example_id"].is_unique:
            raise DataError(f"the sweep {self.path}'s upstream table needs one row per example_id")
        if ids is None:
            return table
        by_id = table.set_index(table["example_id"].astype(str), drop=False)
        missing = [i for i in ids if i not in by_id.index]
        if missing:
            raise DataError(f"the sweep {self.path}'s upstream table lacks {len(missing)} example(s), e.g. "
                            f"{missing[0]!r}")
        return by_id.loc[list(ids)].reset_index(drop=True)

    def upstream_examples(self, ids: list[str] | None = None, *,
                          table: pd.DataFrame | None = None) -> list[Example]:
        """The upstream examples as the sweep measured them, rebuilt from its upstream table (``table``: that
        table already read) in the order of ``ids`` (default: as stored). A DataError when the table holds ids
        and losses only, as an imported matrix does: nothing can be measured again from it."""
        table = self._upstream_rows(ids, table)
        has_text = "text" in table.columns and table["text"].notna().any()
        has_pairs = {"prompt", "response"} <= set(table.columns) and table["response"].notna().any()
        if not (has_text or has_pairs):
            raise DataError(f"the sweep {self.path} stores no upstream texts (its upstream table holds ids and "
                            "losses only, as an imported matrix does); pass the upstream examples or their "
                            "data file instead")
        rows = table[[c for c in UPSTREAM_TEXT_COLUMNS if c in table.columns]].astype(object)
        rows = rows.where(rows.notna(), None).to_dict(orient="records")
        return examples_from_records(rows, name="upstream", source=str(self.layout.upstream),
                                     id_field="example_id")

    def base_losses(self, ids: list[str] | None = None, *,
                    table: pd.DataFrame | None = None) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The base model's loss (``loss_before``) and scored-token count (``n_tokens``) of each upstream
        example (in the order of ``ids``; default: as stored; ``table``: the upstream table already read), as
        floats; None for a column the sweep did not record or that holds no finite value."""
        table = self._upstream_rows(ids, table)

        def column(name: str) -> np.ndarray | None:
            if name not in table.columns:
                return None
            values = pd.to_numeric(table[name], errors="coerce").to_numpy(dtype=np.float64)
            return values if np.isfinite(values).any() else None

        return column("loss_before"), column("n_tokens")

    # ---- runs -----------------------------------------------------------------------------
    def _run_json(self, run_id: str) -> Path:
        return self.layout.run_record(run_id)

    def _run_parquet(self, run_id: str) -> Path:
        return self.layout.run_rows(run_id)

    def has_run(self, run_id: str) -> bool:
        """A run counts as finished only when both its rows and its record are on disk."""
        return self._run_json(run_id).is_file() and self._run_parquet(run_id).is_file()

    def write_run(self, record: dict[str, Any], rows: pd.DataFrame) -> None:
        """Store one finished run: its long rows first, then its record (the commit point), which holds the
        rows file's sha256."""
        run_id = str(record["run_id"])
        missing = {"example_id", "loss_after"} - set(rows.columns)
        if missing:
            raise StoreError(f"run rows lack columns {sorted(missing)}")
        rows = rows.copy()
        rows.insert(0, "run_id", run_id)
        write_parquet(self._run_parquet(run_id), rows)
        write_json(self._run_json(run_id), {**record, CHECKSUM: sha256_of(self._run_parquet(run_id))})

    def finished_run_ids(self) -> list[str]:
        d = self.layout.runs_dir
        if not d.is_dir():
            return []
        return sorted(p.stem for p in d.glob("*.json") if self.has_run(p.stem))

    def read_run_record(self, run_id: str) -> dict[str, Any]:
        """A run's record; a :class:`DamagedFileError` naming the file when it is not a whole JSON object."""
        p = self._run_json(run_id)
        try:
            record = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DamagedFileError(self, p, f"not readable as JSON ({type(exc).__name__}: {exc})",
                                   run_id) from None
        if not isinstance(record, dict):
            raise DamagedFileError(self, p, f"a JSON {type(record).__name__}, not a run record", run_id)
        return record

    def read_run_rows(self, run_id: str, record: dict[str, Any] | None = None) -> pd.DataFrame:
        """A run's long rows, checked against the checksum its record holds (runs written before checksums
        have none and are read as they are); a :class:`DamagedFileError` naming the file otherwise."""
        p = self._run_parquet(run_id)
        record = self.read_run_record(run_id) if record is None else record
        expected = record.get(CHECKSUM)
        try:
            actual = sha256_of(p)
        except OSError as exc:
            raise DamagedFileError(self, p, f"not readable ({exc.strerror})", run_id) from None
        if expected is not None and actual != expected:
            raise DamagedFileError(self, p, f"its content does not match the sha256 its record holds "
                                   f"({str(expected)[:12]}…): it changed after the run was written", run_id)
        return self._whole_parquet(p, ("example_id", "loss_after"), run_id)

    def _whole_parquet(self, p: Path, columns: tuple[str, ...], run_id: str | None = None) -> pd.DataFrame:
        try:
            df = pd.read_parquet(p)
        except Exception as exc:  # pyarrow raises several types for a truncated file
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise DamagedFileError(self, p, f"not readable as Parquet ({type(exc).__name__}: {first})",
                                   run_id) from None
        missing = set(columns) - set(df.columns)
        if missing:
            raise DamagedFileError(self, p, f"it lacks the columns {sorted(missing)}", run_id)
        return df

    def damaged_files(self) -> list[DamagedFileError]:
        """Every stored file a resume reads back that cannot be read whole: the upstream table and each
        finished run's record and rows (read and checked here, before any model is loaded)."""
        found = []
        if self.has_upstream():
            try:
                self._whole_parquet(self.layout.upstream, ("example_id", "loss_before"))
            except DamagedFileError as exc:
                found.append(exc)
        for run_id in self.finished_run_ids():
            try:
                self.read_run_rows(run_id)
            except DamagedFileError as exc:
                found.append(exc)
        return found

    def set_aside(self, damaged: DamagedFileError) -> list[Path]:
        """Move a damaged file out of the way, into ``runs/damaged/`` (a run's record and rows together, so
        the run counts as not finished and runs again); returns where they went."""
        sources = [self.layout.upstream] if damaged.run_id is None else \
            [self._run_json(damaged.run_id), self._run_parquet(damaged.run_id)]
        target_dir = self.layout.damaged_dir
        target_dir.mkdir(parents=True, exist_ok=True)
        moved = []
        for src in sources:
            if not src.exists():
                continue
            target, k = target_dir / src.name, 1
            while target.exists():
                target, k = target_dir / f"{src.stem}.{k}{src.suffix}", k + 1
            os.replace(src, target)
            moved.append(target)
        return moved

    def consolidate(self, run_order: list[str] | None = None) -> ForgettingMatrix:
        """Rebuild runs.parquet, forgetting.parquet and F.npy from the per-run files.

        Without ``run_order`` the rows keep the order the sweep already recorded (runs.parquet), new runs
        after them: rebuilding a finished sweep rewrites the same files."""
        upstream = self.read_upstream()
        ids = [r for r in (run_order or self._recorded_order()) if self.has_run(r)]
        records = {r: self.read_run_record(r) for r in ids}
        runs = pd.DataFrame([_flatten_record(r) for r in records.values()])
        example_ids = upstream["example_id"].astype(str).tolist()
        before = upstream.set_index(upstream["example_id"].astype(str))["loss_before"]
        long_parts = []
        F = np.full((len(ids), len(example_ids)), np.nan)
        null = np.full_like(F, np.nan)
        has_null = False
        col_index = {e: j for j, e in enumerate(example_ids)}
        for i, run_id in enumerate(ids):
            rows = self.read_run_rows(run_id, records[run_id])
            rows["example_id"] = rows["example_id"].astype(str)
            base = before.loc[rows["example_id"]].to_numpy()
            rows["forgetting"] = forgetting(rows["loss_after"].to_numpy(), base)
            cols = [col_index[e] for e in rows["example_id"] if e in col_index]
            F[i, cols] = rows["forgetting"].to_numpy()[: len(cols)]
            if "loss_null" in rows:
                has_null = True
                rows["forgetting_null"] = forgetting(rows["loss_null"].to_numpy(), base)
                null[i, cols] = rows["forgetting_null"].to_numpy()[: len(cols)]
            long_parts.append(rows)
        long = pd.concat(long_parts, ignore_index=True) if long_parts else pd.DataFrame(
            columns=["run_id", "example_id", "loss_after", "forgetting"]
        )
        write_parquet(self.layout.runs_table, runs)
        write_parquet(self.layout.forgetting, long)
        write_npy(self.layout.matrix, F)
        if has_null:
            write_npy(self.layout.null_matrix, null)
        return ForgettingMatrix(F, ids, example_ids, runs=runs, upstream=upstream, path=self.path,
                                null=null if has_null else None)

    def _recorded_order(self) -> list[str]:
        """The run ids in runs.parquet's order, then any other finished run (sorted)."""
        finished = self.finished_run_ids()
        recorded: list[str] = []
        if self.layout.runs_table.is_file():
            try:
                recorded = [str(r) for r in pd.read_parquet(self.layout.runs_table, columns=["run_id"])["run_id"]]
            except (OSError, ValueError, KeyError):
                recorded = []
        known = set(recorded)
        return [r for r in recorded if r in set(finished)] + [r for r in finished if r not in known]

    def read_runs(self) -> pd.DataFrame:
        return self._read_parquet(self.layout.runs_table)

    def read_forgetting(self) -> pd.DataFrame:
        return self._read_parquet(self.layout.forgetting)

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
                f"{self.layout.matrix.name} has shape {F.shape} but runs/upstream tables give "
                f"{(len(row_names), len(col_names))} in {self.path}"
            )
        null = np.load(self.layout.null_matrix, allow_pickle=False) if self.layout.null_matrix.is_file() else None
        return ForgettingMatrix(F, row_names, col_names, runs=runs, upstream=upstream, path=self.path,
                                meta=manifest, null=null)

    def _read_matrix(self) -> np.ndarray:
        p = self.layout.matrix
        if not p.is_file():
            raise StoreError(f"sweep has no {p.name} yet (no finished runs?): {self.path}")
        try:
            return np.load(p, allow_pickle=False)
        except ValueError as exc:
            raise StoreError(f"corrupt {p.name} in {self.path}: {exc}") from exc

    def _read_parquet(self, p: Path) -> pd.DataFrame:
        name = p.name
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
        if k == CHECKSUM:  # a property of the per-run file, not of the run
            continue
        out[k] = json.dumps(v, default=json_default) if isinstance(v, (dict, list)) else v
    return out


def write_matrix_sweep(matrix: ForgettingMatrix, path: str | os.PathLike[str], *,
                       manifest: dict[str, Any] | None = None, overwrite: bool = False) -> SweepStore:
    """Write a bare matrix (e.g. imported from elsewhere) as a sweep directory analysis can read."""
    store = SweepStore(path)
    check_output_dir(store.path)
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
    write_parquet(store.layout.runs_table, runs)
    rr, cc = np.meshgrid(np.arange(matrix.shape[0]), np.arange(matrix.shape[1]), indexing="ij")
    long = pd.DataFrame({
        "run_id": np.asarray(matrix.row_names, dtype=object)[rr.ravel()],
        "example_id": np.asarray(matrix.col_names, dtype=object)[cc.ravel()],
        "forgetting": matrix.values.ravel(),
    })
    write_parquet(store.layout.forgetting, long)
    write_npy(store.layout.matrix, matrix.values)
    store.write_manifest({"source": "import", "status": "complete", **(manifest or {})})
    return store


def load_forgetting(path: str | os.PathLike[str]) -> ForgettingMatrix:
    """Load a forgetting matrix from a sweep directory (the one entry point analysis/predict use)."""
    return SweepStore(path).load_matrix()
