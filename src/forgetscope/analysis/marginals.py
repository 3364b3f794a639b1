"""Baselines that keep the forgetting matrix's marginals: what "low rank" means beyond row scale.

R² is scale-free: runs that differ only in how much they forget (``F[i, j] ≈ a_i + noise``) already give a
rank-1 approximation a high R², and a random control of another size says nothing about that. The
baselines here keep each run's own values:

- :func:`variance_split` — the two-way split of F's variance between runs (row effects), between examples
  (column effects) and their interaction (the residual of the additive fit ``μ + a_i + b_j``);
- :func:`permutation_baseline` — R²(k) of F against R²(k) of matrices whose rows are F's rows with their
  values shuffled across examples (each row independently, seeded): row scale and each row's distribution
  are kept, which example forgot what is destroyed. The excess of F's R²(k) over the shuffle mean, and
  whether F lies above the 95 % band, is the headline low-rank statistic;
- :func:`interaction_r2` — R²(k) of the rank-k SVD of the double-centred matrix (the interaction alone),
  relative to the interaction's variance, with the same shuffle band;
- :func:`interaction_seed_reliability` — do two seeds of one task agree on the interaction (their rows of
  the matrix double-centred on all runs)? The interaction is worth reading only where they do;
- :func:`category_share` — how much of the interaction the upstream examples' source category explains
  (R² of the run × category block means), against the same statistic under shuffled category labels.

:func:`marginal_analysis` runs them all; :meth:`MarginalReport.verdicts` turns them into one line per claim.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from forgetscope.analysis.lowrank import R2_METRICS, R2Metric, additive_fit_unchecked, rank_r2_metrics
from forgetscope.analysis.stats import mean_ci
from forgetscope.errors import DataError
from forgetscope.validation import check_matrix

MIN_PERMUTATION_ROWS = 3
MIN_SHUFFLES = 20
#: upstream table columns read as an example's source category, first found wins
CATEGORY_COLUMNS = ("category", "source")
#: the ranks a verdict speaks of (the paper reports k = 1..5)
HEADLINE_RANKS = 5


class TooFewRunsError(DataError):
    """A permutation baseline of a matrix with too few rows (runs)."""


# ---- the two-way split -----------------------------------------------------------------------


def interaction(F: Any) -> np.ndarray:
    """``F`` minus its additive fit ``μ + a_i + b_j`` (NaN where ``F`` is missing).

    On a complete matrix this is the double-centred ``F − row mean − column mean + grand mean``; with holes
    the additive fit is the least-squares one over the observed entries.
    """
    X = check_matrix(F)
    return X - additive_fit_unchecked(X).predict()


@dataclass
class VarianceSplit:
    """Shares of F's sum of squares about its mean: between runs, between examples, interaction (sum 1)."""

    total_ss: float
    runs: float
    examples: float
    interaction: float
    n_observed: int

    def to_dict(self) -> dict[str, Any]:
        return {"total_ss": self.total_ss, "runs": self.runs, "examples": self.examples,
                "interaction": self.interaction, "n_observed": self.n_observed}


def _ss(x: np.ndarray) -> float:
    return float(np.sum(x * x, dtype=np.float64))


def variance_split(F: Any) -> VarianceSplit:
    """The two-way analysis of variance of ``F`` over its observed entries.

    Why: the share between runs is what a rank-1 fit gets for free (runs differing in how much they forget);
    only the interaction says that tasks forget different examples. Complete: the balanced split
    ``SS = N Σ a_i² + M Σ b_j² + Σ e_ij²``. With holes the interaction is the residual of the least-squares
    additive fit and the rest is split between runs and examples by the mean of their two sequential sums
    of squares (runs first, examples first), so the shares still sum to one.
    """
    X = check_matrix(F)
    mask = ~np.isnan(X)
    x = X[mask]
    sst = _ss(x - x.mean())
    if sst <= 0:
        raise DataError("forgetting matrix is constant: its variance has nothing to split")
    sse_additive = _ss((X - additive_fit_unchecked(X).predict())[mask])
    if mask.all():
        runs = _ss(X.mean(axis=1) - X.mean()) * X.shape[1]
        examples = _ss(X.mean(axis=0) - X.mean()) * X.shape[0]
    else:
        row_means = np.nanmean(X, axis=1, keepdims=True)
        col_means = np.nanmean(X, axis=0, keepdims=True)
        effects = sst - sse_additive  # both effects together, the same in either order
        runs_first = sst - _ss((X - row_means)[mask])
        examples_first = sst - _ss((X - col_means)[mask])
        runs = 0.5 * (runs_first + (effects - examples_first))
        examples = effects - runs
    return VarianceSplit(total_ss=sst, runs=runs / sst, examples=examples / sst,
                         interaction=sse_additive / sst, n_observed=int(mask.sum()))


