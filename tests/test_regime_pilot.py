"""The pre-registered regime pilot: its file, its seal, the criteria and the selection rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from forgetscope.analysis.regime import regime_verdict, select_regime
from forgetscope.errors import ConfigError
from forgetscope.experiments.regime_pilot import RegimeCriteria, candidate_configs, load_pilot, seal_pilot
from forgetscope.store.matrix import ForgettingMatrix

CONFIGS = Path(__file__).parents[1] / "configs" / "regimes"


@pytest.mark.parametrize("name", ["smollm2.yaml", "gemma3.yaml"])
def test_the_committed_pilot_files_validate_into_one_sweep_per_candidate(name):
    pilot = load_pilot(CONFIGS / name)
    configs = candidate_configs(pilot)
    assert len(configs) == 4 and all(len(c.seed_list) == 2 for c in configs.values())
    assert all(c.output == pilot.output / n / "sweep" for n, c in configs.items())


def test_a_pilot_file_that_changed_after_its_seal_is_refused(tmp_path):
    text = (CONFIGS / "smollm2.yaml").read_text().replace("benchmarks/results/regimes/smollm2", str(tmp_path / "o"))
    path = tmp_path / "pilot.yaml"
    path.write_text(text)
    pilot = load_pilot(path)
    seal = seal_pilot(path, pilot)
    assert seal.is_file() and seal_pilot(path, pilot) == seal  # unchanged: accepted again
    path.write_text(text.replace("seed_r_min: 0.7", "seed_r_min: 0.5"))
    with pytest.raises(ConfigError, match="changed after its first result"):
        seal_pilot(path, load_pilot(path))


def test_a_pilot_with_one_seed_is_refused(tmp_path):
    path = tmp_path / "pilot.yaml"
    path.write_text((CONFIGS / "smollm2.yaml").read_text().replace("seeds: [0, 1]", "seeds: [0]"))
    with pytest.raises(ConfigError, match="two or more seeds"):
        load_pilot(path)


def _matrix(shift: float, noise: float, seed: int = 0) -> ForgettingMatrix:
    """Two tasks x two seeds on 20 texts with base loss 4; the seeds share each task's profile."""
    rng = np.random.default_rng(seed)
    profiles = {"a": rng.normal(size=20), "b": rng.normal(size=20)}
    rows, runs = [], []
    for task in ("a", "b"):
        for s in (0, 1):
            rows.append(shift + 0.1 * profiles[task] + noise * rng.normal(size=20))
            runs.append({"task": task, "seed": s, "task_loss_before": 2.0, "task_loss_after": 1.0 + 0.1 * s})
    upstream = pd.DataFrame({"example_id": [f"u{j}" for j in range(20)], "loss_before": np.full(20, 4.0)})
    return ForgettingMatrix(np.array(rows), [f"{r['task']}__plain__s{r['seed']}" for r in runs],
                            upstream["example_id"].tolist(), runs=pd.DataFrame(runs), upstream=upstream)


def test_criteria_cap_damage_and_require_rows_above_noise():
    crit = RegimeCriteria()
    good = regime_verdict(_matrix(0.05, 0.01), crit, uniform_loss=10.0)
    assert good["criteria"]["damage"]["met"] and good["criteria"]["seed_r"]["met"]
    assert not good["criteria"]["answers_retained"]["measurable"] and not good["usable"]  # no pairs: not met
    damaged = regime_verdict(_matrix(0.8, 0.01), crit, uniform_loss=10.0)  # mean F 20 % of the base loss
    assert not damaged["criteria"]["damage"]["met"]
    noisy = regime_verdict(_matrix(0.05, 1.0), crit, uniform_loss=10.0)
    assert not noisy["criteria"]["seed_r"]["met"]
    collapsed = regime_verdict(_matrix(0.05, 0.01), crit, uniform_loss=4.0)  # after-loss above a uniform guess
    assert not collapsed["criteria"]["below_uniform"]["met"]


def test_selection_takes_the_best_learner_and_breaks_ties_by_the_smaller_update():
    v = {"a": {"usable": True, "mean_task_loss_after": 1.000}, "b": {"usable": True, "mean_task_loss_after": 1.005},
         "c": {"usable": True, "mean_task_loss_after": 0.900}, "d": {"usable": False, "mean_task_loss_after": 0.1}}
    assert select_regime(v, update_size={"a": 1, "b": 2, "c": 3, "d": 0})["chosen"] == "c"
    del v["c"]
    assert select_regime(v, update_size={"a": 2, "b": 1, "d": 0})["chosen"] == "b"  # tie within 0.01 nats
    assert select_regime({"d": v["d"]}, update_size={"d": 0})["chosen"] is None
