"""``additive`` and ``zero``: the baselines every completion method is reported against.

``additive`` predicts a new task's row as the example effect (column mean over the known tasks,
fitted jointly with row effects when entries are missing) plus the new task's own offset, the mean
residual on its probe set. ``zero`` predicts no forgetting at all; ``additive`` must beat it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from forgetscope.analysis.lowrank import additive_fit_unchecked
from forgetscope.predict.base import Predictor


class AdditivePredictor(Predictor):
    """``F̂[new, j] = μ + b_j + c``, with ``c`` the mean of ``F[new, S] − μ − b_S``."""

    name = "additive"

    def _fit(self, X: np.ndarray, *, task_texts: Sequence[str] | None,
             example_texts: Sequence[str] | None) -> None:
        fit = additive_fit_unchecked(X)
        self.col_mean_ = np.asarray(fit.mu + fit.b, dtype=X.dtype)

    def _predict_rows(self, idx: np.ndarray, Y: np.ndarray, *,
                      task_texts: Sequence[str] | None) -> np.ndarray:
        offset = (Y - self.col_mean_[idx]).mean(1)
        return self.col_mean_[None, :].astype(np.float64) + offset[:, None]


class ZeroPredictor(Predictor):
    """Predicts no forgetting anywhere: the floor that any model must clear."""

    name = "zero"

    def _fit(self, X: np.ndarray, *, task_texts: Sequence[str] | None,
             example_texts: Sequence[str] | None) -> None:
        pass

    def _predict_rows(self, idx: np.ndarray, Y: np.ndarray, *,
                      task_texts: Sequence[str] | None) -> np.ndarray:
        return np.zeros((Y.shape[0], self.n_cols_))
