"""Paired significance tests of a strategy against a baseline, at the level of runs.

The unit of a comparison is a **run**: one task × seed fine-tuned with the strategy, paired with the
baseline run on the same task and seed (same base weights, same task batches). Each run contributes
one number per metric (its mean forgetting on the held-out upstream examples, its task loss, ...), so
a comparison over M tasks × S seeds has n = M·S pairs, and every p-value below is computed from those
n differences d = a − b (strategy − baseline):

* ``p_wilcoxon``: two-sided Wilcoxon signed-rank test (``scipy.stats.wilcoxon`` with its default
  ``method="auto"``: the exact null distribution for n ≤ 50, which is only approximate when
  differences tie; the normal approximation above 50);
* ``p_t``: two-sided paired t-test (``scipy.stats.ttest_rel``);
* ``ci_low``/``ci_high``: a bootstrap confidence interval of the mean difference, resampling runs
  (``scipy.stats.bootstrap``, BCa, 9 999 resamples by default);
* ``dz``: the paired effect size (Cohen's d_z) ``mean(d) / sd(d)`` (sd with ddof = 1);
* :func:`holm`: Holm's step-down adjustment across every comparison reported together.

**When a test is not reported.** With fewer than :data:`MIN_PAIRS_T` = 2 pairs there is no variance
to test against: no t-test, no bootstrap interval, no d_z. The Wilcoxon test needs
:data:`MIN_PAIRS_WILCOXON` = 6 pairs: with n pairs the smallest two-sided exact p-value is 2/2ⁿ, which
for n ≤ 5 is at least 0.0625, so the test could never reject at the 5 % level and its p-value carries
no information. A test that is not reported has p = NaN and ``note`` says why ("not testable: ...");
the CLI prints "not testable" instead of a number. All differences zero gives p = 1 (both tests); a
nonzero constant difference has no variance, so the t-test is not testable.

Pooling upstream examples across runs (n = runs × examples) would treat examples that share one
fine-tuned model as independent observations (pseudo-replication) and overstate the evidence.
:func:`paired_test` still computes that example-level Wilcoxon p, but only as a descriptive number:
:mod:`forgetscope.experiments.compare` labels it so and never uses it for a conclusion.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd

MIN_PAIRS_T = 2
MIN_PAIRS_WILCOXON = 6


def bootstrap_ci(diffs: np.ndarray, *, n_boot: int = 2000, ci: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``diffs`` (descriptive, e.g. over pooled examples)."""
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
    """Two-sided Wilcoxon signed-rank p of paired differences (NaN below 2 pairs, 1 when all are zero)."""
    from scipy.stats import wilcoxon

    d = np.asarray(diffs, dtype=float)
    if d.size < 2:
        return float("nan")
    if np.all(d == 0):
        return 1.0
    return float(wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)


def paired_test(a: Any, b: Any, *, n_boot: int = 2000, ci: float = 0.95, seed: int = 0) -> dict[str, float]:
    """Descriptive paired comparison of many values (e.g. pooled examples): n, means, mean difference,
    percentile bootstrap CI and Wilcoxon p. Not a valid test when the pairs share a run."""
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


