"""Baselines that keep F's marginals: row scale alone shows no excess over within-row shuffles, a planted
interaction does; the reference metric is scikit-learn's r2_score; the variance split sums to one."""

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import r2_score

from forgetscope.analysis.lowrank import analyze, rank_r2, rank_r2_metrics, reference_r2
from forgetscope.analysis.marginals import (
    TooFewRunsError,
    category_share,
    interaction,
    interaction_r2,
    interaction_seed_reliability,
    marginal_analysis,
    permutation_baseline,
    shuffle_within_rows,
    variance_split,
)
from forgetscope.errors import DataError, ForgetscopeError


def row_effects(m=12, n=200, seed=0):
    """F = a_i + noise: runs differ only in how much they forget."""
    rng = np.random.default_rng(seed)
    return rng.normal(0, 1, (m, 1)) + 0.3 * rng.normal(size=(m, n))


def planted_interaction(m=12, n=200, seed=0, strength=1.0):
    """F = a_i + a rank-2 interaction + noise."""
    rng = np.random.default_rng(seed)
    inter = rng.normal(size=(m, 2)) @ rng.normal(size=(2, n))
    return rng.normal(0, 1, (m, 1)) + strength * inter + 0.3 * rng.normal(size=(m, n))


# ---- the reference metric -------------------------------------------------------------------


def test_reference_metric_is_sklearn_r2_score_on_a_hand_case():
    X = np.array([[1.0, 2.0], [2.0, 4.0], [3.0, 9.0]])
    approx = np.array([[1.0, 3.0], [2.0, 4.0], [4.0, 8.0]])
    # column 0: SSE 1, SST 2 -> 0.5; column 1: SSE 2, SST 26 -> 12/13; averaged over the two columns
    hand = (0.5 + (1 - 2 / 26)) / 2
    assert reference_r2(X, approx) == pytest.approx(hand)
    assert reference_r2(X, approx) == pytest.approx(r2_score(X, approx))


def test_reference_r2_by_rank_equals_r2_score_of_the_truncated_svd_and_differs_from_global():
    F = planted_interaction(m=10, n=60)
    U, s, Vt = np.linalg.svd(F, full_matrices=False)
    ref = rank_r2(F, 4, metric="reference")
    for k in range(1, 5):
        assert ref[k - 1] == pytest.approx(r2_score(F, (U[:, :k] * s[:k]) @ Vt[:k]), abs=1e-10)
    both = rank_r2_metrics(F, 4)
    np.testing.assert_allclose(both["global"], rank_r2(F, 4))
    assert np.abs(both["global"] - both["reference"]).max() > 0.01


def test_reference_metric_with_holes_scores_each_column_over_its_observed_rows():
    X = np.array([[1.0, 2.0], [2.0, np.nan], [3.0, 9.0], [5.0, 1.0]])
    approx = np.array([[1.5, 3.0], [2.0, 0.0], [3.5, 8.0], [4.0, 2.0]])
    ok = ~np.isnan(X[:, 1])
    expected = (r2_score(X[:, 0], approx[:, 0]) + r2_score(X[ok, 1], approx[ok, 1])) / 2
    assert reference_r2(X, approx) == pytest.approx(expected)


def test_lowrank_report_names_both_metrics():
    rep = analyze(planted_interaction(m=8, n=40), max_rank=3)
    d = rep.to_dict()
    assert set(d["r2_by_rank_by_metric"]) == {"global", "reference"}
    assert d["r2_by_rank"] == d["r2_by_rank_by_metric"]["global"]
    assert list(rep.r2_table()["r2_reference"]) == pytest.approx(d["r2_by_rank_by_metric"]["reference"])


def test_unknown_metric_is_a_clear_error():
    with pytest.raises(DataError, match="unknown R² metric 'adjusted'"):
        rank_r2(np.eye(3), 2, metric="adjusted")  # type: ignore[arg-type]


# ---- the variance split -----------------------------------------------------------------------


@pytest.mark.parametrize("holes", [0.0, 0.1])
def test_variance_shares_sum_to_one(holes):
    F = planted_interaction()
    if holes:
        F[np.random.default_rng(1).random(F.shape) < holes] = np.nan
    split = variance_split(F)
    assert split.runs + split.examples + split.interaction == pytest.approx(1.0)
    assert min(split.runs, split.examples, split.interaction) >= 0


