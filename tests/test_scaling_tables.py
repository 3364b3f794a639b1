"""benchmarks/scaling_tables.py: the scaling study's verdict and exponents are copied from fit.json into tables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import load_script

tables = load_script(Path(__file__).parents[1] / "benchmarks" / "scaling_tables.py")
STUDY = Path(__file__).parents[1] / "configs" / "scaling_study.yaml"
JK = "leave-one-run-out jackknife, t on runs - 1 degrees of freedom"


def _task(alpha: float, rmse: float) -> dict:
    fits = {"ce_forgetting": {"increasing": {"params": {"alpha": alpha, "beta": 0.75}},
                              "linear": {"params": {"c": -0.0812}}}}
    comp = {"ce_forgetting": {"increasing": {"rmse": rmse}, "last_observed": {"rmse": 0.0301},
                              "loglinear": {"rmse": 0.0202}}}
    return {"fits": fits, "heldout_comparison": comp}


def _fit() -> dict:
    per = {"a": {"extrapolates": True, "grows": True, "inverse_linear": True, "heldout_n": 5, "reasons": [],
                 "intervals": {"alpha": [0.11, 0.55], "beta": [0.2, 1.3], "c": [-0.12, -0.04]}},
           "b": {"extrapolates": False, "grows": False, "inverse_linear": True, "heldout_n": 5,
                 "reasons": ["alpha 95% CI [-0.1, 0.4] includes 0"],
                 "intervals": {"alpha": [-0.1, 0.4], "beta": [0.3, 1.1], "c": [-0.2, -0.01]}}}
    exp = {"estimate": 0.333, "se": 0.05, "at_bound": False, "ci95": [0.2, 0.46], "se_least_squares": 0.03,
           "ci95_least_squares": [0.27, 0.39]}
    q = {"k": 2, "pooled": 0.333, "pooled_se": 0.035, "Q": 1.25, "df": 1, "p": 0.264, "I2": 0.2,
         "tasks": ["a", "b"], "excluded": []}
    crit = {"target": "ce_forgetting", "law": "increasing", "baselines": ["last_observed", "loglinear"],
            "min_tasks": 2, "n_tasks": 2, "tasks_meeting": {"extrapolates": 1, "grows": 1, "inverse_linear": 2},
            "holds": {"extrapolates": False, "grows": False, "inverse_linear": True}, "supported": False,
            "ci_used": JK, "per_task": per,
            "exponent_agreement": {"per_task": {"a": {"alpha": exp, "beta": exp}, "b": None}, "alpha": q, "beta": q}}
    return {"holdout_rule": "largest_t", "holdout_role": "primary", "n_points": 50, "n_heldout": 10,
            "by_task": {"a": _task(0.321, 0.0101), "b": _task(0.123, 0.0404)}, "criteria": crit}


def _config(tmp_path: Path) -> Path:
    cfg = yaml.safe_load(STUDY.read_text(encoding="utf-8"))
    cfg["output"] = str(tmp_path / "sweep")
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def test_tables_copy_the_verdict_and_the_numbers_it_was_decided_on(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    scaling = tmp_path / "sweep" / "scaling"
    scaling.mkdir(parents=True)
    (scaling / "fit.json").write_text(json.dumps(_fit()), encoding="utf-8")
    assert tables.main([str(cfg)]) == 0
    text = (scaling / "tables.md").read_text(encoding="utf-8")
    assert "| a | 0.0101 / 0.0301 / 0.0202 (5) | yes | +0.321 [+0.110, +0.550] |" in text
    assert "| b | 0.0404 / 0.0301 / 0.0202 (5) | no | +0.123 [-0.100, +0.400] |" in text
    assert "| grows | 1 of 2 | no |" in text and "| inverse_linear | 2 of 2 | yes |" in text
    assert "is not supported here" in text
    assert "* b: alpha 95% CI [-0.1, 0.4] includes 0" in text
    assert "| b | – | no fit |" in text
    assert "| alpha | 2 | +0.333 ± 0.035 | 1.25 (1) | 0.264 | 0.20 | none |" in text


def test_a_study_without_its_fit_is_refused_and_nothing_is_written(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _config(tmp_path)
    assert tables.main([str(cfg)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "sweep").exists()


def test_a_task_without_its_own_fit_shows_no_numbers_not_the_pooled_ones(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    scaling = tmp_path / "sweep" / "scaling"
    scaling.mkdir(parents=True)
    fit = _fit()
    del fit["by_task"]["b"]
    fit["fits"] = _task(0.999, 0.0999)["fits"]  # the pooled fit, which must not stand in for b
    (scaling / "fit.json").write_text(json.dumps(fit), encoding="utf-8")
    assert tables.main([str(cfg)]) == 0
    text = (scaling / "tables.md").read_text(encoding="utf-8")
    assert "| b | no fit | no | – | – | no | – | no |" in text
    assert "+0.999" not in text
