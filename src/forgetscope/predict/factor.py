"""Closed-form factorisations that scale to 500 x 10^6: truncated SVD and ridge ALS.

Why closed forms: the reference implementation fits factorisations by thousands of gradient steps;
a randomized SVD is a handful of passes over the matrix, and each ALS half-step is one batched
set of r x r ridge solves. Nothing here builds an N x N object; the big matrix is read in column
chunks where a temporary would otherwise be M x N.
"""

from __future__ import annotations

import numpy as np
from sklearn.utils.extmath import randomized_svd

#: columns per chunk for passes that would otherwise allocate an M x N temporary
CHUNK = 65_536


def truncated_svd(X: np.ndarray, rank: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-``rank`` singular triplets ``(U, s, Vt)``: exact LAPACK for small matrices, randomized otherwise."""
    m, n = X.shape
    rank = max(0, min(int(rank), m, n))
    if rank == 0:
        return np.zeros((m, 0), X.dtype), np.zeros(0), np.zeros((0, n), X.dtype)
    if m * n <= 4_000_000 or rank > min(m, n) // 4:
        U, s, Vt = np.linalg.svd(X, full_matrices=False)
        return U[:, :rank], s[:rank], Vt[:rank]
    U, s, Vt = randomized_svd(X, rank, n_oversamples=10, n_iter=4, random_state=seed)
    return U, s, Vt


def _batched_ridge(gram_flat: np.ndarray, rhs: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """Solve ``(G_b + diag(lam_b)) x_b = rhs_b`` for every b; ``gram_flat`` is (B, r*r), rhs (B, r)."""
    r = rhs.shape[1]
    G = gram_flat.reshape(-1, r, r).astype(np.float64)
    G[:, np.arange(r), np.arange(r)] += lam[:, None]
    return np.linalg.solve(G, rhs.astype(np.float64)[..., None])[..., 0]


def _outer_flat(A: np.ndarray) -> np.ndarray:
    """Row-wise outer products, flattened: (B, r) -> (B, r*r)."""
    return (A[:, :, None] * A[:, None, :]).reshape(A.shape[0], -1)


def als_ridge(R: np.ndarray, mask: np.ndarray | None, rank: int, *, lam: float = 0.05, n_iter: int = 15,
              seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Ridge ALS ``R ≈ U V`` over the observed entries (``mask``; ``None`` = all observed).

    Minimises ``Σ_obs (R_ij − u_i·v_j)² + lam·s²·(n_i‖u_i‖² + n_j‖v_j‖²)`` (weighted-λ
    regularisation, Zhou et al. 2008; ``s`` is the RMS of the observed entries so ``lam`` is
    scale-free). Missing entries of ``R`` must be 0. Returns U (M x r), V (r x N).
    """
    m, n = R.shape
    rank = max(0, min(int(rank), m, n))
    if rank == 0:
        return np.zeros((m, 0)), np.zeros((0, n))
    n_obs = float(mask.sum()) if mask is not None else float(m * n)
    scale2 = float(np.einsum("ij,ij->", R, R, dtype=np.float64)) / max(n_obs, 1.0)
    reg = lam * max(scale2, 1e-300)
    U, s, Vt = truncated_svd(R, rank, seed=seed)
    U = U * np.sqrt(s)
    V = np.sqrt(s)[:, None] * Vt
    n_row = mask.sum(1).astype(np.float64) if mask is not None else np.full(m, float(n))
    n_col = mask.sum(0).astype(np.float64) if mask is not None else np.full(n, float(m))
    maskf = mask.astype(R.dtype) if mask is not None else None
    for _ in range(n_iter):
        V = _solve_side(R, maskf, U.astype(R.dtype), reg * n_col).T
        U = _solve_side(R.T, None if maskf is None else maskf.T, V.T.astype(R.dtype), reg * n_row)
    return U, V


def _solve_side(R: np.ndarray, maskf: np.ndarray | None, A: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """For every column j of R: ridge regression of R[:, j] on the rows of A (observed rows only)."""
    n = R.shape[1]
    out = np.empty((n, A.shape[1]))
    AA = _outer_flat(A.astype(np.float64)).astype(R.dtype)
    for start in range(0, n, CHUNK):
        sl = slice(start, min(n, start + CHUNK))
        rhs = R[:, sl].T @ A  # missing entries are 0, so they drop out
        if maskf is None:
            gram = np.broadcast_to(AA.sum(0, dtype=np.float64), (rhs.shape[0], AA.shape[1]))
        else:
            gram = maskf[:, sl].T @ AA
        out[sl] = _batched_ridge(np.array(gram), rhs, lam[sl])
    return out


def residual_mean_square(R: np.ndarray, mask: np.ndarray | None, U: np.ndarray, V: np.ndarray) -> float:
    """Mean of ``(R − U V)²`` over observed entries, in column chunks (no M x N temporary)."""
    total, count = 0.0, 0.0
    Uf = U.astype(R.dtype)
    for start in range(0, R.shape[1], CHUNK):
        sl = slice(start, min(R.shape[1], start + CHUNK))
        diff = R[:, sl] - Uf @ V[:, sl].astype(R.dtype)
        if mask is not None:
            diff *= mask[:, sl]
            count += float(mask[:, sl].sum())
        else:
            count += diff.size
        total += float(np.einsum("ij,ij->", diff, diff, dtype=np.float64))
    return total / max(count, 1.0)