def holm(pvalues: Any) -> np.ndarray:
    """Holm's step-down adjusted p-values; NaN entries stay NaN and do not count as comparisons.

    With the m finite p-values sorted, p₍₁₎ ≤ … ≤ p₍ₘ₎, the adjusted value of p₍ᵢ₎ is
    ``max_{j ≤ i} min(1, (m − j + 1) · p₍ⱼ₎)``; rejecting where it is ≤ α controls the family-wise
    error rate at α.
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = ok.size
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out


def _bootstrap_mean_ci(d: np.ndarray, *, n_resamples: int, confidence: float, seed: int) -> tuple[float, float]:
    lo, hi, _ = bootstrap_mean_ci_method(d, n_resamples=n_resamples, confidence=confidence, seed=seed)
    return lo, hi


def bootstrap_mean_ci_method(d: np.ndarray, *, n_resamples: int, confidence: float,
                             seed: int) -> tuple[float, float, str]:
    """The bootstrap CI of the mean of ``d`` and the method that gave it: ``BCa``, else ``percentile`` where
    BCa is undefined (a degenerate jackknife), ``constant`` when every value is the same, ``none`` below
    :data:`MIN_PAIRS_T` values."""
    from scipy.stats import bootstrap

    if d.size < MIN_PAIRS_T:
        return float("nan"), float("nan"), "none"
    if np.ptp(d) == 0:  # every resample has the same mean
        return float(d[0]), float(d[0]), "constant"
    method = "BCa"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = bootstrap((d,), np.mean, n_resamples=n_resamples, confidence_level=confidence, method="BCa",
                        rng=np.random.default_rng(seed))
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if not (np.isfinite(lo) and np.isfinite(hi)):  # BCa undefined (e.g. a degenerate jackknife)
            res = bootstrap((d,), np.mean, n_resamples=n_resamples, confidence_level=confidence,
                            method="percentile", rng=np.random.default_rng(seed))
            lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
            method = "percentile"
    return lo, hi, method


def _bootstrap_dz_ci(d: np.ndarray, *, n_resamples: int, confidence: float, seed: int) -> tuple[float, float]:
    """Percentile bootstrap interval of the standardised mean difference d_z = mean / sd (NaN when the
    differences have no spread, where d_z itself is undefined).

    A resample that repeats one difference has no spread; its d_z is taken at its limit, signed infinity
    (NaN, and left out, only when that difference is 0). With 6 units one resample in 6⁵ is such a
    repeat, so among 9 999 resamples one almost always occurs; a NaN there would void the interval."""
    from scipy.stats import bootstrap

    if d.size < MIN_PAIRS_T or np.ptp(d) == 0:
        return float("nan"), float("nan")

    def dz(x, axis=-1):
        sd = np.std(x, axis=axis, ddof=1)
        mean = np.mean(x, axis=axis)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(sd > 0, mean / sd, np.sign(mean) * np.inf)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = bootstrap((d,), dz, n_resamples=n_resamples, confidence_level=confidence, method="percentile",
                        rng=np.random.default_rng(seed))
    tail = 50 * (1 - confidence)
    lo, hi = np.nanpercentile(res.bootstrap_distribution, [tail, 100 - tail])
    return float(lo), float(hi)


def mean_ci(values: Any, *, n_resamples: int = 9999, confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Bootstrap (BCa) interval of the mean of per-run values (NaN below 2 finite values)."""
    v = np.asarray(values, dtype=float)
    return _bootstrap_mean_ci(v[np.isfinite(v)], n_resamples=n_resamples, confidence=confidence, seed=seed)


def paired_run_test(a: Any, b: Any, *, n_resamples: int = 9999, confidence: float = 0.95,
                    seed: int = 0) -> dict[str, Any]:
    """Run-level paired comparison of a (strategy) with b (baseline); see the module docstring.

    Pairs with a non-finite value are dropped. Returns n, mean_a, mean_b, mean_diff, sd_diff, dz (with
    its percentile-bootstrap interval dz_ci_low, dz_ci_high), ci_low, ci_high (of mean_diff), p_wilcoxon,
    p_t and ``note`` (empty, or why a test is not reported).
    """
    from scipy.stats import ttest_rel

    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in shape: {a.shape} vs {b.shape}")
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    d = a - b
    n = int(d.size)
    nan = float("nan")
    out: dict[str, Any] = {"n": n, "mean_a": float(a.mean()) if n else nan, "mean_b": float(b.mean()) if n else nan,
                           "mean_diff": float(d.mean()) if n else nan, "sd_diff": nan, "dz": nan,
                           "dz_ci_low": nan, "dz_ci_high": nan,
                           "ci_low": nan, "ci_high": nan, "p_wilcoxon": nan, "p_t": nan}
    notes = []
    if n < MIN_PAIRS_T:
        notes.append(f"not testable: {n} paired run{'s' if n != 1 else ''} (t-test needs {MIN_PAIRS_T})")
    else:
        sd = float(d.std(ddof=1))
        out["sd_diff"] = sd
        out["ci_low"], out["ci_high"], method = bootstrap_mean_ci_method(d, n_resamples=n_resamples,
                                                                         confidence=confidence, seed=seed)
        if method == "percentile":
            notes.append("CI of the mean difference: percentile bootstrap (BCa undefined here)")
        if sd > 0:
            out["dz"] = float(d.mean() / sd)
            out["dz_ci_low"], out["dz_ci_high"] = _bootstrap_dz_ci(d, n_resamples=n_resamples,
                                                                   confidence=confidence, seed=seed)
            out["p_t"] = float(ttest_rel(a, b).pvalue)
        elif np.all(d == 0):
            out["p_t"] = 1.0
        else:
            notes.append("t-test not testable: every paired difference is the same")
    if n < MIN_PAIRS_WILCOXON:
        if n >= MIN_PAIRS_T:
            notes.append(f"Wilcoxon not testable: {n} paired runs (needs {MIN_PAIRS_WILCOXON})")
    else:
        out["p_wilcoxon"] = wilcoxon_p(d)
    out["note"] = "; ".join(notes)
    return out


