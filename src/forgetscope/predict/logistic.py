"""``logistic``: logistic matrix factorisation for the binary "forgotten or not" view.

``P(F[i, j] > threshold) = σ(d_i + c_j + u_i · v_j)``. Fitted by alternating Newton (IRLS) steps,
each a batch of small ridge-regularised (r+1) x (r+1) solves, instead of thousands of gradient
steps. Row factors are learnt on a random column subsample (each row still sees up to
``max_fit_cols`` observations for r+1 parameters), then every column's (c_j, v_j) is solved in one
chunked pass, so a 500 x 10^6 matrix costs a few passes. A new task's (d, u) is solved on its
probe set by IRLS with the same ridge. Predictions are probabilities (``output = "probability"``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.special import expit

from forgetscope.errors import ConfigError
from forgetscope.predict.base import Predictor
from forgetscope.predict.factor import CHUNK, _outer_flat, truncated_svd

_BIAS_RIDGE = 1e-2  # keeps biases finite for all-0 / all-1 columns (separable data)


def newton_step(Y: np.ndarray, mask: np.ndarray | None, theta: np.ndarray, feats: np.ndarray,
                offset: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """One ridge-penalised IRLS step for B independent logistic regressions sharing features.

    Y: (B, K) 0/1 responses; mask: (B, K) or None; theta: (B, q); feats: (K, q); offset: (K,).
    """
    p = expit(theta @ feats.T + offset[None, :])
    resid = Y - p
    w = p * (1.0 - p)
    if mask is not None:
        resid *= mask
        w *= mask
    grad = resid @ feats - lam[None, :] * theta
    hess_flat = w @ _outer_flat(feats)
    return theta + _solve(hess_flat, grad, lam)


def _solve(hess_flat: np.ndarray, grad: np.ndarray, lam: np.ndarray) -> np.ndarray:
    q = grad.shape[1]
    H = hess_flat.reshape(-1, q, q) + np.diag(lam)[None]
    return np.linalg.solve(H, grad[..., None])[..., 0]


class LogisticPredictor(Predictor):
    """Logistic MF on ``F > threshold``; predicts the probability that each example is forgotten."""

    name = "logistic"
    output = "probability"

    def __init__(self, rank: int = 3, *, threshold: float = 0.0, ridge: float = 1.0, n_iter: int = 8,
                 final_steps: int = 2, max_fit_cols: int = 5_000, seed: int = 0) -> None:
        if int(rank) < 1:
            raise ConfigError(f"logistic rank must be >= 1, got {rank}")
        if ridge <= 0:
            raise ConfigError(f"logistic ridge must be > 0, got {ridge}")
        self.rank, self.threshold, self.ridge = int(rank), float(threshold), float(ridge)
        self.n_iter, self.final_steps = int(n_iter), int(final_steps)
        self.max_fit_cols, self.seed = int(max_fit_cols), int(seed)

    def _lam(self, q: int) -> np.ndarray:
        return np.concatenate([[_BIAS_RIDGE], np.full(q - 1, self.ridge)])

    def _fit(self, X: np.ndarray, *, task_texts: Sequence[str] | None,
             example_texts: Sequence[str] | None) -> None:
        m, n = X.shape
        r = max(1, min(self.rank, m - 1, n - 1)) if m > 1 else 1
        rng = np.random.default_rng(self.seed)
        sub = np.sort(rng.choice(n, self.max_fit_cols, replace=False)) if n > self.max_fit_cols else np.arange(n)
        Xs = X[:, sub].astype(np.float64)
        mask = ~np.isnan(Xs) if np.isnan(Xs).any() else None
        Ys = (Xs > self.threshold).astype(np.float64)
        # spectral start: for small logits 2p − 1 ≈ z/2, so the centred ±1 matrix ≈ logits / 4
        pm = np.where(mask, 2 * Ys - 1, 0.0) if mask is not None else 2 * Ys - 1
        cnt = mask.sum(0) if mask is not None else np.full(Ys.shape[1], m)
        pos = (Ys * mask).sum(0) if mask is not None else Ys.sum(0)
        rate = (pos + 0.5) / (cnt + 1.0)
        c = np.log(rate / (1 - rate))
        U, s, Vt = truncated_svd(pm - pm.mean(0), r, seed=self.seed)
        U = U * np.sqrt(2 * s)
        V = (np.sqrt(2 * s)[:, None] * Vt).T
        rows = np.column_stack([np.zeros(m), U])  # (d_i, u_i)
        cols = np.column_stack([c, V])  # (c_j, v_j)
        lam = self._lam(r + 1)
        for _ in range(self.n_iter):
            feats = np.column_stack([np.ones(len(sub)), cols[:, 1:]])
            rows = newton_step(Ys, mask, rows, feats, cols[:, 0], lam)
            feats = np.column_stack([np.ones(m), rows[:, 1:]])
            cols = newton_step(Ys.T, None if mask is None else mask.T, cols, feats, rows[:, 0], lam)
        self.row_params_ = rows
        self.col_params_ = self._solve_columns(X, rows, sub, cols)

    def _solve_columns(self, X: np.ndarray, rows: np.ndarray, sub: np.ndarray, cols_sub: np.ndarray
                       ) -> np.ndarray:
        """(c_j, v_j) for every column given the row factors: chunked, a few Newton steps per chunk."""
        m, n = X.shape
        feats = np.column_stack([np.ones(m), rows[:, 1:]])
        lam = self._lam(feats.shape[1])
        # start every column at the linearised fit (σ(z) ≈ 1/2 + z/4, so z ≈ 4(y − 1/2)): one shared solve
        init = np.linalg.solve(feats.T @ feats + np.diag(lam), feats.T).T * 4.0  # (m, q)
        feats32 = feats.astype(np.float32)
        offset32 = rows[:, 0].astype(np.float32)
        lam32 = lam.astype(np.float32)
        out = np.zeros((n, feats.shape[1]))
        for start in range(0, n, CHUNK):
            sl = slice(start, min(n, start + CHUNK))
            chunk = np.ascontiguousarray(X[:, sl].T)
            mask = ~np.isnan(chunk) if np.isnan(chunk).any() else None
            Y = (chunk > self.threshold).astype(np.float32)
            theta = ((np.where(mask, Y, 0.5) if mask is not None else Y) - 0.5) @ init.astype(np.float32)
            theta -= np.outer(np.ones(theta.shape[0], np.float32), (offset32 @ init.astype(np.float32)) / 4)
            for _ in range(self.final_steps):
                theta = newton_step(Y, None if mask is None else mask.astype(np.float32), theta, feats32,
                                    offset32, lam32)
            out[sl] = theta
        out[sub] = cols_sub
        return out

    def _predict_rows(self, idx: np.ndarray, Y: np.ndarray, *,
                      task_texts: Sequence[str] | None) -> np.ndarray:
        B = (Y > self.threshold).astype(np.float64)
        feats = np.column_stack([np.ones(idx.size), self.col_params_[idx, 1:]])
        offset = self.col_params_[idx, 0]
        lam = self._lam(feats.shape[1])
        theta = np.zeros((Y.shape[0], feats.shape[1]))
        for _ in range(25):
            new = newton_step(B, None, theta, feats, offset, lam)
            done = np.abs(new - theta).max() < 1e-8
            theta = new
            if done:
                break
        logits = theta[:, :1] + self.col_params_[:, 0][None, :] + theta[:, 1:] @ self.col_params_[:, 1:].T
        return expit(logits)
