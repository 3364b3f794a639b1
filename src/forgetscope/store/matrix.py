"""The forgetting matrix with its row and column names: what analysis and prediction consume."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from forgetscope.errors import StoreError


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
