"""Forecast intervals: split-conformal over held-out known tasks covers what it says."""

import numpy as np
import pytest

from forgetscope.cli import run_app
from forgetscope.errors import ConfigError, DataError
from forgetscope.predict import evaluate, get_predictor
from forgetscope.predict.conformal import (
    SCALE_FLOOR,
    CoverageTally,
    calibrate,
    check_coverage,
    check_interval,
    conformal_quantile,
    task_coverage,
    task_out_predictions,
    task_out_scores,
)


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


def uneven_noise(m=80, n=200, quiet=0.05, noisy=0.5, seed=0):
    """Task and example effects plus noise; rows 0, 4, 8, ... carry ten times the noise of the others."""
    rng = np.random.default_rng(seed)
    noise = np.where(np.arange(m) % 4 == 0, noisy, quiet)
    signal = 0.2 + rng.normal(size=(m, 1)) * 0.3 + rng.normal(size=(1, n)) * 0.3
    return signal + noise[:, None] * rng.normal(size=(m, n)), noise == noisy


def _row_coverage(interval, X, is_noisy, coverage=0.9):
    """Each new row's share of unprobed entries inside its interval, calibrated on the known rows."""
    known, new = X[:40], X[40:]
    idx = np.random.default_rng(1).choice(X.shape[1], 30, replace=False)
    band = calibrate(task_out_predictions(known, np.arange(40).astype(str), idx, _fit_predict("additive")), idx,
                     coverage, interval)
    pred = get_predictor("additive").fit(known).predict_rows(idx, new[:, idx])
    half = band.halfwidth(new[:, idx], pred[:, idx])
    unprobed = np.setdiff1d(np.arange(X.shape[1]), idx)
    inside = np.abs(new[:, unprobed] - pred[:, unprobed]) <= half[:, None]
    return inside.mean(1), is_noisy[40:]


def test_absolute_interval_under_covers_noisy_rows_and_normalized_does_not():
    X, noisy = uneven_noise()
    cov, rows = _row_coverage("absolute", X, noisy)
    assert abs(cov.mean() - 0.9) <= 0.04  # marginal coverage holds ...
    assert cov[rows].mean() < 0.75 and cov[~rows].mean() > 0.97  # ... by over-covering the quiet rows
    cov, rows = _row_coverage("normalized", X, noisy)
    assert abs(cov.mean() - 0.9) <= 0.04
    assert abs(cov[rows].mean() - 0.9) <= 0.05 and abs(cov[~rows].mean() - 0.9) <= 0.05
    assert cov.min() >= 0.7  # σ̂ from 30 probe entries is itself noisy: no row is far below


def test_evaluate_reports_per_task_coverage_beside_the_marginal_one():
    X, _ = uneven_noise()
    results = {kind: evaluate(X, ["additive"], probe=[30], draws=2, baselines=False, interval=kind)
               for kind in ("absolute", "normalized")}
    rows = {kind: r.summary().iloc[0] for kind, r in results.items()}
    per_task = results["normalized"].tasks["coverage"]  # each task over its entries and both draws
    assert per_task.size == 80 and per_task.mean() == pytest.approx(rows["normalized"]["coverage"])
    for row in rows.values():
        assert abs(row["coverage"] - 0.9) <= 0.04
        assert row["coverage_task_min"] <= row["coverage_task_p10"] <= row["coverage"]
    assert rows["absolute"]["coverage_task_p10"] < 0.75 and rows["absolute"]["coverage_tasks_below"] >= 0.2
    assert rows["normalized"]["coverage_task_p10"] > 0.8 and rows["normalized"]["coverage_tasks_below"] <= 0.1
    assert rows["normalized"]["coverage_task_min"] > rows["absolute"]["coverage_task_min"] + 0.15


def test_per_task_summary_on_a_hand_case():
    per_task = {"a": 1.0, "b": 0.5, "c": 0.9, "d": 0.7, "e": 0.95, "f": 0.85}
    s = task_coverage(per_task, 0.9)
    # sorted 0.5, 0.7, 0.85, 0.9, 0.95, 1.0: p10 sits at position 0.1 * 5 = 0.5, halfway from 0.5 to 0.7
    assert s["task_min"] == 0.5 and s["task_p10"] == pytest.approx(0.6) and s["n_tasks"] == 6
    assert s["tasks_below"] == pytest.approx(2 / 6)  # 0.5 and 0.7 are below 0.9 - 0.1


def test_tally_pools_entries_and_summarises_tasks():
    tally = CoverageTally()
    truth = np.array([[0.0, 1.0, np.nan, 0.0], [0.0, 0.0, 0.0, 5.0], [2.0, 0.0, 0.0, 0.0]])
    tally.add(truth, np.zeros((3, 4)), np.array([0.5, 0.5, 1.0]), ["a", "a", "b"])
    # task a: row 0 has 2 of 3 scored entries inside, row 1 has 3 of 4; task b: 3 of 4
    assert tally.per_task() == {"a": pytest.approx(5 / 7), "b": pytest.approx(3 / 4)}
    m = tally.metrics(0.9)
    assert m["coverage"] == pytest.approx(8 / 11) and m["coverage_task_min"] == pytest.approx(5 / 7)
    assert m["interval_width"] == pytest.approx((1.0 * 7 + 2.0 * 4) / 11) and m["coverage_tasks_below"] == 1.0


def test_a_row_fitted_exactly_on_its_probe_keeps_a_floor_width():
    rng = np.random.default_rng(0)
    truth = [rng.normal(size=(2, 50)) for _ in range(5)]
    held_out = [(y, np.zeros_like(y)) for y in truth]
    idx = np.arange(10)
    band = calibrate(held_out, idx, 0.9, "normalized")
    scales = np.concatenate([np.sqrt(np.mean(y[:, idx] ** 2, 1)) for y in truth])
    assert band.floor == pytest.approx(SCALE_FLOOR * np.median(scales))
    exact = np.ones((1, 10))
    assert band.floor > 0 and band.halfwidth(exact, exact)[0] == pytest.approx(band.quantile * band.floor)
    assert calibrate(held_out, idx, 0.9, "absolute").halfwidth(exact, exact)[0] == pytest.approx(
        conformal_quantile(np.concatenate([np.abs(y[:, 10:]).ravel() for y in truth]), 0.9))


def test_an_unknown_interval_is_refused_in_one_line(tmp_path, capsys):
    with pytest.raises(ConfigError, match="unknown interval 'mondrian'; choose absolute or normalized"):
        check_interval("mondrian")
    np.save(tmp_path / "F.npy", planted(m=12, n=40))
    assert run_app(["predict", str(tmp_path / "F.npy"), "--interval", "mondrian", "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "unknown interval 'mondrian'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
