"""``additive`` and ``zero``: the baselines every completion method is reported against.

``additive`` predicts a new task's row as ``μ + b_u + b_i``: a global mean, the task's own offset and
each example's effect.

The default (``reg_u = reg_i = 0``) is the unregularised model: ``μ + b_j`` is the exact least-squares
additive fit of the known rows, and the new task's offset is its mean probe residual. This is the
closed-form counterpart of what the reference prediction runs use (scikit-surprise ``BaselineOnly``
fitted by SGD for 1 000 epochs with ``reg = 0.02``, which converges to nearly unregularised least
squares).

``additive-als`` (or ``reg_u > 0`` / ``reg_i > 0``) selects surprise's regularised alternating-least-squares baselines
(``method="als"``; the reference's low-rank analysis uses ``reg_u = 15``, ``reg_i = 10``, 10 epochs; see
:mod:`forgetscope.predict.baselines`), fitted, as surprise does, on the known rows together with the new
task's probe entries. The shrinkage matters most for the new task's offset: ``λ_u = 15`` against 30
probes pulls it a third of the way towards zero.

``zero`` predicts no forgetting at all; ``additive`` must beat it. Two more trivial baselines show what a
score means on a given matrix: ``column-mean`` (every example's mean forgetting over the known tasks; it
ignores the probe, so it is what "popularity" alone ranks) and ``probe-mean`` (the new task's mean probe
value for every example; it knows the task's strength and nothing about examples).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from forgetscope.analysis.lowrank import additive_fit_unchecked
from forgetscope.predict.base import Predictor
from forgetscope.predict.baselines import check_regularisation, fit_with_rows, known_stats


class AdditivePredictor(Predictor):
    """``F̂[new, j] = μ + b_new + b_j``: regularised ALS baselines, or the plain least-squares fit."""

    name = "additive"

    def __init__(self, *, reg_u: float = 0.0, reg_i: float = 0.0, n_epochs: int = 10) -> None:
        self.reg_u, self.reg_i, self.n_epochs = check_regularisation(reg_u, reg_i, n_epochs)

    @property
    def regularised(self) -> bool:
        return self.reg_u > 0 or self.reg_i > 0

    def _fit(self, X: np.ndarray, *, task_texts: Sequence[str] | None,
             example_texts: Sequence[str] | None) -> None:
        if self.regularised:
            self.stats_ = known_stats(X)
        else:
            fit = additive_fit_unchecked(X)
            self.col_mean_ = np.asarray(fit.mu + fit.b, dtype=X.dtype)

    def _predict_rows(self, idx: np.ndarray, Y: np.ndarray, *,
                      task_texts: Sequence[str] | None) -> np.ndarray:
        if self.regularised:
            return fit_with_rows(self.stats_, idx, Y, reg_u=self.reg_u, reg_i=self.reg_i,
                                 n_epochs=self.n_epochs).baseline()
        offset = (Y - self.col_mean_[idx]).mean(1)
        return self.col_mean_[None, :].astype(np.float64) + offset[:, None]


class AdditiveALSPredictor(AdditivePredictor):
    """``additive`` with scikit-surprise's default BaselineOnly options (ALS, ``reg_u = 15``,
    ``reg_i = 10``, 10 epochs), fitted jointly with the new row's probe entries."""

    name = "additive-als"

    def __init__(self, *, reg_u: float = 15.0, reg_i: float = 10.0, n_epochs: int = 10) -> None:
        super().__init__(reg_u=reg_u, reg_i=reg_i, n_epochs=n_epochs)


class ZeroPredictor(Predictor):
    """Predicts no forgetting anywhere: the floor that any model must clear."""

    name = "zero"

    def _fit(self, X: np.ndarray, *, task_texts: Sequence[str] | None,
             example_texts: Sequence[str] | None) -> None:
        pass

    def _predict_rows(self, idx: np.ndarray, Y: np.ndarray, *,
                      task_texts: Sequence[str] | None) -> np.ndarray:
        return np.zeros((Y.shape[0], self.n_cols_))


class ColumnMeanPredictor(Predictor):
    """The other tasks' mean forgetting of each example, whatever the probe says (popularity alone)."""

    name = "column-mean"

    def _fit(self, X: np.ndarray, *, task_texts: Sequence[str] | None,
             example_texts: Sequence[str] | None) -> None:
        self.col_mean_ = np.nanmean(X, axis=0).astype(np.float64)

    def _predict_rows(self, idx: np.ndarray, Y: np.ndarray, *,
                      task_texts: Sequence[str] | None) -> np.ndarray:
        return np.repeat(self.col_mean_[None, :], Y.shape[0], axis=0)


class ProbeMeanPredictor(Predictor):
    """The new task's mean probe value for every example (its strength, nothing about examples)."""

    name = "probe-mean"

    def _fit(self, X: np.ndarray, *, task_texts: Sequence[str] | None,
             example_texts: Sequence[str] | None) -> None:
        pass

    def _predict_rows(self, idx: np.ndarray, Y: np.ndarray, *,
                      task_texts: Sequence[str] | None) -> np.ndarray:
        return np.repeat(Y.mean(axis=1, keepdims=True), self.n_cols_, axis=1)
