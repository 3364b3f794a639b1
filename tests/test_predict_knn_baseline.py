"""``knn-baseline`` (the reference's unregularised baselines) and ``knn-baseline-als`` / ``additive-als``
(surprise's default ALS baselines): KNNBaseline / BaselineOnly semantics, checked."""

import heapq
from collections import defaultdict

import numpy as np
import pytest

from forgetscope.errors import ConfigError
from forgetscope.predict import PREDICTORS, get_predictor
from forgetscope.predict.knn_baseline import KNNBaselineALSPredictor

KNOWN = np.array([[1.0, 2.0, 3.0, 4.0, 5.0],
                  [2.0, 2.0, 2.0, 2.0, 2.0],
                  [0.0, 1.0, 0.0, 1.0, 0.0]])
PROBE = np.array([0, 2])
NEW = np.array([1.0, 3.0])  # the new row's values at columns 0 and 2


def hand_one_epoch():
    """One ALS epoch (reg_u 15, reg_i 10) on the 3 known rows plus the new row's two entries."""
    mu = (15 + 10 + 2 + 1 + 3) / (15 + 2)  # every observed entry, the probe entries included
    # items first, all user biases still 0; columns 0 and 2 have a 4th rating (the new row's)
    bi = [(1 + 2 + 0 + 1 - 4 * mu) / (10 + 4),
          (2 + 2 + 1 - 3 * mu) / (10 + 3),
          (3 + 2 + 0 + 3 - 4 * mu) / (10 + 4),
          (4 + 2 + 1 - 3 * mu) / (10 + 3),
          (5 + 2 + 0 - 3 * mu) / (10 + 3)]
    # then users, with the new item biases
    sum_bi = sum(bi)
    bu = [(15 - 5 * mu - sum_bi) / (15 + 5),
          (10 - 5 * mu - sum_bi) / (15 + 5),
          (2 - 5 * mu - sum_bi) / (15 + 5)]
    b_new = ((1 - mu - bi[0]) + (3 - mu - bi[2])) / (15 + 2)
    return mu, bi, bu, b_new


def test_hand_computed_case():
    mu, bi, bu, b_new = hand_one_epoch()
    # MSD on the probe columns {0, 2}: row 0 has (1, 3) -> msd 0; row 1 (2, 2) -> (1 + 1) / 2 = 1;
    # row 2 (0, 0) -> (1 + 9) / 2 = 5
    sim = [1 / (0 + 1), 1 / (1 + 1), 1 / (5 + 1)]

    def expected(i, rows):
        base = mu + b_new + bi[i]
        resid = [KNOWN[v, i] - (mu + bu[v] + bi[i]) for v in rows]
        return base + sum(sim[v] * r for v, r in zip(rows, resid, strict=True)) / sum(sim[v] for v in rows)

    all3 = KNNBaselineALSPredictor(k=40, n_epochs=1).fit(KNOWN).predict(PROBE, NEW)
    top2 = KNNBaselineALSPredictor(k=2, n_epochs=1).fit(KNOWN).predict(PROBE, NEW)
    for i in range(5):
        assert all3[i] == pytest.approx(expected(i, [0, 1, 2]), abs=1e-12)
        assert top2[i] == pytest.approx(expected(i, [0, 1]), abs=1e-12)  # k = 2: the two most similar
    assert not np.allclose(all3, top2)
    # additive (BaselineOnly) is the baseline part alone
    add = get_predictor("additive", reg_u=15, reg_i=10, n_epochs=1).fit(KNOWN).predict(PROBE, NEW)
    np.testing.assert_allclose(add, [mu + b_new + b for b in bi], atol=1e-12)


def loop_reference(known, probe_idx, probe_values, *, k, min_k=1, reg_u=15.0, reg_i=10.0, n_epochs=10):
    """KNNBaseline rating by rating on dicts of ratings; the new row is user ``M``, next to the known rows."""
    m, n = known.shape
    ratings = [(u, i, known[u, i]) for u in range(m) for i in range(n) if not np.isnan(known[u, i])]
    ratings += [(m, int(i), float(v)) for i, v in zip(probe_idx, probe_values, strict=True)]
    ur, ir = defaultdict(list), defaultdict(list)
    for u, i, r in ratings:
        ur[u].append((i, r))
        ir[i].append((u, r))
    mu = sum(r for _, _, r in ratings) / len(ratings)
    bu, bi = [0.0] * (m + 1), [0.0] * n
    for _ in range(n_epochs):
        for i in range(n):
            bi[i] = sum(r - mu - bu[u] for u, r in ir[i]) / (reg_i + len(ir[i]))
        for u in range(m + 1):
            bu[u] = sum(r - mu - bi[i] for i, r in ur[u]) / (reg_u + len(ur[u]))

    def msd_sim(v):
        diffs = [(r - known[v, i]) ** 2 for i, r in ur[m] if not np.isnan(known[v, i])]
        return 1 / (sum(diffs) / len(diffs) + 1) if diffs else 0.0

    sims = [msd_sim(v) for v in range(m)]
    out = np.empty(n)
    for i in range(n):
        est = mu + bu[m] + bi[i]
        cands = [(v, sims[v], r) for v, r in ir[i] if v != m]
        top = heapq.nlargest(k, cands, key=lambda t: t[1])
        used = [(s, r - (mu + bu[v] + bi[i])) for v, s, r in top if s > 0]
        if len(used) >= min_k and sum(s for s, _ in used) > 0:
            est += sum(s * d for s, d in used) / sum(s for s, _ in used)
        out[i] = est
    return out


