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
    # opened, fingerprinted and resumed as a sweep: its manifest; a changed grid is refused, naming it
    manifest = json.loads((scaling_cfg.output / "manifest.json").read_text())
    assert manifest["source"] == "scaling" and manifest["status"] == "complete"
    assert manifest["fingerprint"] == scaling_cfg.fingerprint()
    assert scaling_cfg.model_copy(update={"holdout": "none", "laws": ["power"]}).fingerprint() == \
        scaling_cfg.fingerprint()  # fit settings: not results
    from forgetscope.errors import StoreError

    with pytest.raises(StoreError, match=r"different sweep.*eval_steps"):
        run_scaling_sweep(scaling_cfg.model_copy(update={"eval_steps": [1, 2, 3]}))
    assert len(seen) == 3
    report, paths = fit_and_write(pts, scaling_cfg)
    assert paths["fit"] == scaling_cfg.output / "scaling" / "fit.json"
    assert "ce_forgetting" in report.fits


def test_reference_without_cache_matches(tiny):
    from forgetscope.data.types import Example
    from forgetscope.measure import EvalRecord, Evaluator, UpstreamReference
    from forgetscope.testing import tiny_model_and_tokenizer

    model, tok = tiny
    other, _ = tiny_model_and_tokenizer(seed=3)
    ex = [Example(f"e{i}", text=t) for i, t in enumerate(["hello there world", "def f(x): return x", "a b c d e"])]
    evaluator = Evaluator(tok, EvalRecord(max_length=32, chat=False))
    cached = UpstreamReference(model, evaluator, ex)
    uncached = UpstreamReference(model, evaluator, ex, cache_mb=0)
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


