"""Sharpness measures: larger for a sharper toy minimum, zero-variance safe, and the sharpness sweep."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from forgetscope.analysis.sharpness import correlate_with_forgetting
from forgetscope.measure.sharpness import (
    SharpnessOptions,
    hessian_trace,
    landscape_1d,
    measure_sharpness,
    random_sharpness,
    sam_sharpness,
    task_batches,
)


class Bowl(torch.nn.Module):
    """A quadratic bowl sum_i h_i (w_i - 1)^2 whose curvature h sets how sharp the minimum at w = 1 is."""

    def __init__(self, curvature: float, dim: int = 16):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(dim))
        self.register_buffer("h", torch.full((dim,), float(curvature)))


def bowl_loss(model, batch):
    n = float(len(batch))
    return (model.h * (model.w - 1.0) ** 2).sum() * n, n


BATCHES = [torch.zeros(4), torch.zeros(2)]


def test_sharper_minimum_scores_higher_on_every_measure():
    flat, sharp = Bowl(1.0), Bowl(10.0)
    opts = SharpnessOptions(rho=0.05, n_draws=4, sam_rho=0.05, hessian=True, hessian_samples=4, hessian_scope="all")
    # start slightly off the minimum so the SAM ascent has a gradient to follow
    for m in (flat, sharp):
        with torch.no_grad():
            m.w.add_(torch.linspace(-0.05, 0.05, 16))
    rf = measure_sharpness(flat, BATCHES, opts, loss_fn=bowl_loss)
    rs = measure_sharpness(sharp, BATCHES, opts, loss_fn=bowl_loss)
    assert rs.random_mean > rf.random_mean > 0
    assert rs.random_mean == pytest.approx(10 * rf.random_mean, rel=1e-4)  # same seeded draws, 10x curvature
    assert rs.sam_rise > rf.sam_rise > 0
    assert rs.hessian_trace == pytest.approx(2 * 10 * 16, rel=1e-5)  # exact for Rademacher probes on a diagonal H
    assert rf.hessian_trace == pytest.approx(2 * 16, rel=1e-5)


def test_perturbations_are_undone():
    m = Bowl(3.0)
    with torch.no_grad():
        m.w.mul_(1.7)
    before = m.w.detach().clone()
    random_sharpness(m, BATCHES, rho=0.3, n_draws=3, loss_fn=bowl_loss)
    sam_sharpness(m, BATCHES, rho=0.3, loss_fn=bowl_loss)
    landscape_1d(m, BATCHES, direction="gradient", loss_fn=bowl_loss)
    hessian_trace(m, BATCHES, scope="all", loss_fn=bowl_loss)
    assert torch.equal(m.w, before)


@pytest.mark.parametrize("method", ["full", "lora"])
def test_measure_sharpness_leaves_the_tiny_model_bit_identical(tiny, method):
    """Every measure (random draws, SAM step, Hutchinson, landscape) on the tiny LM: afterwards every tensor
    of the state_dict is bit for bit what it was, and the train/eval mode and requires_grad flags too."""
    from forgetscope.data.types import Example
    from forgetscope.models import prepare_for_training
    from forgetscope.testing import tiny_model_and_tokenizer

    _, tok = tiny
    model = tiny_model_and_tokenizer(seed=2)[0]
    if method == "lora":
        model = prepare_for_training(model, "lora", lora_rank=2)
        with torch.no_grad():  # a trained adapter: B != 0, so perturbations of A change the loss
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.05)
    model.train()
    batches = task_batches(tok, [Example(f"e{i}", text=f"x = {i} * {i + 1}") for i in range(8)], max_examples=8,
                           batch_size=4, max_length=24)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    grads = {n: p.requires_grad for n, p in model.named_parameters()}
    for scope in ("all", "trainable"):
        res = measure_sharpness(model, batches, SharpnessOptions(rho=0.05, n_draws=2, sam_rho=0.5, scope=scope,
                                                                 hessian=True, hessian_samples=2,
                                                                 hessian_scope=scope, landscape_points=5))
        assert res.random_mean != 0.0 and res.sam_rise > 0  # the parameters really were moved
    after = model.state_dict()
    assert after.keys() == before.keys()
    for k, v in before.items():
        assert after[k].dtype == v.dtype and torch.equal(after[k], v), k
    assert model.training and {n: p.requires_grad for n, p in model.named_parameters()} == grads
    assert all(p.grad is None for p in model.parameters())


def test_zero_variance_and_zero_gradient_are_safe():
    m = Bowl(5.0)  # exactly at the minimum: zero gradient
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        one = random_sharpness(m, BATCHES, rho=0.1, n_draws=1, loss_fn=bowl_loss)
        assert one["std"] == 0.0 and math.isfinite(one["mean"])
        zero = random_sharpness(m, BATCHES, rho=0.0, n_draws=3, loss_fn=bowl_loss)
        assert zero["mean"] == 0.0 and zero["std"] == 0.0
        sam = sam_sharpness(m, BATCHES, rho=0.1, loss_fn=bowl_loss)
        assert sam["rise"] == 0.0 and "note" in sam
        flat_dir = landscape_1d(m, BATCHES, direction="gradient", loss_fn=bowl_loss)
        assert np.allclose(flat_dir["loss"], 0.0)
    zero_tensor = Bowl(1.0)
    with torch.no_grad():
        zero_tensor.w.zero_()
    r = random_sharpness(zero_tensor, BATCHES, rho=0.5, n_draws=2, loss_fn=bowl_loss)
    assert r["mean"] == 0.0  # a zero tensor has relative radius 0: unperturbed, not NaN


def test_correlation_is_nan_safe():
    table = pd.DataFrame({
        "sharpness_random_mean": [0.1, 0.1, 0.1, 0.1],
        "sharpness_sam_rise": [0.1, 0.2, 0.3, 0.4],
        "sharpness_hessian_trace": [1.0, np.nan, 3.0, None],
        "mean_forgetting": [0.01, 0.02, 0.05, 0.04],
    })
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        corr = correlate_with_forgetting(table).set_index("measure")
    assert math.isnan(corr.loc["sharpness_random_mean", "spearman"])
    assert corr.loc["sharpness_random_mean", "note"] == "constant measure"
    assert corr.loc["sharpness_sam_rise", "spearman"] == pytest.approx(0.8)
    assert 0 <= corr.loc["sharpness_sam_rise", "spearman_p"] <= 1
    assert corr.loc["sharpness_hessian_trace", "note"] == "fewer than 3 runs"


def test_lm_measures_on_tiny_model(tiny):
    from forgetscope.data.types import Example
    from forgetscope.models import prepare_for_training
    from forgetscope.testing import tiny_model_and_tokenizer

    _, tok = tiny
    model, _ = tiny_model_and_tokenizer(seed=1)
    ex = [Example(f"e{i}", text=f"def f{i}(x): return x * {i}") for i in range(12)]
    batches = task_batches(tok, ex, max_examples=8, batch_size=4, max_length=32)
    assert sum(len(b["input_ids"]) for b in batches) == 8
    full = measure_sharpness(model, batches, SharpnessOptions(n_draws=2, hessian=True, hessian_samples=2,
                                                               hessian_scope="all", landscape_points=5))
    rec = full.to_record()
    assert all(math.isfinite(rec[k]) for k in ("sharpness_random_mean", "sharpness_sam_rise",
                                               "sharpness_hessian_trace", "sharpness_task_loss"))
    assert rec["sharpness_sam_rise"] > 0
    assert len(full.landscape) == 5 and full.landscape["loss"].iloc[2] == pytest.approx(full.task_loss, rel=1e-5)
    lora = prepare_for_training(tiny_model_and_tokenizer(seed=1)[0], "lora", lora_rank=2)
    r = measure_sharpness(lora, batches, SharpnessOptions(n_draws=2, scope="trainable", hessian=True,
                                                          hessian_samples=2, landscape=False))
    # freshly initialised LoRA: B = 0, so relative perturbations of B are zero and of A change nothing
    assert r.random_mean == 0.0 and r.random_std == 0.0
    assert math.isfinite(r.hessian_trace)


@pytest.fixture
def sharp_cfg(tiny_dir, tiny_data, tmp_path):
    from conftest import sweep_config_dict

    from forgetscope.experiments.sharpness import SharpnessSweepConfig

    d = sweep_config_dict(tiny_dir, tiny_data, tmp_path / "sweep")
    d["seeds"] = [0, 1]
    d["sharpness"] = {"n_draws": 2, "hessian": True, "hessian_samples": 2, "landscape_points": 5}
    return SharpnessSweepConfig.model_validate(d)


def test_sharpness_sweep_writes_records_and_tables(sharp_cfg):
    from forgetscope.experiments.sharpness import sharpness_sweep, write_sharpness_results
    from forgetscope.store import SweepStore

    seen = []
    table = sharpness_sweep(sharp_cfg, on_run=lambda spec, rec: seen.append(spec.run_id))
    out = sharp_cfg.output
    assert len(table) == 4 == len(seen)
    store = SweepStore(out)
    rec = store.read_run_record(seen[0])
    assert {"sharpness_random_mean", "sharpness_sam_rise", "sharpness_hessian_trace", "mean_forgetting"} <= set(rec)
    runs = pd.read_parquet(out / "runs.parquet")
    assert "sharpness_sam_rise" in runs.columns
    matrix = store.load_matrix()
    # the upstream set has 12 lm and 1 instruction example: mean forgetting is over the lm ones (the
    # default kind), with a column per kind beside it
    assert matrix.kind_counts() == {"lm": 12, "instruction": 1} and rec["mean_forgetting_kind"] == "lm"
    rows = table.set_index("run_id").loc[matrix.row_names]
    assert (rows["mean_forgetting_kind"] == "lm").all()
    assert np.allclose(np.nanmean(matrix.select_kind("lm").values, axis=1), rows["mean_forgetting"])
    assert np.allclose(rows["mean_forgetting_lm"], rows["mean_forgetting"])
    assert np.allclose(matrix.select_kind("instruction").values[:, 0], rows["mean_forgetting_instruction"])
    assert not np.allclose(np.nanmean(matrix.values, axis=1), rows["mean_forgetting"])
    assert (out / "sharpness.parquet").is_file()
    corr = json.loads((out / "sharpness" / "correlation.json").read_text())
    assert corr["kind"] == "lm" and corr["target"] == "mean_forgetting"
    assert {c["measure"] for c in corr["correlations"]} >= {"sharpness_random_mean", "sharpness_sam_rise"}
    for f in ("landscape.parquet", "landscape.png", "sharpness_vs_forgetting.png", "correlation.csv"):
        assert (out / "sharpness" / f).is_file(), f
    # recomputed over every column: the mean over the whole matrix row
    every, _ = write_sharpness_results(out, figures=False, kind="all")
    assert np.allclose(np.nanmean(matrix.values, axis=1),
                       every.set_index("run_id").loc[matrix.row_names, "mean_forgetting"])
    assert json.loads((out / "sharpness" / "correlation.json").read_text())["kind"] == "all"
    # resume: nothing is retrained
    sharpness_sweep(sharp_cfg, on_run=lambda spec, rec: seen.append(spec.run_id))
    assert len(seen) == 4


def test_cli_sharpness(sharp_cfg, tmp_path, capsys):
    import yaml

    from forgetscope.cli import run_app

    data = sharp_cfg.model_dump(mode="json")
    data["sharpness"].update(hessian=False, landscape=False, kind="instruction")
    p = tmp_path / "sharp.yaml"
    p.write_text(yaml.safe_dump(data))
    assert run_app(["sharpness", str(p)]) == 0
    printed = capsys.readouterr().out
    assert "forgetting (instruction)" in printed and "mean forgetting (instruction examples)" in printed
    table = pd.read_parquet(sharp_cfg.output / "sharpness.parquet")
    assert (table["mean_forgetting_kind"] == "instruction").all()
    assert np.allclose(table["mean_forgetting"], table["mean_forgetting_instruction"])
    (sharp_cfg.output / "sharpness.parquet").unlink()
    # a sweep directory: the config's sharpness.kind, unless --kind says otherwise
    assert run_app(["sharpness", str(sharp_cfg.output), "--no-figures"]) == 0
    assert (pd.read_parquet(sharp_cfg.output / "sharpness.parquet")["mean_forgetting_kind"] == "instruction").all()
    assert run_app(["sharpness", str(sharp_cfg.output), "--no-figures", "--kind", "lm"]) == 0
    assert "kind: lm" in capsys.readouterr().out
    assert (pd.read_parquet(sharp_cfg.output / "sharpness.parquet")["mean_forgetting_kind"] == "lm").all()
    assert run_app(["sharpness", str(sharp_cfg.output), "--kind", "code"]) == 2
    assert "unknown example kind 'code'" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text(p.read_text().replace("n_draws: 2", "n_drawz: 2"))
    assert run_app(["sharpness", str(bad)]) == 2
    bad.write_text(p.read_text().replace("kind: instruction", "kind: code"))
    assert run_app(["sharpness", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "sharpness.kind" in err and "unknown example kind 'code'" in err


def test_sharpness_kind_is_not_part_of_the_fingerprint(sharp_cfg):
    from forgetscope.experiments.session import config_fingerprint

    other = sharp_cfg.model_copy(update={"sharpness": sharp_cfg.sharpness.model_copy(update={"kind": "all"})})
    assert config_fingerprint(other) == config_fingerprint(sharp_cfg)
    rho = sharp_cfg.model_copy(update={"sharpness": sharp_cfg.sharpness.model_copy(update={"rho": 0.5})})
    assert config_fingerprint(rho) != config_fingerprint(sharp_cfg)


def _upstream_and_rows(kinds, seed=0):
    """An upstream table of ``kinds`` and one run's rows over it (shuffled, some unmeasured)."""
    rng = np.random.default_rng(seed)
    n = len(kinds)
    upstream = pd.DataFrame({"example_id": [f"e{j}" for j in range(n)], "kind": kinds,
                             "loss_before": rng.normal(3, 0.5, n)})
    after = rng.normal(3.2, 0.5, n) + 5.0 * (np.array(kinds) == "instruction")
    after[rng.random(n) < 0.2] = np.nan
    order = rng.permutation(n)
    rows = pd.DataFrame({"example_id": upstream["example_id"].to_numpy()[order], "loss_after": after[order]})
    return upstream, rows


