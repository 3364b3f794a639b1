"""Paired significance tests of a strategy against plain fine-tuning.

For paired values a (strategy) and b (plain) — per upstream example, or per task×seed run — we report
the mean difference a − b, a percentile bootstrap confidence interval of that mean (resampling the
pairs), and the two-sided Wilcoxon signed-rank p-value (``scipy.stats.wilcoxon``; exact for small n
without ties, normal approximation otherwise). Non-finite pairs are dropped. With all differences zero
the p-value is 1; with fewer than two pairs it is NaN (nothing to test). Note the floor of the exact
Wilcoxon test: with n runs the smallest possible two-sided p is 2/2ⁿ (0.25 for n = 3), so run-level
tests need several tasks × seeds before they can reject anything.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def bootstrap_ci(diffs: np.ndarray, *, n_boot: int = 2000, ci: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``diffs``."""
    d = np.asarray(diffs, dtype=float)
    if d.size == 0:
        return float("nan"), float("nan")
    if d.size == 1:
        return float(d[0]), float(d[0])
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    chunk = max(1, int(2_000_000 // d.size))  # bound memory for large n
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        idx = rng.integers(0, d.size, size=(stop - start, d.size))
        means[start:stop] = d[idx].mean(axis=1)
    alpha = (1 - ci) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(lo), float(hi)


def wilcoxon_p(diffs: np.ndarray) -> float:
    from scipy.stats import wilcoxon

    d = np.asarray(diffs, dtype=float)
    if d.size < 2:
        return float("nan")
    if np.all(d == 0):
        return 1.0
    return float(wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)


def paired_test(a: Any, b: Any, *, n_boot: int = 2000, ci: float = 0.95, seed: int = 0) -> dict[str, float]:
    """Compare paired samples a (strategy) and b (baseline): n, means, mean difference, CI, Wilcoxon p."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in shape: {a.shape} vs {b.shape}")
    ok = np.isfinite(a) & np.isfinite(b)
    d = a[ok] - b[ok]
    lo, hi = bootstrap_ci(d, n_boot=n_boot, ci=ci, seed=seed)
    return {"n": int(d.size), "mean_a": float(a[ok].mean()) if d.size else float("nan"),
            "mean_b": float(b[ok].mean()) if d.size else float("nan"),
            "mean_diff": float(d.mean()) if d.size else float("nan"), "ci_low": lo, "ci_high": hi,
            "p_wilcoxon": wilcoxon_p(d)}