@pytest.mark.parametrize("k, min_k", [(3, 1), (40, 1), (2, 2), (1, 1)])
def test_missing_known_entries_match_rating_by_rating(k, min_k):
    rng = np.random.default_rng(k)
    known = rng.normal(size=(9, 40)) + rng.normal(size=(1, 40))
    known[rng.random(known.shape) < 0.35] = np.nan
    known[0, :] = 1.0  # at least one observation per column
    probe = np.array([1, 4, 7, 11, 20, 33])
    y = rng.normal(size=probe.size)
    got = get_predictor("knn-baseline-als", k=k, min_k=min_k).fit(known).predict(probe, y)
    np.testing.assert_allclose(got, loop_reference(known, probe, y, k=k, min_k=min_k), atol=1e-12)


def test_nan_neighbour_is_skipped_for_that_column_only():
    known = KNOWN.copy()
    known[0, 1] = np.nan  # the most similar row (sim 1) did not observe column 1
    p = get_predictor("knn-baseline-als", k=1).fit(known)
    got = p.predict(PROBE, NEW)
    np.testing.assert_allclose(got, loop_reference(known, PROBE, NEW, k=1), atol=1e-12)
    # k = 1: column 1 takes its residual from row 1 (the next most similar), column 3 from row 0
    from forgetscope.predict.baselines import fit_with_rows
    b = fit_with_rows(p.stats_, PROBE, NEW[None], reg_u=15, reg_i=10, n_epochs=10)
    assert got[1] == pytest.approx(b.b_new[0] + KNOWN[1, 1] - b.b_known[0, 1])
    assert got[3] == pytest.approx(b.b_new[0] + KNOWN[0, 3] - b.b_known[0, 0])


def test_no_overlap_falls_back_to_the_baseline():
    # the new row is observed on column 0 only; row B never observed it -> sim(B) = 0, and columns 3-5,
    # observed by B alone, have no usable neighbour
    known = np.array([[1.0, 2.0, 0.5, np.nan, np.nan, np.nan],
                      [np.nan, 1.0, 3.0, 2.0, 4.0, 0.0]])
    probe, y = np.array([0]), np.array([1.5])
    knn = get_predictor("knn-baseline-als").fit(known).predict(probe, y)
    add = get_predictor("additive", reg_u=15, reg_i=10).fit(known).predict(probe, y)
    np.testing.assert_allclose(knn[3:], add[3:], atol=1e-12)
    assert np.all(np.abs(knn[1:3] - add[1:3]) > 1e-6)
    np.testing.assert_allclose(knn, loop_reference(known, probe, y, k=40), atol=1e-12)
    # min_k above the available neighbours: the baseline everywhere
    strict = get_predictor("knn-baseline-als", k=2, min_k=2).fit(known).predict(probe, y)
    np.testing.assert_allclose(strict, add, atol=1e-12)


def test_rows_are_fitted_independently():
    rng = np.random.default_rng(0)
    known = rng.normal(size=(12, 50))
    probe = np.arange(0, 50, 5)
    Y = rng.normal(size=(4, probe.size))
    for name in ("knn-baseline", "knn-baseline-als", "additive", "additive-als"):
        p = get_predictor(name, **({"k": 5} if name.startswith("knn") else {})).fit(known)
        together = p.predict_rows(probe, Y)
        for r in range(4):
            np.testing.assert_allclose(together[r], p.predict(probe, Y[r]), atol=1e-12)


def test_additive_unregularised_is_the_plain_least_squares_fit():
    p = get_predictor("additive", reg_u=0, reg_i=0).fit(KNOWN)
    col_mean = KNOWN.mean(0)  # μ + b_j on a complete matrix
    offset = np.mean(NEW - col_mean[PROBE])
    np.testing.assert_allclose(p.predict(PROBE, NEW), col_mean + offset, atol=1e-12)


