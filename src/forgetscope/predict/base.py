"""The one interface every forgetting predictor shares.

``fit(known)`` learns from the M known rows (tasks whose whole forgetting row was measured);
``predict(probe_idx, probe_values)`` completes a new task's row from its forgetting observed on a
probe subset of upstream examples. ``predict_rows`` does the same for several new tasks that share
a probe set (one matrix product instead of a loop; what cross-validation and mitigation use).

Why a probe set: measuring a task's row costs one forward pass per upstream example; observing only
|S| of N and predicting the rest skips ``1 − |S|/N`` of that inference.

Probe values may contain NaN (an example whose probe evaluation failed): such rows are predicted
from their finite probe entries only.

``fit`` may also receive the upstream table (one row per column: ids, ``loss_before``, ``n_tokens``,
metadata such as ``category``); predictors that read per-example side information
(:mod:`forgetscope.predict.side_information`) set ``needs_upstream`` and use it, the others ignore it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd

from forgetscope.errors import ConfigError, DataError
from forgetscope.validation import check_matrix

Output = Literal["forgetting", "probability"]

#: above this many entries the known matrix is kept in float32 (500 x 1e6 float64 would be 4 GB)
FLOAT32_ABOVE = 10_000_000


def storage_dtype(shape: tuple[int, int]) -> type:
    """float32 for big matrices (memory, bandwidth), float64 otherwise (exactness in tests)."""
    return np.float32 if shape[0] * shape[1] > FLOAT32_ABOVE else np.float64


class Predictor(ABC):
    """Fit on known rows, complete new rows from probe observations.

    Subclasses implement :meth:`_fit` and :meth:`_predict_rows`; input checks live here once.
    ``output`` says what a prediction is: forgetting values, or the probability of "forgotten".
    """

    name: ClassVar[str] = "predictor"
    #: what tables and the CLI call the method (defaults to ``name``)
    display: ClassVar[str] = ""
    output: ClassVar[Output] = "forgetting"
    min_rows: ClassVar[int] = 1
    #: reads the upstream table given to ``fit`` (per-example side information)
    needs_upstream: ClassVar[bool] = False
    #: can predict columns no known row observed (from side information)
    empty_columns: ClassVar[bool] = False

    n_cols_: int
    n_rows_: int

    def fit(self, known: Any, *, task_texts: Sequence[str] | None = None,
            example_texts: Sequence[str] | None = None, groups: Sequence[Any] | None = None,
            upstream: pd.DataFrame | None = None) -> Predictor:
        """Learn from ``known`` (M x N, NaN = missing). Texts are used only by text-based predictors.

        ``groups`` (length M, e.g. each row's task) says which rows leave together when a predictor
        tunes itself by cross-validation on the known rows (``lowrank`` without a rank); by default
        every row is its own group. ``upstream`` (N rows, row j describing column j) is read only by
        predictors with ``needs_upstream``.
        """
        X = check_matrix(known, min_rows=self.min_rows, what="known rows", dtype=None,
                         empty_columns=self.empty_columns)
        X = X.astype(storage_dtype(X.shape), copy=False)
        if groups is not None and len(groups) != X.shape[0]:
            raise DataError(f"{len(groups)} groups for {X.shape[0]} known rows")
        if upstream is not None and len(upstream) != X.shape[1]:
            raise DataError(f"the upstream table has {len(upstream)} rows for {X.shape[1]} known columns")
        if self.needs_upstream and upstream is None:
            raise DataError(f"the {self.name} predictor needs the upstream table (its per-example features); "
                            "pass upstream= (a sweep's upstream.parquet)")
        self._groups = None if groups is None else np.asarray([str(g) for g in groups])
        self._upstream = upstream.reset_index(drop=True) if upstream is not None else None
        self.n_rows_, self.n_cols_ = X.shape
        self._fit(X, task_texts=task_texts, example_texts=example_texts)
        return self

    def predict(self, probe_idx: Any, probe_values: Any, *, task_text: str | None = None) -> np.ndarray:
        """The full row (length N) of one new task from its values on the probe examples."""
        values = np.asarray(probe_values, dtype=np.float64)
        if values.ndim != 1:
            raise DataError(f"probe values for one row must be 1-D, got shape {values.shape}")
        texts = None if task_text is None else [task_text]
        return self.predict_rows(probe_idx, values[None, :], task_texts=texts)[0]

    def predict_rows(self, probe_idx: Any, probe_values: Any, *,
                     task_texts: Sequence[str] | None = None) -> np.ndarray:
        """Full rows (R x N) for R new tasks observed on the same probe examples (R x |S| values)."""
        if not hasattr(self, "n_cols_"):
            raise ConfigError(f"predictor {self.name!r} must be fitted before predict")
        idx = check_probe_idx(probe_idx, self.n_cols_)
        Y = np.asarray(probe_values, dtype=np.float64)
        if Y.ndim == 1:
            Y = Y[None, :]
        if Y.ndim != 2 or Y.shape[1] != idx.size:
            raise DataError(f"probe values have shape {Y.shape}; expected (rows, {idx.size}) "
                            f"for {idx.size} probe examples")
        if np.isinf(Y).any():
            raise DataError("probe values contain infinite values")
        if task_texts is not None and len(task_texts) != Y.shape[0]:
            raise DataError(f"{len(task_texts)} task texts for {Y.shape[0]} rows")
        finite = np.isfinite(Y)
        if finite.all():
            return self._predict_rows(idx, Y, task_texts=task_texts)
        out = np.empty((Y.shape[0], self.n_cols_), dtype=np.float64)
        full = finite.all(1)
        if full.any():
            out[full] = self._predict_rows(idx, Y[full], task_texts=_pick(task_texts, full))
        for r in np.flatnonzero(~full):  # rows with holes: use their own finite probes
            ok = finite[r]
            if not ok.any():
                raise DataError(f"row {r} has no finite probe value")
            out[r] = self._predict_rows(idx[ok], Y[r : r + 1, ok],
                                        task_texts=_pick(task_texts, np.arange(Y.shape[0]) == r))[0]
        return out

    @classmethod
    def display_name(cls) -> str:
        """The method's name in tables: ``display`` when set, else the registry name."""
        return cls.display or cls.name

    def get_params(self) -> dict[str, Any]:
        """Constructor parameters (for result tables and JSON)."""
        return {k: v for k, v in vars(self).items() if not k.endswith("_") and not k.startswith("_")}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items() if not callable(v))
        return f"{type(self).__name__}({params})"

    @abstractmethod
    def _fit(self, X: np.ndarray, *, task_texts: Sequence[str] | None,
             example_texts: Sequence[str] | None) -> None: ...

    @abstractmethod
    def _predict_rows(self, idx: np.ndarray, Y: np.ndarray, *,
                      task_texts: Sequence[str] | None) -> np.ndarray: ...


