"""``knn-baseline``: the reference protocol's KNNBaseline, in closed vectorised form.

Semantics are those of scikit-surprise ``KNNBaseline`` (user-based, MSD similarity, ``k = 40``,
``min_k = 1``, default baseline options), with runs/tasks as users and upstream examples as items.
For new row u and column i::

    F̂[u, i] = b_ui + Σ_{v ∈ N_k(u, i)} sim(u, v) · (r_vi − b_vi) / Σ_{v ∈ N_k(u, i)} sim(u, v)

* **Baselines** ``b_ui = μ + b_u + b_i``, by alternating least squares
  (:mod:`forgetscope.predict.baselines`). The default is the reference's prediction setting:
  unregularised (``reg_u = reg_i = 0``, 50 epochs), the closed-form counterpart of the SGD fit the
  reference ran (see the end of this docstring). ``knn-baseline-als`` keeps surprise's own default
  for KNNBaseline, ``reg_u = 15``, ``reg_i = 10``, 10 epochs. They are fitted on the known rows *plus the new row's probe entries*, because that is the
  training set the reference builds for each test task (all known rows and the one test task's
  revealed entries, then ``fit``). Each new row has its own joint fit, so ``μ``, every ``b_i`` and
  every known row's ``b_v`` are those of that fit; rows predicted together do not see each other.
* **Similarity** (surprise ``msd``, ``min_support = 1``): over the probe columns that known row v
  has observed, ``msd = mean((r_ui − r_vi)²)`` on the raw values, ``sim = 1 / (msd + 1)``; ``sim = 0``
  when they share no observed column.
* **Neighbours** ``N_k(u, i)``: the ``k`` known rows with the highest similarity among those that
  observed column i (a known row with a NaN at i is skipped for that column), ties broken by row
  order as surprise's stable ``heapq.nlargest`` over rows in index order does; neighbours with
  ``sim = 0`` are dropped after the cut.
* **Fallback**: when fewer than ``min_k`` neighbours remain, or their similarities sum to 0, the
  prediction is the baseline ``b_ui``.

Why the item bias never appears in the neighbour term: ``b_ui`` and ``b_vi`` share ``μ + b_i``, so
``F̂[u, i] = b_u + Σ sim · (r_vi − b_v) / Σ sim``. On a complete known matrix the neighbours are the
same for every column, and the whole row is one similarity-weighted matrix product.

Differences from the reference run on purpose: columns that a new row *observed* are predicted
like any other (surprise would also count the row as its own neighbour there; those entries are
never scored). New rows are not neighbours of each other (surprise's per-task training set holds
one test row).

The reference's released evaluation overrode the baseline options with SGD
(``{"method": "sgd", "n_epochs": 1000}``, surprise's ``reg = 0.02``, ``learning_rate = 0.005``).
SGD's stationary point shrinks each bias by ``1 / (1 + 0.02)`` rather than by ``λ / (λ + n)``: it is
nearly unregularised least squares (reached only up to SGD's own noise, at a constant learning rate).
``reg_u = reg_i = 0`` with enough epochs (e.g. 50) is the closed-form counterpart of that setting.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from forgetscope.errors import ConfigError
from forgetscope.predict.base import Predictor
from forgetscope.predict.baselines import JointBiases, check_regularisation, fit_with_rows, known_stats

#: columns per block in the missing-entry path (bounds the M x block temporaries)
_BLOCK_ENTRIES = 4_000_000


class KNNBaselinePredictor(Predictor):
    """Baseline plus the similarity-weighted mean residual of the k most MSD-similar known rows."""

    name = "knn-baseline"

    def __init__(self, k: int = 40, *, min_k: int = 1, reg_u: float = 0.0, reg_i: float = 0.0,
                 n_epochs: int = 50) -> None:
        if int(k) != k or int(k) < 1:
            raise ConfigError(f"knn-baseline k must be a whole number >= 1, got {k}")
        if int(min_k) != min_k or not 0 <= int(min_k) <= int(k):
            raise ConfigError(f"knn-baseline min_k must be a whole number in [0, k={k}], got {min_k}")
        self.k, self.min_k = int(k), int(min_k)
        self.reg_u, self.reg_i, self.n_epochs = check_regularisation(reg_u, reg_i, n_epochs)

    def _fit(self, X: np.ndarray, *, task_texts: Sequence[str] | None,
             example_texts: Sequence[str] | None) -> None:
        self.stats_ = known_stats(X)

    def similarity(self, idx: np.ndarray, Y: np.ndarray) -> np.ndarray:
        """MSD similarity (R x M) of each new row's probe values to each known row."""
        st = self.stats_
        Xs = st.values[:, idx].astype(np.float64)
        Ks = np.ones_like(Xs) if st.mask is None else st.mask[:, idx].astype(np.float64)
        common = Ks.sum(1)
        sq = (Y**2) @ Ks.T - 2.0 * Y @ (Xs * Ks).T + (Xs**2 * Ks).sum(1)[None, :]
        msd = np.maximum(sq, 0.0) / np.maximum(common, 1.0)[None, :]
        return np.where(common[None, :] >= 1, 1.0 / (msd + 1.0), 0.0)

    def neighbour_weights(self, sim: np.ndarray) -> np.ndarray:
        """Weights (R x M) when every known row observed every column: top-k positive similarities."""
        k = min(self.k, sim.shape[1])
        order = np.argsort(-sim, axis=1, kind="stable")[:, :k]
        W = np.zeros_like(sim)
        np.put_along_axis(W, order, np.take_along_axis(sim, order, 1), 1)
        return np.maximum(W, 0.0)

    def _predict_rows(self, idx: np.ndarray, Y: np.ndarray, *,
                      task_texts: Sequence[str] | None) -> np.ndarray:
        bias = fit_with_rows(self.stats_, idx, Y, reg_u=self.reg_u, reg_i=self.reg_i, n_epochs=self.n_epochs)
        sim = self.similarity(idx, Y)
        out = bias.baseline()
        if self.stats_.mask is None:
            self._complete(out, sim, bias)
        else:
            self._with_missing(out, sim, bias)
        return out

    def _complete(self, out: np.ndarray, sim: np.ndarray, bias: JointBiases) -> None:
        """Fill ``out`` in place: one neighbour set per row, one weighted matrix product."""
        W = self.neighbour_weights(sim)
        den = W.sum(1)
        ok = ((W > 0).sum(1) >= self.min_k) & (den > 0)
        if not ok.any():
            return
        W, den = W[ok], den[ok]
        X = self.stats_.values
        mean_r = (W.astype(X.dtype) @ X).astype(np.float64) / den[:, None]
        mean_b = (W * bias.b_known[ok]).sum(1) / den
        out[ok] = bias.b_new[ok, None] + mean_r - mean_b[:, None]

    def _with_missing(self, out: np.ndarray, sim: np.ndarray, bias: JointBiases) -> None:
        """Fill ``out`` in place when known rows have holes: neighbours are chosen column by column."""
        X, K = self.stats_.values, self.stats_.mask
        m, n = X.shape
        if self.k >= m:  # no cut: every positive-similarity row that observed the column
            W = np.maximum(sim, 0.0)
            den = (W.astype(K.dtype) @ K).astype(np.float64)
            cnt = ((W > 0).astype(K.dtype) @ K).astype(np.float64)
            num = ((W.astype(X.dtype) @ X).astype(np.float64)
                   - ((W * bias.b_known).astype(K.dtype) @ K).astype(np.float64))
            self._assign(out, num, den, cnt, bias.b_new)
            return
        block = max(1, _BLOCK_ENTRIES // m)
        for r in range(sim.shape[0]):
            order = np.argsort(-sim[r], kind="stable")
            s = sim[r, order]
            b = bias.b_known[r, order]
            for lo in range(0, n, block):
                hi = min(n, lo + block)
                avail = (K[order, lo:hi] > 0) & (s > 0)[:, None]
                take = avail & (np.cumsum(avail, axis=0) <= self.k)
                w = np.where(take, s[:, None], 0.0)
                num = (w * (X[order, lo:hi] - b[:, None])).sum(0)
                self._assign(out[r : r + 1, lo:hi], num[None], w.sum(0)[None], take.sum(0)[None],
                             bias.b_new[r : r + 1])

    def _assign(self, out: np.ndarray, num: np.ndarray, den: np.ndarray, cnt: np.ndarray,
                b_new: np.ndarray) -> None:
        ok = (cnt >= self.min_k) & (den > 0)
        safe = np.where(ok, den, 1.0)
        out[ok] = (b_new[:, None] + num / safe)[ok]


class KNNBaselineALSPredictor(KNNBaselinePredictor):
    """``knn-baseline`` with scikit-surprise's default baselines (ALS, ``reg_u = 15``, ``reg_i = 10``,
    10 epochs): what ``KNNBaseline()`` computes when no baseline options are given."""

    name = "knn-baseline-als"

    def __init__(self, k: int = 40, *, min_k: int = 1, reg_u: float = 15.0, reg_i: float = 10.0,
                 n_epochs: int = 10) -> None:
        super().__init__(k, min_k=min_k, reg_u=reg_u, reg_i=reg_i, n_epochs=n_epochs)