# ---- the within-row permutation baseline -----------------------------------------------------


@dataclass
class PermutationBaseline:
    """R²(k) of a matrix and of its within-row shuffles, per metric (arrays over k = 1..K)."""

    observed: dict[str, np.ndarray]
    shuffles: dict[str, np.ndarray]  # (n_shuffles, K) per metric
    seed: int

    @property
    def n_shuffles(self) -> int:
        return int(next(iter(self.shuffles.values())).shape[0])

    def mean(self, metric: str) -> np.ndarray:
        return self.shuffles[metric].mean(axis=0)

    def band(self, metric: str) -> tuple[np.ndarray, np.ndarray]:
        """The central 95 % of the shuffles' R²(k) (2.5th and 97.5th percentiles)."""
        lo, hi = np.quantile(self.shuffles[metric], [0.025, 0.975], axis=0)
        return lo, hi

    def excess(self, metric: str) -> np.ndarray:
        return self.observed[metric] - self.mean(metric)

    def above(self, metric: str) -> np.ndarray:
        return self.observed[metric] > self.band(metric)[1]

    def table(self, prefix: str = "") -> pd.DataFrame:
        """One row per k: per metric the observed R², the shuffle mean, band, excess and whether above."""
        k = np.arange(1, len(next(iter(self.observed.values()))) + 1)
        cols: dict[str, Any] = {"k": k}
        for m in self.observed:
            lo, hi = self.band(m)
            cols.update({f"{prefix}r2_{m}": self.observed[m], f"{prefix}shuffle_mean_{m}": self.mean(m),
                         f"{prefix}shuffle_low_{m}": lo, f"{prefix}shuffle_high_{m}": hi,
                         f"{prefix}excess_{m}": self.excess(m), f"{prefix}above_band_{m}": self.above(m)})
        return pd.DataFrame(cols)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"n_shuffles": self.n_shuffles, "seed": self.seed}
        for m in self.observed:
            lo, hi = self.band(m)
            out[m] = {"r2": self.observed[m].tolist(), "shuffle_mean": self.mean(m).tolist(),
                      "shuffle_low": lo.tolist(), "shuffle_high": hi.tolist(),
                      "excess": self.excess(m).tolist(), "above_band": self.above(m).tolist()}
        return out


