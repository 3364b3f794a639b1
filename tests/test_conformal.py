"""Forecast intervals: split-conformal over held-out known tasks covers what it says."""

import numpy as np
import pytest

from forgetscope.errors import ConfigError, DataError
from forgetscope.predict import get_predictor
from forgetscope.predict.conformal import check_coverage, conformal_quantile, task_out_scores


def planted(m=80, n=200, rank=2, noise=0.15, seed=0):
    rng = np.random.default_rng(seed)
    return 0.2 + rng.normal(size=(m, rank)) @ rng.normal(size=(rank, n)) * 0.3 + noise * rng.normal(size=(m, n))


def _fit_predict(name):
    def fit_predict(rows, groups, idx, values, _held):
        return get_predictor(name).fit(rows).predict_rows(idx, values)
    return fit_predict


@pytest.mark.parametrize("name", ["additive", "knn"])
@pytest.mark.parametrize("coverage", [0.8, 0.9])
def test_conformal_interval_covers_new_tasks_at_the_nominal_rate(name, coverage):
    X = planted()
    known, new = X[:50], X[50:]
    groups = np.arange(50).astype(str)
    idx = np.random.default_rng(1).choice(X.shape[1], 30, replace=False)
    q = conformal_quantile(task_out_scores(known, groups, idx, _fit_predict(name)), coverage)
    pred = get_predictor(name).fit(known).predict_rows(idx, new[:, idx])
    unprobed = np.setdiff1d(np.arange(X.shape[1]), idx)
    inside = np.abs(new[:, unprobed] - pred[:, unprobed]) <= q
    assert abs(inside.mean() - coverage) <= 0.05


def test_conformal_quantile_is_the_finite_sample_rank():
    scores = np.arange(1, 10, dtype=float)  # n = 9
    assert conformal_quantile(scores, 0.8) == 8.0  # ceil(10 * 0.8) = 8th smallest
    assert conformal_quantile(scores, 0.95) == float("inf")  # ceil(10 * 0.95) = 10 > n


@pytest.mark.parametrize("bad", [0, 1, -0.1, 1.5])
def test_a_coverage_outside_zero_one_is_refused(bad):
    with pytest.raises(ConfigError, match="between 0 and 1"):
        check_coverage(bad)


def test_intervals_need_three_known_tasks():
    X = planted(m=4, n=40)
    with pytest.raises(DataError, match="at least 3 known tasks"):
        task_out_scores(X, np.array(["a", "a", "b", "b"]), np.arange(5), _fit_predict("additive"))
