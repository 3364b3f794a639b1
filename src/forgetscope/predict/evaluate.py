"""Leave-tasks-out cross-validation of forgetting predictors.

Rows (tasks) are split into k seeded folds. For every fold each predictor is fitted once on the
training rows; then for every probe size the held-out rows are "observed" on a probe set (random or
active, chosen from the training rows only) and the rest of each row is predicted and scored on the
entries that were not probed. Every number is also reported against the ``additive`` baseline of the
same fold and probe size (always run), next to the share of upstream inference skipped.

    from forgetscope.predict import cross_validate
    table = cross_validate(F, ["additive", "knn", "lowrank"], probe=[0.01, 0.05, 0.2], n_folds=5)

:func:`evaluate` returns a :class:`CVResult` with the same table plus precision@k curves and a
sample of (true, predicted) pairs for figures; :meth:`CVResult.save` writes CSV/JSON.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import KFold

from forgetscope.errors import ConfigError, DataError
from forgetscope.predict.base import Predictor
from forgetscope.predict.metrics import precision_curve, score_rows
from forgetscope.predict.probe import leverage_scores, probe_size, top_by_score
from forgetscope.predict.registry import get_predictor
from forgetscope.predict.semantic import texts_from_matrix
from forgetscope.validation import check_matrix

BASELINE = "additive"
DEFAULT_PROBES = (0.01, 0.02, 0.05, 0.1, 0.2)
_COMPARED = ("pearson", "spearman", "f1")


@dataclass
class CVResult:
    """Per-fold metrics (``table``), precision/recall@k curves and a (true, predicted) sample."""

    table: pd.DataFrame
    curves: pd.DataFrame
    scatter: pd.DataFrame

    def summary(self) -> pd.DataFrame:
        """Mean over folds for every (predictor, probe size)."""
        return summarize(self.table)

    def save(self, out_dir: str | Path, *, prefix: str = "predict") -> dict[str, Path]:
        """Write ``<prefix>_cv.csv``, ``_summary.csv``, ``_curves.csv`` and ``_summary.json``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"cv": out / f"{prefix}_cv.csv", "summary": out / f"{prefix}_summary.csv",
                 "curves": out / f"{prefix}_curves.csv", "json": out / f"{prefix}_summary.json"}
        self.table.to_csv(paths["cv"], index=False)
        summary = self.summary()
        summary.to_csv(paths["summary"], index=False)
        self.curves.to_csv(paths["curves"], index=False)
        paths["json"].write_text(json.dumps(json.loads(summary.to_json(orient="records")), indent=2))
        return paths


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """Mean over folds of every numeric column, per (predictor, probe_size)."""
    keys = ["predictor", "probe_method", "probe_size", "probe_frac"]
    numeric = [c for c in table.columns if c not in keys and c != "fold"
               and pd.api.types.is_numeric_dtype(table[c])]
    return table.groupby(keys, sort=False)[numeric].mean().reset_index()


