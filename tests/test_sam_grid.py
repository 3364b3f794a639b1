"""The SAM radius grid: a grid without 0 is refused in one line, the grid becomes one sam arm per radius, and
its primary contrast (forgetting at matched task loss) is computed as stated."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

GRID = "configs/sam_rho_grid.yaml"


def _grid_yaml(tmp_path, **changes) -> str:
    data = yaml.safe_load(open(GRID))
    data.update(changes)
    p = tmp_path / "grid.yaml"
    p.write_text(yaml.safe_dump(data))
    return str(p)


def test_committed_grid_is_the_registered_design():
    from forgetscope.data.demo import demo_task_names
    from forgetscope.experiments.compare import load_compare_config
    from forgetscope.experiments.compare.sam_grid import SamGridConfig

    cfg = load_compare_config(GRID)
    assert isinstance(cfg, SamGridConfig)
    rho = cfg.sam_grid.rho
    assert 0.0 in rho and len(rho) >= 4 and min(r for r in rho if r > 0) < 2.0 < max(rho)  # spans Li et al.'s 2
    assert [s.display for s in cfg.strategies] == [f"sam-rho{r:g}" for r in rho if r > 0]
    assert [s.options["rho"] for s in cfg.strategies] == [r for r in rho if r > 0]
    names = [t.name for t in cfg.tasks]
    assert len(names) >= 6 and set(names) <= set(demo_task_names("instruction"))
    assert cfg.primary_arm == "sam-rho2" and cfg.primary.matched_on == "task_loss_after"
    assert cfg.primary.alternative == "less" and "matched task loss" in cfg.primary.question


def test_grid_without_zero_is_refused_in_one_line(tmp_path, capsys):
    from forgetscope.cli import run_app
    from forgetscope.errors import ConfigError
    from forgetscope.experiments.compare import load_compare_config

    bad = _grid_yaml(tmp_path, sam_grid={"rho": [0.05, 0.5, 2.0, 5.0]})
    with pytest.raises(ConfigError, match=r"sam_grid\.rho: .*has no 0"):
        load_compare_config(bad)
    assert run_app(["compare", bad, "--check"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "sam_grid.rho" in err and "has no 0" in err


@pytest.mark.parametrize("changes, message", [
    ({"sam_grid": {"rho": [0.0]}}, "at least one radius above 0"),
    ({"sam_grid": {"rho": [0.0, -1.0, 2.0]}}, "finite and >= 0"),
    ({"primary": {"rho": 0.3}}, r"primary\.rho: 0\.3 is not a radius"),
    ({"strategies": [{"name": "sam"}]}, "gets its strategies from the grid"),
])
def test_grid_mistakes_are_refused(tmp_path, changes, message):
    from forgetscope.errors import ConfigError
    from forgetscope.experiments.compare import load_compare_config

    with pytest.raises(ConfigError, match=message):
        load_compare_config(_grid_yaml(tmp_path, **changes))


def _per_run(f_plain, f_sam, l_plain, l_sam, seeds=(0, 1)):
    rows = []
    for i, task in enumerate(f"t{k}" for k in range(len(f_plain))):
        for s in seeds:
            jitter = 0.01 * (s - 0.5)  # seeds differ; their mean is the task's value
            rows.append({"strategy": "plain", "task": task, "seed": s, "forgetting_heldout": f_plain[i] + jitter,
                         "task_loss_after": l_plain[i] - jitter})
            rows.append({"strategy": "sam-rho2", "task": task, "seed": s, "forgetting_heldout": f_sam[i] + jitter,
                         "task_loss_after": l_sam[i] + jitter})
    return pd.DataFrame(rows)


def test_matched_contrast_by_hand():
    from scipy import stats

    from forgetscope.analysis.stats import matched_contrast

    f_plain = np.array([0.10, 0.20, 0.15, 0.30, 0.25])
    l_plain = np.array([1.0, 1.2, 0.8, 1.5, 1.1])
    d_l = np.array([0.30, -0.10, 0.20, 0.05, 0.40])
    d_f = -0.02 - 0.1 * d_l + np.array([0.004, -0.003, 0.001, -0.002, 0.0])
    r = matched_contrast(_per_run(f_plain, f_plain + d_f, l_plain, l_plain + d_l), "sam-rho2", "plain")
    slope, gamma = np.polyfit(d_l, d_f, 1)
    resid = d_f - (gamma + slope * d_l)
    se = np.sqrt(resid @ resid / 3 * (1 / 5 + d_l.mean() ** 2 / ((d_l - d_l.mean()) ** 2).sum()))
    assert r["n_tasks"] == 5 and r["dof"] == 3
    assert r["gamma"] == pytest.approx(gamma) and r["slope"] == pytest.approx(slope) and r["se"] == pytest.approx(se)
    assert r["p"] == pytest.approx(stats.t.cdf(gamma / se, 3)) and r["p"] < 0.05
    assert r["mean_diff"] == pytest.approx(d_f.mean()) and r["note"] == ""
    # every task learns less with SAM: the matched point is an extrapolation, and says so
    r = matched_contrast(_per_run(f_plain, f_plain + d_f, l_plain, l_plain + np.abs(d_l) + 0.1), "sam-rho2", "plain")
    assert "extrapolated" in r["note"]
    # the same task-loss difference everywhere: no slope, gamma is the mean difference
    r = matched_contrast(_per_run(f_plain, f_plain + d_f, l_plain, l_plain + 0.2), "sam-rho2", "plain",
                         alternative="two-sided")
    assert r["gamma"] == pytest.approx(d_f.mean()) and r["dof"] == 4 and "constant" in r["note"]
    assert matched_contrast(_per_run(f_plain[:2], f_plain[:2], l_plain[:2], l_plain[:2]), "sam-rho2",
                            "plain")["note"].startswith("not testable")


def test_primary_result_answers_the_registered_question():
    from forgetscope.experiments.compare import load_compare_config
    from forgetscope.experiments.compare.sam_grid import primary_result

    cfg = load_compare_config(GRID)
    f = np.linspace(0.1, 0.3, 6)
    d_l = np.array([0.3, -0.1, 0.2, 0.05, 0.4, 0.1])
    noise = np.array([0.002, -0.001, 0.0, 0.001, -0.002, 0.0])
    res = primary_result(_per_run(f, f - 0.05 + 0.01 * d_l + noise, np.ones(6), 1 + d_l), cfg)
    assert res["arm"] == "sam-rho2" and res["n_tasks"] == 6 and res["gamma"] == pytest.approx(-0.05, abs=1e-3)
    assert res["rejected"] and res["question"] == cfg.primary.question
    assert res["confirmatory"] and res["verdict"] == "rejected" and res["expected_dof"] == 4
    # SAM learns less on every task: the same test, reported as an extrapolation, not a confirmation
    res = primary_result(_per_run(f, f - 0.05 + 0.01 * np.abs(d_l) + noise, np.ones(6), 1 + np.abs(d_l) + 0.05),
                         cfg)
    assert res["extrapolated"] and not res["confirmatory"]
    assert res["verdict"].endswith("not confirmatory: the matched point is extrapolated")
    assert res["covariate_mean_diff"] == pytest.approx(np.abs(d_l).mean() + 0.05)


def test_the_other_radii_get_the_same_contrast_as_secondary(tmp_path):
    from forgetscope.analysis.stats import matched_contrast
    from forgetscope.experiments.compare import load_compare_config
    from forgetscope.experiments.compare.sam_grid import write_primary
    from forgetscope.store.layout import SweepLayout

    cfg = load_compare_config(GRID)
    f = np.linspace(0.1, 0.3, 6)
    d_l = np.array([0.3, -0.1, 0.2, 0.05, 0.4, 0.1])
    per_run = _per_run(f, f - 0.05 + 0.01 * d_l, np.ones(6), 1 + d_l)
    sam2 = per_run[per_run.strategy == "sam-rho2"]
    # two more radii with noisy, moderate effects (gamma near -0.02 and -0.01); rho 5 has no runs
    small = sam2.assign(strategy="sam-rho0.05")
    small["forgetting_heldout"] += 0.03 + np.repeat([0.004, -0.012, 0.009, -0.003, 0.011, -0.008], 2)
    mid = sam2.assign(strategy="sam-rho0.5")
    mid["forgetting_heldout"] += 0.04 + np.repeat([-0.015, 0.02, 0.005, -0.01, 0.012, -0.018], 2)
    every = pd.concat([per_run, small, mid])
    layout = SweepLayout(tmp_path)
    layout.compare_dir.mkdir(parents=True)
    res = write_primary(every, cfg, layout)
    written = json.loads(layout.compare_primary.read_text())
    assert written["arm"] == res["arm"] == "sam-rho2"
    sec = written["secondary_radii"]
    # every other radius above 0 has its entry, the primary radius none
    assert sorted(sec) == ["sam-rho0.05", "sam-rho0.5", "sam-rho5"]
    for label in ("sam-rho0.05", "sam-rho0.5"):
        alone = matched_contrast(every, label, "plain", metric="forgetting_heldout", covariate="task_loss_after",
                                 alternative="less")
        assert sec[label]["gamma"] == pytest.approx(alone["gamma"]) and sec[label]["p"] == pytest.approx(alone["p"])
    p = {k: sec[k]["p"] for k in ("sam-rho0.05", "sam-rho0.5")}
    assert all(1e-4 < v < 0.5 for v in p.values())  # moderate p-values, so the adjustment is visible
    # Holm over the two testable radii: the smaller p doubled, the larger kept (or raised to the first)
    lo, hi = sorted(p, key=p.get)
    assert sec[lo]["p_holm"] == pytest.approx(2 * p[lo])
    assert sec[hi]["p_holm"] == pytest.approx(max(p[hi], 2 * p[lo]))
    assert sec["sam-rho5"]["n_tasks"] == 0 and sec["sam-rho5"]["p_holm"] is None


def test_a_grid_takes_no_second_primary(tmp_path):
    from forgetscope.errors import ConfigError
    from forgetscope.experiments.compare import load_compare_config

    data = yaml.safe_load(open(GRID))
    data["compare"]["primary"] = {"a": "sam-rho2", "b": "plain"}
    p = tmp_path / "g.yaml"
    p.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="compare.primary: a SAM grid's primary contrast is the top-level"):
        load_compare_config(p)


def test_the_registered_grid_runs_in_the_chosen_regime_and_a_pending_copy_starts_no_run(tmp_path):
    from conftest import chosen_regime_train

    from forgetscope.errors import ConfigError
    from forgetscope.experiments.compare import load_compare_config, run_compare

    cfg = load_compare_config(GRID)
    assert cfg.train.model_dump(include=set(chosen_regime_train())) == chosen_regime_train()
    assert cfg.compare.pending == []
    waiting = cfg.model_copy(update={"compare": cfg.compare.model_copy(update={"pending": ["train"]})})
    with pytest.raises(ConfigError, match="compare.pending: train"):
        run_compare(waiting, output=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_grid_run_writes_its_primary_contrast(tiny_dir, tiny_data, tmp_path):
    """Two tiny tasks, one seed, rho in {0, 0.05}: the comparison runs plain and one sam arm, and writes
    primary.json (two tasks are too few for the matched contrast: reported as not testable)."""
    import json

    from conftest import sweep_config_dict

    from forgetscope.experiments.compare import run_compare
    from forgetscope.experiments.compare.sam_grid import SamGridConfig

    d = sweep_config_dict(tiny_dir, tiny_data, tmp_path / "grid", method="lora", lora_rank=2)
    d.update(sam_grid={"rho": [0, 0.05]}, primary={"rho": 0.05}, compare={"bootstrap": 200})
    cfg = SamGridConfig.model_validate(d)
    result = run_compare(cfg)
    assert set(result["per_run"]["strategy"]) == {"plain", "sam-rho0.05"}
    written = json.loads((tmp_path / "grid" / "compare" / "primary.json").read_text())
    assert written["arm"] == "sam-rho0.05" and written["n_tasks"] == 2 and written["gamma"] is None
    assert written["note"].startswith("not testable") and written["rejected"] is False
    assert written["grid"]["rho"] == [0.0, 0.05] and result["paths"]["primary"].name == "primary.json"
