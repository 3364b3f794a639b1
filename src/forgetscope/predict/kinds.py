"""Upstream example kinds as prediction sees them: ``lm`` (plain text) and ``instruction`` (pairs).

Forgetting of plain-text examples and of instruction pairs are different quantities (every token
against response tokens only), so a row is completed from known rows of the same kind.
:func:`select_kind` returns the columns of one kind, through ``ForgettingMatrix.select_kind`` where
the matrix has it; upstream tables written without a ``kind`` column get it from their fields (an
example with a non-empty ``text`` is ``lm``, a prompt/response pair is ``instruction``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from forgetscope.errors import DataError
from forgetscope.store.matrix import ForgettingMatrix

KINDS = ("lm", "instruction")


def example_kinds(upstream: pd.DataFrame | None, n: int) -> np.ndarray:
    """The kind of each of ``n`` upstream examples (see the module docstring)."""
    if upstream is None:
        return np.full(n, "lm", dtype=object)
    if "kind" in upstream.columns:
        return upstream["kind"].astype(str).to_numpy(dtype=object)
    if "text" in upstream.columns:
        text = upstream["text"]
        plain = text.notna() & (text.astype(str).str.len() > 0)
    else:
        plain = pd.Series(False, index=upstream.index)
    has_pair = "response" in upstream.columns
    pair = upstream["response"].notna() if has_pair else pd.Series(False, index=upstream.index)
    return np.where(~plain & pair, "instruction", "lm").astype(object)


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise DataError(f"unknown example kind {kind!r}; choose {' or '.join(KINDS)}")
    return kind


def select_kind(matrix: ForgettingMatrix, kind: str) -> ForgettingMatrix:
    """The columns of ``matrix`` whose upstream example is of ``kind`` (tables subset alike)."""
    check_kind(kind)
    native = getattr(matrix, "select_kind", None)
    if callable(native):
        return native(kind)
    keep = np.flatnonzero(example_kinds(matrix.upstream, matrix.shape[1]) == kind)
    if keep.size == 0:
        raise DataError(f"the sweep has no upstream examples of kind {kind!r}")
    return subset_columns(matrix, keep)


def subset_columns(matrix: ForgettingMatrix, keep: Any) -> ForgettingMatrix:
    """A matrix of the columns ``keep`` (indices), with the upstream table subset to match."""
    keep = np.asarray(keep, dtype=np.intp)
    upstream = None if matrix.upstream is None else matrix.upstream.iloc[keep].reset_index(drop=True)
    return ForgettingMatrix(matrix.values[:, keep], list(matrix.row_names), [matrix.col_names[j] for j in keep],
                            runs=matrix.runs, upstream=upstream, path=matrix.path, meta=dict(matrix.meta))


def subset_rows(matrix: ForgettingMatrix, keep: Any) -> ForgettingMatrix:
    """A matrix of the rows ``keep`` (indices), with the runs table subset to match."""
    keep = np.asarray(keep, dtype=np.intp)
    runs = None if matrix.runs is None else matrix.runs.iloc[keep].reset_index(drop=True)
    return ForgettingMatrix(matrix.values[keep], [matrix.row_names[i] for i in keep], list(matrix.col_names),
                            runs=runs, upstream=matrix.upstream, path=matrix.path, meta=dict(matrix.meta))