def evaluate(matrix: Any, predictors: Sequence[str | Predictor] | Mapping[str, str | Predictor] = (
        "additive", "knn", "lowrank"), *, probe: float | Sequence[float | int] = DEFAULT_PROBES,
        n_folds: int = 5, seed: int = 0, probe_method: str = "random", threshold: float = 0.0,
        ks: Sequence[int] = (10, 100), params: Mapping[str, Mapping[str, Any]] | None = None,
        task_texts: Sequence[str] | None = None, example_texts: Sequence[str] | None = None,
        active_rank: int = 5, scatter_points: int = 2000) -> CVResult:
    """Cross-validate ``predictors`` on ``matrix`` (array or ``ForgettingMatrix``); see module doc."""
    X = check_matrix(matrix, what="forgetting matrix", dtype=None)
    m, n = X.shape
    if m < 2:
        raise DataError(f"leave-tasks-out cross-validation needs at least 2 rows, got {m}")
    if int(n_folds) < 2:
        raise ConfigError(f"n_folds must be >= 2, got {n_folds}")
    if probe_method not in ("random", "active"):
        raise ConfigError(f"unknown probe method {probe_method!r}; choose random or active")
    named = _named_predictors(predictors, params or {})
    probes_in = list(probe) if isinstance(probe, (Sequence, np.ndarray)) else [probe]
    if not probes_in:
        raise DataError("no probe sizes given")
    sizes = sorted({probe_size(p, n) for p in probes_in})
    if sizes[-1] >= n:
        raise DataError(f"probe set of {sizes[-1]} examples leaves none of the {n} examples to predict")
    if "semantic" in {type(p).name for p in named.values()} and (task_texts is None or example_texts is None):
        found_tasks, found_examples = texts_from_matrix(matrix)
        task_texts = task_texts if task_texts is not None else found_tasks
        example_texts = example_texts if example_texts is not None else found_examples
    kf = KFold(n_splits=min(int(n_folds), m), shuffle=True, random_state=seed)
    rng = np.random.default_rng(seed)
    curve_ks = np.unique(np.geomspace(1, max(1, n - sizes[-1]), num=40).astype(int))
    rows, curves, scatter = [], [], []
    for fold, (train, test) in enumerate(kf.split(np.arange(m))):
        known, held = X[train], X[test]
        probes = _fold_probes(known, sizes, probe_method, seed + fold, active_rank)
        for label, predictor in named.items():
            t0 = time.perf_counter()
            predictor.fit(known, task_texts=_subset(task_texts, train), example_texts=example_texts)
            fit_s = time.perf_counter() - t0
            prob = predictor.output == "probability"
            for size, idx in probes.items():
                t0 = time.perf_counter()
                pred = predictor.predict_rows(idx, held[:, idx], task_texts=_subset(task_texts, test))
                predict_s = time.perf_counter() - t0
                truth = held.astype(np.float64)
                truth[:, idx] = np.nan  # score only what was predicted, not what was observed
                rows.append({"fold": fold, "predictor": label, "probe_method": probe_method,
                             "probe_size": size, "probe_frac": size / n, "inference_skipped": 1 - size / n,
                             "n_train": len(train), "n_test": len(test), "fit_s": fit_s,
                             "predict_s": predict_s,
                             **score_rows(truth, pred, threshold=threshold, ks=tuple(ks), probability=prob)})
                prec, rec = precision_curve(truth, pred, curve_ks, threshold)
                curves.append(pd.DataFrame({"fold": fold, "predictor": label, "probe_size": size,
                                            "probe_frac": size / n, "k": curve_ks, "precision": prec,
                                            "recall": rec}))
                scatter.append(_sample_pairs(truth, pred, label, size / n,
                                             max(1, scatter_points // kf.get_n_splits()), rng))
    table = _against_baseline(pd.DataFrame(rows), ks)
    curve_df = (pd.concat(curves).groupby(["predictor", "probe_size", "probe_frac", "k"], sort=False)
                [["precision", "recall"]].mean().reset_index())
    return CVResult(table, curve_df, pd.concat(scatter, ignore_index=True))


def cross_validate(matrix: Any, predictors: Sequence[str | Predictor] | Mapping[str, str | Predictor] = (
        "additive", "knn", "lowrank"), **kwargs: Any) -> pd.DataFrame:
    """The tidy per-fold metrics table of :func:`evaluate` (one row per fold × probe size × predictor)."""
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


def _fold_probes(known: np.ndarray, sizes: list[int], method: str, seed: int, rank: int
                 ) -> dict[int, np.ndarray]:
    n = known.shape[1]
    if method == "active":
        lev = leverage_scores(known, rank, seed=seed) if known.shape[0] >= 2 else np.zeros(n)
        return {s: top_by_score(lev, s, seed=seed) for s in sizes}
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)  # nested random probe sets: a bigger probe contains the smaller
    return {s: np.sort(order[:s]) for s in sizes}


def _subset(texts: Sequence[str] | None, idx: np.ndarray) -> list[str] | None:
    return None if texts is None else [texts[i] for i in idx]


def _sample_pairs(truth: np.ndarray, pred: np.ndarray, label: str, frac: float, k: int,
                  rng: np.random.Generator) -> pd.DataFrame:
    r, c = np.nonzero(np.isfinite(truth))
    pick = rng.choice(r.size, min(k, r.size), replace=False)
    return pd.DataFrame({"predictor": label, "probe_frac": frac, "true": truth[r[pick], c[pick]],
                         "pred": pred[r[pick], c[pick]]})


def _against_baseline(table: pd.DataFrame, ks: Sequence[int]) -> pd.DataFrame:
    """Add ``rmse_ratio_vs_additive`` and ``delta_<metric>_vs_additive`` (same fold and probe size)."""
    compared = [*_COMPARED, *(f"precision@{k}" for k in ks), *(f"recall@{k}" for k in ks)]
    keys = ["fold", "probe_size"]
    base = table.loc[table["predictor"] == BASELINE, [*keys, "rmse", *compared]]
    joined = table.merge(base.rename(columns={c: f"{c}_base" for c in ["rmse", *compared]}), on=keys,
                         how="left")
    table = table.copy()
    table["rmse_ratio_vs_additive"] = joined["rmse"] / joined["rmse_base"]
    for col in compared:
        table[f"delta_{col}_vs_additive"] = joined[col] - joined[f"{col}_base"]
    return table