def test_registry_and_parameter_checks():
    assert {"knn-baseline", "knn-baseline-als", "additive", "additive-als"} <= set(PREDICTORS)
    # the defaults: the reference's unregularised baselines, and surprise's ALS under their own names
    assert get_predictor("knn-baseline").get_params() == {"k": 40, "min_k": 1, "reg_u": 0.0, "reg_i": 0.0,
                                                          "n_epochs": 50}
    assert get_predictor("knn-baseline-als").get_params() == {"k": 40, "min_k": 1, "reg_u": 15.0, "reg_i": 10.0,
                                                              "n_epochs": 10}
    assert get_predictor("additive").get_params() == {"reg_u": 0.0, "reg_i": 0.0, "n_epochs": 10}
    assert get_predictor("additive-als").get_params() == {"reg_u": 15.0, "reg_i": 10.0, "n_epochs": 10}
    for bad in ({"k": 0}, {"min_k": -1}, {"k": 3, "min_k": 4}, {"reg_u": -1}, {"n_epochs": 0}):
        with pytest.raises(ConfigError):
            get_predictor("knn-baseline-als", **bad)
    with pytest.raises(ConfigError):
        get_predictor("additive", reg_i=float("nan"))


def test_matches_scikit_surprise():
    surprise = pytest.importorskip("surprise")
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(3)
    m, n = 15, 120
    F = (0.3 * rng.normal(size=(m + 1, 1)) + 0.5 * rng.normal(size=(1, n))
         + 0.4 * rng.normal(size=(m + 1, 2)) @ rng.normal(size=(2, n)) + 0.2 * rng.normal(size=(m + 1, n)))
    known = F[:m].copy()
    known[rng.random(known.shape) < 0.2] = np.nan
    known[:, known.shape[1] - 1] = F[:m, -1]  # keep every column observed somewhere
    probe = np.sort(rng.choice(n, 12, replace=False))
    df = pd.DataFrame([(u, j, known[u, j]) for u in range(m) for j in range(n) if np.isfinite(known[u, j])]
                      + [(m, int(j), F[m, j]) for j in probe], columns=["u", "i", "r"])
    reader = surprise.Reader(rating_scale=(-100, 100))
    trainset = surprise.Dataset.load_from_df(df, reader).build_full_trainset()
    rest = np.setdiff1d(np.arange(n), probe)
    for k in (40, 4):
        algo = surprise.KNNBaseline(k=k, sim_options={"name": "msd", "user_based": True}, verbose=False)
        algo.fit(trainset)
        ref = np.array([algo.predict(m, int(j), clip=False).est for j in rest])
        ours = get_predictor("knn-baseline-als", k=k).fit(known).predict(probe, F[m, probe])[rest]
        np.testing.assert_allclose(ours, ref, atol=1e-9)
    algo = surprise.BaselineOnly(verbose=False)
    algo.fit(trainset)
    ref = np.array([algo.predict(m, int(j), clip=False).est for j in range(n)])
    ours = get_predictor("additive-als").fit(known).predict(probe, F[m, probe])
    np.testing.assert_allclose(ours, ref, atol=1e-9)


def test_reference_default_matches_surprise_with_the_reference_options():
    """The default ``knn-baseline`` against surprise's KNNBaseline with the options of the reference's
    prediction runs (SGD baselines, 1 000 epochs, surprise's reg 0.02 and learning rate 0.005), entry by
    entry. SGD stops at its own stationary point, which shrinks each bias by about 2 %, so the entries
    agree to that order, far closer than to the ALS default's."""
    surprise = pytest.importorskip("surprise")
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(5)
    m, n = 12, 60
    F = 0.5 * rng.normal(size=(m + 1, 1)) + rng.normal(size=(1, n)) + 0.3 * rng.normal(size=(m + 1, n))
    known, probe = F[:m], np.sort(rng.choice(n, 10, replace=False))
    df = pd.DataFrame([(u, j, known[u, j]) for u in range(m) for j in range(n)]
                      + [(m, int(j), F[m, j]) for j in probe], columns=["u", "i", "r"])
    trainset = surprise.Dataset.load_from_df(df, surprise.Reader(rating_scale=(-100, 100))).build_full_trainset()
    algo = surprise.KNNBaseline(k=40, sim_options={"name": "msd", "user_based": True},
                                bsl_options={"method": "sgd", "n_epochs": 1000}, verbose=False)
    algo.fit(trainset)
    rest = np.setdiff1d(np.arange(n), probe)
    ref = np.array([algo.predict(m, int(j), clip=False).est for j in rest])
    ours = get_predictor("knn-baseline").fit(known).predict(probe, F[m, probe])[rest]
    als = get_predictor("knn-baseline-als").fit(known).predict(probe, F[m, probe])[rest]
    gap = np.abs(ours - ref)
    assert gap.max() < 0.05 and np.sqrt(np.mean(gap**2)) < 0.02
    assert np.abs(als - ref).mean() > 3 * gap.mean()  # the ALS default is a different prediction
