"""The evaluation protocol for forgetting predictors: task-grouped splits, counted probes, repeated draws.

**Splits.** Rows are grouped by task (the runs table's ``task`` column; a matrix without one has one
group per row), and all rows of a task (its seeds, its strategies) are always on the same side:

* ``cv`` (default): scikit-learn ``GroupKFold`` over tasks (shuffled, seeded), ``n_folds`` folds, so every
  row is predicted once, from a model that saw no row of its task;
* ``fixed``: ``test_tasks=[...]`` are the test rows, every other task is known (the reference protocol's
  fixed split);
* ``groups``: out-of-domain, by the runs table's ``group`` column: train on the rows of ``train_group``,
  test on the rows of ``test_group`` (either may be left out: then it is every other row).

**Probes.** Sizes are counts (default 30; a value in (0, 1) is a fraction of N). Each of ``draws``
seeded draws (default 10) picks one random probe set per size, shared by every test row of every
split, as the reference protocol reveals the same columns to every test task of a seed (nested: a
bigger probe contains the smaller). ``active`` probes are the highest-leverage columns of each split's
known rows (draws differ only in how ties are broken).

**Scores.** Each predictor is fitted once per split on its known rows and completes every test row
from its probe values; a draw's score pools every test row's *unprobed* entries (RMSE and F1 over the
pooled entries, correlations and @k scores as means over rows). Tables give the mean and sd over
draws (``summarize``), every number also against the ``additive`` baseline of the same draw, beside the
trivial baselines (``column-mean``, ``probe-mean``, and for F1 ``all-forgotten``).
The pooled RMSE is dominated by the noisiest tasks; where tasks were run with several seeds, each task's
noise floor and every predictor's share of the gap additive → floor it closes are given per task and as a
median over the tasks above noise (:mod:`forgetscope.predict.noise`; ``CVResult.gap_closed``).
"Forgotten" for F1 and precision@k is ``F > τ``, a noise margin: by default (``tau=None``) the sd of
the differences between the rows of one task run with different seeds (:func:`noise_margin`), or
:data:`DEFAULT_TAU` nats when no task has several seeds. With ``binary=True`` the matrix is binary
forgetting (0/1, see :mod:`forgetscope.predict.binary`) and the scores are F1, precision, recall (of a
predicted value > 0.5) and AUC-ROC, pooled over the test entries.

    from forgetscope.predict import evaluate
    result = evaluate(matrix, ["additive", "knn", "lowrank"], probe=[30], draws=10)
    result.summary()      # mean and sd over draws per (predictor, probe size)
"""

from __future__ import annotations

import copy
import itertools
import json
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold

from forgetscope.errors import ConfigError, DataError
from forgetscope.predict.base import Predictor
from forgetscope.predict.conformal import (
    DEFAULT_INTERVAL,
    MIN_TASKS,
    Band,
    CoverageTally,
    calibrate,
    check_coverage,
    check_interval,
)
from forgetscope.predict.metrics import pool, precision_curve, row_stats, score_binary
from forgetscope.predict.noise import ABOVE_NOISE, SEED_INVARIANT, gap_closed, gap_summary, task_noise
from forgetscope.predict.probe import leverage_scores, probe_size, top_by_score
from forgetscope.predict.registry import get_predictor
from forgetscope.predict.semantic import TEXT_PREDICTORS, texts_from_matrix
from forgetscope.validation import check_matrix

BASELINE = "additive"
#: trivial baselines shown beside every predictor (``evaluate(baselines=True)``)
TRIVIAL = ("column-mean", "probe-mean")
ALL_FORGOTTEN = "all-forgotten"
DEFAULT_PROBES = (30,)
DEFAULT_DRAWS = 10
#: the noise margin (nats) used when the sweep has no task with several seeds
DEFAULT_TAU = 0.05
_COMPARED = ("pearson", "spearman", "f1")
_BINARY = ("f1", "precision", "recall", "auc", "forgotten_share")


@dataclass
class Split:
    """Known (``train``) and test row indices of one split."""

    train: np.ndarray
    test: np.ndarray
    label: str


