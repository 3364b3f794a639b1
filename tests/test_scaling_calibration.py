"""benchmarks/scaling_criteria_calibration.py: the resampling keeps each run's residuals together."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from conftest import load_script

cal = load_script(Path(__file__).parents[1] / "benchmarks" / "scaling_criteria_calibration.py")


def test_a_draw_moves_whole_run_blocks_with_one_sign_each() -> None:
    pts = pd.DataFrame({"run": np.repeat(["r1", "r2", "r3"], 4), "t": np.tile([40, 10, 20, 80], 3)})
    resid = np.arange(1.0, 13.0)
    idx, res = cal.run_blocks(pts, resid)
    assert [list(pts.loc[i, "t"]) for i in idx] == [[10, 20, 40, 80]] * 3
    noise = cal.wild_blocks(idx, res, np.random.default_rng(3), len(pts))
    drawn = sorted(tuple(np.abs(noise[i])) for i in idx)
    assert drawn == sorted(tuple(r) for r in res)  # a permutation of the blocks, none split or repeated
    for i in idx:
        assert len(set(np.sign(noise[i]))) == 1


def test_wilson_interval_brackets_the_rate() -> None:
    lo, hi = cal.wilson(6, 240)
    assert lo < 6 / 240 < hi and lo > 0
    assert cal.wilson(0, 240)[0] == 0.0