def _pick(texts: Sequence[str] | None, rows: np.ndarray) -> list[str] | None:
    return None if texts is None else [t for t, keep in zip(texts, rows) if keep]


def check_probe_idx(probe_idx: Any, n_cols: int) -> np.ndarray:
    """Probe indices as a sorted-unique-free int array within ``[0, n_cols)``; one-line errors otherwise."""
    idx = np.asarray(probe_idx)
    if idx.dtype == bool:
        if idx.shape != (n_cols,):
            raise DataError(f"boolean probe mask has length {idx.size}, expected {n_cols}")
        idx = np.flatnonzero(idx)
    if idx.ndim != 1:
        raise DataError(f"probe indices must be 1-D, got shape {idx.shape}")
    if idx.size == 0:
        raise DataError("probe set is empty: observe at least one upstream example")
    if idx.dtype.kind not in "iu":
        raise DataError(f"probe indices must be integers, got dtype {idx.dtype}")
    if idx.size > n_cols:
        raise DataError(f"probe set of {idx.size} examples is larger than the {n_cols} upstream examples")
    if idx.min() < 0 or idx.max() >= n_cols:
        raise DataError(f"probe indices must lie in [0, {n_cols}), got [{idx.min()}, {idx.max()}]")
    if np.unique(idx).size != idx.size:
        raise DataError("probe indices contain duplicates")
    return idx.astype(np.intp, copy=False)


def affine_on_probe(target: np.ndarray, basis: np.ndarray, *, nonneg_slope: bool = True
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Per-row least squares ``target ≈ c + d · basis`` (both R x |S|); returns (c, d).

    Why: a predicted row's shape can be right while its level and scale are off (a harsher or
    milder task); the probe set pins both. Falls back to a shift only (d = 1) when the probe set is
    too small or the basis is flat on it.
    """
    zc = basis - basis.mean(1, keepdims=True)
    tc = target - target.mean(1, keepdims=True)
    var = (zc**2).sum(1)
    ok = (var > 1e-12 * np.maximum((basis**2).sum(1), 1e-300)) & (basis.shape[1] >= 3)
    d = np.ones(target.shape[0])
    d[ok] = (zc[ok] * tc[ok]).sum(1) / var[ok]
    if nonneg_slope:
        d = np.maximum(d, 0.0)
    c = target.mean(1) - d * basis.mean(1)
    return c, d