@dataclass
class CVResult:
    """Per-draw metrics (``table``), precision/recall@k curves, a (true, predicted) sample, the protocol,
    per-task errors (``tasks``: one row per predictor, probe size and test task, its RMSE over the
    task's rows and every draw, with intervals also its ``coverage``), the independent units a comparison
    of predictors is tested over, and
    the noise floor of every task with several seeds (``noise``, :func:`~forgetscope.predict.noise.task_noise`)."""

    table: pd.DataFrame
    curves: pd.DataFrame
    scatter: pd.DataFrame
    protocol: dict[str, Any] = field(default_factory=dict)
    tasks: pd.DataFrame = field(default_factory=pd.DataFrame)
    noise: pd.DataFrame = field(default_factory=pd.DataFrame)

    def gap_closed(self) -> pd.DataFrame:
        """Per (probe size, predictor, task with a noise floor): RMSE, additive's, the floor, whether the task
        is above noise and the share of the gap additive → floor closed (:func:`~forgetscope.predict.noise.gap_closed`)."""
        return gap_closed(self.tasks, self.noise, baseline=BASELINE)

    def gap_summary(self) -> pd.DataFrame:
        """Per (probe size, predictor): the median share of the gap closed over the tasks above noise."""
        return gap_summary(self.gap_closed())

    def summary(self) -> pd.DataFrame:
        """Mean and sd over draws for every (predictor, probe size)."""
        return summarize(self.table)

    def task_tests(self, against: str = BASELINE, predictors: list[str] | None = None) -> pd.DataFrame:
        """Every predictor's per-task RMSE against ``against``'s, paired over test tasks (the independent
        units: a task's seeds share its data), per probe size: mean difference with a bootstrap 95 % CI,
        Wilcoxon and t-test p-values, Holm-adjusted over the predictors of each probe size. ``predictors``
        names the family tested (and adjusted over) when it is not every predictor evaluated."""
        from forgetscope.analysis.stats import holm, paired_run_test

        if not len(self.tasks) or against not in set(self.tasks["predictor"]):
            return pd.DataFrame()
        rows = []
        for size, at in self.tasks.groupby("probe_size", sort=True):
            base = at[at["predictor"] == against].set_index("task")["rmse"]
            tested = at[at["predictor"] != against]
            if predictors is not None:
                tested = tested[tested["predictor"].isin(predictors)]
            for label, group in tested.groupby("predictor", sort=False):
                mine = group.set_index("task")["rmse"]
                both = mine.index.intersection(base.index)
                r = paired_run_test(mine.loc[both].to_numpy(), base.loc[both].to_numpy())
                rows.append({"probe_size": size, "predictor": label, "method": group["method"].iloc[0],
                             "baseline": against, "n_tasks": r["n"], "rmse": r["mean_a"], "rmse_baseline": r["mean_b"],
                             "mean_diff": r["mean_diff"], "ci_low": r["ci_low"], "ci_high": r["ci_high"],
                             "tasks_better": int((mine.loc[both] < base.loc[both]).sum()),
                             "p_wilcoxon": r["p_wilcoxon"], "p_t": r["p_t"], "note": r["note"]})
        tests = pd.DataFrame(rows)
        for col in ("p_wilcoxon", "p_t"):
            tests[f"{col}_holm"] = np.nan
            for _, idx in tests.groupby("probe_size").groups.items():
                tests.loc[idx, f"{col}_holm"] = holm(tests.loc[idx, col].to_numpy())
        return tests

    def save(self, out_dir: str | Path, *, prefix: str = "predict",
             task_tests: pd.DataFrame | None = None) -> dict[str, Path]:
        """Write ``<prefix>_cv.csv``, ``_summary.csv``, ``_curves.csv``, ``_summary.json``, ``_protocol.json``,
        (when there are per-task errors) ``_tasks.csv`` and ``_task_tests.csv`` (:meth:`task_tests`) and (when
        tasks have noise floors) ``_noise.csv``, ``_gap_closed.csv``, ``_gap_summary.csv`` and ``.json``
        (the names: :class:`~forgetscope.store.layout.PredictLayout`)."""
        from forgetscope.store.io import write_csv, write_json
        from forgetscope.store.layout import PredictLayout

        files = PredictLayout(out_dir, prefix)
        files.root.mkdir(parents=True, exist_ok=True)
        paths = {"cv": files.cv, "summary": files.summary, "curves": files.curves, "json": files.summary_json,
                 "protocol": files.protocol}

        write_csv(paths["cv"], self.table)
        if len(self.tasks):
            paths["tasks"] = files.tasks
            write_csv(paths["tasks"], self.tasks)
            tests = self.task_tests() if task_tests is None else task_tests  # given: already computed
            if len(tests):
                paths["task_tests"] = files.task_tests
                write_csv(paths["task_tests"], tests)
        if len(self.noise):
            gaps = self.gap_closed()
            paths.update({"noise": files.noise, "gap_closed": files.gap_closed, "gap_summary": files.gap_summary,
                          "gap_json": files.gap_summary_json})
            write_csv(paths["noise"], self.noise)
            write_csv(paths["gap_closed"], gaps)
            gap_table = gap_summary(gaps)
            write_csv(paths["gap_summary"], gap_table)
            write_json(paths["gap_json"], json.loads(gap_table.to_json(orient="records")))
        summary = self.summary()
        write_csv(paths["summary"], summary)
        write_csv(paths["curves"], self.curves)
        write_json(paths["json"], json.loads(summary.to_json(orient="records")))
        write_json(paths["protocol"], json.loads(json.dumps(self.protocol, default=str)))
        return paths


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """Mean (``<metric>``) and sd (``<metric>_sd``) over draws, per (predictor, probe method, probe size)."""
    keys = [k for k in ("predictor", "method", "probe_method", "probe_size", "probe_frac") if k in table.columns]
    numeric = [c for c in table.columns if c not in keys and c != "draw"
               and pd.api.types.is_numeric_dtype(table[c])]
    grouped = table.groupby(keys, sort=False)[numeric]
    mean = grouped.mean()
    sd = grouped.std(ddof=1).add_suffix("_sd")
    out = pd.concat([mean, sd], axis=1).reset_index()
    out["draws"] = table.groupby(keys, sort=False)["draw"].nunique().to_numpy() if "draw" in table else 1
    return out


