"""forgetscope compare on a tiny model: store layout, run-level tests with Holm, table/CSV/PNG, resume
after a kill, bad input; the statistics against scipy on hand-made tables."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
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
from forgetscope.train.hooks import declared_defaults


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
    assert set(tests["level"]) == {"run", "task"}
    for level in ("run", "task"):  # one Holm family per level
        at = (tests["level"] == level).to_numpy()
        ok = finite.to_numpy() & at
        assert np.allclose(tests.loc[ok, "p_t_holm"], holm(tests.loc[at, "p_t"].to_numpy())[finite.to_numpy()[at]])
    assert (tests.loc[finite, "p_t_holm"] >= tests.loc[finite, "p_t"]).all()
    fr = tests[(tests["metric"] == "forgetting_heldout") & (tests["level"] == "run")]
    assert fr["p_examples_descriptive"].between(0, 1).all()  # kept, as a descriptive column only (runs)
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
    assert summary.set_index("strategy").loc["replay-online", "probe_step"] == 1  # reported per arm
    assert summary.set_index("strategy")["probe_step"].drop("replay-online").isna().all()
    assert all(i["probe_encoding"] == "sweep evaluation" for i in online)  # measured as the known rows were
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


_KILL_AFTER_RUNS = """
import os, signal, sys
import forgetscope.experiments.sweep as sweep
from forgetscope.cli import run_app

kill_after, stored, real_run_specs = int(sys.argv[1]), [], sweep.run_specs

def run_specs(*args, on_run=None, **kwargs):
    def after(spec, record):
        if on_run is not None:
            on_run(spec, record)
        stored.append(spec.run_id)
        if len(stored) == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
    return real_run_specs(*args, on_run=after, **kwargs)

