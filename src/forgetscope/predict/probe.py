"""Which upstream examples to evaluate a new task on (the probe set S).

``random`` (default): a uniform sample, seeded. ``active``: the examples with the highest
statistical leverage in the top-r right singular vectors of the known rows (after removing the
additive model), i.e. the columns where the known tasks disagree most in the directions the
completion has to estimate. Why: the new task's factor is solved by regression on S, and high
leverage columns make that regression best conditioned (D-optimal-style design).
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Literal

import numpy as np

from forgetscope.errors import ConfigError, DataError
from forgetscope.validation import check_matrix

ProbeMethod = Literal["random", "active"]


def probe_size(size: float, n_cols: int) -> int:
    """Number of probe examples: a fraction in (0, 1] of ``n_cols`` (at least 1) or an int count.

    Raises :class:`DataError` for a size of 0, a negative size, or more examples than exist.
    """
    if isinstance(size, bool) or not isinstance(size, numbers.Real) or not math.isfinite(size):
        raise DataError(f"probe size must be a fraction in (0, 1] or a positive count, got {size!r}")
    if size <= 0:
        raise DataError(f"probe size must be positive, got {size}: observe at least one example")
    if isinstance(size, numbers.Integral) or size > 1:
        if float(size) != int(size):
            raise DataError(f"probe count must be a whole number, got {size}")
        count = int(size)
    else:
        count = max(1, int(round(float(size) * n_cols)))
    if count > n_cols:
        raise DataError(f"probe set of {count} examples is larger than the {n_cols} upstream examples")
    return count


def leverage_scores(known: Any, rank: int = 5, *, seed: int = 0) -> np.ndarray:
    """Column leverage ``Σ_k Vt[k, j]²`` in the top-``rank`` residual singular vectors of ``known``."""
    from forgetscope.predict.lowrank import residual_basis

    X = check_matrix(known, min_rows=2, what="known rows", dtype=None)
    basis = residual_basis(X, rank, seed=seed)
    Vt = np.asarray(basis["Vt"], np.float64)
    return (Vt**2).sum(0)


def choose_probe(n_cols: int, size: float, *, method: ProbeMethod = "random", known: Any = None,
                 rank: int = 5, seed: int = 0) -> np.ndarray:
    """Sorted indices of the probe examples; ``active`` needs the known rows."""
    count = probe_size(size, n_cols)
    if method == "random":
        return np.sort(np.random.default_rng(seed).choice(n_cols, count, replace=False))
    if method == "active":
        if known is None:
            raise DataError("active probe selection needs the known rows (known=...)")
        lev = leverage_scores(known, rank, seed=seed)
        if lev.shape[0] != n_cols:
            raise DataError(f"known rows have {lev.shape[0]} columns, expected {n_cols}")
        return top_by_score(lev, count, seed=seed)
    raise ConfigError(f"unknown probe method {method!r}; choose random or active")


def top_by_score(scores: np.ndarray, count: int, *, seed: int = 0) -> np.ndarray:
    """Sorted indices of the ``count`` highest scores; ties (e.g. all zero) broken at random."""
    tiebreak = np.random.default_rng(seed).random(scores.shape[0]) * 1e-9 * (np.abs(scores).max() + 1e-300)
    return np.sort(np.argpartition(-(scores + tiebreak), count - 1)[:count])
