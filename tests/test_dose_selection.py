"""The dose pilot's selection rule: headroom by the CI's upper bound, the largest headroom chosen, ties to the
smaller budget, none chosen when no budget has headroom."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from forgetscope.errors import ConfigError
from forgetscope.experiments.compare import load_compare_config
from forgetscope.experiments.compare.dose import dose_pairs, select_budget, write_selection
from forgetscope.store.layout import SweepLayout

ROOT = Path(__file__).resolve().parents[1]
PILOT = ROOT / "configs" / "replay_dose_pilot.yaml"
PAIRS = [{"budget": b, "oracle": f"replay-oracle-{b}", "random": f"replay-random-{b}"} for b in (40, 80, 160)]


def _tests(rows: dict[int, tuple[float, float, float]], n: int = 6) -> pd.DataFrame:
    """A tests.csv with one task-level held-out row per budget (d, ci_low, ci_high), plus distractors."""
    out = []
    for b, (d, lo, hi) in rows.items():
        base = {"comparison": f"replay-oracle-{b} vs replay-random-{b}", "strategy": f"replay-oracle-{b}",
                "baseline": f"replay-random-{b}", "n_pairs": n, "mean_strategy": 0.1 + d, "mean_baseline": 0.1,
                "mean_diff": d, "ci_low": lo, "ci_high": hi}
        out.append({**base, "level": "task", "metric": "forgetting_heldout"})
        # the run level and another metric must not be read
        out.append({**base, "level": "run", "metric": "forgetting_heldout", "mean_diff": -9.0, "ci_high": -8.0})
        out.append({**base, "level": "task", "metric": "task_loss_after", "mean_diff": -9.0, "ci_high": -8.0})
    return pd.DataFrame(out)


def test_the_budget_with_the_largest_headroom_is_chosen():
    res = select_budget(_tests({40: (-0.010, -0.02, -0.001), 80: (-0.030, -0.05, -0.01), 160: (-0.050, -0.2, 0.01)}),
                        PAIRS, n_tasks=6)
    assert [b["headroom"] for b in res["per_budget"]] == [True, True, False]
    # 160 has the most negative d but its CI crosses 0: it shows no headroom and cannot be chosen
    assert res["chosen"] == 80
    assert res["confirmatory"] and res["departures"] == []


def test_a_tie_at_three_decimals_goes_to_the_smaller_budget():
    # 80 is more negative before rounding; both round to -0.030, so the smaller budget wins
    res = select_budget(_tests({40: (-0.0296, -0.05, -0.01), 80: (-0.0304, -0.05, -0.01), 160: (0.0, -0.1, 0.1)}),
                        PAIRS, n_tasks=6)
    assert res["chosen"] == 40


def test_no_headroom_anywhere_chooses_nothing_and_says_why():
    res = select_budget(_tests({40: (-0.01, -0.03, 0.01), 80: (0.0, -0.02, 0.02), 160: (0.01, -0.01, 0.03)}),
                        PAIRS, n_tasks=6)
    assert res["chosen"] is None
    assert "not run" in res["finding"]


def test_a_pair_measured_on_fewer_tasks_is_not_confirmatory():
    res = select_budget(_tests({40: (-0.02, -0.03, -0.01), 80: (0.0, -0.1, 0.1), 160: (0.0, -0.1, 0.1)}, n=5),
                        PAIRS, n_tasks=6)
    assert res["chosen"] == 40 and not res["confirmatory"]
    assert res["departures"][0] == "budget 40: 5 of 6 tasks"


def test_a_percentile_ci_is_recorded_as_a_departure_from_the_rule():
    tests = _tests({40: (-0.02, -0.03, -0.01), 80: (0.0, -0.1, 0.1), 160: (0.0, -0.1, 0.1)})
    tests["note"] = ""
    tests.loc[tests["strategy"] == "replay-oracle-40", "note"] = "CI of the mean difference: percentile bootstrap"
    res = select_budget(tests, PAIRS, n_tasks=6)
    assert res["chosen"] == 40 and not res["confirmatory"]
    assert res["departures"] == ["budget 40: CI of the mean difference: percentile bootstrap"]
    assert res["per_budget"][0]["note"].startswith("CI of the mean difference")


def test_a_missing_pair_is_refused():
    with pytest.raises(ConfigError, match="run the comparison to the end"):
        select_budget(_tests({40: (-0.02, -0.03, -0.01)}), PAIRS, n_tasks=6)


def test_the_pilot_config_pairs_oracle_with_random_at_each_budget():
    pairs = dose_pairs(load_compare_config(PILOT))
    assert pairs == PAIRS


@pytest.mark.parametrize("pair, message", [
    ("- [replay-oracle-40, replay-random-80]", "not an oracle arm against a random arm of one budget"),
    ("- [replay-random-40, replay-oracle-40]", "not an oracle arm against a random arm of one budget"),
    ("- [replay-oracle-40, replay-random-40]\n    - [replay-oracle-40, replay-random-40]", "paired twice"),
])
def test_a_pair_that_is_not_one_oracle_against_random_per_budget_is_refused(tmp_path: Path, pair, message):
    text = PILOT.read_text(encoding="utf-8").replace("- [replay-oracle-40, replay-random-40]", pair)
    cfg_path = tmp_path / "pilot.yaml"
    cfg_path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        dose_pairs(load_compare_config(cfg_path))


def test_the_selection_is_written_where_the_layout_says(tmp_path: Path):
    cfg = load_compare_config(PILOT).model_copy(update={"output": tmp_path / "sweep"})
    layout = SweepLayout(tmp_path / "sweep")
    layout.compare_dir.mkdir(parents=True)
    _tests({40: (-0.02, -0.03, -0.01), 80: (-0.04, -0.06, -0.02), 160: (0.0, -0.1, 0.1)}).to_csv(
        layout.compare_tests, index=False)
    res = write_selection(cfg, layout)
    assert json.loads(layout.compare_selection.read_text())["chosen"] == res["chosen"] == 80


def test_the_script_refuses_an_unfinished_pilot_in_one_line(tmp_path: Path):
    text = PILOT.read_text(encoding="utf-8").replace("output: benchmarks/results/replay_dose_pilot/sweep",
                                                     f"output: {tmp_path / 'none'}")
    cfg_path = tmp_path / "pilot.yaml"
    cfg_path.write_text(text, encoding="utf-8")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "dose_selection.py"), str(cfg_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "run the dose pilot to the end first" in proc.stderr
    assert not (tmp_path / "none").exists()


def test_the_committed_selection_is_the_rule_applied_to_the_committed_pilot():
    """benchmarks/results/replay_dose_pilot: the selection written there is what the rule gives on its tests.csv
    (no budget: the completion comparison is not run)."""
    cfg = load_compare_config(PILOT)
    layout = SweepLayout(ROOT / cfg.output)
    committed = json.loads(layout.compare_selection.read_text())
    again = select_budget(pd.read_csv(layout.compare_tests), dose_pairs(cfg), n_tasks=len(cfg.tasks))
    assert committed["chosen"] is None and again["chosen"] is None
    assert [b["d"] for b in committed["per_budget"]] == pytest.approx([b["d"] for b in again["per_budget"]])
    assert committed["confirmatory"] and not any(b["headroom"] for b in again["per_budget"])
