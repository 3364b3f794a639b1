"""``knn``: complete a new row from the known tasks that forgot most alike on the probe set.

Similarity is measured on the probe examples after removing the example effect (column means), so
it reflects *which* examples a task forgets rather than the shared fragile-example pattern:
``cosine`` of the residual vectors, or ``rmse`` (negative RMSE, i.e. closest first). The k nearest
rows are averaged with similarity weights (cosine clipped at 0; inverse RMSE), and the average is
rescaled to the new task on the probe set (``affine``: level and scale; ``shift``: level only).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from forgetscope.analysis.lowrank import additive_fit_unchecked
from forgetscope.errors import ConfigError
from forgetscope.predict.base import Predictor, affine_on_probe

Similarity = Literal["cosine", "rmse"]
Rescale = Literal["affine", "shift", "none"]


class KNNPredictor(Predictor):
    """Similarity-weighted average of the k nearest known rows, rescaled on the probe set."""

    name = "knn"

    def __init__(self, k: int = 5, *, similarity: Similarity = "cosine", rescale: Rescale = "affine") -> None:
        if int(k) < 1:
            raise ConfigError(f"knn k must be >= 1, got {k}")
        if similarity not in ("cosine", "rmse"):
            raise ConfigError(f"unknown knn similarity {similarity!r}; choose cosine or rmse")
        if rescale not in ("affine", "shift", "none"):
            raise ConfigError(f"unknown knn rescale {rescale!r}; choose affine, shift or none")
        self.k, self.similarity, self.rescale = int(k), similarity, rescale

    def _fit(self, X: np.ndarray, *, task_texts: Sequence[str] | None,
             example_texts: Sequence[str] | None) -> None:
        fit = additive_fit_unchecked(X)
        self.col_mean_ = np.asarray(fit.mu + fit.b, dtype=X.dtype)
        missing = np.isnan(X)
        if missing.any():  # fill holes from the additive model so averages stay unbiased
            X = np.where(missing, fit.predict().astype(X.dtype), X)
        self.known_ = X

    def weights(self, idx: np.ndarray, Y: np.ndarray) -> np.ndarray:
        """Neighbour weights (R x M): k non-zeros per row summing to 1."""
        D = self.known_[:, idx].astype(np.float64) - self.col_mean_[idx]
        T = Y - self.col_mean_[idx]
        if self.similarity == "cosine":
            norms = np.linalg.norm(T, axis=1)[:, None] * np.linalg.norm(D, axis=1)[None, :]
            sim = (T @ D.T) / np.maximum(norms, 1e-300)
        else:
            sq = (T**2).sum(1)[:, None] - 2 * T @ D.T + (D**2).sum(1)[None, :]
            sim = -np.sqrt(np.maximum(sq, 0.0) / idx.size)
        k = min(self.k, sim.shape[1])
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        s = np.take_along_axis(sim, top, 1)
        w = np.maximum(s, 0.0) if self.similarity == "cosine" else 1.0 / np.maximum(-s, 1e-12)
        w[w.sum(1) <= 0] = 1.0  # nobody similar: plain average of the k
        W = np.zeros_like(sim)
        np.put_along_axis(W, top, w / w.sum(1, keepdims=True), 1)
        return W

    def _parts(self, idx: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(weights R x M, weighted neighbour residual R x N, level c, scale d) of each new row."""
        W = self.weights(idx, Y)
        resid = (W.astype(self.known_.dtype) @ self.known_).astype(np.float64) - self.col_mean_
        T = Y - self.col_mean_[idx]
        if self.rescale == "affine":
            c, d = affine_on_probe(T, resid[:, idx])
        else:
            d = np.ones(Y.shape[0])
            c = (T - resid[:, idx]).mean(1) if self.rescale == "shift" else np.zeros(Y.shape[0])
        return W, resid, c, d

    def _predict_rows(self, idx: np.ndarray, Y: np.ndarray, *,
                      task_texts: Sequence[str] | None) -> np.ndarray:
        _, resid, c, d = self._parts(idx, Y)
        return self.col_mean_[None, :] + c[:, None] + d[:, None] * resid

    def neighbour_spread(self, probe_idx: np.ndarray, probe_values: np.ndarray) -> np.ndarray:
        """Per example, the weighted sd of the k neighbours' rows, rescaled as the prediction is (R x N).

        The prediction is ``c + d · Σ_k w_k x_k``; this is ``|d| · sqrt(Σ_k w_k (x_k − Σ w x)²)``, how much
        the neighbours the prediction averages disagree on that example. It is 0 where they agree and
        grows with their disagreement; it is a spread, not a calibrated interval.
        """
        Y = np.atleast_2d(np.asarray(probe_values, np.float64))
        idx = np.asarray(probe_idx, dtype=np.intp)
        W, _, _, d = self._parts(idx, Y)
        X = self.known_.astype(np.float64)
        mean = W @ X
        var = np.maximum(W @ X**2 - mean**2, 0.0)
        return np.abs(d)[:, None] * np.sqrt(var)
