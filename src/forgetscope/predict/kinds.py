"""Upstream example kinds as prediction sees them: ``lm`` (plain text) and ``instruction`` (pairs).

Forgetting of plain-text examples and of instruction pairs are different quantities (every token
against response tokens only), so a row is completed from known rows of the same kind. The kinds and
their inference live in :mod:`forgetscope.data.types` and ``ForgettingMatrix.select_kind``; prediction
only refuses ``all`` (a row is completed within one kind).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from forgetscope.data.types import KINDS
from forgetscope.errors import DataError
from forgetscope.store.matrix import ForgettingMatrix


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise DataError(f"unknown example kind {kind!r}; choose {' or '.join(KINDS)}")
    return kind


def select_kind(matrix: ForgettingMatrix, kind: str) -> ForgettingMatrix:
    """The columns of ``matrix`` whose upstream example is of ``kind`` (tables subset alike)."""
    return matrix.select_kind(check_kind(kind))


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
