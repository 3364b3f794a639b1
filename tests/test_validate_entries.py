"""Every experiment entry function validates its whole config first: called from Python with a misspelt
strategy, executor or strategy option, or a ``report_to`` backend whose package is missing, it raises one
user error before any model loads, and its output directory does not exist afterwards."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from conftest import sweep_config_dict, write_jsonl

from forgetscope.config import SweepConfig, parse_config
from forgetscope.errors import ConfigError, ForgetscopeError, StoreError

ROOT = Path(__file__).resolve().parents[1]

# (case, config update, what the one-line message names); report_to: the backend's package is hidden
BAD = [("strategy", {"strategy": "replya"}, "replya"),
       ("executor", {"executor": "lokal"}, "lokal"),
       ("strategy option", {"strategy": "sam", "strategy_options": {"rhoo": 0.1}}, "rhoo"),
       ("report_to package", {"report_to": "tensorboard"}, "tensorboard")]


@pytest.fixture
def no_weights(monkeypatch):
    """Fail the test if any entry loads a model, and hide the tensorboard package (report_to cases)."""
    import forgetscope.models

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the config was validated")

    monkeypatch.setattr(forgetscope.models, "load_model", refuse)
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # `import tensorboard` raises ImportError


def _sweep(tiny_dir, tiny_data, out) -> SweepConfig:
    return parse_config(sweep_config_dict(tiny_dir, tiny_data, out))


def _scaling(tiny_dir, tiny_data, out):
    from forgetscope.experiments.scaling import ScalingConfig

    return ScalingConfig.model_validate({
        "model": str(tiny_dir), "output": str(out), "upstream": {"source": str(tiny_data["upstream"])},
        "task": {"name": "code", "source": str(tiny_data["code"]), "heldout": 3},
        "train": {"lr": 1e-2, "batch_size": 4, "max_length": 48}, "ranks": [1, 2, 4], "eval_steps": [1, 2, 4]})


def _compare(tiny_dir, tiny_data, out):
    from forgetscope.experiments.compare import CompareConfig

    d = sweep_config_dict(tiny_dir, tiny_data, out)
    d["strategies"] = [{"name": "sam", "options": {"rho": 0.05}}]
    return parse_config(d, model=CompareConfig)


@pytest.mark.parametrize("case, update, names", BAD, ids=[b[0] for b in BAD])
@pytest.mark.parametrize("entry", ["run_sweep", "sharpness_sweep", "run_scaling_sweep", "run_compare"])
def test_sweep_entries_refuse_bad_config_before_any_model_or_directory(tiny_dir, tiny_data, tmp_path, no_weights,
                                                                       entry, case, update, names):
    from forgetscope.experiments.compare import StrategySpec, run_compare
    from forgetscope.experiments.scaling import run_scaling_sweep
    from forgetscope.experiments.sharpness import sharpness_sweep
    from forgetscope.experiments.sweep import run_sweep

    out = tmp_path / "out"
    if entry == "run_compare":
        cfg = _compare(tiny_dir, tiny_data, out)
        if case.startswith("strategy"):  # a comparison's arms carry the strategies
            update = {"strategies": [StrategySpec(name=update["strategy"], options=update.get("strategy_options",
                                                                                             {}))]}
    elif entry == "run_scaling_sweep":
        cfg = _scaling(tiny_dir, tiny_data, out)
    else:
        cfg = _sweep(tiny_dir, tiny_data, out)
    bad = cfg.model_copy(update=update)  # as a caller in Python may: model_copy skips the model's validators
    fn = {"run_sweep": run_sweep, "sharpness_sweep": sharpness_sweep, "run_scaling_sweep": run_scaling_sweep,
          "run_compare": run_compare}[entry]
    with pytest.raises(ConfigError, match=names):
        fn(bad, output=out)
    assert not out.exists()


def test_run_compare_validates_every_arm_s_options_not_only_its_loader(tiny_dir, tiny_data, tmp_path, no_weights):
    """An arm whose options its strategy refuses (SAM wraps no such optimizer), built in Python."""
    from forgetscope.experiments.compare import StrategySpec, run_compare

    out = tmp_path / "out"
    cfg = _compare(tiny_dir, tiny_data, out)
    bad = cfg.model_copy(update={"strategies": [StrategySpec(name="sam", label="s", options={"base": "lbfgs"})]})
    with pytest.raises(ConfigError, match=r"strategies\.0 \(s\)"):
        run_compare(bad, output=out)
    assert not out.exists()


@pytest.mark.parametrize("entry", ["run_sweep", "run_compare"])
def test_a_missing_forget_data_file_of_lwf_is_refused_before_any_run(tiny_dir, tiny_data, tmp_path, no_weights,
                                                                     entry):
    """LWF reads its forgetting task at the start of each run; its options declare it, so the path is checked
    with the rest of the config."""
    from forgetscope.errors import DataError
    from forgetscope.experiments.compare import StrategySpec, run_compare
    from forgetscope.experiments.sweep import run_sweep

    out = tmp_path / "out"
    options = {"forget_data": str(tmp_path / "missing.jsonl")}
    if entry == "run_compare":
        cfg = _compare(tiny_dir, tiny_data, out).model_copy(
            update={"strategies": [StrategySpec(name="lwf", label="lwf", options=options)]})
        fn = run_compare
    else:
        cfg = _sweep(tiny_dir, tiny_data, out).model_copy(update={"strategy": "lwf", "strategy_options": options})
        fn = run_sweep
    with pytest.raises(DataError, match="forget_data not found: .*missing.jsonl"):
        fn(cfg, output=out)
    assert not out.exists()


def test_report_to_package_is_checked_by_validation(tiny_dir, tiny_data, tmp_path, monkeypatch):
    from forgetscope.experiments.validate import validate_sweep

    cfg = _sweep(tiny_dir, tiny_data, tmp_path / "out").model_copy(update={"report_to": ["tensorboard", "wandb"]})
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ConfigError, match="report_to: wandb needs the wandb package"):
        validate_sweep(cfg)
    validate_sweep(cfg.model_copy(update={"report_to": "tensorboard"}))  # installed: nothing to refuse
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    with pytest.raises(ConfigError, match="report_to: tensorboard needs the tensorboard package"):
        validate_sweep(cfg)


@pytest.mark.parametrize("kwargs, error, names", [
    ({"predictor": "knnn"}, ConfigError, "knnn"),
    ({"top": 0}, ConfigError, "top"),
    ({"load": {"load_in_4bit": True}}, ForgetscopeError, "bitsandbytes"),
])
def test_forecast_refuses_bad_arguments_before_reading_the_sweep(tmp_path, no_weights, monkeypatch, kwargs, error,
                                                                names):
    """The sweep does not even exist: the arguments are checked before it is read or any model loaded."""
    from forgetscope.experiments.forecast import forecast, forecast_task

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    out = tmp_path / "out"
    with pytest.raises(error, match=names):
        forecast(tmp_path / "no-sweep", "some/model", out=out, **kwargs)
    if "load" not in kwargs:  # forecast_task loads as the sweep did
        task = write_jsonl(tmp_path / "task.jsonl", [{"text": f"line {i}"} for i in range(8)])
        with pytest.raises(error, match=names):
            forecast_task(tmp_path / "no-sweep", task, out=out, **kwargs)
    assert not out.exists()


def test_measure_refuses_bad_config_before_any_model_or_directory(tiny_dir, tiny_data, tmp_path, no_weights,
                                                                  monkeypatch):
    from forgetscope.experiments.measure import measure_finetunes

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    out = tmp_path / "out"
    common = {"models": [str(tiny_dir)], "base": str(tiny_dir), "output": out}
    with pytest.raises(ForgetscopeError, match="bitsandbytes"):
        measure_finetunes(upstream=str(tiny_data["upstream"]), load={"load_in_4bit": True}, **common)
    with pytest.raises(ForgetscopeError, match="upstream data not found"):
        measure_finetunes(upstream=str(tmp_path / "missing.jsonl"), **common)
    assert not out.exists()


# --------------------------------------------------------------------------- the scaling study's own rules
@pytest.mark.parametrize("update, names", [({"ranks": [1, 2]}, "ranks.*at least 3 distinct values"),
                                           ({"eval_steps": [2, 4, 4]}, "eval_steps.*at least 3 distinct values"),
                                           ({"strategy_options": {"rho": 1}}, "strategy"),
                                           ({"null_control": True}, "null_control")])
def test_scaling_refuses_a_config_changed_in_python_before_training(tiny_dir, tiny_data, tmp_path, no_weights,
                                                                    update, names):
    from forgetscope.experiments.scaling import run_scaling_sweep

    out = tmp_path / "out"
    with pytest.raises(ConfigError, match=names):
        run_scaling_sweep(_scaling(tiny_dir, tiny_data, out).model_copy(update=update))
    assert not out.exists()


def test_scaling_refuses_a_holdout_that_leaves_nothing_to_fit(tiny_dir, tiny_data, tmp_path, no_weights,
                                                              monkeypatch, capsys):
    """With one-value grids allowed, holding out the largest (only) rank leaves no point: refused in Python and
    at the CLI (one line, exit 2), before anything is written."""
    import yaml

    from forgetscope.cli import run_app
    from forgetscope.experiments import scaling as ss

    monkeypatch.setattr(ss, "MIN_GRID", 1)
    out = tmp_path / "out"
    cfg = _scaling(tiny_dir, tiny_data, out)
    with pytest.raises(ConfigError, match="holdout: largest_p leaves 0 points of each task to fit"):
        ss.run_scaling_sweep(cfg.model_copy(update={"ranks": [4], "holdout": "largest_p"}))
    with pytest.raises(ConfigError, match="holdout: random leaves 3 points"):  # 4 planned, 1 held out
        ss.run_scaling_sweep(cfg.model_copy(update={"ranks": [4], "eval_steps": [1, 2, 3, 4], "holdout": "random"}))
    data = {**cfg.model_dump(mode="json"), "ranks": [4], "holdout": "largest_p"}
    path = tmp_path / "scaling.yaml"
    path.write_text(yaml.safe_dump(data))
    assert run_app(["scaling", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holdout: largest_p leaves 0 points" in err
    assert not out.exists()


def test_cli_refuses_a_short_step_grid_in_one_line(tmp_path, capsys):
    from forgetscope.cli import run_app

    out = tmp_path / "out"
    path = tmp_path / "c.yaml"
    path.write_text(f"task: code\noutput: {out}\neval_steps: [10, 20]\n")
    assert run_app(["scaling", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "eval_steps" in err and "at least 3" in err
    assert not out.exists()


# --------------------------------------------------------------------------- scaling sweeps recorded earlier
def test_a_scaling_sweep_recorded_before_manifests_is_named_and_its_runs_still_fit(tmp_path, no_weights):
    """The committed demo (``scaling_config.json``, no ``manifest.json``) holds every run its config plans, which
    ``--refit`` reads; a run into it is refused in one line naming the way out, before any model loads."""
    from forgetscope.experiments.scaling import (
        load_scaling_config,
        plan_scaling_runs,
        read_points,
        run_scaling_sweep,
    )

    committed = ROOT / "benchmarks" / "results" / "scaling_demo"
    cfg = load_scaling_config(ROOT / "configs" / "scaling_demo.yaml")
    points = read_points(committed)
    assert sorted(points["run"].unique()) == sorted(s.run_id for s in plan_scaling_runs(cfg))
    copy = tmp_path / "scaling_demo"
    shutil.copytree(committed, copy)
    with pytest.raises(StoreError, match="recorded by an earlier forgetscope .*--refit"):
        run_scaling_sweep(cfg, output=copy)
    assert not (copy / "manifest.json").exists()