def test_cli_scaling(scaling_cfg, tmp_path, capsys):
    """A run writes the primary fit (the config's hold-out) and prints the verdict and the exponents per task;
    a refit with another hold-out is secondary: fit_<rule>.json, and fit.json stays as it was."""
    import yaml

    from forgetscope.cli import run_app

    p = tmp_path / "scaling.yaml"
    p.write_text(yaml.safe_dump({**scaling_cfg.model_dump(mode="json"), "criteria": {"min_tasks": 1}}))
    assert run_app(["scaling", str(p)]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "criteria, primary" in printed and "agreement of alpha across" in printed
    out = scaling_cfg.output / "scaling"
    assert (out / "fit.json").is_file() and (out / "points.csv").is_file()
    primary = (out / "fit.json").read_bytes()
    fit = json.loads(primary)
    assert fit["holdout_rule"] == "largest_t" and fit["holdout_role"] == "primary"
    assert fit["criteria"]["criteria_role"] == "primary"
    assert run_app(["scaling", str(p), "--refit", "--holdout", "none", "--no-figures"]) == 0
    assert (out / "fit.json").read_bytes() == primary
    secondary = json.loads((out / "fit_none.json").read_text())
    assert secondary["holdout_rule"] == "none" and secondary["holdout_role"] == "secondary"
    assert secondary["criteria"]["criteria_role"] == "secondary"
    assert run_app(["scaling", str(p), "--refit", "--holdout", "bogus"]) == 2


# --------------------------------------------------------------------------- the law as the paper states it
@pytest.mark.parametrize("A_raw, alpha, beta, B", [(0.02, 0.25, 0.5, 2.0),      # unbounded growth
                                                   (-4.0, -0.3, -0.4, 3.0)])    # growth saturating at B
def test_increasing_law_recovered_within_its_cis(A_raw, alpha, beta, B):
    """Points drawn from a law that rises in P and t, with noise (30 draws): each fitted parameter's 95% CI
    holds the truth in at least 80% of the draws, for the constrained (increasing) and the general (shifted)
    fit alike, and the estimates sit on the truth."""
    from forgetscope.analysis.scaling import fit_increasing_power_law

    P, t = grid()
    clean = B + A_raw * P ** alpha * t ** beta
    P0, t0 = np.exp(np.log(P).mean()), np.exp(np.log(t).mean())
    truth = {"A": A_raw * P0 ** alpha * t0 ** beta, "alpha": alpha, "beta": beta, "B": B}
    for fit in (fit_increasing_power_law, fit_shifted_power_law):
        covered = {name: 0 for name in truth}
        estimates = {name: [] for name in truth}
        for draw in range(30):
            y = clean + 0.01 * np.ptp(clean) * np.random.default_rng(draw).standard_normal(len(P))
            f = fit(P, t, y)
            for name, value in truth.items():
                lo, hi = f.ci95[name]
                covered[name] += lo < value < hi
                estimates[name].append(f.params[name])
        assert min(covered.values()) >= 24, (fit.__name__, covered)
        for name, value in truth.items():
            assert np.median(estimates[name]) == pytest.approx(value, rel=0.05), (fit.__name__, name)
    inc = fit_increasing_power_law(P, t, clean)
    assert inc.meta["branch"] == ("growing" if A_raw > 0 else "saturating") and inc.meta["at_bound"] == []


def test_increasing_law_refuses_to_fall():
    """Forgetting that falls with P: the general law follows it, the increasing law stops at alpha = 0."""
    from forgetscope.analysis.scaling import fit_increasing_power_law

    P, t = grid()
    y = 2.0 + 0.5 * P ** -0.3 * t ** 0.2
    general = fit_shifted_power_law(P, t, y)
    assert general.params["alpha"] == pytest.approx(-0.3, abs=1e-3)
    inc = fit_increasing_power_law(P, t, y)
    assert inc.meta["at_bound"] == ["alpha"] and inc.params["beta"] > 0
    assert inc.goodness["rmse"] > 10 * general.goodness["rmse"]


def test_trivial_extrapolations_by_hand():
    """last_observed and loglinear computed from the fitted points of the same run (largest_t) or of the same
    step (largest_p)."""
    from forgetscope.analysis.scaling import trivial_extrapolations

    pts = pd.DataFrame({"run": ["a"] * 3 + ["b"] * 3, "P": [10] * 3 + [20] * 3, "t": [1, 2, 4] * 2,
                        "f": [1.0, 2.0, 3.5, 0.5, 1.0, 1.2]})
    held = holdout_mask(pts, "largest_t")
    got = trivial_extrapolations(pts[~held], pts[held], "f", "largest_t")
    np.testing.assert_allclose(got["last_observed"], [2.0, 1.0])
    # a line in log t through (log 1, 1), (log 2, 2) reaches 3 at log 4; through (0, .5), (log 2, 1): 1.5
    np.testing.assert_allclose(got["loglinear"], [3.0, 1.5])
    by_p = pd.DataFrame({"task": "x", "seed": 0, "t": [5] * 3 + [10] * 3, "P": [1, 2, 4] * 2,
                         "f": [1.0, 1.5, 9.0, 2.0, 2.0, 9.0]})
    held = holdout_mask(by_p, "largest_p")
    got = trivial_extrapolations(by_p[~held], by_p[held], "f", "largest_p")
    np.testing.assert_allclose(got["last_observed"], [1.5, 2.0])
    np.testing.assert_allclose(got["loglinear"], [2.0, 2.0])
    assert trivial_extrapolations(by_p, by_p, "f", "random") == {}


@pytest.mark.parametrize("rule", ["largest_t", "largest_p"])
def test_heldout_comparison_scores_laws_and_baselines_on_the_same_points(rule):
    df = planted_points()
    rep = fit_scaling(df, holdout=rule)
    comp = rep.fits and rep.heldout_comparison["ce_forgetting"]
    assert set(comp) == {"shifted", "increasing", "power", "last_observed", "loglinear"}
    assert len({e["n"] for e in comp.values()}) == 1 and comp["shifted"]["n"] == rep.n_heldout
    for law in ("shifted", "increasing"):
        assert comp[law]["rmse"] < 0.1 * min(comp["last_observed"]["rmse"], comp["loglinear"]["rmse"])
    assert rep.to_dict()["heldout_comparison"]["ce_forgetting"]["loglinear"]["rmse"] == comp["loglinear"]["rmse"]


def test_judge_laws_per_task():
    from forgetscope.analysis.scaling import fit_scaling_by_task, judge_laws

    grows = planted_points().assign(task="grows", run=lambda d: "g" + d["run"])
    falls = planted_points().assign(task="falls", run=lambda d: "f" + d["run"])
    falls["ce_forgetting"] = 4.0 - 0.4 * (falls["ce_forgetting"] - 2.0)  # falls with P and t
    falls["task_loss"] = 4.0 - 0.2 * (falls["ce_forgetting"] - 2.0) ** 2 + 0.01 * np.arange(len(falls))
    rep = fit_scaling_by_task(pd.concat([grows, falls], ignore_index=True), holdout="largest_t")
    assert set(rep.by_task) == {"grows", "falls"}
    verdict = judge_laws(rep.by_task, target="ce_forgetting", law="increasing", min_tasks=1)
    grown = verdict["per_task"]["grows"]
    assert {k: grown[k] for k in ("reasons", "extrapolates", "grows", "inverse_linear")} == \
        {"reasons": [], "extrapolates": True, "grows": True, "inverse_linear": True}
    assert grown["ci_used"] == verdict["ci_used"] and "jackknife" in verdict["ci_used"]
    assert grown["intervals"]["alpha"][0] > 0 and grown["intervals"]["c"][1] < 0
    assert not verdict["per_task"]["falls"]["grows"] and verdict["per_task"]["falls"]["reasons"]
    assert verdict["tasks_meeting"]["grows"] == 1 and verdict["supported"]
    assert not judge_laws(rep.by_task, target="ce_forgetting", law="increasing", min_tasks=2)["supported"]
    assert json.loads(json.dumps(rep.to_dict(), default=float))["by_task"]["grows"]["fits"]


# --------------------------------------------------------------------------- validation at the door
def test_short_grids_are_refused(tmp_path):
    from forgetscope.errors import ConfigError
    from forgetscope.experiments.scaling import load_scaling_config

    p = tmp_path / "c.yaml"
    for field, values in (("ranks", "[4, 8]"), ("eval_steps", "[10, 20, 20]")):
        p.write_text(f"task: code\n{field}: {values}\n")
        with pytest.raises(ConfigError, match=f"{field}.*at least 3 distinct values"):
            load_scaling_config(p)
    p.write_text("tasks: [code, bible]\ntask: code\n")
    with pytest.raises(ConfigError, match="either task"):
        load_scaling_config(p)
    p.write_text("tasks: [code]\ncriteria: {min_tasks: 2}\n")
    with pytest.raises(ConfigError, match="criteria.min_tasks"):
        load_scaling_config(p)
    p.write_text("task: code\nlaws: [power]\ncriteria: {law: increasing}\n")
    with pytest.raises(ConfigError, match="criteria.law"):
        load_scaling_config(p)
    p.write_text("task: code\ncriteria: {baselines: []}\n")
    with pytest.raises(ConfigError, match="criteria.baselines"):
        load_scaling_config(p)


def test_holdout_that_leaves_nothing_to_fit_is_refused(tmp_path, monkeypatch):
    """With grids of one value allowed, holding out the largest rank would leave nothing: refused at load."""
    from forgetscope.errors import ConfigError
    from forgetscope.experiments import scaling as ss

    assert ss.fit_points_per_task([8], [5, 10, 20], "largest_p") == 0
    assert ss.fit_points_per_task([1, 2, 4], [5, 10, 20], "largest_t", n_seeds=2) == 12
    monkeypatch.setattr(ss, "MIN_GRID", 1)
    p = tmp_path / "c.yaml"
    p.write_text("task: code\nranks: [8]\neval_steps: [5, 10, 20]\nholdout: largest_p\n")
    with pytest.raises(ConfigError, match="holdout: largest_p leaves 0 points of each task to fit"):
        ss.load_scaling_config(p)


def test_cli_refuses_a_short_grid_before_training(tmp_path, capsys):
    from forgetscope.cli import run_app

    out = tmp_path / "out"
    p = tmp_path / "c.yaml"
    p.write_text(f"task: code\noutput: {out}\nranks: [4, 8]\n")
    assert run_app(["scaling", str(p)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "ranks" in err and "at least 3" in err
    assert not out.exists()


def test_scaling_study_config_is_the_registered_design():
    from forgetscope.data.demo import demo_task_names
    from forgetscope.experiments.scaling import load_scaling_config

    cfg = load_scaling_config("configs/scaling_study.yaml")
    names = [t.name for t in cfg.task_list]
    assert len(names) >= 4 and set(names) <= set(demo_task_names("instruction"))
    assert max(cfg.ranks) / min(cfg.ranks) >= 16  # LoRA parameters are proportional to the rank
    assert len(cfg.eval_steps) >= 5 and max(cfg.eval_steps) / min(cfg.eval_steps) >= 8
    assert cfg.upstream.source == "demo" and cfg.upstream.lm_targets == "human" and cfg.upstream.n_instruct == 0
    assert cfg.criteria is not None and cfg.criteria.target == "ce_forgetting" and cfg.criteria.law in cfg.laws
    assert cfg.holdout == "largest_t" and cfg.criteria.min_tasks <= len(names)


def test_the_registered_study_runs_in_the_chosen_regime_and_a_pending_copy_trains_nothing(tmp_path):
    from conftest import chosen_regime_train

    from forgetscope.errors import ConfigError
    from forgetscope.experiments.scaling import load_scaling_config, run_scaling_sweep

    cfg = load_scaling_config("configs/scaling_study.yaml")
    chosen = {k: v for k, v in chosen_regime_train().items() if k != "lora_rank"}  # the rank grid sets the rank
    assert cfg.train.model_dump(include=set(chosen)) == chosen and cfg.pending == []
    steps = chosen["steps"]
    assert cfg.eval_steps == [steps // 4, steps // 2, steps, 2 * steps, 4 * steps]
    waiting = cfg.model_copy(update={"pending": ["train"]})
    with pytest.raises(ConfigError, match="pending: train"):
        run_scaling_sweep(waiting, output=tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert waiting.fingerprint() == cfg.fingerprint()  # not a result setting


def test_scaling_check_prints_the_plan_and_refuses_a_pending_config_with_exit_2(tmp_path, capsys, monkeypatch):
    import yaml

    import forgetscope.models
    from forgetscope.cli.app import run_app

    def no_weights(*args, **kwargs):
        raise AssertionError("scaling --check loaded the model's weights")

    monkeypatch.setattr(forgetscope.models, "load_model", no_weights)
    out = tmp_path / "out"
    assert run_app(["scaling", "configs/scaling_study.yaml", "-o", str(out), "--check"]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "20 runs: 4 tasks x 1 seeds x ranks [1, 2, 4, 8, 16], checkpoints at steps [10, 20, 40, 80, 160]" in printed
    data = yaml.safe_load(open("configs/scaling_study.yaml"))
    data["pending"] = ["train"]
    (tmp_path / "waiting.yaml").write_text(yaml.safe_dump(data))
    assert run_app(["scaling", str(tmp_path / "waiting.yaml"), "-o", str(out), "--check"]) == 2
    assert "pending: train still hold placeholders" in capsys.readouterr().err
    assert not out.exists()


# --------------------------------------------------------------------------- decisions on runs, not checkpoints
STUDY_RANKS, STUDY_STEPS = (1, 2, 4, 8, 16), (10, 20, 40, 80, 160)


def study_task(task: str, *, alpha: float = 0.25, beta: float = 0.5, offsets=(0.0,) * 5, noise: float = 0.002,
               seed: int = 0) -> pd.DataFrame:
    """One task's checkpoints on the registered study's grid (t = 0 rows included): forgetting
    ``2 + 0.05 (P/P0)^alpha (t/t0)^beta (1 + offset of the run)`` plus independent noise, and a task loss
    falling linearly as forgetting rises."""
    rng = np.random.default_rng(seed)
    rows = []
    for rank, offset in zip(STUDY_RANKS, offsets):
        P = 1000 * rank
        for t in (0, *STUDY_STEPS):
            y = 2.0 if t == 0 else (2.0 + 0.05 * (P / 4000) ** alpha * (t / 40) ** beta * (1 + offset)
                                    + noise * rng.standard_normal())
            rows.append({"run": f"{task}__lora_r{rank}__s0", "task": task, "seed": 0, "rank": rank, "P": P, "t": t,
                         "ce_forgetting": y, "task_loss": 3.0 - 0.5 * y + 0.002 * rng.standard_normal()})
    return pd.DataFrame(rows)


def test_least_squares_ci_is_undefined_without_a_positive_standard_error():
    """A zero or non-finite standard error gives no interval (NaN), never a zero-width one that excludes 0;
    a decision on such an interval fails, with a reason."""
    from forgetscope.analysis.scaling import _ci, judge_report

    got = _ci(np.array([1.0, 2.0, 3.0, 4.0]), np.array([0.0, np.nan, np.inf, 0.5]), 10)
    assert all(math.isnan(v) for ci in got[:3] for v in ci) and got[3][0] < 4.0 < got[3][1]
    rep = fit_scaling(study_task("a"), targets=["ce_forgetting"], laws=["increasing"])
    fit = rep.fits["ce_forgetting"]["increasing"]
    assert judge_report(rep, target="ce_forgetting", law="increasing", decision_ci="least_squares")["grows"]
    fit.stderr["alpha"], fit.ci95["alpha"] = 0.0, (fit.params["alpha"], fit.params["alpha"])
    naive = judge_report(rep, target="ce_forgetting", law="increasing", decision_ci="least_squares")
    assert not naive["grows"] and any("alpha: least-squares CI undefined" in r for r in naive["reasons"])
    assert judge_report(rep, target="ce_forgetting", law="increasing")["grows"]  # the jackknife's is defined
    fit.jackknife["stderr"]["beta"] = 0.0
    fit.jackknife["ci95"]["beta"] = (fit.params["beta"], fit.params["beta"])
    jack = judge_report(rep, target="ce_forgetting", law="increasing")
    assert not jack["grows"] and any("beta: jackknife CI undefined" in r for r in jack["reasons"])


def test_jackknife_over_runs_does_not_read_a_shared_run_offset_as_growth_in_p():
    """No true effect of the rank (alpha = 0), but each run's excess carries its own multiplicative offset: the
    least-squares CI, treating a run's checkpoints as independent, excludes 0 and would call it growth; the
    leave-one-run-out jackknife CI (t on 4 degrees of freedom) does not."""
    from forgetscope.analysis.scaling import JACKKNIFE_CI, judge_report, run_jackknife

    points = study_task("a", alpha=0.0, offsets=(-0.1, 0.0, -0.05, 0.1, 0.05), noise=0.001)
    rep = fit_scaling(points, targets=["ce_forgetting"], laws=["increasing"])
    naive = judge_report(rep, target="ce_forgetting", law="increasing", decision_ci="least_squares")
    assert naive["grows"] and naive["intervals"]["alpha"][0] > 0
    jack = judge_report(rep, target="ce_forgetting", law="increasing")
    assert not jack["grows"] and jack["ci_used"] == JACKKNIFE_CI
    lo, hi = jack["intervals"]["alpha"]
    assert lo < 0 < hi and any("alpha 95% CI" in r for r in jack["reasons"])
    jk = run_jackknife(rep, "ce_forgetting", "increasing")
    assert jk["n_runs"] == 5 and jk["dof"] == 4 and len(jk["estimates"]) == 5
    theta = np.array([e["alpha"] for e in jk["estimates"].values()])
    se = math.sqrt(4 / 5 * np.sum((theta - theta.mean()) ** 2))
    q = float(__import__("scipy").stats.t.ppf(0.975, 4))
    alpha = rep.fits["ce_forgetting"]["increasing"].params["alpha"]
    assert jk["stderr"]["alpha"] == pytest.approx(se) and (lo, hi) == pytest.approx((alpha - q * se, alpha + q * se))
    d = json.loads(json.dumps(rep.to_dict(), default=float))["fits"]["ce_forgetting"]["increasing"]
    assert d["jackknife"]["ci95"]["alpha"] == pytest.approx([lo, hi]) and "descriptive" in d["ci95_method"]


def test_a_failed_jackknife_refit_leaves_the_criterion_unmet():
    """Three runs of three checkpoints, the last held out: leaving a run out leaves four points, too few for
    the shifted law's four parameters, so the jackknife CI is undefined and growth is not claimed."""
    from forgetscope.analysis.scaling import judge_report

    points = study_task("a")
    points = points[points["rank"].isin([1, 4, 16]) & points["t"].isin([0, 10, 40, 160])]
    rep = fit_scaling(points, targets=["ce_forgetting"], laws=["increasing"])
    verdict = judge_report(rep, target="ce_forgetting", law="increasing")
    assert not verdict["grows"] and verdict["intervals"]["alpha"] is None
    assert any("jackknife CI undefined (the refit without run" in r for r in verdict["reasons"])


def test_linear_fit_uses_every_checkpoint():
    """The task-loss relation extrapolates nothing: it is fitted on every point with t > 0, held-out ones too."""
    rep = fit_scaling(planted_points(), holdout="largest_t")
    assert rep.fits["ce_forgetting"]["shifted"].n == 25 and rep.fits["ce_forgetting"]["linear"].n == 30
    assert rep.fits["ce_forgetting"]["linear"].heldout == {}


def test_a_task_without_the_law_meets_no_criterion_and_no_pooled_fit_stands_in():
    from forgetscope.analysis.scaling import fit_scaling_by_task, judge_laws, judge_report
    from forgetscope.experiments.scaling import task_reports

    rep = fit_scaling(study_task("a"), targets=["ce_forgetting"], laws=["shifted"])  # no increasing fit
    assert rep.fits["ce_forgetting"]["linear"].params["c"] < 0
    verdict = judge_report(rep, target="ce_forgetting", law="increasing")
    assert verdict == {"reasons": ["no increasing fit of ce_forgetting"], "extrapolates": False, "grows": False,
                       "inverse_linear": False}
    both = pd.concat([study_task("a"), study_task("b", seed=1)], ignore_index=True)
    pooled = fit_scaling_by_task(both, targets=["ce_forgetting"], laws=["increasing"])
    pooled.by_task.clear()  # every task's own fit failed
    reports = task_reports(both, pooled)
    assert reports == {"a": None, "b": None}
    got = judge_laws(reports, target="ce_forgetting", law="increasing", min_tasks=1)
    assert got["n_tasks"] == 2 and got["tasks_meeting"] == {"extrapolates": 0, "grows": 0, "inverse_linear": 0}
    assert not got["supported"]


def test_extrapolates_is_judged_on_the_points_the_law_and_its_baselines_share():
    """Another law's missing predictions do not shrink the points the judged law is scored on."""
    from forgetscope.analysis.scaling import heldout_comparison, judge_report

    rep = fit_scaling(study_task("a"), targets=["ce_forgetting"], laws=["increasing", "power"])
    y = np.zeros(5)
    preds = {"increasing": np.full(5, 0.1), "power": np.array([np.nan] * 4 + [0.0]),
             "last_observed": np.array([0.2, 0.2, 0.2, 0.2, 0.0]), "loglinear": np.array([0.2, 0.2, 0.2, 0.2, 0.0])}
    rep.fit_data["heldout"]["ce_forgetting"] = (y, preds)
    assert heldout_comparison(y, preds)["increasing"]["n"] == 1  # every law: one shared point, the law loses
    verdict = judge_report(rep, target="ce_forgetting", law="increasing")
    assert verdict["extrapolates"] and verdict["heldout_n"] == 5
    assert verdict["heldout_rmse"]["increasing"] == pytest.approx(0.1)  # the RMSE decided on, recorded
    assert verdict["heldout_rmse"]["last_observed"] == pytest.approx(0.2 * np.sqrt(0.8))


def test_exponent_agreement_across_tasks():
    """Cochran's Q on the per-task jackknife SEs: tasks drawn with one pair of exponents agree (Q not
    significant), tasks whose exponent on P differs several-fold do not."""
    from forgetscope.analysis.scaling import cochran_q, fit_scaling_by_task, judge_laws

    same = pd.concat([study_task(f"t{i}", seed=i) for i in range(4)], ignore_index=True)
    apart = pd.concat([study_task(f"t{i}", alpha=a, seed=i) for i, a in enumerate((0.05, 0.25, 0.5, 0.8))],
                      ignore_index=True)
    got = {}
    for name, points in (("same", same), ("apart", apart)):
        rep = fit_scaling_by_task(points, targets=["ce_forgetting"], laws=["increasing"])
        got[name] = judge_laws(rep.by_task, target="ce_forgetting", law="increasing")["exponent_agreement"]
    for p in ("alpha", "beta"):
        assert got["same"][p]["k"] == 4 and got["same"][p]["df"] == 3 and got["same"][p]["p"] > 0.05
    assert got["apart"]["alpha"]["p"] < 1e-3 and got["apart"]["alpha"]["I2"] > 0.9
    row = got["apart"]["per_task"]["t3"]["alpha"]
    assert row["ci95"][0] < row["estimate"] < row["ci95"][1] and row["se"] > 0 and "ci95_least_squares" in row
    q = cochran_q([1.0, 2.0], [1.0, 1.0])
    assert q["pooled"] == 1.5 and q["Q"] == pytest.approx(0.5) and q["I2"] == 0.0
    assert q["p"] == pytest.approx(__import__("scipy").stats.chi2.sf(0.5, 1))


def test_a_secondary_holdout_never_replaces_the_primary_fit(tmp_path):
    """The registered study's secondary analysis (largest_p) goes to fit_largest_p.json and *_largest_p.png,
    its criteria marked secondary; fit.json and the primary figures are left as they were."""
    from forgetscope.errors import ForgetscopeError
    from forgetscope.experiments.scaling import check_holdout, fit_and_write, load_scaling_config

    cfg = load_scaling_config("configs/scaling_study.yaml")
    points = pd.concat([study_task(t.name, seed=i) for i, t in enumerate(cfg.task_list)], ignore_index=True)
    report, paths = fit_and_write(points, cfg, tmp_path)
    out = tmp_path / "scaling"
    assert paths["fit"] == out / "fit.json" and report.holdout_role == "primary"
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert {"fit.json", "scaling_fit.png"} <= set(before)
    primary = json.loads(before["fit.json"])
    assert primary["holdout_rule"] == "largest_t" and primary["criteria"]["criteria_role"] == "primary"
    assert primary["criteria"]["n_tasks"] == 4 and "exponent_agreement" in primary["criteria"]
    report, paths = fit_and_write(points, cfg, tmp_path, holdout="largest_p")
    assert paths["fit"] == out / "fit_largest_p.json" and paths["scaling_fit"] == out / "scaling_fit_largest_p.png"
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name in before} == before
    secondary = json.loads(paths["fit"].read_text())
    assert secondary["holdout_rule"] == "largest_p" and secondary["holdout_role"] == "secondary"
    assert secondary["criteria"]["criteria_role"] == "secondary"
    assert secondary["criteria"]["holdout_rule"] == "largest_p"
    with pytest.raises(ForgetscopeError, match="unknown hold-out rule 'bogus'"):
        check_holdout(cfg, "bogus")
