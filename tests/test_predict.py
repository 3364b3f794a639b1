"""Predictors: completion beats the additive baseline, which beats predicting zero; bad input fails clearly."""

import numpy as np
import pytest

from forgetscope.errors import ConfigError, DataError, ForgetscopeError
from forgetscope.predict import PREDICTORS, choose_probe, cross_validate, get_predictor, probe_size
from forgetscope.predict.factor import als_ridge, truncated_svd


def planted(m=40, n=1500, r=3, noise=0.3, seed=0):
    """Additive effects + rank-r interaction + noise: the structure the paper finds in real F."""
    rng = np.random.default_rng(seed)
    F = (0.5 + 0.3 * rng.normal(size=(m, 1)) + 0.4 * rng.normal(size=(1, n))
         + 0.4 * rng.normal(size=(m, r)) @ rng.normal(size=(r, n)))
    return F + noise * rng.normal(size=(m, n))


@pytest.fixture(scope="module")
def cv_table():
    return cross_validate(planted(), ["zero", "additive", "knn", "lowrank"], probe=[0.02, 0.1],
                          n_folds=4, draws=3, seed=0)


def test_lowrank_and_knn_beat_additive_beats_zero(cv_table):
    rmse = cv_table.groupby(["predictor", "probe_size"])["rmse"].mean().unstack()
    for size in rmse.columns:
        assert rmse.loc["lowrank", size] < 0.8 * rmse.loc["additive", size]
        assert rmse.loc["knn", size] < 0.9 * rmse.loc["additive", size]
        assert rmse.loc["additive", size] < rmse.loc["zero", size]
    spear = cv_table.groupby("predictor")["spearman"].mean()
    assert spear["lowrank"] > spear["additive"] and spear["knn"] > spear["additive"]


def test_cv_table_is_tidy_and_reports_against_additive(cv_table):
    expected = {"draw", "predictor", "probe_size", "probe_frac", "inference_skipped", "rmse", "pearson",
                "spearman", "f1", "precision@10", "recall@10", "rmse_ratio_vs_additive",
                "delta_spearman_vs_additive"}
    assert expected <= set(cv_table.columns)
    # draws x probe sizes x (predictors + column-mean, probe-mean, all-forgotten; folds pooled)
    assert len(cv_table) == 3 * 2 * (4 + 3)
    add = cv_table[cv_table.predictor == "additive"]
    assert np.allclose(add["rmse_ratio_vs_additive"], 1.0)
    assert np.allclose(cv_table["inference_skipped"], 1 - cv_table["probe_size"] / 1500)


def test_predict_single_row_api():
    F = planted(m=31, seed=3)
    known, new = F[:30], F[30]
    S = choose_probe(F.shape[1], 0.05, seed=1)
    for name in ("additive", "knn", "lowrank"):
        row = get_predictor(name).fit(known).predict(S, new[S])
        assert row.shape == (F.shape[1],) and np.isfinite(row).all()
    lr = get_predictor("lowrank", rank=3).fit(known).predict(S, new[S])
    add = get_predictor("additive").fit(known).predict(S, new[S])
    rest = np.setdiff1d(np.arange(F.shape[1]), S)
    assert np.sqrt(np.mean((lr - new)[rest] ** 2)) < np.sqrt(np.mean((add - new)[rest] ** 2))


@pytest.mark.parametrize("method", ["svd", "als"])
def test_lowrank_handles_missing_known_entries(method):
    F = planted(m=41, n=600, seed=4)
    known = F[:40].copy()
    known[np.random.default_rng(0).random(known.shape) < 0.15] = np.nan
    S = choose_probe(600, 0.1, seed=0)
    row = get_predictor("lowrank", rank=3, method=method, n_iter=10).fit(known).predict(S, F[40, S])
    add = get_predictor("additive").fit(known).predict(S, F[40, S])
    assert np.isfinite(row).all()
    assert np.mean((row - F[40]) ** 2) < np.mean((add - F[40]) ** 2)


def test_nan_probe_values_use_the_finite_ones():
    F = planted(m=12, n=300, seed=5)
    p = get_predictor("knn", k=3).fit(F[:10])
    S = np.arange(0, 300, 10)
    Y = F[10:, S].copy()
    Y[0, :5] = np.nan
    out = p.predict_rows(S, Y)
    assert out.shape == (2, 300) and np.isfinite(out).all()
    Y[1] = np.nan
    with pytest.raises(DataError, match="no finite probe"):
        p.predict_rows(S, Y)


def test_logistic_predicts_probabilities_and_beats_chance():
    table = cross_validate(planted(n=800), ["logistic"], probe=[0.1], n_folds=3)
    log = table[table.predictor == "logistic"]
    assert log["rmse"].isna().all()
    assert (log["f1"] > 0.8).all() and (log["spearman"] > 0.5).all()


