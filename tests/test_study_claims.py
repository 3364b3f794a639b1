"""The claim tests of a replication study, on planted matrices where the answer is known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from forgetscope.analysis.study_claims import (
    effect_null_contrast,
    flatness_tests,
    format_specificity,
    learning_claim,
    learning_correlation_loto,
    per_task_table,
)
from forgetscope.errors import DataError
from forgetscope.store.matrix import ForgettingMatrix

N = 120


def _study(task_specific: float, *, n_tasks: int = 8, seed: int = 0) -> ForgettingMatrix:
    """n_tasks x 2 seeds, plus a format-only row (2 seeds) for every task: each task's row is its format
    pattern plus (task_specific x) its own pattern, shared by both seeds, plus noise."""
    rng = np.random.default_rng(seed)
    fragility = rng.gamma(2.0, 0.05, N)
    rows, runs = [], []
    for t in range(n_tasks):
        fmt, own = rng.normal(size=N), rng.normal(size=N)
        for s in (0, 1):
            rows.append(0.1 + fragility + 0.05 * fmt + task_specific * 0.05 * own + 0.01 * rng.normal(size=N))
            runs.append({"task": f"t{t}", "seed": s, "control": None, "control_of": None})
        for s in (0, 1):
            rows.append(0.05 + fragility + 0.05 * fmt + 0.01 * rng.normal(size=N))
            runs.append({"task": f"t{t}_format", "seed": s, "control": "shuffled_responses", "control_of": f"t{t}"})
    runs_df = pd.DataFrame(runs)
    runs_df["task_loss_before"], runs_df["task_loss_after"] = 2.0, 1.0
    return ForgettingMatrix(np.array(rows), [f"{r['task']}__s{r['seed']}" for r in runs], [f"u{j}" for j in range(N)],
                            runs=runs_df)


def test_task_specific_forgetting_survives_its_format_control_and_a_format_shift_does_not():
    kept = format_specificity(_study(task_specific=1.0))
    assert kept["n_tasks"] == 8 and kept["shown"] and kept["test"]["ci_low"] > 0.2
    gone = format_specificity(_study(task_specific=0.0))
    assert gone["n_tasks"] == 8 and not gone["shown"]
    assert gone["mean_r_seed"] > 0.5  # the seeds agree, but no more than with the format-only runs


def test_a_format_only_pattern_reads_near_one_disattenuated_and_seeds_pair_by_value():
    gone = format_specificity(_study(task_specific=0.0))
    assert 0.8 < gone["mean_r_format_disattenuated"] < 1.2  # the task's reproducible pattern is the format's
    kept = format_specificity(_study(task_specific=1.0))
    assert kept["mean_r_format_disattenuated"] < 0.8
    m = _study(task_specific=1.0)
    runs = m.runs.copy()
    runs.loc[(runs["task"] == "t0_format") & (runs["seed"] == 1), "seed"] = 7  # a control seed no task run has
    res = format_specificity(ForgettingMatrix(m.values, m.row_names, m.col_names, runs=runs))
    assert res["n_tasks"] == 7 and res["tasks_without_matching_seeds"] == ["t0"]
    assert all(row["seeds"] == [0, 1] for row in res["per_task"])


def test_control_rows_are_left_out_of_the_per_task_table():
    table = per_task_table(_study(1.0))
    assert list(table.index) == [f"t{t}" for t in range(8)] and (table["n_seeds"] == 2).all()


def test_a_correlation_carried_by_one_task_fails_leave_one_task_out():
    rng = np.random.default_rng(1)
    learning = rng.normal(size=12)
    table = pd.DataFrame({"learning": learning, "mean_f": rng.normal(size=12)}, index=[f"t{i}" for i in range(12)])
    table.loc["outlier"] = {"learning": 12.0, "mean_f": 12.0}
    res = learning_correlation_loto(table)
    assert res["p"] < 0.05 and res["most_influential"] == "outlier" and res["loo_max_p"] > 0.05
    table["family"] = "instruction"
    assert not learning_claim(table)["all_tasks"]["holds"]
    table["mean_f"] = table["learning"] + 0.1 * rng.normal(size=13)
    assert learning_claim(table)["all_tasks"]["holds"]


def test_forgetting_that_falls_with_learning_does_not_hold_as_growing():
    rng = np.random.default_rng(2)
    learning = rng.normal(size=14)
    table = pd.DataFrame({"learning": learning, "mean_f": -learning + 0.05 * rng.normal(size=14),
                          "family": "instruction"}, index=[f"t{i}" for i in range(14)])
    res = learning_claim(table)["all_tasks"]
    assert res["pearson"] < -0.9 and res["p_holm"] < 0.05 and res["loo_same_sign"]
    assert not res["holds"]


def test_a_task_without_learning_is_dropped_and_named_and_the_holm_family_stays_two():
    rng = np.random.default_rng(3)
    learning = rng.normal(size=10)
    table = pd.DataFrame({"learning": learning, "mean_f": learning + 0.3 * rng.normal(size=10),
                          "family": ["instruction"] * 5 + ["plain_text"] * 5}, index=[f"t{i}" for i in range(10)])
    table.loc["t0", "learning"] = np.nan
    res = learning_claim(table)
    assert res["all_tasks"]["n_tasks"] == 9 and res["all_tasks"]["dropped"] == ["t0"]
    assert np.isfinite(res["all_tasks"]["p"])
    table.loc[["t2", "t3"], "learning"] = np.nan  # the instruction set keeps 2 tasks: too few to test
    with pytest.raises(DataError, match="at least 4 tasks"):
        learning_claim(table)
    assert "spearman" in res["instruction"]["leave_one_out"]["t1"]


def test_a_row_agrees_with_its_seed_replica_better_than_with_an_effect_matched_null():
    main = _study(1.0).without_controls()
    rng = np.random.default_rng(3)
    seed0 = main.runs["seed"].to_numpy() == 0
    sub = main.select_rows(seed0)
    null = np.abs(rng.normal(size=sub.values.shape)) * sub.values.mean(axis=1, keepdims=True)
    runs = sub.runs.copy()
    runs["null_match_target"], runs["null_match_value"] = 0.2, 0.19
    runs["null_match_status"] = ["matched"] * 7 + ["not_matched"]
    sweep = ForgettingMatrix(sub.values.copy(), sub.row_names, sub.col_names, runs=runs, null=null)
    res = effect_null_contrast(sweep, main)
    assert res["n_tasks"] == 8 and res["shown"] and res["determinism_max_abs_diff"] == 0.0
    assert 0.5 < res["effect_ratio_median"] < 1.5
    assert res["effect_ratio_subset_median"] == pytest.approx(0.95) and res["n_not_matched"] == 1
    with pytest.raises(DataError, match="no null-control rows"):
        effect_null_contrast(sub, main)


def test_sharpness_that_only_tracks_learning_is_not_credited_beyond_it():
    rng = np.random.default_rng(4)
    n = 30
    learning = rng.normal(size=n)
    proxy = pd.DataFrame({"learning": learning, "mean_f": learning + 0.3 * rng.normal(size=n),
                          "sharp": learning + 0.3 * rng.normal(size=n)})
    res = flatness_tests(proxy, ["sharp"])["measures"]["sharp"]
    assert res["p"] < 0.01 and not res["beyond_covariates"]
    driver = proxy.assign(sharp=rng.normal(size=n))
    driver["mean_f"] = driver["sharp"] + 0.3 * rng.normal(size=n)
    res = flatness_tests(driver, ["sharp"])["measures"]["sharp"]
    assert res["beyond_covariates"] and res["partial_ci"][0] > 0


def test_analyze_sets_control_rows_aside_and_compares_them_at_the_end(tmp_path, monkeypatch):
    import json

    import forgetscope.importing
    from forgetscope.cli import run_app

    study = _study(task_specific=1.0)
    monkeypatch.setattr(forgetscope.importing, "load_any", lambda *a, **k: study)
    out = tmp_path / "analysis"
    assert run_app(["analyze", str(tmp_path / "F.npy"), "-o", str(out), "--no-figures", "--max-rank", "3"]) == 0
    result = json.loads((out / "analysis.json").read_text())
    assert result["shape"][0] == 16  # the 8 tasks x 2 seeds; the 16 format-only rows set aside
    assert result["format_control"]["specificity"]["shown"] and (out / "format_control.csv").is_file()


def test_a_row_that_names_the_task_it_controls_is_a_control_row_even_without_a_control_column():
    m = _study(1.0)
    runs = m.runs.drop(columns=["control"])
    kept = ForgettingMatrix(m.values, m.row_names, m.col_names, runs=runs)
    assert (kept.control_mask() == m.control_mask()).all() and kept.control_mask().sum() == 16
