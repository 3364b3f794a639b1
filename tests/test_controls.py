"""Controls of the forgetting measurement: the format-only task and the null matched in effect."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import sweep_config_dict

from forgetscope.analysis.format_control import format_only_share
from forgetscope.config import TaskConfig, load_config, parse_config
from forgetscope.data.controls import derangement, shuffled_responses
from forgetscope.data.types import Example, Task
from forgetscope.errors import ConfigError, DataError
from forgetscope.experiments import run_sweep
from forgetscope.experiments.null_control import match_effect
from forgetscope.experiments.session import config_fingerprint, load_task_from_config
from forgetscope.store import ForgettingMatrix, load_forgetting

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------
# the format-only task
# ------------------------------------------------------------------------------------------------

def test_derangement_moves_every_position_and_is_seeded():
    for n in (2, 3, 10, 151):
        p = derangement(n, seed=7)
        assert sorted(p) == list(range(n)) and all(p[i] != i for i in range(n))
    assert derangement(50, 1) == derangement(50, 1) and derangement(50, 1) != derangement(50, 2)


def test_format_only_task_pairs_each_prompt_with_another_response_of_the_same_task():
    tc = TaskConfig(name="json_field_format", source="demo:json_field", control="shuffled_responses")
    real = load_task_from_config(TaskConfig(name="json_field"), 0)
    fmt = load_task_from_config(tc, 0)
    again = load_task_from_config(tc, 0)
    assert [(e.prompt, e.response) for e in fmt.train] == [(e.prompt, e.response) for e in again.train]
    assert fmt.control == "shuffled_responses" and fmt.family == "instruction"
    by_id = {e.example_id: e for e in real.train}
    assert [e.prompt for e in fmt.train] == [e.prompt for e in real.train]  # prompts kept, in order
    donors = [e.meta["response_from"] for e in fmt.train]
    assert sorted(donors) == sorted(by_id)  # every response of the task used once, none from elsewhere
    assert all(d != e.example_id for d, e in zip(donors, fmt.train, strict=True))  # nobody keeps its own
    assert all(e.response == by_id[d].response for d, e in zip(donors, fmt.train, strict=True))
    assert sum(e.response != by_id[e.example_id].response for e in fmt.train) > 0.8 * len(fmt.train)
    assert fmt.heldout == real.heldout  # held-out task loss is measured on the real pairs
    other = load_task_from_config(tc.model_copy(update={"name": "json_field_other"}), 0)
    assert [e.meta["response_from"] for e in other.train] != donors  # seeded from the task's name


def test_format_only_needs_pairs_and_two_examples():
    text = Task("t", [Example("a", text="x"), Example("b", text="y")], [Example("c", text="z")])
    with pytest.raises(DataError, match="prompt/response"):
        shuffled_responses(text)
    one = Task("p", [Example("a", prompt="q", response="r")], [Example("c", prompt="q", response="s")])
    with pytest.raises(DataError, match="at least 2"):
        shuffled_responses(one)


def test_unknown_control_is_refused_naming_the_field(tiny_dir, tiny_data, tmp_path):
    cfg = sweep_config_dict(tiny_dir, tiny_data, tmp_path / "s")
    cfg["tasks"][1]["control"] = "shuffled_prompts"
    with pytest.raises(ConfigError, match=r"tasks\.1\.control") as err:
        parse_config(cfg)
    assert "\n" not in str(err.value)


def test_plain_text_task_with_a_control_is_refused_before_anything_is_written(tiny_dir, tiny_data, tmp_path):
    cfg = sweep_config_dict(tiny_dir, tiny_data, tmp_path / "s")
    cfg["tasks"][0]["control"] = "shuffled_responses"  # code: plain text
    with pytest.raises(DataError, match="control: shuffled_responses needs prompt/response") as err:
        run_sweep(parse_config(cfg))
    assert "\n" not in str(err.value) and not (tmp_path / "s").exists()


# ------------------------------------------------------------------------------------------------
# the null matched in effect
# ------------------------------------------------------------------------------------------------

def test_effect_null_needs_the_null_control(tiny_dir, tiny_data, tmp_path):
    cfg = {**sweep_config_dict(tiny_dir, tiny_data, tmp_path / "s"), "null_match": "effect"}
    with pytest.raises(ConfigError, match="null_match: effect .* needs null_control: true") as err:
        parse_config(cfg)
    assert "\n" not in str(err.value)
    assert parse_config({**cfg, "null_control": True}).null_match == "effect"


def test_match_effect_finds_the_scale_of_a_power_law_within_tolerance():
    calls = []

    def mean_f(s):  # weaker than the target at the norm-matched scale, slightly negative near 0
        calls.append(s)
        return 0.002 * s ** 2 - 0.001

    m = match_effect(mean_f, 0.5, tol=0.05, max_steps=8)
    assert m.status == "matched" and abs(m.value - 0.5) <= 0.05 * 0.5
    assert m.scale == pytest.approx(np.sqrt(0.501 / 0.002), rel=0.05)
    assert len(calls) == len(m.evaluations) <= 8 and calls[0] == 1.0
    assert m.record()["null_norm_effect"] == pytest.approx(0.001)
    above = match_effect(lambda s: 0.3 * s, 0.01, tol=0.02)  # the norm-matched null is already stronger
    assert above.status == "matched" and above.scale < 1
    none = match_effect(mean_f, -0.01)
    assert none.status == "target_not_positive" and none.scale == 1.0 and not none.evaluations


def test_sweep_with_a_format_only_task_and_an_effect_matched_null(tiny_dir, tiny_data, tmp_path):
    out = tmp_path / "sweep"
    cfg = sweep_config_dict(tiny_dir, tiny_data, out, method="lora", lora_rank=2)
    cfg["tasks"].append({"name": "qa_format", "source": str(tiny_data["qa"]), "heldout": 3,
                         "control": "shuffled_responses"})
    cfg.update(null_control=True, null_match="effect", null_match_subset=8, null_match_tol=0.05,
               null_match_steps=12)
    run_sweep(parse_config(cfg))
    m = load_forgetting(out)
    runs = m.runs.set_index("task")
    assert m.row_names == ["code__plain__s0", "qa__plain__s0", "qa_format__plain__s0"]
    assert runs.loc["qa_format", "control"] == "shuffled_responses"
    assert runs.loc["qa_format", "control_of"] == "qa"
    assert runs["control"].isna()[["code", "qa"]].all()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["tasks"]["qa_format"]["control_of"] == "qa" and "control" not in manifest["tasks"]["qa"]
    assert (runs["null_match"] == "effect").all() and (runs["null_match_subset"] == 8).all()
    assert (runs["null_match_steps"] <= 12).all() and (runs["null_match_wall_s"] >= 0).all()
    matched = runs[runs["null_match_status"] == "matched"]
    assert "qa" in matched.index  # the tiny model forgets a little on the qa run: a target to match
    for task, r in matched.iterrows():
        assert abs(r["null_match_value"] - r["null_match_target"]) <= 0.05 * r["null_match_target"]
        assert r["null_scale"] > 0 and r["null_scale"] != 1.0
        i = m.row_names.index(f"{task}__plain__s0")
        # the stored null row is the matched model: its mean F on the subset (the first 8 lm examples)
        assert np.mean(m.null[i, :8]) == pytest.approx(r["null_match_value"], abs=1e-4)
        assert np.mean(m.values[i, :8]) == pytest.approx(r["null_match_target"], abs=1e-4)
    assert format_only_share(m).table()["task"].tolist() == ["qa"]


# ------------------------------------------------------------------------------------------------
# fingerprints of sweeps recorded before these options
# ------------------------------------------------------------------------------------------------

def test_committed_sweep_fingerprint_is_unchanged():
    cfg = load_config(ROOT / "configs" / "replication_smollm2.yaml")
    recorded = ROOT / "benchmarks" / "results" / "replication" / "replication_smollm2" / "manifest.json"
    manifest = json.loads(recorded.read_text())
    assert config_fingerprint(cfg) == manifest["fingerprint"]
    explicit = cfg.model_copy(update={"null_match": "norm", "null_match_subset": 32,
                                      "tasks": [t.model_copy(update={"control": None}) for t in cfg.tasks]})
    assert config_fingerprint(explicit) == manifest["fingerprint"]
    effect = parse_config({**cfg.model_dump(mode="json"), "null_match": "effect"})
    assert config_fingerprint(effect) != manifest["fingerprint"]


# ------------------------------------------------------------------------------------------------
# how much of a task's row its format-only row explains
# ------------------------------------------------------------------------------------------------

def _matrix(rows: dict[str, np.ndarray], controls: dict[str, str]) -> ForgettingMatrix:
    names = list(rows)
    runs = pd.DataFrame({"run_id": [f"{n}__plain__s{k}" for k, n in enumerate(names)],
                         "task": [n.split("#")[0] for n in names],
                         "control": [("shuffled_responses" if n.split("#")[0] in controls else None)
                                     for n in names],
                         "control_of": [controls.get(n.split("#")[0]) for n in names]})
    return ForgettingMatrix(np.vstack(list(rows.values())), list(runs["run_id"]),
                            [f"u{j}" for j in range(len(next(iter(rows.values()))))], runs=runs)


def test_format_only_share_separates_a_format_shift_from_task_content():
    rng = np.random.default_rng(0)
    n = 300
    fragility = rng.gamma(2.0, 0.05, n)
    pattern = {t: rng.normal(0, 0.05, n) for t in "abcd"}
    level = {"a": 0.10, "b": 0.08, "c": 0.12, "d": 0.05}
    rows = {f"{t}#{s}": level[t] + fragility + pattern[t] + rng.normal(0, 0.005, n)
            for t in "abcd" for s in (0, 1)}
    rows["a_fmt"] = 0.09 + fragility + pattern["a"] + rng.normal(0, 0.005, n)  # a's forgetting is its format
    rows["b_fmt"] = 0.02 + fragility + rng.normal(0, 0.05, n)  # b's is its content
    res = format_only_share(_matrix(rows, {"a_fmt": "a", "b_fmt": "b"}))
    t = res.table().set_index("task")
    assert set(t.index) == {"a", "b"} and t.loc["a", "control_task"] == "a_fmt"
    assert t.loc["a", "interaction_r2"] > 0.9 and t.loc["b", "interaction_r2"] < 0.1
    assert t.loc["a", "r2"] == pytest.approx(t.loc["a", "pearson_r"] ** 2)
    assert t.loc["a", "share_of_mean"] == pytest.approx(np.mean(rows["a_fmt"]) / np.mean(
        (rows["a#0"] + rows["a#1"]) / 2))
    assert t.loc["b", "share_of_mean"] < 0.8 < t.loc["a", "share_of_mean"]
    assert 0.3 < res.interaction_share < 0.7  # a's interaction explained, b's not
    assert res.interaction_share_all < res.interaction_share  # c and d have no control
    assert {"per_task", "interaction_share"} <= set(res.to_dict())


def test_format_only_share_without_controls_is_a_clear_error():
    rows = {"a": np.arange(5.0), "b": np.arange(5.0)[::-1]}
    with pytest.raises(DataError, match="control: shuffled_responses"):
        format_only_share(_matrix(rows, {}))
    with pytest.raises(DataError, match="pairs="):
        format_only_share(_matrix({**rows, "x": np.ones(5)}, {"x": "zzz"}))