def row_groups(matrix: Any, m: int) -> np.ndarray:
    """The task of every row (runs table ``task``), else the row names: rows of a group leave together."""
    runs = getattr(matrix, "runs", None)
    if runs is not None and "task" in runs.columns and len(runs) == m:
        return runs["task"].astype(str).to_numpy()
    names = getattr(matrix, "row_names", None)
    return np.asarray([str(r) for r in names]) if names is not None and len(names) == m else \
        np.arange(m).astype(str)


def noise_margin(matrix: Any, *, default: float = DEFAULT_TAU) -> tuple[float, str]:
    """(τ, how it was obtained): the sd of ``F[a, j] − F[b, j]`` over pairs of rows a, b that differ only by seed.

    Two runs of one task that differ only in their seed give two measurements of the same forgetting;
    their differences show how far F moves by chance, so an example counts as forgotten only when
    ``F > τ``. Rows "differ only by seed" when they agree on every column of
    :data:`~forgetscope.predict.noise.SEED_INVARIANT` the runs table has. Without such pairs τ is ``default``.
    """
    X = np.asarray(getattr(matrix, "values", matrix), np.float64)
    runs = getattr(matrix, "runs", None)
    if runs is None or not {"task", "seed"} <= set(runs.columns) or len(runs) != X.shape[0]:
        return float(default), f"default {default:g} nats (no runs table with task and seed)"
    keys = [c for c in SEED_INVARIANT if c in runs.columns]
    seeds = runs["seed"].to_numpy()
    diffs, pairs = [], 0
    for idx in runs.groupby(keys, dropna=False, sort=False).indices.values():
        for a, b in itertools.combinations(idx, 2):
            if seeds[a] == seeds[b]:
                continue
            d = X[a] - X[b]
            diffs.append(d[np.isfinite(d)])
            pairs += 1
    d = np.concatenate(diffs) if diffs else np.zeros(0)
    if d.size < 2:
        return float(default), f"default {default:g} nats (no task was run with several seeds)"
    return float(np.std(d, ddof=1)), f"sd of seed-to-seed differences ({pairs} pairs of rows, {d.size} entries)"