def test_randomized_shifted_svd_matches_exact():
    rng = np.random.default_rng(0)
    X = (rng.normal(size=(60, 4)) @ rng.normal(size=(4, 80_000)) + 0.05 * rng.normal(size=(60, 80_000)))
    a, c = rng.normal(size=60), rng.normal(size=80_000)
    X = X + a[:, None] + c[None, :]
    U, s, Vt = truncated_svd(X, 4, row_shift=a, col_shift=c)
    s_exact = np.linalg.svd(X - a[:, None] - c[None, :], compute_uv=False)[:4]
    np.testing.assert_allclose(s, s_exact, rtol=1e-4)
    assert U.shape == (60, 4) and Vt.shape == (4, 80_000)


def test_als_ridge_recovers_low_rank_with_holes():
    rng = np.random.default_rng(0)
    L = rng.normal(size=(30, 2)) @ rng.normal(size=(2, 200))
    mask = rng.random(L.shape) > 0.3
    U, V = als_ridge(np.where(mask, L, 0.0), mask, 2, lam=1e-4, n_iter=50)
    assert np.abs(U @ V - L)[~mask].max() < 0.05


def test_active_probe_set_runs_and_prefers_high_leverage():
    F = planted(m=30, n=500, seed=6)
    S = choose_probe(500, 25, method="active", known=F)
    assert S.size == 25 and np.unique(S).size == 25
    table = cross_validate(F, ["lowrank"], probe=[25], probe_method="active", n_folds=3)
    assert (table["probe_method"] == "active").all()


@pytest.mark.parametrize("size, msg", [(0, "positive"), (0.0, "positive"), (-3, "positive"),
                                       (1001, "larger than"), (2.5, "whole number"), ("a", "fraction")])
def test_bad_probe_sizes(size, msg):
    with pytest.raises(DataError, match=msg):
        probe_size(size, 1000)


def test_bad_probe_indices_and_unfitted_predictor():
    p = get_predictor("additive")
    with pytest.raises(ConfigError, match="fitted"):
        p.predict([0], [1.0])
    p.fit(planted(m=5, n=20))
    for idx, msg in [([], "empty"), ([0, 0], "duplicates"), ([25], r"\[0, 20\)"), (list(range(21)), "larger")]:
        with pytest.raises(DataError, match=msg):
            p.predict(np.array(idx, dtype=int), np.zeros(len(idx)))
    with pytest.raises(DataError, match="shape"):
        p.predict([0, 1], [1.0])


def test_unknown_predictor_and_parameters():
    with pytest.raises(ConfigError, match="unknown predictor 'magic'; choose from"):
        get_predictor("magic")
    with pytest.raises(ConfigError, match="no parameter"):
        get_predictor("knn", rank=3)
    with pytest.raises(ConfigError, match="similarity"):
        get_predictor("knn", similarity="dot")
    with pytest.raises(ConfigError):
        get_predictor("lowrank", rank=0)
    assert set(PREDICTORS) == {"zero", "additive", "additive-als", "column-mean", "probe-mean", "knn", "knn-baseline",
                               "knn-baseline-als", "lowrank", "logistic", "semantic", "semantic-knn",
                               "additive-features", "lowrank-features"}


def test_edge_matrices():
    with pytest.raises(DataError, match="at least 2 rows"):
        cross_validate(planted(m=1, n=50), ["knn"], probe=[0.1])
    with pytest.raises(DataError, match="leaves none"):
        cross_validate(planted(m=5, n=50), ["knn"], probe=[50])
    const = np.ones((6, 40))  # constant rows: degenerate but must not crash
    table = cross_validate(const, ["knn", "lowrank"], probe=[0.25], n_folds=3)
    scored = table[table["predictor"] != "all-forgotten"]  # an F1-only baseline has no RMSE
    assert np.allclose(scored["rmse"], 0.0, atol=1e-9)
    # one known row is enough to fit every predictor
    one = planted(m=2, n=60)
    for name in ("additive", "knn", "lowrank", "logistic"):
        assert get_predictor(name).fit(one[:1]).predict([0, 5, 9], one[1, [0, 5, 9]]).shape == (60,)


@pytest.mark.parametrize("similarity", ["cosine", "rmse"])
@pytest.mark.parametrize("rescale", ["affine", "shift", "none"])
def test_knn_variants(similarity, rescale):
    F = planted(m=21, n=400, seed=7)
    S = np.arange(0, 400, 8)
    row = get_predictor("knn", k=4, similarity=similarity, rescale=rescale).fit(F[:20]).predict(S, F[20, S])
    assert np.isfinite(row).all()


def test_predictor_errors_reach_the_cli_as_user_errors():
    """What the predictors raise is caught by the CLI's one-line ForgetscopeError handler."""
    with pytest.raises(ForgetscopeError, match="unknown predictor 'magic'"):
        get_predictor("magic")
    with pytest.raises(ForgetscopeError, match="fitted"):
        get_predictor("additive").predict([0], [1.0])
    F = planted(m=5, n=20)
    with pytest.raises(ForgetscopeError, match="no finite probe"):
        get_predictor("additive").fit(F).predict_rows(np.arange(4), np.full((1, 4), np.nan))
