"""Cross-validation output: CSV/JSON, curves, scatter, semantic texts taken from the matrix tables."""

import numpy as np
import pandas as pd
import pytest

from forgetscope.errors import ConfigError
from forgetscope.predict import evaluate, summarize
from forgetscope.predict.metrics import at_k, precision_curve, score_rows


def small(m=12, n=200, seed=0):
    rng = np.random.default_rng(seed)
    return 0.3 + rng.normal(size=(m, 2)) @ rng.normal(size=(2, n)) + 0.2 * rng.normal(size=(m, n))


def test_evaluate_saves_csv_and_json(tmp_path):
    res = evaluate(small(), ["knn", "lowrank"], probe=[0.05, 20], n_folds=3, ks=(5,))
    paths = res.save(tmp_path)
    table = pd.read_csv(paths["cv"])
    trivial = {"column-mean", "probe-mean", "all-forgotten"}  # shown beside every predictor
    assert set(table["predictor"]) == {"additive", "knn", "lowrank"} | trivial  # baseline always added
    assert sorted(table["probe_size"].unique()) == [10, 20]
    assert paths["json"].read_text().startswith("[")
    assert {"k", "precision", "recall"} <= set(res.curves.columns)
    assert {"true", "pred"} <= set(res.scatter.columns)
    assert len(summarize(res.table)) == 6 * 2


def test_evaluate_is_seeded():
    a = evaluate(small(), ["lowrank"], probe=[0.1], n_folds=3, seed=4).table
    b = evaluate(small(), ["lowrank"], probe=[0.1], n_folds=3, seed=4).table
    pd.testing.assert_frame_equal(a.drop(columns=["fit_s", "predict_s"]), b.drop(columns=["fit_s", "predict_s"]))


def test_labelled_variants_and_duplicates():
    from forgetscope.predict import get_predictor

    res = evaluate(small(), {"knn_cos": get_predictor("knn"), "knn_rmse": get_predictor("knn", similarity="rmse")},
                   probe=[0.1], n_folds=2)
    assert {"knn_cos", "knn_rmse", "additive", "column-mean", "probe-mean", "all-forgotten"} == set(
        res.table["predictor"])
    with pytest.raises(ConfigError, match="twice"):
        evaluate(small(), ["knn", "knn"], probe=[0.1], n_folds=2)
    with pytest.raises(ConfigError, match="n_folds"):
        evaluate(small(), ["knn"], probe=[0.1], n_folds=1)


def test_metrics_on_a_perfect_prediction():
    t = np.array([[0.5, -0.1, 2.0, 0.3, np.nan, 1.0]])
    m = score_rows(t, t, threshold=0.0, ks=(2,))
    assert m["rmse"] == 0 and m["spearman"] == pytest.approx(1.0) and m["f1"] == 1.0
    assert m["precision@2"] == 1.0 and m["overlap@2"] == 1.0
    p, r, o = at_k(t, -np.nan_to_num(t), 2, 0.0)
    assert o == 0.0
    prec, rec = precision_curve(t, t, np.array([1, 2, 5, 9]), 0.0)
    assert prec[0] == 1.0 and np.isnan(prec[-1]) and rec[2] == 1.0


def test_trivial_baselines_score_what_their_definitions_say():
    X = small(m=8, n=120, seed=3)
    res = evaluate(X, ["additive"], probe=[20], n_folds=4, draws=2, tau=0.3)
    t = res.table.set_index(["predictor", "draw"])
    for d in (0, 1):
        share = t.loc[("additive", d), "forgotten_share"]
        assert t.loc[("all-forgotten", d), "f1"] == pytest.approx(2 * share / (1 + share))
        assert np.isnan(t.loc[("all-forgotten", d), "rmse"]) and t.loc[("all-forgotten", d), "recall"] == 1.0
    assert not evaluate(X, ["additive"], probe=[20], n_folds=4, draws=1, baselines=False).table[
        "predictor"].isin(["column-mean", "probe-mean", "all-forgotten"]).any()


def test_column_mean_and_probe_mean_predict_by_their_definitions():
    from forgetscope.predict import get_predictor

    X = small(m=6, n=50)
    idx = np.array([1, 5, 9])
    col = get_predictor("column-mean").fit(X[:4]).predict(idx, X[4, idx])
    np.testing.assert_allclose(col, X[:4].mean(0))  # ignores the probe
    probe = get_predictor("probe-mean").fit(X[:4]).predict(idx, X[4, idx])
    np.testing.assert_allclose(probe, np.full(50, X[4, idx].mean()))


def test_cross_validated_intervals_cover_near_their_nominal_level():
    """A planted matrix (additive effects + noise, 24 tasks): the split-conformal intervals scored by
    cross_validate cover within 5 points of 90 %; coverage off gives no such column."""
    from forgetscope.predict import evaluate

    rng = np.random.default_rng(0)
    X = 0.5 * rng.normal(size=(24, 1)) + rng.normal(size=(1, 300)) + 0.3 * rng.normal(size=(24, 300))
    table = evaluate(X, ["additive"], probe=[30], draws=4, coverage=0.9, baselines=False).summary()
    row = table.set_index("predictor").loc["additive"]
    assert abs(row["coverage"] - 0.9) <= 0.05 and row["interval_width"] > 0
    assert "coverage" not in evaluate(X, ["additive"], probe=[30], draws=1, coverage=None, baselines=False).table