def make_splits(matrix: Any, m: int, *, n_folds: int = 5, seed: int = 0, test_tasks: Sequence[str] | None = None,
                train_group: str | None = None, test_group: str | None = None) -> tuple[list[Split], str]:
    """The splits of the protocol (see the module docstring) and a one-line description of them."""
    groups = row_groups(matrix, m)
    if test_tasks is not None and (train_group is not None or test_group is not None):
        raise ConfigError("give test tasks or train/test groups, not both")
    if test_tasks is not None:
        wanted = [str(t) for t in test_tasks]
        if not wanted:
            raise DataError("no test tasks given")
        known_tasks = list(dict.fromkeys(groups))
        missing = [t for t in wanted if t not in set(known_tasks)]
        if missing:
            raise DataError(f"test task {missing[0]!r} is not in the sweep; its tasks: {', '.join(known_tasks)}")
        test = np.flatnonzero(np.isin(groups, wanted))
        train = np.flatnonzero(~np.isin(groups, wanted))
        if train.size == 0:
            raise DataError("the test tasks are every task of the sweep: no known rows are left to fit on")
        return [Split(train, test, "fixed")], f"fixed split: test tasks {', '.join(wanted)} ({test.size} rows)"
    if train_group is not None or test_group is not None:
        runs = getattr(matrix, "runs", None)
        if runs is None or "group" not in runs.columns or len(runs) != m:
            raise DataError("out-of-domain splits need a 'group' column in the runs table")
        labels = runs["group"].astype(str).to_numpy()
        names = list(dict.fromkeys(labels))
        for g in (train_group, test_group):
            if g is not None and g not in set(names):
                raise DataError(f"group {g!r} has no rows; the runs table's groups: {', '.join(names)}")
        if train_group is not None and train_group == test_group:
            raise ConfigError(f"train and test group are both {train_group!r}")
        test = np.flatnonzero(labels == test_group) if test_group is not None else \
            np.flatnonzero(labels != train_group)
        train = np.flatnonzero(labels == train_group) if train_group is not None else \
            np.flatnonzero(labels != test_group)
        if train.size == 0 or test.size == 0:
            raise DataError(f"group split leaves {train.size} known and {test.size} test rows")
        if set(groups[train]) & set(groups[test]):
            raise DataError(f"tasks {sorted(set(groups[train]) & set(groups[test]))} are in both the train and "
                            "the test group")
        desc = f"out-of-domain: train {train_group or 'other groups'} ({train.size} rows) → " \
               f"test {test_group or 'other groups'} ({test.size} rows)"
        return [Split(train, test, "groups")], desc
    if int(n_folds) < 2:
        raise ConfigError(f"n_folds must be >= 2, got {n_folds}")
    n_groups = np.unique(groups).size
    if n_groups < 2:
        raise DataError(f"task-grouped cross-validation needs at least 2 tasks, got {n_groups} "
                        f"({groups[0]!r})")
    k = min(int(n_folds), n_groups)
    folds = GroupKFold(n_splits=k, shuffle=True, random_state=seed)
    splits = [Split(tr, te, f"fold {i}") for i, (tr, te) in enumerate(folds.split(np.zeros(m), groups=groups))]
    return splits, f"{k}-fold task-grouped cross-validation ({n_groups} tasks, {m} rows)"


