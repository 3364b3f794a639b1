"""Binary forgetting: an example the base model answered exactly is forgotten when the answer is lost.

``B[i, j] = 1`` where ``em_before[j] == 1`` and ``em_after[i, j] == 0``, ``0`` where both are 1, and NaN
where the base model did not answer example j exactly (or it has no answer, or run i did not measure
it): the reference protocol keeps only the columns the base model gets right.
:func:`binary_forgetting` builds it from a sweep's stored exact-match columns (``em_before`` in
``upstream.parquet``, ``em_after`` in the long ``forgetting.parquet``) with the one definition of the
rule, :func:`forgetscope.measure.forgetting.binary_forgetting_values` (also exported here as
:func:`binary_matrix`).
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from forgetscope.errors import DataError
from forgetscope.measure.forgetting import binary_forgetting_values as binary_matrix
from forgetscope.predict.kinds import subset_columns
from forgetscope.store.matrix import ForgettingMatrix


def binary_forgetting(matrix: ForgettingMatrix | str | os.PathLike[str]) -> ForgettingMatrix:
    """The M x N_instruction binary forgetting matrix of a sweep (rule: the module docstring).

    Reads ``em_after`` per run from the sweep's long ``forgetting.parquet`` and ``em_before`` from its
    upstream table; columns are the sweep's instruction examples, rows its runs (in the matrix's order).
    Values are 1.0 (forgotten), 0.0 (kept) or NaN (not forgettable or not measured).
    """
    from forgetscope.store.sweep_store import SweepStore

    if not isinstance(matrix, ForgettingMatrix):
        matrix = SweepStore(matrix).load_matrix()
    inst = matrix.select_kind("instruction")
    if inst.path is None or inst.upstream is None or "em_before" not in inst.upstream:
        raise DataError("binary forgetting needs a sweep directory with exact-match columns (em_before, em_after)")
    long = SweepStore(inst.path).read_forgetting()
    if "em_after" not in long:
        raise DataError(f"the sweep {inst.path} has no em_after column (exact match was off)")
    after = long.assign(run_id=long["run_id"].astype(str), example_id=long["example_id"].astype(str)).pivot_table(
        index="run_id", columns="example_id", values="em_after", aggfunc="first", dropna=False)
    after = after.reindex(index=inst.row_names, columns=inst.col_names).to_numpy(dtype=float)
    before = pd.to_numeric(inst.upstream["em_before"], errors="coerce").to_numpy(dtype=float)
    return ForgettingMatrix(binary_matrix(before, after), inst.row_names, inst.col_names, runs=inst.runs,
                            upstream=inst.upstream, path=inst.path, meta={**inst.meta, "quantity": "binary_forgetting"},
                            kinds=inst.kinds)


def scored_columns(matrix: ForgettingMatrix) -> ForgettingMatrix:
    """Only the columns with at least one finite entry (the examples the base model answered exactly)."""
    keep = np.flatnonzero(np.isfinite(matrix.values).any(0))
    if keep.size == 0:
        raise DataError("no upstream example is answered exactly by the base model (em_before == 1): "
                        "the binary forgetting matrix is empty")
    return subset_columns(matrix, keep)


__all__ = ["binary_forgetting", "binary_matrix", "scored_columns"]
