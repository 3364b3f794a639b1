"""Low-rank analysis: planted structure is recovered, missing entries are handled, bad input fails clearly."""

import numpy as np
import pandas as pd
import pytest

from forgetscope.analysis.lowrank import (
    analyze,
    factor_order,
    fit_additive,
    fit_multiplicative,
    learning_correlation,
    rank_k_approx,
    rank_r2,
)
from forgetscope.errors import DataError, ForgetscopeError
from forgetscope.validation import check_matrix


def planted(m=40, n=600, r=3, noise=0.3, seed=0):
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=(m, r)) @ rng.normal(size=(r, n))
    F = signal + noise * rng.normal(size=(m, n))
    expected = 1 - (noise**2 * m * n) / ((F - F.mean()) ** 2).sum()
    return F, expected


@pytest.mark.parametrize("r", [1, 3, 5])
def test_r2_at_planted_rank_recovers_signal_share(r):
    F, expected = planted(r=r)
    r2 = rank_r2(F, 8)
    assert abs(r2[r - 1] - expected) < 0.02
    assert r2[r - 1] - r2[r - 2 if r > 1 else 0] >= 0  # monotone
    assert r2[r + 2] - r2[r - 1] < 0.02  # little gain past the planted rank
    assert np.all(np.diff(r2) >= -1e-12)


def test_r2_with_missing_entries_close_to_complete():
    F, expected = planted(m=25, n=200, r=2, noise=0.2, seed=1)
    G = F.copy()
    G[np.random.default_rng(2).random(G.shape) < 0.1] = np.nan
    r2 = rank_r2(G, 4)
    assert abs(r2[1] - expected) < 0.03
    approx = rank_k_approx(G, 2)
    assert np.isfinite(approx).all()


def test_additive_exact_and_with_missing():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=12), rng.normal(size=30)
    F = 0.7 + (a - a.mean())[:, None] + (b - b.mean())[None, :]
    fit = fit_additive(F)
    assert fit.r2 == pytest.approx(1.0)
    assert fit.mu == pytest.approx(0.7)
    G = F.copy()
    G[rng.random(G.shape) < 0.2] = np.nan
    fit2 = fit_additive(G)
    assert fit2.r2 == pytest.approx(1.0, abs=1e-8)
    np.testing.assert_allclose(fit2.predict(), F, atol=1e-6)


def test_multiplicative_exact_and_with_missing():
    rng = np.random.default_rng(0)
    alpha, beta = rng.uniform(0.5, 2, 10), rng.uniform(0.1, 1, 25)
    F = np.outer(alpha, beta)
    assert fit_multiplicative(F).r2 == pytest.approx(1.0)
    G = F.copy()
    G[rng.random(G.shape) < 0.2] = np.nan
    fit = fit_multiplicative(G)
    assert fit.r2 == pytest.approx(1.0, abs=1e-6)
    assert fit.beta.mean() > 0
    np.testing.assert_allclose(fit.predict(), F, rtol=1e-4)


@pytest.mark.parametrize("by", ["additive", "multiplicative", "svd"])
def test_factor_order_puts_harshest_first(by):
    rng = np.random.default_rng(0)
    alpha, beta = np.linspace(1, 3, 8), rng.uniform(0.1, 1, 20)
    F = np.outer(alpha, beta) + 0.01 * rng.normal(size=(8, 20))
    rows, cols = factor_order(F, by)
    assert rows[0] == 7 and rows[-1] == 0
    assert cols[0] == np.argmax(beta)


def test_learning_correlation():
    rng = np.random.default_rng(0)
    learning = rng.uniform(0.1, 2, 15)
    F = learning[:, None] * rng.uniform(0.5, 1, (1, 40)) + 0.01 * rng.normal(size=(15, 40))
    runs = pd.DataFrame({"task_loss_before": 3 + learning, "task_loss_after": np.full(15, 3.0)})
    lc = learning_correlation(F, runs)
    assert lc.pearson > 0.95 and lc.spearman > 0.9 and lc.n == 15
    assert learning_correlation(F, pd.DataFrame({"task": range(15)})) is None
    assert learning_correlation(F, None) is None


def test_analyze_report_roundtrip():
    F, _ = planted(m=10, n=50, r=2)
    rep = analyze(F, max_rank=4)
    d = rep.to_dict()
    assert d["shape"] == [10, 50] and len(d["r2_by_rank"]) == 4
    assert list(rep.r2_table().columns) == ["k", "singular_value", "energy_share", "r2", "r2_reference"]
    assert sorted(rep.row_order) == list(range(10))


@pytest.mark.parametrize("bad, msg", [
    (np.zeros(5), "2-D"),
    (np.array([[1.0, np.inf]]), "infinite"),
    (np.array([[np.nan, np.nan], [1.0, 2.0]]), "rows with no observed"),
    (np.array([[np.nan, 1.0], [np.nan, 2.0]]), "columns with no observed"),
    (np.array([["a", "b"]]), "numeric"),
    (np.zeros((0, 3)), "at least 1 row"),
])
def test_bad_matrices_raise_one_line_errors(bad, msg):
    with pytest.raises(DataError, match=msg) as exc:
        check_matrix(bad)
    assert isinstance(exc.value, ForgetscopeError) and "\n" not in str(exc.value)


def test_single_row_and_constant_rows_are_fine():
    single = np.array([[0.1, 0.2, 0.3]])
    rep = analyze(single, max_rank=1)
    assert rep.r2_by_rank[0] == pytest.approx(1.0)
    const = np.ones((4, 6))
    rep = analyze(const, max_rank=2)  # zero variance: R² undefined (NaN), no crash
    assert np.isnan(rep.additive.r2)
    with pytest.raises(DataError, match="rank must be"):
        rank_r2(single, 3)
