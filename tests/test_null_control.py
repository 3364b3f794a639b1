"""The null control: a random update with the run's per-tensor norms, stored and analysed beside the run."""

import copy

import numpy as np
import pytest
import torch
from conftest import sweep_config_dict

from forgetscope.analysis.null_control import null_comparison
from forgetscope.config import parse_config
from forgetscope.errors import DataError, ModelError
from forgetscope.experiments import run_sweep
from forgetscope.experiments.null_control import check_trainable, null_perturbation, weight_updates
from forgetscope.models import prepare_for_training
from forgetscope.store import load_forgetting


def _lora_tuned(base):
    tuned = prepare_for_training(copy.deepcopy(base), "lora", lora_rank=2, target_modules=None)  # q_proj, v_proj
    with torch.no_grad():
        for name, p in tuned.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(1))
    return tuned


def test_lora_update_is_the_effective_delta_and_the_null_matches_its_norms(tiny):
    base, _ = tiny
    tuned = _lora_tuned(base)
    updates = weight_updates(base, tuned)
    merged = copy.deepcopy(tuned).merge_and_unload()
    assert updates and all(("q_proj" in n or "v_proj" in n) for n in updates)  # peft's default targets
    for name, delta in updates.items():
        want = dict(merged.named_parameters())[name] - dict(base.named_parameters())[name]
        torch.testing.assert_close(delta, want.detach())
        assert torch.linalg.matrix_rank(delta) <= 2  # s·BA has the adapter's rank
    for rank in (None, 2):
        null, info = null_perturbation(base, updates, seed=3, rank=rank)
        null_params, base_params = dict(null.named_parameters()), dict(base.named_parameters())
        for name, p in null_params.items():
            step = (p - base_params[name]).detach()
            if name in updates:
                assert float(step.norm()) == pytest.approx(float(updates[name].norm()), rel=1e-5)
                cos = float((step * updates[name]).sum() / (step.norm() * updates[name].norm()))
                assert abs(cos) < 0.5  # a random direction, not the run's
                if rank is None:
                    assert torch.linalg.matrix_rank(step) > 2
                else:  # the adapter's rank, like the update it stands in for
                    assert torch.linalg.matrix_rank(step) == 2
            else:
                assert torch.count_nonzero(step) == 0
        assert info["null_tensors"] == len(updates) and info["null_rank"] == str(rank or "full")
    assert info["update_norm"] == pytest.approx(float(torch.sqrt(sum(d.norm() ** 2 for d in updates.values()))))


def test_null_direction_is_seeded(tiny):
    base, _ = tiny
    updates = weight_updates(base, _lora_tuned(base))
    a, _ = null_perturbation(base, updates, seed=5)
    b, _ = null_perturbation(base, updates, seed=5)
    c, _ = null_perturbation(base, updates, seed=6)
    name = sorted(updates)[0]
    pa, pb, pc = (dict(m.named_parameters())[name] for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_a_run_that_changed_nothing_has_no_null(tiny):
    base, _ = tiny
    with pytest.raises(ModelError, match="changed no parameter"):
        weight_updates(base, copy.deepcopy(base))


def test_null_control_with_nothing_trainable_is_refused(tiny):
    base, _ = tiny
    with pytest.raises((ModelError, ValueError)):
        check_trainable(base, "lora", lora_rank=2, target_modules=["no_such_module"])


def test_sweep_with_null_control_stores_a_null_row_per_run(tiny_dir, tiny_data, tmp_path):
    out = tmp_path / "sweep"
    cfg = parse_config({**sweep_config_dict(tiny_dir, tiny_data, out), "null_control": True,
                        "train": {**sweep_config_dict(tiny_dir, tiny_data, out)["train"], "method": "lora",
                                  "lora_rank": 2}})
    m = run_sweep(cfg)
    assert (out / "F_null.npy").is_file()
    loaded = load_forgetting(out)
    assert loaded.null is not None and loaded.null.shape == m.shape
    assert np.isfinite(loaded.null).all() and not np.allclose(loaded.null, loaded.values)
    runs = loaded.runs.set_index("run_id")
    assert (runs["null_tensors"] > 0).all() and (runs["update_norm"] > 0).all()
    assert (runs["null_rank"].astype(str) == "2").all()  # LoRA runs: the adapter's rank by default
    assert set(runs["family"]) == {"plain_text", "instruction"}  # code is text, qa is pairs
    sub = loaded.select_kind("lm")
    assert sub.null.shape == sub.values.shape
    report = null_comparison(loaded)
    assert len(report.table()) == m.shape[0] and len(report.rank_table()) >= 1


def test_null_comparison_separates_generic_fragility_from_task_structure():
    rng = np.random.default_rng(0)
    fragility = rng.gamma(2.0, 0.1, size=200)
    task_pattern = rng.normal(size=(6, 200)) * 0.05
    null = np.outer(rng.uniform(0.5, 1.5, 6), fragility) + rng.normal(0, 0.01, (6, 200))
    generic = np.outer(rng.uniform(0.5, 1.5, 6), fragility)
    rep_generic = null_comparison(generic + rng.normal(0, 0.001, (6, 200)), null)
    rep_task = null_comparison(task_pattern, null)
    assert rep_generic.explained_share > 0.95 and rep_task.explained_share < 0.2
    assert rep_generic.v1_profile_corr > 0.95
    assert np.median(rep_task.r2_profile) < 0.2


def test_null_comparison_without_null_rows_is_a_clear_error():
    with pytest.raises(DataError, match="null_control: true"):
        null_comparison(np.ones((2, 3)))


def test_analyze_shows_and_saves_the_null_comparison(tiny_dir, tiny_data, tmp_path, capsys):
    from forgetscope.cli import run_app

    out = tmp_path / "sweep"
    run_sweep(parse_config({**sweep_config_dict(tiny_dir, tiny_data, out), "null_control": True}))
    capsys.readouterr()
    assert run_app(["analyze", str(out), "--no-figures"]) == 0
    printed = capsys.readouterr().out
    assert "null control" in printed and "R²(k) residual" in printed and "null profile" in printed
    assert (out / "analysis" / "lm" / "null_per_run.csv").is_file()
    import json

    saved = json.loads((out / "analysis" / "lm" / "analysis.json").read_text())
    assert {"by_rank", "explained_share", "v1_profile_corr"} <= set(saved["null_control"])