LEVELS = ("run", "task")


def task_means(per_run: pd.DataFrame, arm: str, base: str, metric: str) -> tuple[list[float], list[float]]:
    """One paired value per task: ``metric`` of ``arm`` and of ``base`` averaged over the seeds both have
    (the seeds of a task share its data, so tasks, not runs, are the independent units)."""
    a = per_run[per_run["strategy"] == arm].set_index(["task", "seed"])[metric]
    b = per_run[per_run["strategy"] == base].set_index(["task", "seed"])[metric]
    both = a.index.intersection(b.index)
    a, b = a.loc[both], b.loc[both]
    ta = a.groupby(level="task", sort=True).mean()
    tb = b.groupby(level="task", sort=True).mean()
    return ta.tolist(), tb.loc[ta.index].tolist()


def paired_tests(per_run: pd.DataFrame, comparisons: list[tuple[str, str]], metrics: list[str], *,
                 levels: tuple[str, ...] = LEVELS, n_resamples: int = 9999) -> pd.DataFrame:
    """Strategy-against-baseline tests of a per-run table (columns strategy, task, seed and each metric):
    for every comparison, metric and level, :func:`paired_run_test` over runs paired by task and seed
    (``run``) or over tasks with their seeds averaged (``task``), then Holm's adjustment within each
    level (``p_wilcoxon_holm``, ``p_t_holm``). The one definition ``compare`` and the report use."""
    indexed = per_run.set_index(["strategy", "task", "seed"])
    out = []
    for k, (arm, base) in enumerate(comparisons):
        a_runs = per_run[per_run["strategy"] == arm][["task", "seed"]]
        pairs = [(t, s) for t, s in zip(a_runs["task"], a_runs["seed"]) if (base, t, s) in indexed.index]
        for metric in metrics:
            for level in levels:
                if level == "run":
                    a = [indexed.loc[(arm, t, s), metric] for t, s in pairs]
                    b = [indexed.loc[(base, t, s), metric] for t, s in pairs]
                else:
                    a, b = task_means(per_run, arm, base, metric)
                r = paired_run_test(a, b, n_resamples=n_resamples, seed=k)
                out.append({"level": level, "comparison": f"{arm} vs {base}", "strategy": arm, "baseline": base,
                            "metric": metric, "n_pairs": r["n"], "mean_strategy": r["mean_a"],
                            "mean_baseline": r["mean_b"], "mean_diff": r["mean_diff"], "ci_low": r["ci_low"],
                            "ci_high": r["ci_high"], "sd_diff": r["sd_diff"], "dz": r["dz"],
                            "dz_ci_low": r["dz_ci_low"], "dz_ci_high": r["dz_ci_high"],
                            "p_wilcoxon": r["p_wilcoxon"], "p_t": r["p_t"], "note": r["note"]})
    tests = pd.DataFrame(out)
    for col in ("p_wilcoxon", "p_t"):
        tests[f"{col}_holm"] = np.nan
        for level in levels:
            at = (tests["level"] == level).to_numpy() if len(tests) else np.zeros(0, bool)
            if at.any():
                tests.loc[at, f"{col}_holm"] = holm(tests.loc[at, col].to_numpy())
    return tests