sweep.run_specs = run_specs
sys.exit(run_app(sys.argv[2:]))
"""


def test_compare_resumes_after_a_kill(tiny_dir, tiny_data, tmp_path):
    """Kill ``forgetscope compare`` mid-way (SIGKILL); the same command finishes without redoing runs and
    reproduces the per-run table of an uninterrupted comparison."""
    import forgetscope
    from forgetscope.cli import run_app

    out = tmp_path / "killed"
    cfg_path = tmp_path / "killed.yaml"
    strategies = [{"name": "replay", "label": "replay-random", "options": {"ratio": 0.5}},
                  {"name": "sam", "options": {"rho": 0.05}}]
    cfg_path.write_text(yaml.safe_dump(_compare_dict(tiny_dir, tiny_data, out, strategies=strategies)))
    env = {**os.environ, "PYTHONPATH": str(Path(forgetscope.__file__).parents[1]), "FORGETSCOPE_NO_PROGRESS": "1"}
    # the child kills itself once its fourth run (the first strategy run) is stored: the same place each time
    proc = subprocess.run([sys.executable, "-c", _KILL_AFTER_RUNS, "4", "compare", str(cfg_path)], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    done = {p: p.stat().st_mtime for p in (out / "runs").glob("*.json")}
    assert len(done) == 4  # of 2 tasks x (plain + 2 strategies) + 1 known-only plain run
    assert not (out / "compare" / "summary.csv").exists()
    assert run_app(["compare", str(cfg_path)]) == 0
    assert len(list((out / "runs").glob("*.json"))) == 7
    assert all(p.stat().st_mtime == t for p, t in done.items())  # finished runs were not redone
    summary = pd.read_csv(out / "compare" / "summary.csv")
    assert summary["strategy"].tolist() == ["plain", "replay-random", "sam"] and (summary["runs"] == 2).all()
    wall = json.loads((out / "compare" / "wall_time.json").read_text())
    assert len(wall["invocations"]) == 2 and wall["invocations"][0]["finished"] is None and wall["complete"]
    assert wall["invocations"][0]["runs"] == 4  # the killed invocation's progress was recorded
    # the killed-and-resumed comparison gives the per-run table of one that was never interrupted
    straight = tmp_path / "straight"
    straight_cfg = tmp_path / "straight.yaml"
    straight_cfg.write_text(yaml.safe_dump(_compare_dict(tiny_dir, tiny_data, straight, strategies=strategies)))
    assert run_app(["compare", str(straight_cfg)]) == 0
    resumed, fresh = (pd.read_csv(d / "compare" / "per_run.csv") for d in (out, straight))
    timing = [c for c in resumed.columns if c.endswith("wall_s")]
    assert timing  # wall times differ by nature; every other column must not
    pd.testing.assert_frame_equal(resumed.drop(columns=timing), fresh.drop(columns=timing))


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
                     ({"compare": {"direct": [["sam", "nope"]]}}, "no strategy labelled 'nope'"),
                     ({"compare": {"kind": "code"}}, r"compare\.kind: .*unknown example kind 'code'")]:
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


# ---- kinds of upstream example ------------------------------------------------------------------
PER_RUN_COLUMNS = ["strategy", "task", "seed", "run_id", "forgetting_heldout", "forgotten_share_heldout",
                   "forgetting_all_untrained", "task_loss_before", "task_loss_after", "task_accuracy_after",
                   "train_wall_s", "upstream_evaluations", "strategy_info"]


def _summarized(tiny_dir, tiny_data, tmp_path, kinds, kind=None, seeds=(0, 1, 2), record_kinds=True,
                primary=None):
    """summarize() of a hand-made comparison (plain and sam on 2 tasks x 3 seeds) over upstream
    examples of ``kinds`` (not recorded in the matrix unless ``record_kinds``); instruction columns are
    shifted by +5 so a mix would show. Returns (result, matrix, held-out column indices)."""
    from forgetscope.experiments.compare import CompareConfig, _spec, split_upstream, summarize
    from forgetscope.store import ForgettingMatrix

    d = _compare_dict(tiny_dir, tiny_data, tmp_path / "x", strategies=[{"name": "sam", "options": {"rho": 0.05}}],
                      seeds=list(seeds))
    d["compare"]["kind"] = kind
    if primary is not None:
        d["compare"]["primary"] = primary
    cfg = CompareConfig.model_validate(d)
    ids = [f"u{j}" for j in range(len(kinds))]
    plain = {(t, s): _spec(t, s, "plain", {}) for t in ("code", "qa") for s in seeds}
    specs = {("sam", t, s): _spec(t, s, "sam", {"rho": 0.05}) for t in ("code", "qa") for s in seeds}
    run_ids = [sp.run_id for sp in [*plain.values(), *specs.values()]]
    rng = np.random.default_rng(3)
    F = rng.normal(0.1, 0.2, (len(run_ids), len(ids))) + 5.0 * (np.array(kinds) == "instruction")
    F[rng.random(F.shape) < 0.1] = np.nan  # replayed examples are not measured
    runs = pd.DataFrame({"run_id": run_ids, "task_loss_before": 3.0, "task_loss_after": rng.normal(2, 0.1, len(run_ids)),
                         "task_accuracy_after": 0.5, "train_wall_s": 1.0, "strategy_info": "{}"})
    upstream = pd.DataFrame({"example_id": ids, "loss_before": 3.0, **({"kind": kinds} if record_kinds else {})})
    matrix = ForgettingMatrix(F, run_ids, ids, runs=runs, upstream=upstream)
    _, held_ids = split_upstream(ids, cfg.compare.replay_fraction, cfg.seed)
    return summarize(matrix, cfg, plain, specs, held_ids), matrix, np.array([ids.index(i) for i in held_ids])


def test_a_single_kind_upstream_gives_the_numbers_of_every_column(tiny_dir, tiny_data, tmp_path):
    """lm-only upstream: per_run.csv has its former columns, with the held-out means over every column."""
    result, m, held = _summarized(tiny_dir, tiny_data, tmp_path, ["lm"] * 20)
    per_run = result["per_run"]
    assert per_run.columns.tolist() == PER_RUN_COLUMNS  # no per-kind columns with one kind
    for r in per_run.itertuples():
        row = m.values[m.row_names.index(r.run_id)]
        h = row[held]
        assert r.forgetting_heldout == float(np.nanmean(h))  # the direct mean, bit for bit
        assert r.forgotten_share_heldout == float(np.mean(h[np.isfinite(h)] > 0.0))
        assert r.forgetting_all_untrained == float(np.nanmean(row))
    assert (result["summary"]["upstream_kind"] == "lm").all()
    # the same sweep without recorded kinds (kind 'all': every column) gives the same tables
    again, unknown, _ = _summarized(tiny_dir, tiny_data, tmp_path, ["lm"] * 20, record_kinds=False)
    assert unknown.kinds is None and np.array_equal(unknown.values, m.values, equal_nan=True)
    pd.testing.assert_frame_equal(again["per_run"], per_run)
    pd.testing.assert_frame_equal(again["tests"], result["tests"])
    assert (again["summary"]["upstream_kind"] == "all").all()
    assert again["summary"].drop(columns="upstream_kind").equals(result["summary"].drop(columns="upstream_kind"))


def test_a_mixed_upstream_headline_uses_one_kind(tiny_dir, tiny_data, tmp_path):
    """lm and instruction upstream: the headline metrics (and the tests) average the chosen kind only;
    per-kind columns describe both."""
    from forgetscope.experiments.compare import METRICS

    kinds = ["lm", "instruction"] * 10
    is_lm = np.array(kinds) == "lm"
    result, m, held = _summarized(tiny_dir, tiny_data, tmp_path, kinds)
    per_run = result["per_run"]
    extra = [f"{name}_{k}" for k in ("lm", "instruction") for name in
             ("forgetting_heldout", "forgotten_share_heldout", "forgetting_all_untrained")]
    assert set(extra) <= set(per_run.columns) and set(PER_RUN_COLUMNS) <= set(per_run.columns)
    for r in per_run.itertuples():
        row = m.values[m.row_names.index(r.run_id)]
        lm_held = held[is_lm[held]]
        inst_held = held[~is_lm[held]]
        assert r.forgetting_heldout == pytest.approx(np.nanmean(row[lm_held]))  # default kind: lm
        assert r.forgetting_heldout != pytest.approx(np.nanmean(row[held]))  # not the mix
        assert r.forgetting_all_untrained == pytest.approx(np.nanmean(row[is_lm]))
        assert r.forgetting_heldout_lm == r.forgetting_heldout
        assert r.forgetting_heldout_instruction == pytest.approx(np.nanmean(row[inst_held]))
        assert r.forgetting_all_untrained_instruction == pytest.approx(np.nanmean(row[~is_lm]))
    tests, summary = result["tests"], result["summary"]
    assert set(tests["metric"]) == set(METRICS) and len(tests) == 2 * len(METRICS)  # headline only, run + task
    f = tests[(tests["metric"] == "forgetting_heldout") & (tests["level"] == "run")].iloc[0]
    sam = per_run[per_run["strategy"] == "sam"]
    assert f["mean_strategy"] == pytest.approx(sam["forgetting_heldout"].mean())
    assert f["mean_strategy"] < 1  # instruction columns (+5) left out
    assert (summary["upstream_kind"] == "lm").all()
    assert summary.set_index("strategy").loc["sam", "forgetting_heldout"] == pytest.approx(
        sam["forgetting_heldout"].mean())

    inst, _, _ = _summarized(tiny_dir, tiny_data, tmp_path, kinds, kind="instruction")
    assert np.allclose(inst["per_run"]["forgetting_heldout"], per_run["forgetting_heldout_instruction"])
    assert (inst["summary"]["upstream_kind"] == "instruction").all()
    mixed, _, _ = _summarized(tiny_dir, tiny_data, tmp_path, kinds, kind="all")
    assert np.allclose(mixed["per_run"]["forgetting_heldout"],
                       [np.nanmean(m.values[m.row_names.index(r)][held]) for r in per_run["run_id"]])


def test_a_kind_without_held_out_examples_fails_before_any_run(tiny_dir, tiny_data, tmp_path):
    from forgetscope.data import Example
    from forgetscope.errors import DataError
    from forgetscope.experiments.compare import CompareConfig, headline_kind

    cfg = CompareConfig.model_validate(_compare_dict(tiny_dir, tiny_data, tmp_path / "x"))
    up = [Example(f"u{i}", text=f"text {i}") for i in range(4)] + [Example("q", prompt="Q?", response="A.")]
    assert headline_kind(cfg, up, ["u1", "q"]) == "lm"  # the default kind
    cfg.compare.kind = "instruction"
    assert headline_kind(cfg, up, ["u1", "q"]) == "instruction"
    with pytest.raises(ConfigError, match="held-out part of the upstream set has no 'instruction' example"):
        headline_kind(cfg, up, ["u1", "u2"])
    with pytest.raises(DataError, match=r"no 'instruction' examples in the upstream set; kinds present: lm \(4\)"):
        headline_kind(cfg, up[:4], ["u1", "u2"])


def test_compare_kind_is_not_part_of_the_fingerprint(tiny_dir, tiny_data, tmp_path):
    """compare.kind only changes the summary: changing it resumes the same sweep, and a config dumped
    before the field existed has the same fingerprint."""
    from forgetscope.experiments.compare import CompareConfig
    from forgetscope.experiments.session import config_fingerprint, results_config

    d = _compare_dict(tiny_dir, tiny_data, tmp_path / "x")
    base = CompareConfig.model_validate(d)
    older = base.model_dump(mode="json")
    del older["compare"]["kind"]
    assert results_config(older) == results_config(base)
    d["compare"]["kind"] = "instruction"
    assert config_fingerprint(CompareConfig.model_validate(d)) == config_fingerprint(base)
    d["compare"]["threshold"] = 0.1
    assert config_fingerprint(CompareConfig.model_validate(d)) != config_fingerprint(base)


def test_compare_on_a_mixed_upstream_states_its_kind(tiny_dir, tiny_data, tmp_path, capsys):
    """A real (tiny) comparison with plain-text and instruction upstream examples: per-kind columns in
    per_run.csv, the kind in summary.csv and in the printed table."""
    from forgetscope.cli import run_app
    from forgetscope.store import SweepStore

    out = tmp_path / "mixed"
    d = _compare_dict(tiny_dir, tiny_data, out, strategies=[{"name": "sam", "options": {"rho": 0.05}}],
                      known_tasks=[])
    up = write_jsonl(tiny_data["root"] / "data" / "mixed.jsonl",
                     [{"id": f"u{i}", "text": f"Sentence number {i} is about the fox and the dog."} for i in range(8)]
                     + [{"id": f"q{i}", "prompt": f"What is {i} times two?", "response": f"{2 * i}."}
                        for i in range(8)])
    d["upstream"] = {"source": str(up)}
    d["compare"]["kind"] = "instruction"
    p = tmp_path / "mixed.yaml"
    p.write_text(yaml.safe_dump(d))
    assert run_app(["compare", str(p)]) == 0
    assert "held-out instruction upstream forgetting F" in capsys.readouterr().out
    per_run = pd.read_csv(out / "compare" / "per_run.csv")
    summary = pd.read_csv(out / "compare" / "summary.csv")
    assert (summary["upstream_kind"] == "instruction").all()
    assert np.allclose(per_run["forgetting_heldout"], per_run["forgetting_heldout_instruction"])
    F = SweepStore(out).load_matrix()
    held = json.loads((out / "compare" / "split.json").read_text())["heldout"]
    inst = [F.col_names.index(i) for i in held if i.startswith("q")]
    for r in per_run.itertuples():
        assert r.forgetting_heldout == pytest.approx(np.nanmean(F.values[F.row_names.index(r.run_id)][inst]))


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
    dz_boot = stats.bootstrap((d,), lambda x, axis=-1: np.mean(x, axis=axis) / np.std(x, axis=axis, ddof=1),
                              n_resamples=2000, method="percentile", rng=np.random.default_rng(1))
    assert (r["dz_ci_low"], r["dz_ci_high"]) == pytest.approx((dz_boot.confidence_interval.low,
                                                               dz_boot.confidence_interval.high))
    assert r["dz_ci_low"] < r["dz"] < r["dz_ci_high"] < 0


def test_dz_interval_survives_a_resample_that_repeats_one_difference():
    # six units: one resample in 6^5 repeats a single difference (no spread); among 9 999 resamples
    # one almost always does, and the interval must still be finite, taking its d_z as -inf
    from scipy import stats

    d = np.array([-6.0, -12.0, -24.0, -7.0, -31.0, -10.0])  # integers: a repeat has sd exactly 0
    r = paired_run_test(d, np.zeros(6), n_resamples=9999, seed=0)

    def nan_without_spread(x, axis=-1):
        sd = np.std(x, axis=axis, ddof=1)
        return np.where(sd > 0, np.mean(x, axis=axis) / np.where(sd > 0, sd, 1), np.nan)

    undefined = stats.bootstrap((d,), nan_without_spread, n_resamples=9999, method="percentile",
                                rng=np.random.default_rng(0)).bootstrap_distribution
    assert np.isnan(undefined).any()  # such a resample occurs
    assert np.isfinite(r["dz_ci_low"]) and np.isfinite(r["dz_ci_high"])
    assert r["dz_ci_low"] < r["dz"] < r["dz_ci_high"] < 0


def test_task_level_wilcoxon_and_t_over_seed_means_agree_with_scipy_by_hand():
    from scipy import stats

    from forgetscope.analysis.stats import paired_tests

    # 6 tasks x 2 seeds; the arm's seed mean is below plain's on 5 tasks and above on one
    arm = np.array([[1.0, 3.0], [2.0, 2.0], [0.0, 4.0], [5.0, 7.0], [1.0, 1.0], [9.0, 5.0]])
    plain = np.array([[4.0, 4.0], [6.0, 3.0], [3.0, 4.0], [7.0, 8.0], [4.5, 5.5], [6.0, 5.0]])
    rows = [{"strategy": name, "task": f"t{i}", "seed": s, "forgetting_heldout": v[i, s]}
            for name, v in (("arm", arm), ("plain", plain)) for i in range(6) for s in range(2)]
    tests = paired_tests(pd.DataFrame(rows), [("arm", "plain")], ["forgetting_heldout"], n_resamples=500)
    task = tests[tests["level"] == "task"].iloc[0]
    a, b = arm.mean(axis=1), plain.mean(axis=1)  # (2, 2, 2, 6, 1, 7) vs (4, 4.5, 3.5, 7.5, 5, 5.5)
    assert task["n_pairs"] == 6 and task["mean_diff"] == pytest.approx((a - b).mean())
    assert task["p_wilcoxon"] == pytest.approx(stats.wilcoxon(a, b).pvalue)
    assert task["p_t"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    # by hand: d = (-2, -2.5, -1.5, -1.5, -4, +1.5); |d| ranks 1.5 -> 2 (three ties), 2 -> 4, 2.5 -> 5,
    # 4 -> 6; the one positive difference has rank 2, so W+ = 2
    assert stats.wilcoxon(a, b).statistic == pytest.approx(2.0)
    run = tests[tests["level"] == "run"].iloc[0]
    assert run["n_pairs"] == 12


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
    summary["predictor"] = ["", "knn"]
    summary["task_p_wilcoxon_holm"] = [float("nan"), float("nan")]
    expected = {compare_table: ["replay-online (knn)", "0.210", "-0.012 [-0.020, -0.004]",
                                "90%", "-0.80", "0.003", "not testable"],
                cost_table: ["replay-online", "mitigation", "3.100", "+0.010", "0.5", "32"]}
    for make, values in expected.items():
        out = io.StringIO()
        Console(file=out, width=110).print(make(summary))
        text = out.getvalue()
        assert "…" not in text and max(len(line) for line in text.splitlines()) <= 110
        for v in values:
            assert v in text, (make.__name__, v)


# ---- task-level statistics, the split by source, arms and their bad input ----------------------------
def test_task_level_tests_average_seeds_and_agree_with_scipy(tiny_dir, tiny_data, tmp_path):
    from scipy.stats import ttest_rel

    result, _, _ = _summarized(tiny_dir, tiny_data, tmp_path, ["lm"] * 20)
    per_run, tests = result["per_run"], result["tests"]
    row = tests[(tests["level"] == "task") & (tests["strategy"] == "sam") & (tests["metric"] == "forgetting_heldout")]
    assert len(row) == 1 and row.iloc[0]["n_pairs"] == 2  # 2 tasks, 3 seeds each averaged
    means = per_run.groupby(["strategy", "task"])["forgetting_heldout"].mean()
    a, b = means.loc["sam"].sort_index(), means.loc["plain"].sort_index()
    assert np.isclose(row.iloc[0]["mean_diff"], (a - b).mean())
    assert np.isclose(row.iloc[0]["p_t"], ttest_rel(a.to_numpy(), b.to_numpy()).pvalue)
    summary = result["summary"].set_index("strategy")
    assert summary.loc["sam", "n_tasks"] == 2 and "task_p_t_holm" in summary


def test_held_out_set_from_other_sources_than_the_pool(tiny_dir, tiny_data, tmp_path):
    from forgetscope.experiments.compare import CompareConfig, split_for
    from forgetscope.experiments.session import load_upstream

    up = write_jsonl(tmp_path / "cat.jsonl", [{"id": f"u{i}", "text": f"Line {i} of the text.",
                                               "category": ["docs", "code", "prose"][i % 3]} for i in range(30)])
    d = _compare_dict(tiny_dir, tiny_data, tmp_path / "x", strategies=[{"name": "sam"}])
    d["upstream"] = {"source": str(up)}
    d["compare"]["heldout_categories"] = ["prose"]
    cfg = CompareConfig.model_validate(d)
    pool, held = split_for(cfg, load_upstream(cfg))
    assert len(pool) == 20 and len(held) == 10 and not set(pool) & set(held)
    assert all(int(i[1:]) % 3 == 2 for i in held)


@pytest.mark.parametrize("change,msg", [
    ({"strategies": [{"name": "replay", "options": {"policy": "predicted", "predictor": "knnn"}}]},
     "unknown predictor 'knnn'"),
    ({"compare": {"probe": 40}}, "must fit the replay pool of 12 examples"),
    ({"compare": {"heldout_categories": ["a"], "pool_categories": ["a", "b"]}}, "held-out set overlaps the pool"),
    ({"compare": {"heldout_categories": ["nope"]}}, "no upstream example has category"),
])
def test_bad_arms_and_splits_exit_2_before_any_run(tiny_dir, tiny_data, tmp_path, change, msg, capsys):
    from forgetscope.cli import run_app

    out = tmp_path / "never"
    d = _compare_dict(tiny_dir, tiny_data, out, strategies=change.get("strategies") or [
        {"name": "replay", "options": {"policy": "predicted"}}])
    d["compare"].update(change.get("compare", {}))
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(d))
    assert run_app(["compare", str(p)]) == 2
    err = capsys.readouterr()
    assert msg in (err.out + err.err)
    assert not out.exists()  # nothing written


def test_direct_pairs_include_each_completing_arm_against_probe_only(tiny_dir, tiny_data, tmp_path):
    from forgetscope.experiments.compare import CompareConfig

    d = _compare_dict(tiny_dir, tiny_data, tmp_path / "x", strategies=[
        {"name": "replay", "label": "random", "options": {"ratio": 0.5}},
        {"name": "replay", "label": "probe-only", "options": {"ratio": 0.5, "policy": "predicted",
                                                               "predictor": "probe-only"}},
        {"name": "replay", "label": "lowrank", "options": {"ratio": 0.5, "policy": "predicted", "predictor": "lowrank"}},
    ])
    cfg = CompareConfig.model_validate(d)
    assert cfg.direct_pairs() == [("probe-only", "random"), ("lowrank", "random"), ("lowrank", "probe-only")]
    assert cfg.predictor_of(cfg.strategies[2]) == "lowrank" and cfg.predictor_of(cfg.strategies[0]) is None


def test_strategy_runs_can_measure_the_held_out_part_only(tiny_dir, tiny_data, tmp_path):
    """``measure_pool: false``: plain runs measure every example (they are the known rows), strategy runs
    the held-out part only; the held-out metrics are unchanged in kind and the pool mean is not reported."""
    from forgetscope.experiments.compare import load_compare_config, run_compare
    from forgetscope.store import SweepStore

    d = _compare_dict(tiny_dir, tiny_data, tmp_path / "cmp", strategies=[
        {"name": "replay", "label": "replay-random", "options": {"ratio": 0.5, "policy": "random"}},
        {"name": "replay", "label": "replay-probe-only", "options": {"ratio": 0.5, "policy": "predicted",
                                                                      "predictor": "probe-only"}}])
    d["known_tasks"] = []
    d["compare"]["measure_pool"] = False
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(d))
    result = run_compare(load_compare_config(p), log=lambda m: None)
    F = SweepStore(tmp_path / "cmp").load_matrix()
    split = json.loads((tmp_path / "cmp" / "compare" / "split.json").read_text())
    held = [F.col_names.index(i) for i in split["heldout"]]
    pool = [F.col_names.index(i) for i in split["pool"]]
    for rid in F.row_names:
        row = F.values[F.row_names.index(rid)]
        assert np.isfinite(row[held]).all()
        assert np.isfinite(row[pool]).all() == ("__plain__" in rid)  # strategies: the pool stays NaN
    per_run = result["per_run"].set_index("strategy")
    assert per_run.loc["plain", "forgetting_all_untrained"].notna().all()
    assert per_run.loc["replay-random", "forgetting_all_untrained"].isna().all()
    assert per_run["forgetting_heldout"].notna().all()


# ---- a design that can credit completion: budget, known rows, sources, primary contrast ----------------------
def test_the_primary_contrast_is_tested_over_tasks_with_seeds_averaged(tiny_dir, tiny_data, tmp_path):
    from scipy.stats import ttest_rel

    result, _, _ = _summarized(tiny_dir, tiny_data, tmp_path, ["lm"] * 20, seeds=(0, 1),
                               primary={"a": "sam", "b": "plain"})
    per_run, tests = result["per_run"], result["tests"]
    primary = tests[tests["role"] == "primary"]
    assert len(primary) == 1
    row = primary.iloc[0]
    assert (row["level"], row["strategy"], row["baseline"], row["metric"]) == ("task", "sam", "plain",
                                                                               "forgetting_heldout")
    assert row["n_pairs"] == 2  # 2 tasks, each the mean of its 2 seeds (4 runs per arm)
    means = per_run.groupby(["strategy", "task"])["forgetting_heldout"].mean()
    a, b = means.loc["sam"].sort_index(), means.loc["plain"].sort_index()
    assert np.isclose(row["mean_diff"], (a - b).mean())
    assert np.isclose(row["p_t"], ttest_rel(a.to_numpy(), b.to_numpy()).pvalue)
    run_row = tests[(tests["level"] == "run") & (tests["strategy"] == "sam") & (tests["metric"] == "forgetting_heldout")]
    assert run_row.iloc[0]["n_pairs"] == 4 and run_row.iloc[0]["role"] == "secondary"
    # unadjusted; Holm runs over the secondary rows of each level only
    assert row["p_t_holm"] == row["p_t"]
    family = (tests["level"] == "task") & (tests["role"] == "secondary")
    assert np.allclose(tests.loc[family, "p_t_holm"], holm(tests.loc[family, "p_t"].to_numpy()), equal_nan=True)
    assert result["primary_contrast"]["comparison"] == "sam vs plain"
    # without a primary contrast every row is secondary and one Holm family per level, as before
    plain_result, _, _ = _summarized(tiny_dir, tiny_data, tmp_path, ["lm"] * 20, seeds=(0, 1))
    assert (plain_result["tests"]["role"] == "secondary").all() and plain_result["primary_contrast"] is None


def _known_sweep(path, tasks_cols):
    """A sweep of plain rows: ``tasks_cols`` maps each task to the example ids its rows measure."""
    import pandas as pd

    from forgetscope.store import SweepStore

    cols = sorted({c for cs in tasks_cols.values() for c in cs}, key=lambda c: int(c[1:]))
    store = SweepStore(path)
    store.write_manifest({"source": "test"})
    store.write_upstream(pd.DataFrame({"example_id": cols, "loss_before": np.full(len(cols), 2.0)}))
    for j, (task, cs) in enumerate(tasks_cols.items()):
        store.write_run({"run_id": f"{task}__plain__s0", "task": task, "strategy": "plain"},
                        pd.DataFrame({"example_id": cs, "loss_after": 2.0 + 0.1 * j + np.arange(len(cs)) / 50}))
    store.consolidate()
    return path


PREDICTED = [{"name": "replay", "label": "knn", "options": {"policy": "predicted", "predictor": "knn"}},
             {"name": "replay", "label": "fill", "options": {"policy": "predicted", "predictor": "probe-fill"}},
             {"name": "replay", "label": "random", "options": {"policy": "random"}}]


@pytest.mark.parametrize("change,msg", [
    ({"compare": {"budget": 4}}, "budget of 4 replay examples is at or below its probe of 4"),
    ({"compare": {"budget": 13}}, "budget of 13 replay examples exceeds the replay pool of 12"),
    ({"strategies": [{"name": "replay", "label": "on", "options": {"policy": "predicted", "mode": "online",
                                                                   "warmup_fraction": 0.5}}],
      "compare": {"budget": 6}},
     "strategy on: a budget of 6 replay examples leaves 4 after its online warm-up, which is at or below its probe"),
    ({"strategies": [{"name": "replay", "label": "r", "options": {"ratio": 0.5}}], "compare": {"budget": 6}},
     "strategies.0 (r): sets ratio while compare.budget"),
    ({"strategies": [{"name": "replay", "options": {"ratio": 0.5, "budget": 6}}]}, "give ratio or budget, not both"),
    ({"compare": {"budget": 6, "primary": {"a": "knn", "b": "nope"}}}, "compare.primary.b: no arm labelled 'nope'"),
    ({"compare": {"heldout_sources": ["a"], "pool_sources": ["a", "b"]}}, "held-out set overlaps the pool"),
    ({"compare": {"budget": 6, "pending": ["trian"]}}, "compare.pending.0: 'trian' is not a config field"),
    ({"compare": {"budget": 6, "pending": ["train", "compare.budget"]}}, "train, compare.budget still hold placeholders"),
    ({"strategies": [{"name": "replay", "label": "k", "options": {"policy": "predicted", "leave_task_out": False}}]},
     "strategies.0 (k): leave_task_out false with this comparison's own plain rows"),
])
def test_completion_design_refuses_bad_input_in_one_line(tiny_dir, tiny_data, tmp_path, change, msg, capsys):
    from forgetscope.cli import run_app

    out = tmp_path / "never"
    d = _compare_dict(tiny_dir, tiny_data, out, strategies=change.get("strategies") or PREDICTED)
    d["known_tasks"] = []
    d["compare"].update(change.get("compare", {}))
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(d))
    assert run_app(["compare", str(p)]) == 2
    err = capsys.readouterr()
    text = (err.out + err.err).strip()
    assert msg in " ".join(text.split())
    assert len(text.splitlines()) <= 2  # one line (the console may wrap it)
    assert not out.exists()  # nothing written


def test_known_rows_from_a_sweep_must_cover_the_pool_with_the_trained_task_left_out(tiny_dir, tiny_data, tmp_path,
                                                                                     capsys):
    """Pool examples u0..u23 split 12/12; the other task measures every example but one, which only the
    compared task ``code`` measures: fine with ``leave_task_out: false``, refused with it left out."""
    from forgetscope.cli import run_app
    from forgetscope.experiments.compare import CompareConfig, split_for
    from forgetscope.experiments.session import load_upstream

    d = _compare_dict(tiny_dir, tiny_data, tmp_path / "never", strategies=PREDICTED)
    d["known_tasks"] = []
    pool, _ = split_for(CompareConfig.model_validate(d), load_upstream(CompareConfig.model_validate(d)))
    every = [f"u{i}" for i in range(24)]
    known = _known_sweep(tmp_path / "known", {"code": every, "other": [i for i in every if i != pool[0]]})
    p = tmp_path / "c.yaml"

    def check(known_option):
        d["compare"].update(budget=6, known=known_option)
        p.write_text(yaml.safe_dump(d))
        return run_app(["compare", str(p), "--check"])

    assert check({"sweep": str(known), "leave_task_out": False}) == 0
    capsys.readouterr()
    assert check({"sweep": str(known), "leave_task_out": True}) == 2
    text = " ".join(capsys.readouterr().err.split())
    assert f"with task 'code' left out cover 11 of the 12 replay pool examples (missing {pool[0]})" in text
    assert check(str(known)) == 2  # a plain path leaves the task out too
    # the runs of a comparison get the rule only when it is not the default (run ids stay those of before)
    cfg = CompareConfig.model_validate({**d, "compare": {**d["compare"], "known": {"sweep": str(known),
                                                                                  "leave_task_out": False}}})
    arm = cfg.strategies[0]
    assert declared_defaults(arm.name, arm.options, cfg.defaults()) == {"budget": 6, "predictor": "knn",
                                                                         "leave_task_out": False}
    cfg = CompareConfig.model_validate({**d, "compare": {**d["compare"], "known": str(known)}})
    arm = cfg.strategies[0]
    assert declared_defaults(arm.name, arm.options, cfg.defaults()) == {"budget": 6, "predictor": "knn"}
    assert cfg.options_of(arm) == {**arm.options, "budget": 6, "predictor": "knn"}
    # a matrix file does not say which task each row is: leave-task-out cannot be honoured
    import pandas as pd

    pd.DataFrame(np.ones((2, 24)), index=["r0", "r1"], columns=every).to_csv(tmp_path / "known.csv")
    assert check({"sweep": str(tmp_path / "known.csv")}) == 2
    assert "does not say which task each row is" in " ".join(capsys.readouterr().err.split())
    # known rows that miss pool examples altogether
    short = _known_sweep(tmp_path / "short", {"other": every[:6]})
    assert check(str(short)) == 2
    assert "of the 12 replay pool examples" in " ".join(capsys.readouterr().err.split())


def test_held_out_and_pool_sources_are_named_by_category(tiny_dir, tiny_data, tmp_path):
    from forgetscope.experiments.compare import CompareConfig, split_for
    from forgetscope.experiments.session import load_upstream

    up = write_jsonl(tmp_path / "cat.jsonl", [{"id": f"u{i}", "text": f"Line {i} of the text.",
                                               "category": ["docs", "code", "prose"][i % 3]} for i in range(30)])
    d = _compare_dict(tiny_dir, tiny_data, tmp_path / "x", strategies=[{"name": "sam"}])
    d["upstream"] = {"source": str(up)}
    d["compare"].update(heldout_sources=["prose"], pool_sources=["docs"])
    cfg = CompareConfig.model_validate(d)
    pool, held = split_for(cfg, load_upstream(cfg))
    assert all(int(i[1:]) % 3 == 0 for i in pool) and all(int(i[1:]) % 3 == 2 for i in held)
    assert len(pool) == len(held) == 10  # code is in neither


@pytest.mark.parametrize("name", ["replay_dose_pilot.yaml", "replay_completion.yaml"])
def test_the_pre_registered_completion_configs_validate_in_the_chosen_regime(name, tmp_path):
    from conftest import chosen_regime_train

    from forgetscope.experiments.compare import load_compare_config, run_compare, validate_compare

    path = Path(__file__).parents[1] / "configs" / name
    study = "benchmarks/results/study/smollm2/sweep"
    text = path.read_text()
    if name == "replay_completion.yaml":  # known rows: the new study's, on the lm columns
        assert f"known: {{sweep: {study}, leave_task_out: true, kind: lm}}" in text
        manifest = path.parents[1] / study / "manifest.json"
        if not manifest.is_file() or json.loads(manifest.read_text()).get("status") != "complete":
            # until the study is complete, the earlier study's rows stand in
            path = tmp_path / name
            path.write_text(text.replace(study, "benchmarks/results/replication/replication_smollm2/sweep"))
    cfg = load_compare_config(path)
    pool, held = validate_compare(cfg)
    assert len(pool) == 306 and len(held) == 94
    assert len(cfg.tasks) >= (20 if name == "replay_completion.yaml" else 6)
    assert cfg.train.model_dump(include=set(chosen_regime_train())) == chosen_regime_train()
    budgets = {cfg.budget_of(s) for s in cfg.strategies if s.name == "replay"}
    assert min(budgets) > cfg.compare.probe
    if name == "replay_dose_pilot.yaml":
        assert cfg.compare.pending == []
        return
    assert cfg.compare.pending == ["compare.budget"]  # until the dose pilot has chosen it
    with pytest.raises(ConfigError, match="still hold placeholders"):
        run_compare(cfg, output=tmp_path / "never", log=lambda m: None)
    assert not (tmp_path / "never").exists()


def test_probe_seed_task_gives_each_task_its_own_probe_and_run_keeps_one_per_seed(tiny_dir, tiny_data, tmp_path):
    from forgetscope.experiments.compare import CompareConfig
    from forgetscope.predict import choose_probe

    d = _compare_dict(tiny_dir, tiny_data, tmp_path / "x", strategies=PREDICTED)
    per_run = CompareConfig.model_validate(d)
    assert per_run.probe_seed_for("code", 3) == per_run.probe_seed_for("qa", 3) == 3
    d["compare"]["probe_seed"] = "task"
    per_task = CompareConfig.model_validate(d)
    a, b = per_task.probe_seed_for("code", 3), per_task.probe_seed_for("qa", 3)
    assert a == per_task.probe_seed_for("code", 3) and a != b and a != per_task.probe_seed_for("code", 4)
    assert sorted(choose_probe(306, 30, seed=a)) != sorted(choose_probe(306, 30, seed=b))


def test_known_rows_from_an_unfinished_sweep_are_refused_before_any_run(tmp_path):
    import shutil

    from forgetscope.experiments.compare import load_compare_config, validate_compare

    root = Path(__file__).parents[1]
    known = tmp_path / "known"
    shutil.copytree(root / "benchmarks/results/replication/replication_smollm2/sweep", known)
    manifest = json.loads((known / "manifest.json").read_text())
    (known / "manifest.json").write_text(json.dumps({**manifest, "status": "running"}))
    text = (root / "configs" / "replay_completion.yaml").read_text()
    path = tmp_path / "c.yaml"
    path.write_text(text.replace("benchmarks/results/study/smollm2/sweep", str(known)))
    with pytest.raises(ConfigError, match="is not complete .status 'running'"):
        validate_compare(load_compare_config(path))


def test_a_ci_that_falls_back_from_bca_to_percentile_says_so(monkeypatch):
    import scipy.stats

    real = scipy.stats.bootstrap

    def bca_undefined(data, statistic, *, method="BCa", **kw):
        res = real(data, statistic, method="percentile" if method == "BCa" else method, **kw)
        if method == "BCa":
            res.confidence_interval = type(res.confidence_interval)(np.nan, np.nan)
        return res

    d = np.array([-0.3, -0.1, -0.2, -0.25, -0.05, -0.15])
    assert "percentile" not in paired_run_test(d, np.zeros(6), n_resamples=999)["note"]
    monkeypatch.setattr(scipy.stats, "bootstrap", bca_undefined)
    r = paired_run_test(d, np.zeros(6), n_resamples=999)
    assert "percentile bootstrap (BCa undefined here)" in r["note"] and r["ci_low"] < r["mean_diff"] < r["ci_high"]


def test_a_resumed_comparison_refuses_known_rows_that_changed(tmp_path):
    import shutil

    from forgetscope.experiments.compare import load_compare_config
    from forgetscope.experiments.compare.config import check_known_unchanged, known_rows_fingerprint

    root = Path(__file__).parents[1]
    known = tmp_path / "known"
    shutil.copytree(root / "benchmarks/results/replication/replication_smollm2/sweep", known)
    path = tmp_path / "c.yaml"
    path.write_text((root / "configs" / "replay_completion.yaml").read_text()
                    .replace("benchmarks/results/study/smollm2/sweep", str(known)))
    cfg = load_compare_config(path)
    first = check_known_unchanged(None, cfg)  # a new comparison records it
    assert list(first) == [str(known)] and first == known_rows_fingerprint(cfg)
    assert check_known_unchanged(first, cfg) == first  # a resume with the same rows goes on
    F = np.load(known / "F.npy")
    np.save(known / "F.npy", F + 1e-3)
    with pytest.raises(ConfigError, match=f"the known rows of {known} changed since this comparison started"):
        check_known_unchanged(first, cfg)


def test_the_committed_comparison_keeps_its_fingerprint_under_the_current_config():
    """Fields added to comparisons after a comparison ran (at their defaults) leave its fingerprint alone,
    so the committed comparison resumes with its own config instead of being refused as another sweep."""
    from forgetscope.experiments.compare import load_compare_config
    from forgetscope.experiments.session import config_changes, config_fingerprint

    root = Path(__file__).resolve().parents[1]
    manifest = json.loads((root / "benchmarks/results/compare_replay/sweep/manifest.json").read_text())
    current = load_compare_config(root / "configs/compare_replay.yaml")
    assert config_changes(manifest["config"], current.model_dump(mode="json")) == []
    assert manifest["fingerprint"] == config_fingerprint(manifest["config"]) == config_fingerprint(current)
