"""forgetscope compare on a tiny model: store layout, run-level tests with Holm, table/CSV/PNG, resume
after a kill, bad input; the statistics against scipy on hand-made tables."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import sweep_config_dict, write_jsonl

from forgetscope.analysis.stats import (
    bootstrap_ci,
    holm,
    mean_ci,
    paired_run_test,
    paired_test,
    wilcoxon_p,
)
from forgetscope.errors import ConfigError


def _compare_dict(tiny_dir, tiny_data, out, strategies=None, **extra):
    up = write_jsonl(tiny_data["root"] / "data" / "up2.jsonl",
                     [{"id": f"u{i}", "text": f"Sentence number {i} is about the fox and the dog {i % 5}."}
                      for i in range(24)])
    forget = write_jsonl(tiny_data["root"] / "data" / "forget.jsonl",
                         [{"text": f"Sea poem {i}: the waves and the salt and the gulls."} for i in range(6)])
    d = sweep_config_dict(tiny_dir, tiny_data, out, steps=3)
    d["upstream"] = {"source": str(up)}
    extra_task = write_jsonl(tiny_data["root"] / "data" / "extra.jsonl",
                             [{"text": f"Extra line {i}: the rain in Spain {i}."} for i in range(12)])
    d["known_tasks"] = [{"name": "extra", "source": str(extra_task), "heldout": 3}]
    d["strategies"] = strategies if strategies is not None else [
        {"name": "replay", "label": "replay-random", "options": {"ratio": 0.5, "policy": "random"}},
        {"name": "replay", "label": "replay-offline", "options": {"ratio": 0.5, "policy": "predicted"}},
        {"name": "replay", "label": "replay-online", "options": {"ratio": 0.5, "policy": "predicted",
                                                                 "mode": "online"}},
        {"name": "replay", "label": "replay-oracle", "options": {"ratio": 0.5, "policy": "oracle"}},
        {"name": "replay", "label": "replay-mir", "options": {"ratio": 0.5, "policy": "mir", "candidates": 4}},
        {"name": "sam", "label": "sam-0.05", "options": {"rho": 0.05}},
        {"name": "ewc", "options": {"lam": 10, "n_fisher": 4}},
        {"name": "lwf", "options": {"forget_data": str(forget), "n_self": 3, "gen_tokens": 6, "interval": 2}},
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
    labels = ["plain", "replay-random", "replay-offline", "replay-online", "replay-oracle", "replay-mir",
              "sam-0.05", "ewc", "lwf"]
    summary = pd.read_csv(out / "compare" / "summary.csv")
    assert summary["strategy"].tolist() == labels
    assert summary.set_index("strategy")["kind"].to_dict() == {
        **{k: "mitigation" for k in labels}, "plain": "baseline", "lwf": "graceful forgetting"}
    assert summary.set_index("strategy").loc["sam-0.05", "rho"] == 0.05  # the ρ each SAM run used
    assert (out / "compare" / "compare.png").stat().st_size > 1000
    per_run = pd.read_csv(out / "compare" / "per_run.csv")
    assert len(per_run) == 9 * 2  # 2 tasks x 1 seed
    assert per_run["task_accuracy_after"].between(0, 1).all()
    store = SweepStore(out)
    runs = store.read_runs()
    assert len(runs) == 9 * 2 + 1  # plus the known-only task's plain run
    # run-level tests: every strategy vs plain and the predicted arms vs random, on three metrics
    tests = pd.read_csv(out / "compare" / "tests.csv")
    comparisons = [f"{a} vs plain" for a in labels[1:]] + ["replay-offline vs replay-random",
                                                           "replay-online vs replay-random"]
    assert tests["comparison"].drop_duplicates().tolist() == comparisons
    assert set(tests["metric"]) == {"forgetting_heldout", "task_loss_after", "task_accuracy_after"}
    assert (tests["n_pairs"] == 2).all()
    # 2 paired runs: the t-test runs, the Wilcoxon test is "not testable", and Holm adjusts over all rows
    assert tests["p_wilcoxon"].isna().all() and tests["note"].str.contains("Wilcoxon not testable").all()
    finite = tests["p_t"].notna()
    assert finite.any()
    assert np.allclose(tests.loc[finite, "p_t_holm"], holm(tests["p_t"].to_numpy())[finite.to_numpy()])
    assert (tests.loc[finite, "p_t_holm"] >= tests.loc[finite, "p_t"]).all()
    fr = tests[tests["metric"] == "forgetting_heldout"]
    assert fr["p_examples_descriptive"].between(0, 1).all()  # kept, as a descriptive column only
    for col in ["diff_forgetting", "diff_ci_low", "p_t_holm", "p_wilcoxon_holm", "dz", "task_loss_p_t_holm",
                "p_examples_descriptive", "note"]:
        assert col in summary
    # costs: offline probe values from the plain run, online probe on its own model, MIR candidates
    cost = per_run.groupby("strategy")["upstream_evaluations"].first()
    assert cost["replay-offline"] == 4  # the plain run's values on the probe
    assert cost["replay-online"] == 8  # the probe on the run's own model after the warm-up, and at the base
    assert cost["replay-mir"] > 0 and cost["plain"] == 0
    online = [json.loads(x) for x in per_run.loc[per_run["strategy"] == "replay-online", "strategy_info"]]
    assert all(i["mode"] == "online" and i["probe_step"] == 1 for i in online)
    # the held-out split is never replayed
    split = json.loads((out / "compare" / "split.json").read_text())
    F = store.load_matrix()
    held = [F.col_names.index(i) for i in split["heldout"]]
    for rid in runs["run_id"]:
        assert np.isfinite(F.values[F.row_names.index(rid)][held]).all()
    # the command and the wall time are recorded
    assert (out / "compare" / "command.txt").read_text().strip() == f"forgetscope compare {cfg_path}"
    wall = json.loads((out / "compare" / "wall_time.json").read_text())
    assert wall["complete"] and len(wall["invocations"]) == 1 and wall["invocations"][0]["runs"] == 19
    assert wall["total_wall_s"] > 0
    # resume: nothing recomputed
    mtimes = {p: p.stat().st_mtime for p in (out / "runs").glob("*.json")}
    assert run_app(["compare", str(cfg_path)]) == 0
    assert all(p.stat().st_mtime == t for p, t in mtimes.items())
    wall = json.loads((out / "compare" / "wall_time.json").read_text())
    assert len(wall["invocations"]) == 2 and wall["invocations"][1]["runs"] == 0


def test_compare_resumes_after_a_kill(tiny_dir, tiny_data, tmp_path):
    """Kill ``forgetscope compare`` mid-way (SIGKILL); the same command finishes without redoing runs."""
    import forgetscope
    from forgetscope.cli import run_app

    out = tmp_path / "killed"
    cfg_path = tmp_path / "killed.yaml"
    cfg_path.write_text(yaml.safe_dump(_compare_dict(tiny_dir, tiny_data, out, strategies=[
        {"name": "replay", "label": "replay-random", "options": {"ratio": 0.5}},
        {"name": "sam", "options": {"rho": 0.05}}])))
    env = {**os.environ, "PYTHONPATH": str(Path(forgetscope.__file__).parents[1]), "FORGETSCOPE_NO_PROGRESS": "1"}
    code = "import sys; from forgetscope.cli import run_app; sys.exit(run_app(sys.argv[1:]))"
    proc = subprocess.Popen([sys.executable, "-c", code, "compare", str(cfg_path)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and len(list((out / "runs").glob("*.json"))) < 3 and proc.poll() is None:
            time.sleep(0.2)
        assert proc.poll() is None, "the comparison finished before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    done = {p: p.stat().st_mtime for p in (out / "runs").glob("*.json")}
    assert 3 <= len(done) < 7  # 2 tasks x (plain + 2 strategies) + 1 known-only plain run
    assert not (out / "compare" / "summary.csv").exists()
    assert run_app(["compare", str(cfg_path)]) == 0
    assert len(list((out / "runs").glob("*.json"))) == 7
    assert all(p.stat().st_mtime == t for p, t in done.items())  # finished runs were not redone
    summary = pd.read_csv(out / "compare" / "summary.csv")
    assert summary["strategy"].tolist() == ["plain", "replay-random", "sam"] and (summary["runs"] == 2).all()
    wall = json.loads((out / "compare" / "wall_time.json").read_text())
    assert len(wall["invocations"]) == 2 and wall["invocations"][0]["finished"] is None and wall["complete"]
    assert wall["invocations"][0]["runs"] >= 2  # the killed invocation's progress was recorded


def test_compare_bad_config(tiny_dir, tiny_data, tmp_path):
    from forgetscope.experiments.compare import load_compare_config

    for bad, msg in [({"strategies": [{"name": "nope"}]}, "unknown strategy"),
                     ({"strategies": [{"name": "replay", "options": {"ratio": 0}}]}, "ratio"),
                     ({"strategies": [{"name": "replay", "options": {"ratio": 9}}]}, "ratio"),
                     ({"strategies": [{"name": "replay", "options": {"temperature": 0}}]}, "temperature"),
                     ({"strategies": [{"name": "replay", "options": {"policy": "mir", "candidates": 0}}]},
                      "candidates"),
                     ({"strategies": [{"name": "replay", "options": {"policy": "mir", "ratio": 2, "candidates": 4}}]},
                      "candidates=4 is smaller than the 9 replay examples"),
                     ({"strategies": [{"name": "lwf"}]}, "forget_data"),
                     ({"strategies": [{"name": "sam", "options": {"base": "lbfgs"}}]}, "cannot wrap"),
                     ({"strategies": [{"name": "sam"}, {"name": "sam"}]}, "duplicate labels"),
                     ({"strategies": [{"name": "sam", "label": "plain"}]}, "baseline's label"),
                     ({"compare": {"direct": [["sam", "nope"]]}}, "no strategy labelled 'nope'")]:
        d = _compare_dict(tiny_dir, tiny_data, tmp_path / "x", **bad) if "compare" in bad else \
            _compare_dict(tiny_dir, tiny_data, tmp_path / "x", strategies=bad["strategies"])
        if "compare" in bad:
            d["strategies"] = [{"name": "sam"}]
        p = tmp_path / "bad.yaml"
        p.write_text(yaml.safe_dump(d))
        with pytest.raises(ConfigError, match=msg) as exc:
            load_compare_config(p)
        assert "\n" not in str(exc.value)
    from forgetscope.cli import run_app

    assert run_app(["compare", str(p), "--check"]) == 2  # a user error: one line, exit 2


def test_direct_pairs_default_to_predicted_vs_random_with_the_same_ratio(tiny_dir, tiny_data, tmp_path):
    from forgetscope.experiments.compare import CompareConfig

    d = _compare_dict(tiny_dir, tiny_data, tmp_path / "x", strategies=[
        {"name": "replay", "label": "random-a", "options": {"ratio": 0.5}},
        {"name": "replay", "label": "random-b"},
        {"name": "replay", "label": "pred-a", "options": {"ratio": 0.5, "policy": "predicted", "known": "k"}},
        {"name": "replay", "label": "pred-b", "options": {"policy": "predicted", "mode": "online", "known": "k"}},
        {"name": "replay", "label": "oracle", "options": {"policy": "oracle", "forgetting": {}}},
    ])
    cfg = CompareConfig.model_validate(d)
    assert cfg.direct_pairs() == [("pred-a", "random-a"), ("pred-b", "random-b")]
    d["compare"]["direct"] = [["oracle", "random-b"]]
    assert CompareConfig.model_validate(d).direct_pairs() == [("oracle", "random-b")]


# ---- statistics ---------------------------------------------------------------------------------
# a hand-made table: mean held-out forgetting (in hundredths of a nat, so differences are exact) of
# 8 task x seed runs, strategy (A) and plain (B)
A = np.array([10.0, 25, -5, 30, 12, 8, 20, 15])
B = np.array([20.0, 30, 5, 28, 25, 10, 33, 22])


def test_run_level_statistics_agree_with_scipy():
    from scipy import stats

    r = paired_run_test(A, B, n_resamples=2000, seed=1)
    d = A - B
    assert r["n"] == 8 and r["mean_diff"] == pytest.approx(d.mean()) and r["note"] == ""
    assert r["p_wilcoxon"] == pytest.approx(stats.wilcoxon(A, B).pvalue)
    assert r["p_t"] == pytest.approx(stats.ttest_rel(A, B).pvalue)
    assert r["dz"] == pytest.approx(d.mean() / d.std(ddof=1))
    boot = stats.bootstrap((d,), np.mean, n_resamples=2000, method="BCa", rng=np.random.default_rng(1))
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((boot.confidence_interval.low, boot.confidence_interval.high))
    # hand values: d = (-10, -5, -10, +2, -13, -2, -13, -7), mean -7.25; one positive difference, of
    # rank 1.5 (|d| ranks: 2 -> 1.5 twice, 5 -> 3, 7 -> 4, 10 -> 5.5 twice, 13 -> 7.5 twice), so W+ = 1.5
    assert d.mean() == pytest.approx(-7.25)
    assert stats.wilcoxon(A, B).statistic == pytest.approx(1.5)
    # six runs, all worse: the exact two-sided Wilcoxon p is 2 / 2^6
    assert paired_run_test(np.arange(6.0), np.arange(6.0) + np.arange(1, 7))["p_wilcoxon"] == pytest.approx(2 / 64)
    lo, hi = mean_ci(A, n_resamples=2000, seed=0)
    assert lo < A.mean() < hi


def test_too_few_pairs_are_not_testable():
    one = paired_run_test([0.1], [0.2])
    assert one["n"] == 1 and np.isnan(one["p_t"]) and np.isnan(one["p_wilcoxon"]) and np.isnan(one["ci_low"])
    assert one["note"].startswith("not testable: 1 paired run")
    five = paired_run_test(A[:5], B[:5])
    assert np.isfinite(five["p_t"]) and np.isnan(five["p_wilcoxon"])
    assert "Wilcoxon not testable: 5 paired runs" in five["note"]
    same = paired_run_test(A, A)
    assert same["p_t"] == 1.0 and same["p_wilcoxon"] == 1.0 and same["mean_diff"] == 0.0
    const = paired_run_test(A, A - 10)
    assert np.isnan(const["p_t"]) and "every paired difference is the same" in const["note"]
    assert paired_run_test([1.0, np.nan, 2.0], [0.5, 1.0, np.nan])["n"] == 1
    with pytest.raises(ValueError, match="shape"):
        paired_run_test([1.0, 2.0], [1.0])


def test_holm_matches_hand_table():
    # m = 4 finite p-values sorted: 0.005 (x4 = 0.02), 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04,
    # raised to the running max 0.06); NaN is not a comparison
    p = np.array([0.01, 0.04, 0.03, 0.005, np.nan])
    adj = holm(p)
    assert np.allclose(adj[:4], [0.03, 0.06, 0.06, 0.02]) and np.isnan(adj[4])
    assert np.allclose(holm([0.5, 0.6]), [1.0, 1.0])  # capped at 1
    assert np.allclose(holm([0.02]), [0.02])  # one comparison: unchanged
    assert np.isnan(holm([np.nan, np.nan])).all() and holm([]).size == 0


def test_example_level_test_is_descriptive_and_ci_covers():
    rng = np.random.default_rng(0)
    b = rng.normal(size=200)
    a = b - 0.3 + rng.normal(scale=0.1, size=200)
    r = paired_test(a, b, n_boot=500)
    assert r["n"] == 200 and r["p_wilcoxon"] < 1e-10
    assert r["mean_diff"] == pytest.approx(float(np.mean(a - b)), abs=1e-12)
    assert r["ci_low"] < -0.3 < r["ci_high"] and r["ci_high"] - r["ci_low"] < 0.05
    assert paired_test(a, b, n_boot=500) == r  # seeded
    assert np.isnan(wilcoxon_p(np.array([0.1])))
    lo, hi = bootstrap_ci(np.ones(10))
    assert lo == hi == 1.0


def test_cli_prints_not_testable(monkeypatch, capsys):
    from forgetscope.cli.compare_cmd import _p

    assert _p(float("nan")) == "not testable" and _p(0.0123) == "0.012"


def test_cli_tables_fit_a_narrow_terminal():
    """The forgetting and the task/cost tables each fit 110 columns with every value whole (nothing cut)."""
    import io

    import pandas as pd
    from rich.console import Console

    from forgetscope.cli.compare_cmd import compare_table, cost_table

    row = {"strategy": "replay-online", "kind": "mitigation", "runs": 18, "forgetting_heldout": 0.21,
           "forgetting_ci_low": 0.18, "forgetting_ci_high": 0.24, "forgotten_share_heldout": 0.9,
           "diff_forgetting": -0.012, "diff_ci_low": -0.02, "diff_ci_high": -0.004, "dz": -0.8,
           "p_wilcoxon_holm": 0.003, "p_t_holm": float("nan"), "task_loss_after": 3.1, "diff_task_loss": 0.01,
           "task_loss_p_wilcoxon_holm": 0.5, "train_wall_s": 20.0, "upstream_evaluations": 32}
    summary = pd.DataFrame([{**row, "strategy": "plain", "kind": "baseline"}, row])
    expected = {compare_table: ["replay-online", "0.210", "-0.012 [-0.020, -0.004]",
                                "90%", "-0.80", "0.003", "not testable"],
                cost_table: ["replay-online", "mitigation", "3.100", "+0.010", "0.5", "32"]}
    for make, values in expected.items():
        out = io.StringIO()
        Console(file=out, width=110).print(make(summary))
        text = out.getvalue()
        assert "…" not in text and max(len(line) for line in text.splitlines()) <= 110
        for v in values:
            assert v in text, (make.__name__, v)
