"""Closed-form factorisations that scale to 500 x 10^6: truncated SVD and ridge ALS.

Why closed forms: the reference implementation fits factorisations by thousands of gradient steps;
a randomized SVD is a handful of passes over the matrix, and each ALS half-step is one batched
set of r x r ridge solves. Nothing here builds an N x N object; the big matrix is read in column
chunks where a temporary would otherwise be M x N.
"""

from __future__ import annotations

import numpy as np

from forgetscope.analysis.lowrank import gram_svd

#: columns per chunk for passes that would otherwise allocate an M x N temporary
CHUNK = 65_536


def truncated_svd(X: np.ndarray, rank: int, *, seed: int = 0, row_shift: np.ndarray | None = None,
                  col_shift: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-``rank`` singular triplets ``(U, s, Vt)`` of ``X − row_shift 1ᵀ − 1 col_shiftᵀ``.

    Exact LAPACK for small matrices; for big ones a randomized range finder (Halko et al. 2011)
    that applies the shifts inside its matrix products, so a double-centred 500 x 10^6 matrix is
    never materialised (no 2-4 GB copy, no extra pass).
    """
    m, n = X.shape
    rank = max(0, min(int(rank), m, n))
    if rank == 0:
        return np.zeros((m, 0), X.dtype), np.zeros(0), np.zeros((0, n), X.dtype)
    a = np.zeros(m) if row_shift is None else np.asarray(row_shift, np.float64)
    c = np.zeros(n) if col_shift is None else np.asarray(col_shift, np.float64)
    if m * n <= 4_000_000 or rank > min(m, n) // 4:
        R = X - a[:, None] - c[None, :] if (row_shift is not None or col_shift is not None) else X
        U, s, Vt = gram_svd(np.asarray(R, np.float64), rank)
        return U, s, Vt.astype(X.dtype)
    if m > n:  # work on the short side
        V, s, Ut = _randomized_shifted(X.T, c, a, rank, seed)
        return Ut.T, s, V.T
    return _randomized_shifted(X, a, c, rank, seed)


def _randomized_shifted(X: np.ndarray, a: np.ndarray, c: np.ndarray, rank: int, seed: int,
                        oversample: int = 10, n_iter: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Randomized SVD of ``R = X − a1ᵀ − 1cᵀ`` with M <= N, using only products with X and Xᵀ."""
    m, n = X.shape
    ell = min(m, rank + oversample)
    dt = X.dtype
    a32, c32 = a.astype(dt), c.astype(dt)

    def r_times(Z: np.ndarray) -> np.ndarray:  # R @ Z, Z: (n, ell)
        out = (X @ Z).astype(np.float64)
        out -= np.outer(a, Z.sum(0, dtype=np.float64))
        out -= (c32 @ Z)[None, :]
        return out

    def rt_times(Q: np.ndarray) -> np.ndarray:  # R.T @ Q, Q: (m, ell); (QᵀX)ᵀ keeps X in its natural layout
        Qd = Q.astype(dt)
        out = (Qd.T @ X).T.astype(np.float64)
        out -= (a32 @ Qd)[None, :]
        out -= np.outer(c, Qd.sum(0))
        return out

    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(r_times(rng.standard_normal((n, ell), dtype=np.float32).astype(dt)))
    for _ in range(n_iter):  # power iterations; only the short (M-side) basis needs re-orthonormalising
        Z = rt_times(Q)
        Z /= np.linalg.norm(Z, axis=0, keepdims=True) + 1e-300
        Q, _ = np.linalg.qr(r_times(Z.astype(dt)))
    Bt = rt_times(Q)  # (n, ell) = (Qᵀ R)ᵀ
    W, s, Vt_small = np.linalg.svd(Bt.T @ Bt)  # ell x ell eigenproblem instead of an ell x n SVD
    s = np.sqrt(np.maximum(s, 0.0))[:rank]
    U = Q @ W[:, :rank]
    Vt = ((Bt @ W[:, :rank]) / np.maximum(s, 1e-300)).T
    return U, s, Vt.astype(dt)


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
    if maskf is None:  # every column sees every row: one shared r x r system, closed form
        G = A.T.astype(np.float64) @ A + lam[0] * np.eye(A.shape[1])
        # keep the big operand in its stored layout: (Rᵀ A)ᵀ when R is a transposed view
        AtR = (R.T @ A).T if R.flags.f_contiguous and not R.flags.c_contiguous else A.T @ R
        return np.linalg.solve(G, AtR.astype(np.float64)).T
    out = np.empty((n, A.shape[1]))
    AA = _outer_flat(A.astype(np.float64)).astype(R.dtype)
    for start in range(0, n, CHUNK):
        sl = slice(start, min(n, start + CHUNK))
        rhs = R[:, sl].T @ A  # missing entries are 0, so they drop out
        out[sl] = _batched_ridge(maskf[:, sl].T @ AA, rhs, lam[sl])
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