def test_mean_forgetting_of_an_lm_only_upstream_is_unchanged():
    """One kind upstream: the mean over every measured example, as before kinds were told apart."""
    from forgetscope.experiments.sharpness import ForgettingTarget
    from forgetscope.measure import forgetting

    upstream, rows = _upstream_and_rows(["lm"] * 40)
    before = upstream.set_index("example_id")["loss_before"]
    former = float(np.nanmean(forgetting(rows["loss_after"].to_numpy(), before.loc[rows["example_id"]].to_numpy())))
    got = ForgettingTarget.of(upstream).measure(rows)
    assert got == {"mean_forgetting": former, "mean_forgetting_kind": "lm"}  # bit for bit, no per-kind columns
    assert ForgettingTarget.of(upstream, "all").measure(rows)["mean_forgetting"] == former


def test_mean_forgetting_of_a_mixed_upstream_uses_one_kind():
    from forgetscope.errors import DataError
    from forgetscope.experiments.sharpness import ForgettingTarget
    from forgetscope.measure import forgetting

    kinds = ["lm", "instruction", "lm", "lm"] * 10
    upstream, rows = _upstream_and_rows(kinds)
    before = upstream.set_index("example_id")["loss_before"]
    f = pd.Series(forgetting(rows["loss_after"].to_numpy(), before.loc[rows["example_id"]].to_numpy()),
                  index=rows["example_id"])
    of = upstream.set_index("example_id")["kind"].loc[f.index]
    lm, inst = float(np.nanmean(f[of == "lm"])), float(np.nanmean(f[of == "instruction"]))
    got = ForgettingTarget.of(upstream).measure(rows)
    assert got["mean_forgetting_kind"] == "lm" and got["mean_forgetting"] == pytest.approx(lm)
    assert got["mean_forgetting_lm"] == got["mean_forgetting"]
    assert got["mean_forgetting_instruction"] == pytest.approx(inst) and inst > lm + 3
    chosen = ForgettingTarget.of(upstream, "instruction").measure(rows)
    assert chosen["mean_forgetting"] == pytest.approx(inst) and chosen["mean_forgetting_kind"] == "instruction"
    assert ForgettingTarget.of(upstream, "all").measure(rows)["mean_forgetting"] == pytest.approx(np.nanmean(f))
    with pytest.raises(DataError, match="unknown example kind 'code'"):
        ForgettingTarget.of(upstream, "code")
    with pytest.raises(DataError, match=r"no 'instruction' examples in this matrix; kinds present: lm \(40\)"):
        ForgettingTarget.of(_upstream_and_rows(["lm"] * 40)[0], "instruction")


def test_sharpness_dir_without_measures_is_an_error(tiny_dir, tiny_data, tmp_path):
    from conftest import sweep_config_dict

    from forgetscope.config import parse_config
    from forgetscope.errors import ForgetscopeError
    from forgetscope.experiments import run_sweep
    from forgetscope.experiments.sharpness import write_sharpness_results

    cfg = parse_config(sweep_config_dict(tiny_dir, tiny_data, tmp_path / "plain"))
    run_sweep(cfg)
    with pytest.raises(ForgetscopeError, match="no run"):
        write_sharpness_results(tmp_path / "plain")
