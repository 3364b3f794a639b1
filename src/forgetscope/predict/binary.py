"""Binary forgetting: an example the base model answered exactly is forgotten when the answer is lost.

``B[i, j] = 1`` where ``em_before[j] == 1`` and ``em_after[i, j] == 0``, ``0`` where both are 1, and NaN
where the base model did not answer example j exactly (or it has no answer, or run i did not measure
it): the reference protocol keeps only the columns the base model gets right.
:func:`binary_forgetting` builds it from a sweep's stored exact-match columns (``em_before`` in
``upstream.parquet``, ``em_after`` in the long ``forgetting.parquet``), through
``forgetscope.measure.forgetting.binary_forgetting`` where that exists.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from forgetscope.errors import DataError
from forgetscope.predict.kinds import subset_columns
from forgetscope.store.matrix import ForgettingMatrix


def binary_matrix(em_before: np.ndarray, em_after: np.ndarray) -> np.ndarray:
    """``em_before == 1 & em_after == 0`` as 1.0/0.0, NaN where ``em_before != 1`` or either is missing."""
    before = np.asarray(em_before, np.float64)[None, :]
    after = np.asarray(em_after, np.float64)
    out = np.where(after == 0, 1.0, np.where(after == 1, 0.0, np.nan))
    return np.where((before == 1) & np.isfinite(after), out, np.nan)


def binary_forgetting(matrix: ForgettingMatrix) -> ForgettingMatrix:
    """The binary forgetting matrix of a sweep's ``matrix`` (same rows and columns; see the module doc)."""
    try:
        from forgetscope.measure.forgetting import binary_forgetting as native
    except ImportError:
        native = None
    if native is not None:
        return native(matrix)
    if matrix.upstream is None or "em_before" not in matrix.upstream.columns:
        raise DataError("binary forgetting needs the sweep's exact-match columns (em_before in upstream.parquet)")
    if matrix.path is None:
        raise DataError("binary forgetting needs a sweep directory (em_after is stored in forgetting.parquet)")
    from forgetscope.store import SweepStore

    long = SweepStore(matrix.path).read_forgetting()
    if "em_after" not in long.columns:
        raise DataError(f"the sweep {matrix.path} stores no em_after column in forgetting.parquet")
    wide = (long.assign(run_id=long["run_id"].astype(str), example_id=long["example_id"].astype(str))
            .pivot(index="run_id", columns="example_id", values="em_after"))
    em_after = wide.reindex(index=matrix.row_names, columns=matrix.col_names).to_numpy(np.float64)
    em_before = pd.to_numeric(matrix.upstream["em_before"], errors="coerce").to_numpy(np.float64)
    return ForgettingMatrix(binary_matrix(em_before, em_after), list(matrix.row_names), list(matrix.col_names),
                            runs=matrix.runs, upstream=matrix.upstream, path=matrix.path, meta=dict(matrix.meta))


def scored_columns(matrix: ForgettingMatrix) -> ForgettingMatrix:
    """Only the columns with at least one finite entry (the examples the base model answered exactly)."""
    keep = np.flatnonzero(np.isfinite(matrix.values).any(0))
    if keep.size == 0:
        raise DataError("no upstream example is answered exactly by the base model (em_before == 1): "
                        "the binary forgetting matrix is empty")
    return subset_columns(matrix, keep)
