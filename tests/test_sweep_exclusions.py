"""Upstream examples a run trained on (replayed, or unlearned by LwF with ``source: upstream``) are not
measured on that run: their cells of the stored forgetting matrix are NaN, every other cell is a value."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import sweep_config_dict

from forgetscope.mitigate.lwf import LWFStrategy
from forgetscope.mitigate.replay import ReplayStrategy


@pytest.mark.parametrize(("strategy", "cls", "options"), [
    ("replay", ReplayStrategy, {"ratio": 0.5}),
    ("lwf", LWFStrategy, {"source": "upstream", "n_self": 3, "gen_tokens": 4, "interval": 2}),
])
def test_trained_on_upstream_examples_are_nan_in_the_stored_matrix(tiny_dir, tiny_data, tmp_path, monkeypatch,
                                                                    strategy, cls, options):
    from forgetscope.config import parse_config
    from forgetscope.experiments.sweep import run_sweep
    from forgetscope.store import SweepStore

    excluded: list[set[str]] = []
    original = cls.excluded_upstream_ids

    def recording(self) -> set[str]:
        ids = original(self)
        excluded.append(set(ids))
        return ids

    monkeypatch.setattr(cls, "excluded_upstream_ids", recording)
    out = tmp_path / "sweep"
    d = sweep_config_dict(tiny_dir, tiny_data, out)
    d["tasks"] = d["tasks"][:1]
    d.update(strategy=strategy, strategy_options=options)
    run_sweep(parse_config(d))
    assert len(excluded) == 1 and excluded[0], "the run trained on no upstream example"
    F = SweepStore(out).load_matrix()
    assert F.values.shape[0] == 1
    gone = np.isin(F.col_names, sorted(excluded[0]))
    assert gone.sum() == len(excluded[0])  # every trained-on id is a column of the matrix
    assert np.isnan(F.values[0, gone]).all()
    assert np.isfinite(F.values[0, ~gone]).all()
