"""The forgetting matrix with its row and column names: what analysis and prediction consume."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from forgetscope.data.types import INSTRUCTION, KINDS, LM, check_kind
from forgetscope.errors import DataError, StoreError


def upstream_kinds(upstream: pd.DataFrame | None) -> np.ndarray | None:
    """The kind of each upstream row: its ``kind`` column, else inferred from its ``text``/``response``
    columns (sweeps written before kinds were stored); None when neither is there (an imported matrix)."""
    if upstream is None or upstream.empty:
        return None
    if "kind" in upstream.columns:
        return upstream["kind"].astype(str).to_numpy(dtype=object)
    if "response" in upstream.columns and "text" in upstream.columns:
        is_pair = upstream["text"].isna() & upstream["response"].notna()
        return np.where(is_pair.to_numpy(), INSTRUCTION, LM).astype(object)
    return None


def kind_counts(kinds: np.ndarray | None) -> dict[str, int]:
    """Examples per kind, for the kinds present, in :data:`KINDS` order (empty when kinds are unknown)."""
    if kinds is None:
        return {}
    kinds = np.asarray(kinds, dtype=object)
    return {k: int(np.sum(kinds == k)) for k in KINDS if np.any(kinds == k)}


def default_kind(kinds: np.ndarray | None) -> str:
    """The kind analyses use unless told: ``lm`` when there are plain-text examples, else
    ``instruction``; ``all`` when kinds are unknown. ``kinds`` holds one kind per example."""
    return next(iter(kind_counts(kinds)), "all")


@dataclass
class ForgettingMatrix:
    """An M x N forgetting matrix with its names; what analysis and prediction consume.

    ``values[i, j]`` is loss_after(row i, example j) - loss_before(example j); NaN marks a missing entry.
    ``runs`` and ``upstream`` carry the sweep's tables when the matrix came from a sweep (``upstream`` row j
    describes column j). ``kinds[j]`` is the kind of example j (``"lm"`` or ``"instruction"``, see
    :mod:`forgetscope.data.types`), taken from the upstream table unless given; None when unknown (an
    imported matrix). :meth:`select_kind` keeps the columns of one kind. ``null`` (same shape, or None) holds
    each run's null-control row: the forgetting of a random update of the same size
    (:mod:`forgetscope.experiments.null_control`).
    """

    values: np.ndarray
    row_names: list[str]
    col_names: list[str]
    runs: pd.DataFrame | None = None
    upstream: pd.DataFrame | None = None
    path: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    kinds: np.ndarray | None = None
    null: np.ndarray | None = None

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
        if self.null is not None:
            self.null = np.asarray(self.null, dtype=np.float64)
            if self.null.shape != self.values.shape:
                raise StoreError(f"null-control matrix has shape {self.null.shape}, the matrix {self.values.shape}")
        if self.kinds is None and self.upstream is not None and len(self.upstream) == n:
            self.kinds = upstream_kinds(self.upstream)
        if self.kinds is not None:
            self.kinds = np.asarray(self.kinds, dtype=object)
            if self.kinds.shape != (n,):
                raise StoreError(f"{self.kinds.size} column kinds for a matrix with {n} columns")
            unknown = sorted(set(self.kinds) - set(KINDS))
            if unknown:
                raise StoreError(f"unknown column kind(s) {unknown}; expected {', '.join(KINDS)}")

    @property
    def shape(self) -> tuple[int, int]:
        return self.values.shape  # type: ignore[return-value]

    def kind_counts(self) -> dict[str, int]:
        """Columns per kind, for the kinds present (empty when kinds are unknown)."""
        return kind_counts(self.kinds)

    def default_kind(self) -> str:
        """The kind analyses use unless told (:func:`default_kind` of the columns)."""
        return default_kind(self.kinds)

    def select_kind(self, kind: str) -> ForgettingMatrix:
        """The columns of one kind (``"lm"``, ``"instruction"``), or every column (``"all"``).

        A kind with no columns, or a kind asked of a matrix without kinds, is a one-line DataError.
        """
        check_kind(kind)
        if kind == "all":
            return replace(self, meta={**self.meta, "kind": "all"})
        if self.kinds is None:
            raise DataError(f"this matrix does not record which examples are {kind!r} (an imported matrix?); "
                            "only kind 'all' applies to it")
        mask = self.kinds == kind
        if not mask.any():
            present = ", ".join(f"{k} ({n})" for k, n in self.kind_counts().items())
            raise DataError(f"no {kind!r} examples in this matrix; kinds present: {present}")
        upstream = self.upstream.iloc[np.flatnonzero(mask)].reset_index(drop=True) \
            if self.upstream is not None else None
        return replace(self, values=self.values[:, mask], col_names=[c for c, m in zip(self.col_names, mask) if m],
                       upstream=upstream, kinds=self.kinds[mask], meta={**self.meta, "kind": kind},
                       null=self.null[:, mask] if self.null is not None else None)

    def control_mask(self) -> np.ndarray:
        """True for the rows of control runs (a task entry with ``control:``, e.g. the format-only rows): rows
        whose ``control`` or ``control_of`` (the task a control stands beside) is set, so a runs table that
        kept only one of the two still marks them."""
        mask = np.zeros(self.shape[0], dtype=bool)
        for column in ("control", "control_of"):
            if self.runs is not None and column in self.runs:
                value = self.runs[column]
                mask |= (value.notna() & ~value.astype(str).isin(["", "None", "nan"])).to_numpy()
        return mask

    def select_rows(self, mask: np.ndarray) -> ForgettingMatrix:
        """The rows where ``mask`` is true, with their runs table and null rows."""
        mask = np.asarray(mask, dtype=bool)
        runs = self.runs.iloc[np.flatnonzero(mask)].reset_index(drop=True) if self.runs is not None else None
        return replace(self, values=self.values[mask], row_names=[r for r, m in zip(self.row_names, mask) if m],
                       runs=runs, null=self.null[mask] if self.null is not None else None)

    def without_controls(self) -> ForgettingMatrix:
        """The task rows only: what every claim about tasks is computed on."""
        return self.select_rows(~self.control_mask())


__all__ = ["ForgettingMatrix", "default_kind", "kind_counts", "upstream_kinds"]
