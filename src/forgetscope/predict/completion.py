"""Complete one new forgetting row, by example id, from the known rows of a matrix.

Predicted replay needs the same three steps wherever it runs (forgetscope's own ``replay`` strategy and
:class:`forgetscope.integrations.ReplayCallback` in someone else's ``Trainer``): fit a predictor on the
known rows, pick the probe examples among the pool examples those rows cover, and turn the probe's
observed values into a value for every pool example. They live here once, so both choose the same
examples from the same inputs. The last step, a fitted predictor's row with the measured values kept on the
probe (:func:`complete_from_probe`), is also the one a forecast (:mod:`forgetscope.predict.forecast`) and the
probe mode of :class:`forgetscope.integrations.ForgettingCallback` use.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from forgetscope.errors import DataError
from forgetscope.store.matrix import ForgettingMatrix

#: The ``predictor`` of predicted replay that completes nothing: the probe's observed values weigh the
#: probe examples and every other pool example gets weight 0 (observation without prediction).
PROBE_ONLY = "probe-only"


def known_rows(matrix: ForgettingMatrix, *, drop_task: str | None = None, strategy: str | None = "plain",
               what: str = "replay predicted") -> tuple[np.ndarray, list[str]]:
    """The rows that may serve as known rows for a new task, and the ids of the columns they cover.

    When the matrix's runs table says, rows of ``drop_task`` (the new task itself), of strategies other
    than ``strategy`` (None: any) and of control runs (a format-only row is no task) are dropped; rows and
    columns with no finite value are dropped too."""
    keep = ~matrix.control_mask()
    runs = matrix.runs
    if runs is not None and len(runs) == matrix.shape[0]:
        if drop_task is not None and "task" in runs:
            keep &= (runs["task"].astype(str) != drop_task).to_numpy()
        if strategy and "strategy" in runs:
            keep &= (runs["strategy"].astype(str) == strategy).to_numpy()
    X = matrix.values[keep]
    X = X[np.isfinite(X).any(axis=1)] if X.size else X
    if X.shape[0] == 0:
        where = f" in {matrix.path}" if matrix.path is not None else ""
        left_out = [f"task {drop_task!r}"] if drop_task is not None else []
        left_out += [f"strategies other than {strategy!r}"] if strategy else []
        raise DataError(f"{what}: no known rows left{where}"
                        + (f" after leaving out {' and '.join(left_out)}" if left_out else ""))
    cols = np.isfinite(X).any(axis=0)
    return X[:, cols], [c for c, k in zip(matrix.col_names, cols) if k]


def fit_known(predictor: str, matrix: ForgettingMatrix, *, options: Mapping[str, Any] | None = None,
              drop_task: str | None = None, strategy: str | None = "plain", kind: str = "all",
              what: str = "replay predicted") -> tuple[Any, list[str], int]:
    """``(fitted predictor, its column ids, number of known rows)``: the predictor named ``predictor`` fitted
    on :func:`known_rows` (the columns of one ``kind`` of upstream example, or all), with the per-example
    features of those columns when it needs them."""
    from forgetscope.predict.registry import get_predictor

    matrix = matrix.select_kind(kind)
    X, cols = known_rows(matrix, drop_task=drop_task, strategy=strategy, what=what)
    fitted = get_predictor(predictor, **dict(options or {}))
    upstream = None
    if fitted.needs_upstream and matrix.upstream is not None:  # per-example features of those columns
        at = {c: j for j, c in enumerate(matrix.col_names)}
        upstream = matrix.upstream.iloc[[at[c] for c in cols]].reset_index(drop=True)
    return fitted.fit(X, upstream=upstream), cols, int(X.shape[0])


def probe_ids(pool_ids: Sequence[str], columns: Sequence[str], size: float, *, seed: int = 0,
              what: str = "replay predicted") -> list[str]:
    """The probe: ``size`` (a count, or a fraction) of the pool examples that are known columns, seeded,
    in pool order."""
    from forgetscope.predict.probe import choose_probe

    col_set = set(columns)
    candidates = [i for i in pool_ids if i in col_set]
    if not candidates:
        raise DataError(f"{what}: no pool example is a column of the known rows")
    return [candidates[k] for k in choose_probe(len(candidates), size, seed=seed)]


def fill_observed(row: np.ndarray, idx: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """A copy of the predicted ``row`` with the finite ``observed`` values written at the probe positions
    ``idx``: a measured value always wins over its prediction."""
    out = np.array(row, dtype=float, copy=True)
    idx = np.asarray(idx, dtype=np.intp)
    observed = np.asarray(observed, dtype=float)
    ok = np.isfinite(observed)
    out[idx[ok]] = observed[ok]
    return out


def complete_from_probe(predictor: Any, idx: np.ndarray, observed: np.ndarray, *,
                        predicted: np.ndarray | None = None, **predict_options: Any) -> np.ndarray:
    """The row a fitted ``predictor`` completes from the values ``observed`` at column positions ``idx``
    (``predict_options``, e.g. ``task_text``, go to its ``predict``), observed values kept on the probe
    (:func:`fill_observed`). The one completion rule of forecasts, the Trainer callback and predicted replay.
    ``predicted``: the row ``predictor.predict`` already returned for this probe (a forecast keeps the
    prediction on the probe for its interval), used instead of predicting again."""
    if predicted is None:
        predicted = predictor.predict(idx, observed, **predict_options)
    return fill_observed(predicted, idx, observed)


def complete_row(predictor: Any, columns: Sequence[str], observed: Mapping[str, float],
                 ids: Sequence[str]) -> np.ndarray:
    """A value for each of ``ids``: the observed value where there is one, else the predictor's completion
    of the row from the observed columns (:func:`complete_from_probe`); NaN off its columns. ``predictor``
    None completes nothing (only the observed values are known)."""
    if predictor is None:
        return np.array([observed.get(i, np.nan) for i in ids], dtype=float)
    col_index = {c: j for j, c in enumerate(columns)}
    seen = [i for i in observed if i in col_index]
    row = complete_from_probe(predictor, np.array([col_index[i] for i in seen], dtype=int),
                              np.array([observed[i] for i in seen], dtype=float))
    return np.array([observed.get(i, row[col_index[i]] if i in col_index else np.nan) for i in ids], dtype=float)


__all__ = ["PROBE_ONLY", "complete_from_probe", "complete_row", "fill_observed", "fit_known", "known_rows",
           "probe_ids"]