def matched_contrast(per_run: pd.DataFrame, arm: str, base: str, *, metric: str = "forgetting_heldout",
                     covariate: str = "task_loss_after", alternative: str = "less",
                     confidence: float = 0.95) -> dict[str, Any]:
    """The difference ``arm − base`` in ``metric`` at a matched ``covariate`` (e.g. forgetting at equal task
    loss), over tasks.

    Per task (seeds averaged, as in :func:`task_means`), ``d_m`` is the metric's difference and ``d_c`` the
    covariate's. Ordinary least squares over tasks, ``d_m = gamma + b * d_c``: ``gamma`` is the difference
    where the arm reaches the base's covariate (``d_c = 0``), ``b`` how the metric moves with the covariate,
    assumed common to the tasks. ``gamma`` is tested with a t-test on ``n_tasks − 2`` degrees of freedom,
    one-sided when ``alternative`` is ``less`` or ``greater``. Needs 3 tasks; when ``d_c`` does not vary,
    ``b`` is unidentified and ``gamma`` is the mean difference (``n − 1`` degrees of freedom, noted).
    When 0 lies outside the observed ``d_c``, ``gamma`` is an extrapolation, and ``note`` says so.
    """
    from scipy import stats

    if alternative not in ("less", "greater", "two-sided"):
        raise ValueError(f"alternative must be less, greater or two-sided, got {alternative!r}")
    m_a, m_b = task_means(per_run, arm, base, metric)
    c_a, c_b = task_means(per_run, arm, base, covariate)
    dm, dc = np.subtract(m_a, m_b), np.subtract(c_a, c_b)
    ok = np.isfinite(dm) & np.isfinite(dc)
    dm, dc = dm[ok], dc[ok]
    n = len(dm)
    out: dict[str, Any] = {"arm": arm, "base": base, "metric": metric, "covariate": covariate,
                           "alternative": alternative, "n_tasks": n, "mean_diff": float(np.mean(dm)) if n else np.nan,
                           "gamma": np.nan, "se": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p": np.nan,
                           "slope": np.nan, "covariate_diff_range": [float(dc.min()), float(dc.max())] if n else None,
                           "covariate_mean_diff": float(np.mean(dc)) if n else np.nan, "extrapolated": False,
                           "note": ""}
    if n < 3:
        out["note"] = f"not testable: {n} tasks (needs 3)"
        return out
    notes = []
    if np.ptp(dc) > 0:
        X = np.column_stack([np.ones(n), dc])
        coef, *_ = np.linalg.lstsq(X, dm, rcond=None)
        dof = n - 2
        resid = dm - X @ coef
        cov = float(resid @ resid) / dof * np.linalg.inv(X.T @ X)
        gamma, se, out["slope"] = float(coef[0]), float(np.sqrt(cov[0, 0])), float(coef[1])
        if not dc.min() <= 0 <= dc.max():
            out["extrapolated"] = True
            notes.append("matched point extrapolated: every task's covariate difference has one sign")
    else:
        dof = n - 1
        gamma, se = float(np.mean(dm)), float(np.std(dm, ddof=1) / np.sqrt(n))
        notes.append("covariate difference constant: gamma is the mean difference")
    q = float(stats.t.ppf(0.5 + confidence / 2, dof))
    out.update(gamma=gamma, se=se, ci_low=gamma - q * se, ci_high=gamma + q * se, dof=dof)
    if se > 0:
        tstat = gamma / se
        out["p"] = float(stats.t.cdf(tstat, dof) if alternative == "less" else stats.t.sf(tstat, dof)
                         if alternative == "greater" else 2 * stats.t.sf(abs(tstat), dof))
    else:
        notes.append("not testable: the differences fit the line exactly")
    out["note"] = "; ".join(notes)
    return out