def evaluate(matrix: Any, predictors: Sequence[str | Predictor] | Mapping[str, str | Predictor] = (
        "additive", "knn", "lowrank"), *, probe: float | Sequence[float | int] = DEFAULT_PROBES,
        n_folds: int = 5, draws: int = DEFAULT_DRAWS, seed: int = 0, probe_method: str = "random",
        tau: float | None = None, binary: bool = False, test_tasks: Sequence[str] | None = None,
        train_group: str | None = None, test_group: str | None = None, ks: Sequence[int] = (10, 100),
        params: Mapping[str, Mapping[str, Any]] | None = None, task_texts: Sequence[str] | None = None,
        example_texts: Sequence[str] | None = None, active_rank: int = 5,
        scatter_points: int = 2000, baselines: bool = True, coverage: float | None = 0.9,
        interval: str = DEFAULT_INTERVAL, upstream: pd.DataFrame | None = None,
        noise_floor: bool | None = None) -> CVResult:
    """Evaluate ``predictors`` on ``matrix`` (array or ``ForgettingMatrix``) under the protocol of the module doc.

    ``baselines`` (default) adds the trivial baselines beside the predictors, so every score can be read
    against what no model at all achieves: ``column-mean`` and ``probe-mean`` (:mod:`forgetscope.predict.additive`)
    and, for F1, ``all-forgotten`` (every unprobed entry predicted forgotten: F1 = 2s / (1 + s) for a share s
    of forgotten entries; no other score).

    ``coverage`` (default 0.9; None: off) scores the forecast's split-conformal intervals
    (:mod:`forgetscope.predict.conformal`) the way a forecast makes them: within each split, each known
    task is left out in turn and completed from its probe values by a fit on the other known tasks, and
    the ⌈(n + 1)·c⌉-th of those residuals (``interval``: ``normalized``, divided by each row's probe-residual
    RMS, or ``absolute``) gives each test row's half-width. ``coverage`` in the table is the share of the
    test rows' unprobed entries inside — marginal, pooled over tasks — and ``coverage_task_min``,
    ``coverage_task_p10``, ``coverage_tasks_below`` summarise the coverage of each test task
    (:func:`~forgetscope.predict.conformal.task_coverage`); ``interval_width`` is the mean full width.
    Splits with fewer than 3 known tasks have no interval (NaN).

    ``upstream`` (default: the matrix's own upstream table) goes to every ``fit``; predictors with example
    features read it. ``noise_floor``: None computes each task's noise floor where tasks have several
    seeds, True requires it (a DataError without 2 seeds of some task), False skips it.
    """
    X = check_matrix(matrix, what="forgetting matrix", dtype=None)
    m, n = X.shape
    _check_options(m, draws=draws, probe_method=probe_method, tau=tau, interval=interval, coverage=coverage,
                   binary=binary, noise_floor=noise_floor)
    noise = task_noise(matrix, required=bool(noise_floor)) if noise_floor is not False and not binary \
        else pd.DataFrame()
    upstream = upstream if upstream is not None else getattr(matrix, "upstream", None)
    if upstream is not None and len(upstream) != n:
        raise DataError(f"the upstream table has {len(upstream)} rows for {n} columns")
    named = _named_predictors(predictors, params or {})
    lacking = [label for label, p in named.items() if p.needs_upstream and upstream is None]
    if lacking:
        raise DataError(f"predictor {lacking[0]!r} needs the upstream table (example features): evaluate a "
                        "sweep directory, or pass upstream=")
    if baselines and not binary:
        named.update({b: get_predictor(b) for b in TRIVIAL if b not in named})
    sizes = _probe_sizes(probe, n)
    splits, description = make_splits(matrix, m, n_folds=n_folds, seed=seed, test_tasks=test_tasks,
                                      train_group=train_group, test_group=test_group)
    groups = row_groups(matrix, m)
    if binary:
        threshold, tau_source = 0.5, "binary: forgotten = 1, predicted forgotten = value > 0.5"
    elif tau is None:
        threshold, tau_source = noise_margin(matrix)
    else:
        threshold, tau_source = float(tau), "given"
    if set(TEXT_PREDICTORS) & {type(p).name for p in named.values()} and (task_texts is None or example_texts is None):
        found_tasks, found_examples = texts_from_matrix(matrix)
        task_texts = task_texts if task_texts is not None else found_tasks
        example_texts = example_texts if example_texts is not None else found_examples
    random_probes = {d: np.random.default_rng([seed, d]).permutation(n) for d in range(int(draws))}
    tally = _Tally(n=n, threshold=threshold, ks=tuple(ks), binary=binary,
                   curve_ks=np.unique(np.geomspace(1, max(1, n - sizes[-1]), num=40).astype(int)),
                   scatter_per_split=max(1, scatter_points // len(splits)), rng=np.random.default_rng(seed))
    for split in splits:
        known, held = X[split.train], X[split.test]
        lev = leverage_scores(known, active_rank, seed=seed) if probe_method == "active" and known.shape[0] >= 2 \
            else np.zeros(n)
        probes = {(d, s): (np.sort(random_probes[d][:s]) if probe_method == "random"
                           else top_by_score(lev, s, seed=seed + d)) for d in range(int(draws)) for s in sizes}
        for label, predictor in named.items():
            t0 = time.perf_counter()
            predictor.fit(known, task_texts=_subset(task_texts, split.train), example_texts=example_texts,
                          groups=groups[split.train], upstream=upstream)
            tally.fit_s[label] += time.perf_counter() - t0
            prob = binary or predictor.output == "probability"
            calibration = [] if coverage is None or prob else _leave_task_out_fits(
                predictor, known, groups[split.train], _subset(task_texts, split.train), example_texts, upstream)
            for (d, size), idx in probes.items():
                t0 = time.perf_counter()
                pred = predictor.predict_rows(idx, held[:, idx], task_texts=_subset(task_texts, split.test))
                tally.predict_s[(d, size, label)] += time.perf_counter() - t0
                truth = held.astype(np.float64)
                truth[:, idx] = np.nan  # score only what was predicted, not what was observed
                halfwidth = (_conformal_band(calibration, known, idx, coverage, interval)
                             .halfwidth(held[:, idx], pred[:, idx]) if calibration else None)
                tally.add((d, size, label), truth, pred, groups[split.test], probability=prob,
                          halfwidth=halfwidth)
    display = {label: type(p).display_name() if type(p).name == label else label for label, p in named.items()}
    rows = tally.rows(named, display, coverage=coverage, probe_method=probe_method, splits=splits)
    if baselines and not binary:
        rows += [_all_forgotten(r) for r in rows if r["predictor"] == BASELINE]
    table = _against_baseline(pd.DataFrame(rows), ks, binary)
    protocol = {"splits": description, "n_splits": len(splits), "draws": int(draws), "probe_method": probe_method,
                "probe_sizes": sizes, "n_examples": n, "n_rows": m, "tau": threshold, "tau_source": tau_source,
                "binary": bool(binary), "seed": seed, "coverage": coverage,
                "interval": interval if coverage is not None else None,
                "test_rows": sorted({str(groups[i]) for s in splits for i in s.test}),
                "noise_floor": ("per task with several seeds: sqrt of the pooled within-task variance over "
                                f"entries ({len(noise)} tasks); above noise = additive RMSE > {ABOVE_NOISE:g} × floor"
                                if len(noise) else "none (no task with several seeds)"),
                "pooled_rmse": "pooled over every test entry: dominated by the noisiest tasks"}
    tasks = _task_errors({k: v for k, v in tally.errors.items()
                          if not binary and named[k[1]].output != "probability"}, display)  # no RMSE of a probability
    if tally.covered and len(tasks):  # each test task's interval coverage over its rows and every draw
        tasks = tasks.merge(_task_coverage(tally.covered), on=["predictor", "probe_size", "task"], how="left")
    return CVResult(table, tally.curves(), pd.concat(tally.scatter, ignore_index=True), protocol, tasks, noise)


def _check_options(m: int, *, draws: int, probe_method: str, tau: float | None, interval: str,
                   coverage: float | None, binary: bool, noise_floor: bool | None) -> None:
    """:func:`evaluate`'s settings, checked before any fit."""
    if m < 2:
        raise DataError(f"leave-tasks-out evaluation needs at least 2 rows, got {m}")
    if int(draws) < 1:
        raise ConfigError(f"draws must be >= 1, got {draws}")
    if probe_method not in ("random", "active"):
        raise ConfigError(f"unknown probe method {probe_method!r}; choose random or active")
    if tau is not None and not (np.isfinite(tau) and tau >= 0):
        raise ConfigError(f"tau must be a finite margin >= 0, got {tau}")
    check_interval(interval)
    if coverage is not None:
        check_coverage(coverage)
    if binary and noise_floor:
        raise ConfigError("the noise floor is defined for forgetting values, not binary forgetting")


def _probe_sizes(probe: float | Sequence[float | int], n: int) -> list[int]:
    """The distinct probe sizes (counts of examples) of ``probe``, each leaving an example to predict."""
    probes_in = list(probe) if isinstance(probe, (Sequence, np.ndarray)) else [probe]
    if not probes_in:
        raise DataError("no probe sizes given")
    sizes = sorted({probe_size(p, n) for p in probes_in})
    if sizes[-1] >= n:
        raise DataError(f"probe set of {sizes[-1]} examples leaves none of the {n} examples to predict")
    return sizes


@dataclass
class _Tally:
    """What :func:`evaluate` accumulates over splits, keyed by (draw, probe size, predictor): each test row's
    statistics, binary pairs, precision/recall sums per (size, predictor), timings, interval coverage,
    per-task squared errors, and a sample of (true, predicted) pairs from the first draw."""

    n: int
    threshold: float
    ks: tuple[int, ...]
    binary: bool
    curve_ks: np.ndarray
    scatter_per_split: int
    rng: np.random.Generator
    stats: dict[tuple[int, int, str], list[pd.DataFrame]] = field(default_factory=lambda: defaultdict(list))
    pooled: dict[tuple[int, int, str], list[tuple[np.ndarray, np.ndarray]]] = field(
        default_factory=lambda: defaultdict(list))
    curve_sums: dict[tuple[int, str], np.ndarray] = field(default_factory=dict)
    fit_s: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    predict_s: dict[tuple[int, int, str], float] = field(default_factory=lambda: defaultdict(float))
    covered: dict[tuple[int, int, str], CoverageTally] = field(default_factory=lambda: defaultdict(CoverageTally))
    errors: dict[tuple[int, str], list[pd.DataFrame]] = field(default_factory=lambda: defaultdict(list))
    scatter: list[pd.DataFrame] = field(default_factory=list)

    def add(self, key: tuple[int, int, str], truth: np.ndarray, pred: np.ndarray, tasks: np.ndarray, *,
            probability: bool, halfwidth: np.ndarray | None) -> None:
        """One split's test rows of one (draw, size, predictor); ``truth`` is NaN on the probe."""
        d, size, label = key
        rs = row_stats(truth, pred, threshold=self.threshold, ks=self.ks, probability=probability)
        self.stats[key].append(rs)
        self.errors[(size, label)].append(pd.DataFrame({"task": tasks, "n": rs["n"], "sse": rs["sse"]}))
        if halfwidth is not None:
            self.covered[key].add(truth, pred, halfwidth, tasks)
        if self.binary:
            ok = np.isfinite(truth)
            self.pooled[key].append((truth[ok], pred[ok]))
        sums = np.stack(precision_curve(truth, pred, self.curve_ks, self.threshold, sums=True))
        self.curve_sums[(size, label)] = self.curve_sums.get((size, label), 0) + sums
        if d == 0:
            self.scatter.append(_sample_pairs(truth, pred, label, size, self.n, self.scatter_per_split, self.rng))

    def rows(self, named: Mapping[str, Predictor], display: Mapping[str, str], *, coverage: float | None,
             probe_method: str, splits: Sequence[Split]) -> list[dict[str, Any]]:
        """One row of pooled metrics per (draw, size, predictor)."""
        rows = []
        for (d, size, label), parts in self.stats.items():
            prob = self.binary or named[label].output == "probability"
            metrics = pool(pd.concat(parts, ignore_index=True), ks=self.ks, probability=prob)
            if self.binary:
                t = np.concatenate([a for a, _ in self.pooled[(d, size, label)]])
                p = np.concatenate([b for _, b in self.pooled[(d, size, label)]])
                metrics = {**score_binary(t, p), "spearman": metrics["spearman"],
                           **{k: v for k, v in metrics.items() if "@" in k}}
            if coverage is not None and not prob:  # pooled (marginal) coverage and its per-task summary
                metrics.update((self.covered.get((d, size, label)) or CoverageTally()).metrics(coverage))
            rows.append({"draw": d, "predictor": label, "method": display[label], "probe_method": probe_method,
                         "probe_size": size, "probe_frac": size / self.n, "inference_skipped": 1 - size / self.n,
                         "n_splits": len(splits), "n_train": float(np.mean([s.train.size for s in splits])),
                         "n_test": int(sum(s.test.size for s in splits)), "tau": self.threshold,
                         "fit_s": self.fit_s[label], "predict_s": self.predict_s[(d, size, label)], **metrics})
        return rows

    def curves(self) -> pd.DataFrame:
        """Precision and recall at each k, per (size, predictor), over every split and draw."""
        curves = []
        for (size, label), (ps, pn, rs, rn) in self.curve_sums.items():
            with np.errstate(invalid="ignore", divide="ignore"):
                curves.append(pd.DataFrame({"predictor": label, "probe_size": size, "probe_frac": size / self.n,
                                            "k": self.curve_ks, "precision": ps / pn, "recall": rs / rn}))
        return pd.concat(curves, ignore_index=True)


def _task_errors(errors: Mapping[tuple[int, str], list[pd.DataFrame]], display: Mapping[str, str]) -> pd.DataFrame:
    """Per (probe size, predictor, test task): RMSE pooled over the task's rows and every draw."""
    if not errors:
        return pd.DataFrame()
    out = []
    for (size, label), parts in errors.items():
        g = pd.concat(parts, ignore_index=True).groupby("task", sort=True)[["n", "sse"]].sum()
        with np.errstate(invalid="ignore", divide="ignore"):
            rmse = np.sqrt(g["sse"] / g["n"])
        out.append(pd.DataFrame({"predictor": label, "method": display[label], "probe_size": size,
                                 "task": g.index.astype(str), "n_entries": g["n"].to_numpy(),
                                 "rmse": rmse.to_numpy()}))
    return pd.concat(out, ignore_index=True)


def _task_coverage(covered: Mapping[tuple[int, int, str], CoverageTally]) -> pd.DataFrame:
    """Per (predictor, probe size, test task): the share of its unprobed entries inside the interval, every draw."""
    sums: dict[tuple[str, int, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for (_, size, label), tally in covered.items():
        for task, total in tally.total.items():
            sums[(label, size, task)][0] += tally.inside[task]
            sums[(label, size, task)][1] += total
    return pd.DataFrame([{"predictor": label, "probe_size": size, "task": task, "coverage": k / total}
                         for (label, size, task), (k, total) in sums.items() if total])


def _leave_task_out_fits(predictor: Predictor, known: np.ndarray, groups: np.ndarray,
                         task_texts: Sequence[str] | None, example_texts: Sequence[str] | None,
                         upstream: pd.DataFrame | None = None) -> list:
    """(rows of one known task, the predictor refitted without them) for every known task; empty when
    there are fewer than :data:`~forgetscope.predict.conformal.MIN_TASKS` tasks to calibrate on."""
    names = np.unique(groups)
    if names.size < MIN_TASKS:
        return []
    out = []
    chosen = getattr(predictor, "chosen_params_", {})  # settings tuned on the split: not re-tuned per task
    for g in names:
        held = groups == g
        p = copy.deepcopy(predictor)
        for key, value in chosen.items():
            setattr(p, key, value)
        p.fit(known[~held], task_texts=_subset(task_texts, np.flatnonzero(~held)), example_texts=example_texts,
              groups=groups[~held], upstream=upstream)
        out.append((held, p, _subset(task_texts, np.flatnonzero(held))))
    return out


def _conformal_band(calibration: list, known: np.ndarray, idx: np.ndarray, coverage: float, interval: str) -> Band:
    """The split-conformal band for the probe ``idx``, from each left-out known task's completion."""
    held_out = []
    for held, p, texts in calibration:
        rows = known[held].astype(np.float64)
        held_out.append((rows, p.predict_rows(idx, rows[:, idx], task_texts=texts)))
    return calibrate(held_out, idx, coverage, interval)


def prediction_matrix(matrix: Any, *, kind: str | None = None, binary: bool = False) -> Any:
    """The matrix a prediction protocol runs on: the columns of one example ``kind`` (``lm`` or
    ``instruction``; None = every column) and, with ``binary``, binary forgetting restricted to the
    examples the base model answered exactly (rows that measured none of them are dropped)."""
    from forgetscope.predict.binary import binary_forgetting, scored_columns
    from forgetscope.predict.kinds import check_kind, select_kind, subset_rows
    from forgetscope.store import ForgettingMatrix

    if kind is not None:
        check_kind(kind)
    if not isinstance(matrix, ForgettingMatrix):
        if kind is not None or binary:
            raise DataError("example kinds and binary forgetting need a sweep directory (its upstream tables)")
        return matrix
    if binary:
        matrix = scored_columns(binary_forgetting(matrix if kind is None else select_kind(matrix, kind)))
        keep = np.flatnonzero(np.isfinite(matrix.values).any(1))
        return subset_rows(matrix, keep) if keep.size < matrix.shape[0] else matrix
    return matrix if kind is None else select_kind(matrix, kind)


def cross_validate(matrix: Any, predictors: Sequence[str | Predictor] | Mapping[str, str | Predictor] = (
        "additive", "knn", "lowrank"), **kwargs: Any) -> pd.DataFrame:
    """The tidy per-draw metrics table of :func:`evaluate` (one row per draw × probe size × predictor)."""
    return evaluate(matrix, predictors, **kwargs).table


def _named_predictors(predictors: Sequence[str | Predictor] | Mapping[str, str | Predictor],
                      params: Mapping[str, Mapping[str, Any]]) -> dict[str, Predictor]:
    items = list(predictors.items()) if isinstance(predictors, Mapping) else [
        (p if isinstance(p, str) else p.name, p) for p in predictors]
    if isinstance(predictors, str):
        items = [(predictors, predictors)]
    out: dict[str, Predictor] = {}
    for label, p in items:
        if label in out:
            raise ConfigError(f"predictor {label!r} listed twice; pass a dict to give them distinct labels")
        out[label] = get_predictor(p, **params.get(p, {})) if isinstance(p, str) else p
    if not out:
        raise ConfigError("no predictors to evaluate")
    if BASELINE not in out:
        out = {BASELINE: get_predictor(BASELINE), **out}
    return out


def _all_forgotten(row: dict[str, Any]) -> dict[str, Any]:
    """The "everything forgotten" row of one draw and probe size, from the share of forgotten entries."""
    share = row["forgotten_share"]
    scores = {k: np.nan for k, v in row.items() if isinstance(v, float) and k not in (
        "probe_frac", "inference_skipped", "n_train", "tau", "forgotten_share")}
    return {**row, **scores, "predictor": ALL_FORGOTTEN, "method": ALL_FORGOTTEN, "fit_s": 0.0,
            "predict_s": 0.0, "f1": 2 * share / (1 + share) if share > 0 else 0.0, "precision": share,
            "recall": 1.0 if share > 0 else 0.0}


def _subset(texts: Sequence[str] | None, idx: np.ndarray) -> list[str] | None:
    return None if texts is None else [texts[i] for i in idx]


def _sample_pairs(truth: np.ndarray, pred: np.ndarray, label: str, size: int, n: int, k: int,
                  rng: np.random.Generator) -> pd.DataFrame:
    r, c = np.nonzero(np.isfinite(truth))
    pick = rng.choice(r.size, min(k, r.size), replace=False)
    return pd.DataFrame({"predictor": label, "probe_size": size, "probe_frac": size / n,
                         "true": truth[r[pick], c[pick]], "pred": pred[r[pick], c[pick]]})


def _against_baseline(table: pd.DataFrame, ks: Sequence[int], binary: bool) -> pd.DataFrame:
    """Add ``rmse_ratio_vs_additive`` and ``delta_<metric>_vs_additive`` (same draw and probe size)."""
    compared = list(_BINARY[:4]) if binary else [*_COMPARED, *(f"precision@{k}" for k in ks),
                                                 *(f"recall@{k}" for k in ks)]
    keys = ["draw", "probe_size"]
    ref = ["rmse", *compared] if not binary else compared
    base = table.loc[table["predictor"] == BASELINE, [*keys, *ref]]
    joined = table.merge(base.rename(columns={c: f"{c}_base" for c in ref}), on=keys, how="left")
    table = table.copy()
    if not binary:
        with np.errstate(invalid="ignore", divide="ignore"):
            table["rmse_ratio_vs_additive"] = joined["rmse"].to_numpy() / joined["rmse_base"].to_numpy()
    for col in compared:
        table[f"delta_{col}_vs_additive"] = joined[col].to_numpy() - joined[f"{col}_base"].to_numpy()
    return table
