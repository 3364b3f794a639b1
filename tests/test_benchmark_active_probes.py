"""benchmarks/active_probes.py on a small synthetic matrix: both probe methods, every size, valid JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import load_script

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "active_probes.py"


@pytest.fixture(scope="module")
def bench():
    return load_script(SCRIPT)


def test_active_vs_random_on_a_synthetic_matrix(bench, tmp_path):
    out = bench.main(["--synthetic", "--tasks", "8", "--n", "150", "--probes", "10", "30", "200",
                      "--predictors", "knn", "lowrank", "--draws", "3", "--folds", "3",
                      "--out", str(tmp_path / "a.json")])
    saved = json.loads((tmp_path / "a.json").read_text())
    assert saved["probe_sizes"] == [10, 30]  # 200 >= N is skipped
    keys = {(r["probe_method"], r["predictor"], r["probe_size"]) for r in saved["results"]}
    assert keys == {(m, p, s) for m in ("random", "active") for p in ("additive", "knn", "lowrank") for s in (10, 30)}
    assert all(r["rmse"] > 0 and r["draws"] == 3 for r in saved["results"])
    random_sd = [r["rmse_sd"] for r in saved["results"] if r["probe_method"] == "random"]
    assert all(sd > 0 for sd in random_sd)  # random draws differ
    assert "task-grouped" in saved["protocol"]["splits"] and saved["protocol"]["tau_source"].startswith("sd of")
    diff = {(d["predictor"], d["probe_size"]): d["rmse_active_minus_random"] for d in saved["active_minus_random"]}
    res = {(r["probe_method"], r["predictor"], r["probe_size"]): r["rmse"] for r in saved["results"]}
    assert diff[("knn", 10)] == pytest.approx(res[("active", "knn", 10)] - res[("random", "knn", 10)])
    assert out["data"]["shape"] == [16, 150]