def test_variance_split_finds_planted_row_effects():
    split = variance_split(row_effects())
    assert split.runs > 0.85 and split.interaction < 0.15 and split.examples < 0.05


def test_interaction_is_double_centred_when_complete():
    F = planted_interaction(m=5, n=9)
    E = interaction(F)
    np.testing.assert_allclose(E, F - F.mean(1, keepdims=True) - F.mean(0, keepdims=True) + F.mean(), atol=1e-12)


# ---- the within-row permutation baseline ----------------------------------------------------


def test_shuffle_keeps_each_rows_values_and_holes():
    F = planted_interaction(m=4, n=30)
    F[0, 3] = np.nan
    S = shuffle_within_rows(F, np.random.default_rng(0))
    assert np.isnan(S[0, 3]) and np.isnan(S).sum() == 1
    for i in range(4):
        np.testing.assert_allclose(np.sort(S[i][~np.isnan(S[i])]), np.sort(F[i][~np.isnan(F[i])]))
    assert not np.allclose(S[1], F[1])


def test_pure_row_effects_show_no_excess_over_the_shuffles():
    F = row_effects()
    p = permutation_baseline(F, 5, n_shuffles=20, seed=0)
    assert p.observed["global"][0] > 0.8  # a high R²(1) ...
    for metric in ("global", "reference"):
        assert np.abs(p.excess(metric)).max() < 0.02  # ... that the shuffles have too
    verdict = marginal_analysis(F, n_shuffles=20).verdicts()[0]
    assert verdict["shown"] is not True and "low rank beyond row scale:" not in verdict["line"]


def test_planted_rank2_interaction_shows_clear_excess():
    F = planted_interaction(strength=1.0)
    p = permutation_baseline(F, 5, n_shuffles=20, seed=0)
    for metric in ("global", "reference"):
        assert p.excess(metric)[1] > 0.1 and p.above(metric)[:3].all()
    inter = interaction_r2(F, 5)
    assert inter.observed["global"][1] > 0.85 and inter.above("global").all()
    verdicts = {v["claim"]: v for v in marginal_analysis(F).verdicts()}
    assert verdicts["low rank beyond row scale"]["shown"] is True
    assert verdicts["low-rank interaction"]["shown"] is True


def test_the_shuffle_figure_draws_f_its_shuffle_mean_and_band_in_one_panel_per_metric(tmp_path):
    from PIL import Image

    from forgetscope.analysis.plots import r2_against_shuffles, write_r2_against_shuffles

    F = planted_interaction(strength=1.0)
    p, inter = permutation_baseline(F, 4, n_shuffles=20, seed=0), interaction_r2(F, 4)
    lo, hi = p.band("global")
    fig = r2_against_shuffles({"global": (p.observed["global"], p.mean("global"), lo, hi)}, p.n_shuffles)
    (ax,) = fig.axes
    lines = {line.get_label(): line.get_ydata() for line in ax.get_lines()}
    assert np.allclose(lines["F"], p.observed["global"]) and np.allclose(lines["shuffles, mean"], p.mean("global"))
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    assert np.isclose(band.min(), lo.min()) and np.isclose(band.max(), hi.max())
    path = write_r2_against_shuffles(p, inter, tmp_path / "r2.png")
    assert Image.open(path).size[0] > Image.open(path).size[1] * 2  # three panels side by side


def test_permutation_baseline_is_seeded():
    F = row_effects(m=5, n=40)
    a = permutation_baseline(F, 2, seed=3).shuffles["reference"]
    np.testing.assert_array_equal(a, permutation_baseline(F, 2, seed=3).shuffles["reference"])
    assert not np.array_equal(a, permutation_baseline(F, 2, seed=4).shuffles["reference"])


def test_fewer_than_three_rows_are_refused_in_one_line():
    with pytest.raises(TooFewRunsError, match="a permutation baseline needs at least 3 runs") as exc:
        permutation_baseline(row_effects(m=2, n=20))
    assert isinstance(exc.value, ForgetscopeError) and "\n" not in str(exc.value)
    rep = marginal_analysis(row_effects(m=2, n=20))
    assert rep.permutation is None
    assert rep.verdicts()[0]["line"].startswith("not shown: a permutation baseline needs at least 3 runs")


def test_too_few_shuffles_are_refused():
    with pytest.raises(DataError, match="n_shuffles must be at least 20"):
        permutation_baseline(row_effects(m=4, n=20), n_shuffles=5)


