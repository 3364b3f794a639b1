"""forgetscope compare on a tiny model: store layout, paired tests, table/CSV/PNG, bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import sweep_config_dict, write_jsonl

from forgetscope.analysis.stats import bootstrap_ci, paired_test, wilcoxon_p
from forgetscope.errors import ConfigError


def _compare_dict(tiny_dir, tiny_data, out, **extra):
    up = write_jsonl(tiny_data["root"] / "data" / "up2.jsonl",
                     [{"id": f"u{i}", "text": f"Sentence number {i} is about the fox and the dog {i % 5}."}
                      for i in range(24)])
    d = sweep_config_dict(tiny_dir, tiny_data, out, steps=3)
    d["upstream"] = {"source": str(up)}
    extra_task = write_jsonl(tiny_data["root"] / "data" / "extra.jsonl",
                             [{"text": f"Extra line {i}: the rain in Spain {i}."} for i in range(12)])
    d["known_tasks"] = [{"name": "extra", "source": str(extra_task), "heldout": 3}]
    d["strategies"] = [
        {"name": "replay", "label": "replay-random", "options": {"ratio": 0.5, "policy": "random"}},
        {"name": "replay", "label": "replay-predicted", "options": {"ratio": 0.5, "policy": "predicted"}},
        {"name": "replay", "label": "replay-oracle", "options": {"ratio": 0.5, "policy": "oracle"}},
        {"name": "sam", "options": {"rho": 0.05}},
        {"name": "ewc", "options": {"lam": 10, "n_fisher": 4}},
        {"name": "lwf", "options": {"n_self": 3, "gen_tokens": 6, "interval": 2}},
    ]
    d["compare"] = {"probe": 4, "bootstrap": 200, "predictor": "knn"}
    d.update(extra)
    return d


def test_compare_end_to_end(tiny_dir, tiny_data, tmp_path):
    from forgetscope.cli import run_app
    from forgetscope.store import SweepStore

    out = tmp_path / "cmp"
    cfg_path = tmp_path / "cmp.yaml"
    cfg_path.write_text(yaml.safe_dump(_compare_dict(tiny_dir, tiny_data, out)))
    assert run_app(["compare", str(cfg_path)]) == 0
    summary = pd.read_csv(out / "compare" / "summary.csv")
    assert summary["strategy"].tolist() == ["plain", "replay-random", "replay-predicted", "replay-oracle",
                                             "sam", "ewc", "lwf"]
    assert (out / "compare" / "compare.png").stat().st_size > 1000
    per_run = pd.read_csv(out / "compare" / "per_run.csv")
    assert len(per_run) == 7 * 2  # 2 tasks x 1 seed
    store = SweepStore(out)
    runs = store.read_runs()
    assert len(runs) == 7 * 2 + 1  # plus the known-only task's plain run
    assert {"plain", "replay", "sam", "ewc", "lwf"} <= set(runs["strategy"])
    for col in ["p_examples", "p_runs", "diff_ci_low", "diff_ci_high", "diff_task_loss"]:
        assert col in summary
    assert summary.loc[1:, "p_examples"].between(0, 1).all()
    # predicted replay recorded its probe cost; held-out split never replayed
    pred = per_run[per_run["strategy"] == "replay-predicted"]
    assert (pred["upstream_evaluations"] == 4).all()
    split = __import__("json").loads((out / "compare" / "split.json").read_text())
    F = store.load_matrix()
    for rid in runs["run_id"]:
        row = F.values[F.row_names.index(rid)]
        held = [F.col_names.index(i) for i in split["heldout"]]
        assert np.isfinite(row[held]).all()
    # resume: nothing recomputed
    mtimes = {p: p.stat().st_mtime for p in (out / "runs").glob("*.json")}
    assert run_app(["compare", str(cfg_path)]) == 0
    assert all(p.stat().st_mtime == t for p, t in mtimes.items())


def test_compare_bad_config(tiny_dir, tiny_data, tmp_path):
    from forgetscope.experiments.compare import load_compare_config

    for bad, msg in [({"strategies": [{"name": "nope"}]}, "unknown strategy"),
                     ({"strategies": [{"name": "replay", "options": {"ratio": 0}}]}, "ratio"),
                     ({"strategies": [{"name": "sam", "options": {"base": "lbfgs"}}]}, "cannot wrap"),
                     ({"strategies": [{"name": "sam"}, {"name": "sam"}]}, "duplicate labels")]:
        d = _compare_dict(tiny_dir, tiny_data, tmp_path / "x", **bad)
        p = tmp_path / "bad.yaml"
        p.write_text(yaml.safe_dump(d))
        with pytest.raises(ConfigError, match=msg):
            load_compare_config(p)


def test_paired_test_detects_shift_and_ci_covers():
    rng = np.random.default_rng(0)
    b = rng.normal(size=200)
    a = b - 0.3 + rng.normal(scale=0.1, size=200)
    r = paired_test(a, b, n_boot=500)
    assert r["n"] == 200 and r["p_wilcoxon"] < 1e-10
    assert r["mean_diff"] == pytest.approx(float(np.mean(a - b)), abs=1e-12)
    assert r["mean_a"] == pytest.approx(float(a.mean())) and r["mean_b"] == pytest.approx(float(b.mean()))
    assert r["ci_low"] < r["mean_diff"] < r["ci_high"]  # the interval is around the observed mean ...
    assert r["ci_low"] < -0.3 < r["ci_high"]  # ... and covers the true shift
    assert r["ci_high"] - r["ci_low"] < 0.05  # n = 200 with noise sd 0.1: a tight interval (SE ≈ 0.007)
    assert paired_test(a, b, n_boot=500) == r  # seeded: the same interval every time
    same = paired_test(b, b)
    assert same["p_wilcoxon"] == 1.0 and same["mean_diff"] == 0.0
    assert np.isnan(wilcoxon_p(np.array([0.1])))
    nan_pair = paired_test([1.0, np.nan, 2.0], [0.5, 1.0, np.nan])
    assert nan_pair["n"] == 1
    lo, hi = bootstrap_ci(np.ones(10))
    assert lo == hi == 1.0
