"""Input validation shared by analysis and prediction, in one place (one-line DataErrors)."""

from __future__ import annotations

from typing import Any

import numpy as np

from forgetscope.errors import DataError


def check_matrix(values: Any, *, min_rows: int = 1, what: str = "forgetting matrix",
                 dtype: type | None = np.float64, empty_columns: bool = False) -> np.ndarray:
    """Return ``values`` as a 2-D float array, or raise a one-line :class:`DataError`.

    NaN marks a missing entry and is allowed; infinities are not, nor rows or columns with no
    observed entry at all (nothing can be said about them). ``dtype=None`` keeps a float32 input
    as float32 (no copy of a big matrix). ``empty_columns`` allows columns with no observed entry (for
    predictors that can say something about them from other information).
    """
    arr = np.asarray(getattr(values, "values", values))
    if arr.dtype.kind not in "fiub":
        raise DataError(f"{what} must be numeric, got dtype {arr.dtype}")
    if dtype is None:
        dtype = arr.dtype if arr.dtype.kind == "f" else np.float64
    arr = arr.astype(dtype, copy=False)
    if arr.ndim != 2:
        raise DataError(f"{what} must be 2-D (tasks x examples), got shape {arr.shape}")
    m, n = arr.shape
    if m < min_rows:
        raise DataError(f"{what} needs at least {min_rows} row(s), got {m}")
    if n < 1:
        raise DataError(f"{what} has no columns")
    if np.isinf(arr).any():
        raise DataError(f"{what} contains infinite values")
    missing = np.isnan(arr)
    if missing.any():
        if missing.all(axis=1).any():
            raise DataError(f"{what} has rows with no observed entry (row {int(np.argmax(missing.all(1)))})")
        if not empty_columns and missing.all(axis=0).any():
            raise DataError(f"{what} has columns with no observed entry "
                            f"(column {int(np.argmax(missing.all(0)))})")
    return arr