def shuffle_within_rows(X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each row's observed values permuted among that row's observed positions (holes stay where they are)."""
    out = X.copy()
    for i in range(X.shape[0]):
        ok = np.flatnonzero(~np.isnan(X[i]))
        out[i, ok] = X[i, ok][rng.permutation(ok.size)]
    return out


def _check_shuffles(n_shuffles: int) -> int:
    if int(n_shuffles) < MIN_SHUFFLES:
        raise DataError(f"n_shuffles must be at least {MIN_SHUFFLES} for a 95 % band, got {n_shuffles}")
    return int(n_shuffles)


def permutation_baseline(F: Any, max_rank: int = HEADLINE_RANKS, *, n_shuffles: int = MIN_SHUFFLES,
                         seed: int = 0, metrics: tuple[R2Metric, ...] = R2_METRICS, n_iter: int = 100,
                         recentre: Callable[[np.ndarray], np.ndarray] | None = None) -> PermutationBaseline:
    """R²(k) of ``F`` and of ``n_shuffles`` within-row shuffles of it (k = 1..max_rank, capped at min(M, N)).

    Why: a shuffle keeps every run's values (its mean, its spread, the scale differences between runs) and
    only forgets which example each value belongs to, so what R²(k) F has beyond the shuffles is structure
    shared across runs, not row scale. Needs at least :data:`MIN_PERMUTATION_ROWS` rows. ``recentre`` is
    applied to each shuffle before its R²(k), so a matrix that was centred (the interaction) is compared
    with shuffles centred the same way.
    """
    X = check_matrix(F)
    if X.shape[0] < MIN_PERMUTATION_ROWS:
        raise TooFewRunsError(f"a permutation baseline needs at least {MIN_PERMUTATION_ROWS} runs "
                              f"(the matrix has {X.shape[0]})")
    n_shuffles = _check_shuffles(n_shuffles)
    K = max(1, min(int(max_rank), *X.shape))
    observed = rank_r2_metrics(X, K, metrics=metrics, n_iter=n_iter)
    rng = np.random.default_rng(seed)
    same = recentre or (lambda shuffled: shuffled)
    draws = [rank_r2_metrics(same(shuffle_within_rows(X, rng)), K, metrics=metrics, n_iter=n_iter)
             for _ in range(n_shuffles)]
    shuffles = {m: np.vstack([d[m] for d in draws]) for m in metrics}
    return PermutationBaseline(observed=observed, shuffles=shuffles, seed=seed)


def interaction_r2(F: Any, max_rank: int = HEADLINE_RANKS, *, n_shuffles: int = MIN_SHUFFLES, seed: int = 0,
                   n_iter: int = 100) -> PermutationBaseline:
    """R²(k) of the rank-k SVD of the interaction (double-centred F) relative to the interaction's variance,
    with the within-row shuffle band of the interaction (global metric; k capped at min(M, N) − 1).

    Why: with row and column effects removed, what a rank-k fit explains is structure in *which* examples
    each run forgets more or less than its own mean and the example's mean. Each shuffle is double-centred
    again before its R²(k): a shuffled interaction has column effects of its own, which the observed one
    has not, and left in they bias the band low (the observed curve would clear it too often).
    """
    E = interaction(F)
    K = max(1, min(int(max_rank), E.shape[0] - 1, E.shape[1] - 1))
    return permutation_baseline(E, K, n_shuffles=n_shuffles, seed=seed, metrics=("global",), n_iter=n_iter,
                                recentre=interaction)


# ---- reproducibility of the interaction across seeds -----------------------------------------


@dataclass
class SeedReliability:
    """Per task with two seeds: the correlation of their interaction rows (and of their raw rows)."""

    per_task: pd.DataFrame  # task, seed_a, seed_b, r_interaction, r_raw
    note: str = ""

    @property
    def n_tasks(self) -> int:
        return int(self.per_task["r_interaction"].notna().sum()) if len(self.per_task) else 0

    @property
    def mean(self) -> float:
        return float(self.per_task["r_interaction"].mean()) if self.n_tasks else float("nan")

    @property
    def mean_raw(self) -> float:
        return float(self.per_task["r_raw"].mean()) if self.n_tasks else float("nan")

    @property
    def ci(self) -> tuple[float, float]:
        """Bootstrap interval of the mean over tasks (tasks are the independent units)."""
        return mean_ci(self.per_task["r_interaction"].to_numpy(float)) if self.n_tasks else (np.nan, np.nan)

    def to_dict(self) -> dict[str, Any]:
        lo, hi = self.ci
        return {"n_tasks": self.n_tasks, "mean_r_interaction": self.mean, "ci_low": lo, "ci_high": hi,
                "mean_r_raw": self.mean_raw, "note": self.note,
                "per_task": self.per_task.to_dict(orient="records")}


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return float("nan")
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def interaction_seed_reliability(F: Any, runs: pd.DataFrame | None) -> SeedReliability:
    """For each task (and strategy, when recorded) with two or more seeds, the correlation of the two lowest
    seeds' rows of the interaction, double-centred on the full matrix; ``r_raw`` is the same pair's raw rows.

    Why: raw seed rows agree partly because every run shares the examples' column effects; the interaction
    rows agree only if a task's particular pattern of forgetting is reproducible.
    """
    empty = pd.DataFrame(columns=["task", "seed_a", "seed_b", "r_interaction", "r_raw"])
    X = check_matrix(F)
    if runs is None or not {"task", "seed"} <= set(runs.columns):
        return SeedReliability(empty, "no runs table with task and seed")
    runs = runs.reset_index(drop=True)
    if len(runs) != X.shape[0]:
        raise DataError(f"runs table has {len(runs)} rows but the matrix has {X.shape[0]}")
    E = interaction(X)
    keys = ["task", "strategy"] if "strategy" in runs.columns and runs["strategy"].nunique() > 1 else ["task"]
    out = []
    for key, idx in runs.groupby(keys if len(keys) > 1 else keys[0], sort=False).groups.items():
        rows = sorted(idx, key=lambda i: runs.loc[i, "seed"])
        if len(rows) < 2 or runs.loc[rows[0], "seed"] == runs.loc[rows[1], "seed"]:
            continue
        a, b = rows[:2]
        out.append({"task": "/".join(map(str, key)) if isinstance(key, tuple) else str(key),
                    "seed_a": runs.loc[a, "seed"], "seed_b": runs.loc[b, "seed"],
                    "r_interaction": _corr(E[a], E[b]), "r_raw": _corr(X[a], X[b])})
    if not out:
        return SeedReliability(empty, "no task has two seeds")
    return SeedReliability(pd.DataFrame(out, columns=empty.columns))


# ---- source categories of the upstream examples ----------------------------------------------


def upstream_categories(upstream: pd.DataFrame | None) -> tuple[str, np.ndarray] | None:
    """``(column, label per example)`` from the first of :data:`CATEGORY_COLUMNS` the upstream table has."""
    if upstream is None:
        return None
    for col in CATEGORY_COLUMNS:
        if col in upstream.columns and upstream[col].notna().any():
            return col, upstream[col].to_numpy(dtype=object)
    return None


@dataclass
class CategoryShare:
    """R² of the run × category block means on the interaction, and the same under shuffled labels."""

    column: str
    n_categories: int
    r2: float
    shuffles: np.ndarray
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def shuffle_mean(self) -> float:
        return float(self.shuffles.mean())

    @property
    def shuffle_high(self) -> float:
        return float(np.quantile(self.shuffles, 0.975))

    @property
    def above(self) -> bool:
        return bool(self.r2 > self.shuffle_high)

    def to_dict(self) -> dict[str, Any]:
        return {"column": self.column, "n_categories": self.n_categories, "counts": self.counts, "r2": self.r2,
                "shuffle_mean": self.shuffle_mean, "shuffle_high": self.shuffle_high, "above_band": self.above,
                "n_shuffles": int(self.shuffles.size)}


def _block_r2(E: np.ndarray, mask: np.ndarray, codes: np.ndarray, n_codes: int) -> float:
    onehot = np.zeros((E.shape[1], n_codes))
    onehot[np.arange(E.shape[1]), codes] = 1.0
    Ez = np.where(mask, E, 0.0)
    means = (Ez @ onehot) / np.maximum(mask.astype(float) @ onehot, 1)
    resid = Ez - np.where(mask, means[:, codes], 0.0)
    total = _ss(Ez[mask])
    return 1.0 - _ss(resid[mask]) / total if total > 0 else float("nan")


def category_share(F: Any, categories: Any, *, column: str = "category", n_shuffles: int = MIN_SHUFFLES,
                   seed: int = 0) -> CategoryShare:
    """Share of the interaction's sum of squares explained by each run's mean interaction per category.

    Why: if tasks forget code more than prose (or one source more than another), the run × category means
    carry the interaction; shuffling the labels across examples gives the share such block means take by
    chance (they have M × C free values). Examples without a label form one category of their own.
    """
    X = check_matrix(F)
    labels = pd.Series(np.asarray(categories, dtype=object)).fillna("(unlabelled)").astype(str)
    if len(labels) != X.shape[1]:
        raise DataError(f"{len(labels)} category labels for a matrix with {X.shape[1]} columns")
    codes, names = pd.factorize(labels)
    E = interaction(X)
    mask = ~np.isnan(E)
    rng = np.random.default_rng(seed)
    shuffles = np.array([_block_r2(E, mask, rng.permutation(codes), len(names))
                         for _ in range(_check_shuffles(n_shuffles))])
    return CategoryShare(column=column, n_categories=len(names), r2=_block_r2(E, mask, codes, len(names)),
                         shuffles=shuffles, counts=labels.value_counts().to_dict())


# ---- everything at once, and what it says ----------------------------------------------------


@dataclass
class MarginalReport:
    """What ``forgetscope analyze`` prints and saves about F's marginals; ``None`` parts say why in a note."""

    split: VarianceSplit
    permutation: PermutationBaseline | None
    interaction: PermutationBaseline | None
    seeds: SeedReliability
    category: CategoryShare | None
    notes: dict[str, str] = field(default_factory=dict)

    def rank_table(self) -> pd.DataFrame:
        """One row per k: F's R²(k) against its shuffle band (both metrics), the interaction's likewise."""
        if self.permutation is None:
            return pd.DataFrame()
        table = self.permutation.table()
        if self.interaction is not None:
            table = table.merge(self.interaction.table("interaction_"), on="k", how="left")
        return table

    def verdicts(self) -> list[dict[str, Any]]:
        """One line per claim, each derived from the statistics above: ``shown`` is True, False or None
        (partly / not measurable)."""
        return [_verdict_low_rank(self), _verdict_seeds(self), _verdict_interaction_rank(self),
                _verdict_category(self)]

    def to_dict(self) -> dict[str, Any]:
        return {"variance_split": self.split.to_dict(),
                "permutation": self.permutation.to_dict() if self.permutation is not None else None,
                "interaction_r2": self.interaction.to_dict() if self.interaction is not None else None,
                "interaction_seed_reliability": self.seeds.to_dict(),
                "category_share": self.category.to_dict() if self.category is not None else None,
                "notes": self.notes, "verdicts": self.verdicts()}


def _ranks(n: int) -> str:
    return "1" if n == 1 else f"1..{n}"


def _span(x: np.ndarray) -> str:
    return f"{x.min():+.3f}" if x.size == 1 or np.ptp(x) < 5e-4 else f"{x.min():+.3f} to {x.max():+.3f}"


def _verdict_low_rank(rep: MarginalReport) -> dict[str, Any]:
    claim = "low rank beyond row scale"
    p = rep.permutation
    if p is None:
        return {"claim": claim, "shown": None, "line": f"not shown: {rep.notes.get('permutation', '')}"}
    K = min(HEADLINE_RANKS, len(p.observed["global"]))
    above = {m: p.above(m)[:K] for m in p.observed}
    excess = " and ".join(f"{_span(p.excess(m)[:K])} ({m})" for m in p.observed)
    what = (f"F's R²({_ranks(K)}) exceeds the mean of {p.n_shuffles} within-row shuffles by {excess}")
    if all(a.all() for a in above.values()):
        return {"claim": claim, "shown": True, "line": f"{claim}: {what}, above the 95 % band at every k"}
    if not any(a.any() for a in above.values()):
        return {"claim": claim, "shown": False,
                "line": f"not shown: {what}, inside the 95 % band of shuffles that keep each run's values; "
                        "the low rank is row scale"}
    where = "; ".join(f"{m} at k = {', '.join(str(k + 1) for k in np.flatnonzero(a)) or 'none'}"
                      for m, a in above.items())
    return {"claim": claim, "shown": None, "line": f"{claim}, partly: {what}; above the 95 % band {where}"}


def _verdict_seeds(rep: MarginalReport) -> dict[str, Any]:
    claim = "tasks forget different examples (reproducible interaction)"
    share = f"interaction {rep.split.interaction:.1%} of the variance"
    s = rep.seeds
    if s.n_tasks == 0:
        return {"claim": claim, "shown": None,
                "line": f"not shown: {s.note or 'no task has two seeds'}; {share}, its reproducibility unmeasured"}
    lo, hi = s.ci
    what = (f"seed-pair correlation of the interaction rows {s.mean:+.3f} over {s.n_tasks} tasks "
            f"(95 % CI {lo:+.3f} to {hi:+.3f}; raw rows {s.mean_raw:+.3f}); {share}")
    if np.isfinite(lo) and lo > 0:
        return {"claim": claim, "shown": True, "line": f"{claim}: {what}"}
    return {"claim": claim, "shown": False, "line": f"not shown: {what}; the interaction is not above seed noise"}


def _verdict_interaction_rank(rep: MarginalReport) -> dict[str, Any]:
    claim = "low-rank interaction"
    p = rep.interaction
    if p is None:
        return {"claim": claim, "shown": None, "line": f"not shown: {rep.notes.get('interaction', '')}"}
    K = min(HEADLINE_RANKS, len(p.observed["global"]))
    above = p.above("global")[:K]
    r2 = p.observed["global"][:K]
    what = (f"interaction R²({_ranks(K)}) = {' / '.join(f'{v:.3f}' for v in r2)}, "
            f"{_span(p.excess('global')[:K])} over its within-row shuffles")
    if above.all():
        return {"claim": claim, "shown": True, "line": f"{claim}: {what}, above the 95 % band at every k"}
    if not above.any():
        return {"claim": claim, "shown": False, "line": f"not shown: {what}, inside the 95 % band"}
    ks = ", ".join(str(k + 1) for k in np.flatnonzero(above))
    return {"claim": claim, "shown": None, "line": f"{claim}, partly: {what}; above the band at k = {ks}"}


def _verdict_category(rep: MarginalReport) -> dict[str, Any]:
    claim = "source category explains the interaction"
    c = rep.category
    if c is None:
        return {"claim": claim, "shown": None, "line": f"not shown: {rep.notes.get('category', '')}"}
    what = (f"run x {c.column} block means explain {c.r2:.1%} of the interaction ({c.n_categories} categories; "
            f"shuffled labels {c.shuffle_mean:.1%}, 95 % band up to {c.shuffle_high:.1%})")
    if c.above:
        return {"claim": claim, "shown": True, "line": f"{claim}: {what}"}
    return {"claim": claim, "shown": False, "line": f"not shown: {what}"}


def marginal_analysis(F: Any, *, max_rank: int = HEADLINE_RANKS, runs: pd.DataFrame | None = None,
                      categories: Any | None = None, category_column: str = "category",
                      n_shuffles: int = MIN_SHUFFLES, seed: int = 0) -> MarginalReport:
    """Every analysis of this module on ``F`` (an array or a ``ForgettingMatrix``, whose runs table and
    upstream categories are used unless given). A part that cannot be computed (too few runs, no categories)
    is None with its reason in ``notes``; bad input still raises."""
    if runs is None:
        runs = getattr(F, "runs", None)
    notes: dict[str, str] = {}
    if categories is None:
        found = upstream_categories(getattr(F, "upstream", None))
        if found is not None:
            category_column, categories = found
        else:
            notes["category"] = (f"the upstream table has no {' or '.join(CATEGORY_COLUMNS)} column "
                                 "(no source categories to test)")
    X = check_matrix(F)
    _check_shuffles(n_shuffles)
    permutation = inter = None
    try:
        permutation = permutation_baseline(X, max_rank, n_shuffles=n_shuffles, seed=seed)
        if min(X.shape) >= 2:
            inter = interaction_r2(X, max_rank, n_shuffles=n_shuffles, seed=seed)
        else:
            notes["interaction"] = "the interaction needs at least 2 runs and 2 examples"
    except TooFewRunsError as exc:
        notes["permutation"] = notes["interaction"] = str(exc)
    category = None
    if categories is not None:
        category = category_share(X, categories, column=category_column, n_shuffles=n_shuffles, seed=seed)
    return MarginalReport(split=variance_split(X), permutation=permutation, interaction=inter,
                          seeds=interaction_seed_reliability(X, runs), category=category, notes=notes)


__all__ = [
    "CATEGORY_COLUMNS",
    "CategoryShare",
    "MarginalReport",
    "PermutationBaseline",
    "SeedReliability",
    "TooFewRunsError",
    "VarianceSplit",
    "category_share",
    "interaction",
    "interaction_r2",
    "interaction_seed_reliability",
    "marginal_analysis",
    "permutation_baseline",
    "shuffle_within_rows",
    "upstream_categories",
    "variance_split",
]
