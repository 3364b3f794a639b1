"""Scaling laws: planted exponents are recovered; the sweep helper, files and CLI work on a tiny model."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from forgetscope.analysis.scaling import (
    ScalingError,
    fit_linear,
    fit_power_law_loglinear,
    fit_scaling,
    fit_shifted_power_law,
    holdout_mask,
    prediction_errors,
)


def grid(n_p=5, n_t=6):
    P = np.repeat(np.geomspace(2e3, 3.2e4, n_p), n_t)
    t = np.tile(np.geomspace(5, 160, n_t), n_p)
    return P, t


def planted_points(A=0.02, alpha=0.25, beta=0.5, B=2.0, noise=0.003, seed=0):
    P, t = grid()
    rng = np.random.default_rng(seed)
    excess = A * P ** alpha * t ** beta
    y = B + excess + noise * excess.std() * rng.standard_normal(len(P))
    ranks = np.repeat([1, 2, 4, 8, 16], 6)
    return pd.DataFrame({"run": [f"r{r}" for r in ranks], "rank": ranks, "P": P, "t": t, "ce_forgetting": y,
                         "task_loss": 4.0 - 0.5 * excess})


def test_shifted_fit_recovers_planted_exponents():
    df = planted_points()
    f = fit_shifted_power_law(df["P"], df["t"], df["ce_forgetting"])
    assert f.params["alpha"] == pytest.approx(0.25, abs=0.03)
    assert f.params["beta"] == pytest.approx(0.5, abs=0.03)
    assert f.params["B"] == pytest.approx(2.0, abs=0.05)
    assert f.params["A_raw"] == pytest.approx(0.02, rel=0.3)
    lo, hi = f.ci95["alpha"]
    assert lo < 0.25 < hi and hi - lo < 0.1
    assert f.goodness["r2"] > 0.99


def test_shifted_fit_recovers_saturating_branch():
    P, t = grid()
    y = 3.0 - 4.0 * P ** -0.3 * t ** -0.4  # rises towards B = 3 (negative A, negative exponents)
    f = fit_shifted_power_law(P, t, y)
    assert f.params["alpha"] == pytest.approx(-0.3, abs=1e-3)
    assert f.params["beta"] == pytest.approx(-0.4, abs=1e-3)
    assert f.params["B"] == pytest.approx(3.0, abs=1e-3)
    assert f.params["A"] < 0


def test_fixed_shift_and_loglinear():
    P, t = grid()
    y = 0.01 * P ** 0.3 * t ** 0.6
    g = fit_power_law_loglinear(P, t, y)
    assert g.params["alpha"] == pytest.approx(0.3, abs=1e-9)
    assert g.params["beta"] == pytest.approx(0.6, abs=1e-9)
    assert g.params["A"] == pytest.approx(0.01, rel=1e-6)
    f = fit_shifted_power_law(P, t, y, shift=0.0)
    assert f.params["B"] == 0.0 and f.params["alpha"] == pytest.approx(0.3, abs=1e-6)
    # with a shift in the data, the unshifted log-linear fit is biased: the reason the paper's form matters
    biased = fit_power_law_loglinear(P, t, y + 5.0)
    assert abs(biased.params["alpha"] - 0.3) > 0.1


def test_linear_relation_with_ci():
    x = np.linspace(1.0, 3.0, 20)
    y = -0.7 * x + 4.0 + 0.001 * np.sin(np.arange(20))
    f = fit_linear(x, y)
    assert f.params["c"] == pytest.approx(-0.7, abs=0.01)
    assert f.ci95["c"][0] < -0.7 < f.ci95["c"][1]
    assert f.goodness["pearson"] < -0.99
    with pytest.raises(ScalingError):
        fit_linear(np.ones(5), y[:5])


def test_fit_scaling_heldout_and_extrapolation():
    df = planted_points()
    rep = fit_scaling(df, holdout="largest_t")
    assert rep.n_heldout == 5
    sh = rep.fits["ce_forgetting"]["shifted"]
    assert sh.params["alpha"] == pytest.approx(0.25, abs=0.05)
    assert sh.params["beta"] == pytest.approx(0.5, abs=0.05)
    assert sh.heldout["n"] == 5 and sh.heldout["mape"] < 0.02
    assert "linear" in rep.fits["ce_forgetting"] and rep.fits["ce_forgetting"]["linear"].params["c"] < 0
    assert rep.extrapolation and all("ce_forgetting_shifted" in r for r in rep.extrapolation)
    d = rep.to_dict()
    json.dumps(d, default=float)


def test_holdout_rules_and_errors():
    df = planted_points()
    assert holdout_mask(df, "none").sum() == 0
    assert holdout_mask(df, "largest_p").sum() == 6
    assert holdout_mask(df, "random", fraction=0.2).sum() == 6
    with pytest.raises(ScalingError):
        holdout_mask(df, "bogus")
    with pytest.raises(ScalingError):
        fit_shifted_power_law([1, 2, 3], [1, 2, 3], [1, 2, 3])
    with pytest.raises(ScalingError):
        fit_shifted_power_law([1, 2, 3, 4, 5], [0, 1, 2, 3, 4], [1, 2, 3, 4, 5])
    assert math.isnan(prediction_errors([], [])["rmse"])


def test_fit_scaling_skips_unfittable_forms_with_notes():
    df = planted_points()
    df["forgetting"] = -0.01 * df["t"]  # all negative: no log-linear fit, but no crash
    rep = fit_scaling(df)
    assert "power" not in rep.fits["forgetting"]
    assert any("forgetting/power" in n for n in rep.notes)


def test_write_results(tmp_path):
    from forgetscope.experiments.scaling import write_scaling_results
    from forgetscope.store.layout import SweepLayout
    from forgetscope.store.scaling import read_fit

    df = planted_points()
    rep = fit_scaling(df)
    paths = write_scaling_results(df, rep, tmp_path / "scaling")
    for key in ("points", "points_csv", "fit", "scaling_fit", "forgetting_vs_task_loss", "predicted_vs_observed"):
        assert paths[key].is_file(), key
    layout = SweepLayout(tmp_path).scaling
    assert paths["fit"] == layout.fit and paths["points"] == layout.points
    assert paths["scaling_fit"] == layout.figure("scaling_fit")
    fit = json.loads(paths["fit"].read_text())
    assert fit["fits"]["ce_forgetting"]["shifted"]["params"]["alpha"] == pytest.approx(0.25, abs=0.05)
    assert read_fit(tmp_path) == read_fit(tmp_path / "scaling") == read_fit(paths["fit"]) == fit


@pytest.fixture
def scaling_cfg(tiny_dir, tiny_data, tmp_path):
    from forgetscope.experiments.scaling import ScalingConfig

    return ScalingConfig.model_validate({
        "model": str(tiny_dir), "output": str(tmp_path / "out"),
        "upstream": {"source": str(tiny_data["upstream"])},
        "task": {"name": "code", "source": str(tiny_data["code"]), "heldout": 3},
        "train": {"lr": 1e-2, "batch_size": 4, "max_length": 48},
        "ranks": [1, 2, 4], "eval_steps": [1, 2, 4],
    })


def test_scaling_sweep_tiny(scaling_cfg, tmp_path):
    from forgetscope.experiments.scaling import fit_and_write, read_points, run_scaling_sweep

    seen = []
    pts = run_scaling_sweep(scaling_cfg, on_run=lambda rid, rows: seen.append(rid))
    assert len(seen) == 3 and len(pts) == 3 * 4  # t = 0 plus three checkpoints per rank
    assert pts.groupby("rank")["P"].nunique().eq(1).all()
    P = pts.groupby("rank")["P"].first()
    assert P[2] == 2 * P[1] and P[4] == 4 * P[1]  # LoRA parameters grow linearly with the rank
    base = pts[pts["t"] == 0]
    assert np.allclose(base["forgetting"], 0) and np.allclose(base["kl_forgetting"], 0)
    assert (pts["kl_forgetting"] >= -1e-5).all()  # a KL divergence
    assert np.allclose(pts["ce_forgetting"] - pts["kl_forgetting"], base["ce_forgetting"].iloc[0])
    assert (pts.loc[pts["t"] > 0, "kl_forgetting"] > 0).all()
    # resume: finished runs are read back, not retrained
    again = run_scaling_sweep(scaling_cfg, on_run=lambda rid, rows: seen.append(rid))
    assert len(seen) == 3
    pd.testing.assert_frame_equal(pts.drop(columns="cached_reference"), again.drop(columns="cached_reference"))
    pd.testing.assert_frame_equal(read_points(scaling_cfg.output), pts.drop(columns="cached_reference"))
    report, paths = fit_and_write(pts, scaling_cfg)
    assert paths["fit"] == scaling_cfg.output / "scaling" / "fit.json"
    assert "ce_forgetting" in report.fits


def test_reference_without_cache_matches(tiny):
    from forgetscope.data.types import Example
    from forgetscope.measure import UpstreamReference
    from forgetscope.testing import tiny_model_and_tokenizer

    model, tok = tiny
    other, _ = tiny_model_and_tokenizer(seed=3)
    ex = [Example(f"e{i}", text=t) for i, t in enumerate(["hello there world", "def f(x): return x", "a b c d e"])]
    cached = UpstreamReference(model, tok, ex, max_length=32)
    uncached = UpstreamReference(model, tok, ex, max_length=32, cache_mb=0)
    assert cached.cached and not uncached.cached
    a, b = cached.evaluate(other), uncached.evaluate(other)
    np.testing.assert_allclose(a["ce"], b["ce"], rtol=1e-5)
    self_eval = cached.evaluate(model)
    np.testing.assert_allclose(self_eval["kl"], 0, atol=1e-5)
    np.testing.assert_allclose(self_eval["forgetting"], 0, atol=1e-5)
    assert (a["kl"] > 0).all()


def test_scaling_config_errors(tmp_path):
    from forgetscope.errors import ConfigError
    from forgetscope.experiments.scaling import load_scaling_config

    p = tmp_path / "c.yaml"
    p.write_text("task: code\ntrain: {method: full}\n")
    with pytest.raises(ConfigError, match="method"):
        load_scaling_config(p)
    p.write_text("task: code\nranks: [0, 2]\n")
    with pytest.raises(ConfigError, match="ranks"):
        load_scaling_config(p)
    p.write_text("task: code\nrankz: [2]\n")
    with pytest.raises(ConfigError, match="rankz"):
        load_scaling_config(p)


def test_cli_scaling(scaling_cfg, tmp_path):
    import yaml

    from forgetscope.cli import run_app

    p = tmp_path / "scaling.yaml"
    p.write_text(yaml.safe_dump(scaling_cfg.model_dump(mode="json")))
    assert run_app(["scaling", str(p)]) == 0
    out = scaling_cfg.output / "scaling"
    assert (out / "fit.json").is_file() and (out / "points.csv").is_file()
    assert run_app(["scaling", str(p), "--refit", "--holdout", "none", "--no-figures"]) == 0
    assert json.loads((out / "fit.json").read_text())["holdout_rule"] == "none"
