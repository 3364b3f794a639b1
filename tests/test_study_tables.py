"""benchmarks/study_tables.py: every claim's numbers are copied from claims.json into its table."""

from __future__ import annotations

from pathlib import Path

from conftest import load_script

tables = load_script(Path(__file__).parents[1] / "benchmarks" / "study_tables.py")

TEST = {"n": 12, "mean_diff": 0.123, "ci_low": 0.05, "ci_high": 0.2, "p_wilcoxon": 0.0042}


def _claims() -> dict:
    return {
        "study": "configs/studies/x.yaml", "regime": "r1", "n_runs": 96, "n_planned": 96, "complete": True,
        "n_task_runs": 60, "n_examples_lm": 400,
        "marginals": {"not_computed": "too few runs"},
        "format_control": {"share": {"interaction_share": 0.314, "interaction_share_all": 0.111},
                           "specificity": {"n_tasks": 12, "mean_r_seed": 0.61, "mean_r_format": 0.42,
                                           "mean_r_format_seeds": 0.35, "mean_r_format_disattenuated": 0.9,
                                           "control_noisier_than_tasks": True, "shown": True, "test": TEST}},
        "effect_null": {"n_tasks": 12, "mean_r_seed_replica": 0.6, "mean_r_effect_null": 0.1, "test": TEST,
                        "shown": True, "effect_ratio_median": 0.97, "effect_ratio_subset_median": 1.01,
                        "n_not_matched": 2},
        "learning": {"all_tasks": {"n_tasks": 30, "pearson": 0.45, "p": 0.012, "p_holm": 0.024, "spearman": 0.4,
                                   "spearman_p": 0.03, "loo_min": 0.3, "loo_max": 0.5, "loo_max_p": 0.09,
                                   "most_influential": "html_entities", "holds": False}},
        "completion": {"protocol": "5 folds", "summary": [{"predictor": "lowrank", "coverage": 0.897}],
                       "tests_against_additive": [{"predictor": "lowrank", "n_tasks": 30, "rmse": 0.2263,
                                                   "rmse_baseline": 0.2457, "mean_diff": -0.0194, "ci_low": -0.03,
                                                   "ci_high": -0.01, "tasks_better": 24,
                                                   "p_wilcoxon_holm": 0.0003}],
                       "coverage_per_task": {"lowrank": {"task_min": 0.571, "task_p10": 0.76, "tasks_below": 4}}},
        "flatness": {"primary": {"covariates": ["learning"], "measures": {
            "sharpness_sam_rise": {"n_tasks": 30, "spearman": 0.33, "p": 0.07, "p_holm": 0.14, "partial_coef": 0.2,
                                   "partial_ci": [-0.1, 0.5]}}}},
        "damage": {"criteria": {"damage": {"value": 0.052, "target": 0.1, "met": True}}},
        "earlier_study_r2": {"shape": [60, 400], "global": [0.597] * 5, "reference": [0.604] * 5},
        "per_task": [{"task": "capital_cities", "family": "instruction", "n_seeds": 2, "mean_f": 0.0083,
                      "learning": 3.799}],
    }


def test_each_claim_table_carries_its_numbers_and_its_control():
    text = tables.render(_claims())
    assert "96 of 96 planned runs (complete)" in text
    assert "C1–C3: not computed (too few runs)" in text
    assert "| 12 tasks | +0.610 | +0.420 | +0.123 [+0.050, +0.200] | 0.900 | r +0.350 (noisier than the tasks) " \
           "| shown |" in text
    assert "| 0.97 / 1.01 (2 not matched) | shown |" in text
    assert "| all_tasks | 30 | +0.450 (0.012, 0.024) | +0.400 (0.03) | +0.300 … +0.500, 0.09 | html_entities | no |" \
        in text
    assert "| lowrank | 30 | 0.2263 | 0.2457 | -0.0194 [-0.0300, -0.0100] | 24 | 0.0003 |" in text
    assert "| lowrank | 0.897 | 0.571 | 0.760 | 4 |" in text
    assert "| sharpness_sam_rise | learning | 30 | +0.330 (0.07, 0.14) | +0.200 [-0.100, +0.500] |" in text
    assert "| damage | 0.052 | 0.100 | yes |" in text
    assert "| capital_cities | instruction | 2 | +0.0083 | 3.799 |" in text
