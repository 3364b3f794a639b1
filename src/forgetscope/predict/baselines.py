"""Regularised baseline estimates ``b_ui = μ + b_u + b_i`` by alternating least squares.

The estimator is the one scikit-surprise uses by default for ``BaselineOnly`` and ``KNNBaseline``
(``bsl_options = {"method": "als", "reg_u": 15, "reg_i": 10, "n_epochs": 10}``), with rows (runs,
tasks) as users and columns (upstream examples) as items:

* ``μ`` is the plain mean of every observed entry (not re-estimated);
* ``b_u`` and ``b_i`` start at zero, and each of ``n_epochs`` epochs first updates every item bias,
  then every user bias, each a ridge-shrunk mean residual::

      b_i ← Σ_{u ∈ U_i} (r_ui − μ − b_u) / (λ_i + |U_i|)
      b_u ← Σ_{i ∈ I_u} (r_ui − μ − b_i) / (λ_u + |I_u|)

  An empty user or item with ``λ = 0`` keeps a zero bias.

Why a fixed number of epochs instead of iterating to convergence: the result then equals the
reference implementation's to rounding even where 10 sweeps have not converged (missing entries).
On a complete matrix one epoch already reaches the fixed point.

Why new rows are fitted *jointly* with the known rows: the reference protocol builds, for each test
task, a training set made of every known row plus that task's revealed probe entries, and fits the
baselines on it. The probe entries therefore move ``μ``, the probed items' ``b_i`` and (through them)
every known row's ``b_u``. :func:`fit_with_rows` reproduces that: each new row gets its own joint
fit with the known rows, independently of the other new rows (so a row's prediction never depends on
which other rows are predicted with it). The R fits are vectorised: each ALS half-step is one array
operation over all R rows, ``O(R·(M + N))`` per epoch on a complete known matrix and one
``(R × M) @ (M × N)`` product per half-step when entries are missing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from forgetscope.errors import ConfigError


@dataclass
class KnownStats:
    """Sums of the known rows that every joint fit reuses (computed once at ``fit``).

    ``values`` is the known matrix with 0 at missing entries; ``mask`` marks observed entries
    (same dtype as ``values``, for matrix products) and is ``None`` when nothing is missing.
    """

    values: np.ndarray
    mask: np.ndarray | None
    col_sum: np.ndarray
    col_n: np.ndarray
    row_sum: np.ndarray
    row_n: np.ndarray
    total: float
    count: float


@dataclass
class JointBiases:
    """Baselines of R joint fits: fit r used the known rows plus new row r's probe entries.

    ``mu`` (R), ``b_new`` (R, the new row's own bias), ``b_known`` (R x M), ``b_item`` (R x N).
    """

    mu: np.ndarray
    b_new: np.ndarray
    b_known: np.ndarray
    b_item: np.ndarray

    def baseline(self) -> np.ndarray:
        """``μ + b_u + b_i`` of every new row on every column (R x N)."""
        return self.mu[:, None] + self.b_new[:, None] + self.b_item


def check_regularisation(reg_u: float, reg_i: float, n_epochs: int) -> tuple[float, float, int]:
    """Validated ``(reg_u, reg_i, n_epochs)``; one-line errors otherwise."""
    reg_u, reg_i = float(reg_u), float(reg_i)
    if not (np.isfinite(reg_u) and reg_u >= 0) or not (np.isfinite(reg_i) and reg_i >= 0):
        raise ConfigError(f"baseline regularisation must be finite and >= 0, "
                          f"got reg_u={reg_u}, reg_i={reg_i}")
    if int(n_epochs) != n_epochs or int(n_epochs) < 1:
        raise ConfigError(f"n_epochs must be a whole number >= 1, got {n_epochs}")
    return reg_u, reg_i, int(n_epochs)


def known_stats(X: np.ndarray) -> KnownStats:
    """Row/column sums and counts of the observed entries of ``X`` (NaN = missing)."""
    missing = np.isnan(X)
    if missing.any():
        values = np.where(missing, 0.0, X).astype(X.dtype, copy=False)
        mask = (~missing).astype(X.dtype)
        col_n = mask.sum(0, dtype=np.float64)
        row_n = mask.sum(1, dtype=np.float64)
    else:
        values, mask = X, None
        col_n = np.full(X.shape[1], float(X.shape[0]))
        row_n = np.full(X.shape[0], float(X.shape[1]))
    col_sum = values.sum(0, dtype=np.float64)
    row_sum = values.sum(1, dtype=np.float64)
    return KnownStats(values, mask, col_sum, col_n, row_sum, row_n, float(row_sum.sum()), float(row_n.sum()))


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with 0 where ``den`` is 0 (an unrated item or user with no regularisation)."""
    return np.divide(num, den, out=np.zeros(np.broadcast_shapes(num.shape, den.shape)), where=den > 0)


def fit_with_rows(stats: KnownStats, idx: np.ndarray, Y: np.ndarray, *, reg_u: float, reg_i: float,
                  n_epochs: int) -> JointBiases:
    """R independent ALS fits, fit r on the known rows plus new row r's values ``Y[r]`` at ``idx``."""
    R, s = Y.shape
    mask = stats.mask
    mu = (stats.total + Y.sum(1)) / (stats.count + s)
    n_item = stats.col_n.copy()
    n_item[idx] += 1.0
    den_i, den_u, den_new = reg_i + n_item, reg_u + stats.row_n, reg_u + s
    b_known = np.zeros((R, stats.row_n.size))
    b_new = np.zeros(R)
    b_item = np.zeros((R, n_item.size))
    col_base = stats.col_sum[None, :] - stats.col_n[None, :] * mu[:, None]
    row_base = stats.row_sum[None, :] - stats.row_n[None, :] * mu[:, None]
    for _ in range(n_epochs):
        if mask is None:  # every known row rated every item: Σ_u b_u is one number per fit
            dev_i = col_base - b_known.sum(1, keepdims=True)
        else:
            dev_i = col_base - (b_known.astype(mask.dtype) @ mask).astype(np.float64)
        dev_i[:, idx] += Y - mu[:, None] - b_new[:, None]
        b_item = _ratio(dev_i, den_i[None, :])
        if mask is None:
            dev_u = row_base - b_item.sum(1, keepdims=True)
        else:
            dev_u = row_base - (b_item.astype(mask.dtype) @ mask.T).astype(np.float64)
        b_known = _ratio(dev_u, den_u[None, :])
        b_new = (Y - mu[:, None] - b_item[:, idx]).sum(1) / den_new if den_new > 0 else np.zeros(R)
    return JointBiases(mu, b_new, b_known, b_item)