# ---- seeds and categories -----------------------------------------------------------------


def seeded_matrix(reproducible: bool, n_tasks=8, n=150, seed=0):
    rng = np.random.default_rng(seed)
    patterns = rng.normal(size=(n_tasks, n))
    column = rng.normal(size=n)  # shared by every run: raw rows agree even without a task pattern
    rows, runs = [], []
    for t in range(n_tasks):
        for s in (0, 1):
            own = patterns[t] if reproducible else rng.normal(size=n)
            rows.append(column + own + 0.3 * rng.normal(size=n))
            runs.append({"task": f"t{t}", "seed": s})
    return np.array(rows), pd.DataFrame(runs)


def test_seed_reliability_of_the_interaction_separates_task_patterns_from_shared_columns():
    F, runs = seeded_matrix(reproducible=True)
    rel = interaction_seed_reliability(F, runs)
    assert rel.n_tasks == 8 and rel.mean > 0.8 and rel.ci[0] > 0
    F0, runs0 = seeded_matrix(reproducible=False)
    noise = interaction_seed_reliability(F0, runs0)
    assert abs(noise.mean) < 0.15 and noise.mean_raw > 0.3  # raw rows agree through the column effect only
    verdicts = {v["claim"]: v for v in marginal_analysis(F0, runs=runs0).verdicts()}
    assert verdicts["tasks forget different examples (reproducible interaction)"]["shown"] is False


def test_seed_reliability_without_seeds_says_so():
    rel = interaction_seed_reliability(row_effects(m=4, n=20), pd.DataFrame({"task": list("abcd"), "seed": 0}))
    assert rel.n_tasks == 0 and rel.note == "no task has two seeds"


def test_category_share_finds_a_planted_category_effect_and_not_a_random_one():
    rng = np.random.default_rng(0)
    m, n = 10, 120
    cats = np.repeat(["code", "prose", "dict"], n // 3)
    effect = rng.normal(size=(m, 3))[:, pd.factorize(cats)[0]]
    F = rng.normal(size=(m, 1)) + effect + 0.3 * rng.normal(size=(m, n))
    share = category_share(F, cats)
    assert share.r2 > 0.8 and share.above and share.n_categories == 3
    null = category_share(0.3 * rng.normal(size=(m, n)), cats)
    assert null.r2 < 0.1 and not null.above


def test_without_categories_the_analysis_says_so():
    rep = marginal_analysis(row_effects(m=4, n=20))
    assert rep.category is None
    assert rep.verdicts()[-1]["line"].startswith("not shown: the upstream table has no category or source column")


# ---- the CLI ------------------------------------------------------------------------------


def test_analyze_prints_verdicts_and_saves_the_marginals(tmp_path, capsys):
    from forgetscope.cli import run_app

    F = planted_interaction(m=8, n=60)
    pd.DataFrame(F, index=[f"r{i}" for i in range(8)], columns=[f"e{j}" for j in range(60)]).to_csv(
        tmp_path / "F.csv")
    cats = tmp_path / "cats.jsonl"
    cats.write_text("".join(json.dumps({"id": f"e{j}", "category": "ab"[j % 2]}) + "\n" for j in range(60)))
    out = tmp_path / "out"
    assert run_app(["analyze", str(tmp_path / "F.csv"), "-k", "4", "--no-figures", "--output", str(out),
                    "--categories", str(cats)]) == 0
    printed = capsys.readouterr().out
    assert "verdicts" in printed and "low rank beyond row scale" in printed and "R²(k) reference" in printed
    saved = json.loads((out / "analysis.json").read_text())
    marg = saved["marginals"]
    assert marg["variance_split"]["interaction"] > 0 and marg["category_share"]["n_categories"] == 2
    assert len(marg["permutation"]["reference"]["r2"]) == 4 and len(marg["verdicts"]) == 4
    table = pd.read_csv(out / "marginals_by_rank.csv")
    assert {"r2_reference", "shuffle_high_reference", "excess_global", "interaction_r2_global"} <= set(table)


def test_analyze_refuses_bad_shuffles_and_writes_nothing(tmp_path):
    from forgetscope.cli import run_app

    np.save(tmp_path / "F.npy", row_effects(m=4, n=20))
    out = tmp_path / "out"
    assert run_app(["analyze", str(tmp_path / "F.npy"), "--shuffles", "3", "--output", str(out)]) == 2
    assert not out.exists()
