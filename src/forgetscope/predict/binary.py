"""Binary forgetting: an example the base model answered exactly is forgotten when the answer is lost.

``B[i, j] = 1`` where ``em_before[j] == 1`` and ``em_after[i, j] == 0``, ``0`` where both are 1, and NaN
where the base model did not answer example j exactly (or it has no answer, or run i did not measure
it): the reference protocol keeps only the columns the base model gets right.
:func:`binary_forgetting` builds it from a sweep's stored exact-match columns (``em_before`` in
``upstream.parquet``, ``em_after`` in the long ``forgetting.parquet``) with
:func:`forgetscope.measure.forgetting.binary_forgetting`, the one definition; :func:`binary_matrix` is the
same rule on plain arrays.
"""

from __future__ import annotations

import numpy as np

from forgetscope.errors import DataError
from forgetscope.measure.forgetting import binary_forgetting
from forgetscope.predict.kinds import subset_columns
from forgetscope.store.matrix import ForgettingMatrix


def binary_matrix(em_before: np.ndarray, em_after: np.ndarray) -> np.ndarray:
    """``em_before == 1 & em_after == 0`` as 1.0/0.0, NaN where ``em_before != 1`` or either is missing."""
    before = np.asarray(em_before, np.float64)[None, :]
    after = np.asarray(em_after, np.float64)
    out = np.where(after == 0, 1.0, np.where(after == 1, 0.0, np.nan))
    return np.where((before == 1) & np.isfinite(after), out, np.nan)


def scored_columns(matrix: ForgettingMatrix) -> ForgettingMatrix:
    """Only the columns with at least one finite entry (the examples the base model answered exactly)."""
    keep = np.flatnonzero(np.isfinite(matrix.values).any(0))
    if keep.size == 0:
        raise DataError("no upstream example is answered exactly by the base model (em_before == 1): "
                        "the binary forgetting matrix is empty")
    return subset_columns(matrix, keep)


__all__ = ["binary_forgetting", "binary_matrix", "scored_columns"]
