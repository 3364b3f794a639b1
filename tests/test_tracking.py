"""report_to tracking: off by default, TensorBoard event files, W&B calls, the training hook."""

import sys
import types

import pytest

from forgetscope.errors import ConfigError
from forgetscope.train.tracking import TrackingHook, make_trackers, parse_report_to


class Recorder:
    """Stands in for an accelerate tracker."""

    def __init__(self):
        self.calls, self.closed = [], False

    def log(self, values, step=None):
        self.calls.append((step, dict(values)))

    def finish(self):
        self.closed = True


def test_off_by_default_and_bad_names_are_named(tmp_path):
    for off in (None, "none", "", ["none"]):
        assert make_trackers(off, tmp_path / "logs", run_name="r") == []
    assert not (tmp_path / "logs").exists()  # nothing is written when off
    assert parse_report_to("tensorboard, wandb") == ["tensorboard", "wandb"]
    assert parse_report_to("all") == ["tensorboard", "wandb"]
    with pytest.raises(ConfigError, match="report_to: unknown backend.*mlflow"):
        make_trackers("mlflow", tmp_path, run_name="r")


def test_tensorboard_writes_scalars(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    hook = TrackingHook(make_trackers("tensorboard", tmp_path / "tb", run_name="run0"))
    for step in range(1, 4):
        hook.log({"train/loss": 2.0 / step, "train/lr": 1e-3, "note": "skipped", "nan": float("nan")}, step)
    hook.close()
    acc = EventAccumulator(str(tmp_path / "tb" / "run0"))
    acc.Reload()
    assert set(acc.Tags()["scalars"]) == {"train/loss", "train/lr"}
    losses = [(e.step, e.value) for e in acc.Scalars("train/loss")]
    assert losses == [(1, pytest.approx(2.0)), (2, pytest.approx(1.0)), (3, pytest.approx(2 / 3))]


def test_wandb_backend_calls_init_log_finish(tmp_path, monkeypatch):
    calls = []

    class FakeRun:
        def log(self, values, step):
            calls.append(("log", values, step))

        def finish(self):
            calls.append(("finish",))

    class Table:
        def __init__(self, columns=None, data=None, dataframe=None):
            self.columns, self.data = columns, data

    fake = types.SimpleNamespace(init=lambda **kw: calls.append(("init", kw)) or FakeRun(), Table=Table)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setenv("WANDB_PROJECT", "proj")
    hook = TrackingHook(make_trackers(["wandb"], tmp_path / "wb", run_name="code__plain__s0",
                                      config={"lr": 1e-3, "lora_rank": None}, group="demo-1234abcd",
                                      display_name="demo-1234abcd/code__plain__s0"))
    hook.log({"train/loss": 1.5, "skip": None}, 7)
    hook.log_table("forgetting/most_forgotten", ["example", "F"], [["u1", 0.5]], 7)
    hook.close()
    init = calls[0][1]
    assert calls[0][0] == "init" and init["project"] == "proj" and init["name"] == "demo-1234abcd/code__plain__s0"
    assert init["group"] == "demo-1234abcd" and init["config"] == {"lr": 1e-3, "lora_rank": "none"}
    assert calls[1] == ("log", {"train/loss": 1.5}, 7)
    name, (key, table), step = calls[2][0], *calls[2][1].items(), calls[2][2]
    assert (name, key, step) == ("log", "forgetting/most_forgotten", 7)
    assert table.columns == ["example", "F"] and table.data == [["u1", 0.5]] and calls[3] == ("finish",)


def test_missing_backend_fails_before_training(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    with pytest.raises(Exception, match="pip install wandb"):
        make_trackers("wandb", tmp_path, run_name="r")


def test_hook_logs_loss_and_lr_during_training(tiny, tmp_path):
    from forgetscope.config import TrainConfig
    from forgetscope.data.types import Example, Task
    from forgetscope.train import train_on_task

    model, tok = tiny
    import copy

    task = Task("t", train=[Example(f"e{i}", text=f"item {i} costs {i * 3} coins") for i in range(8)],
                heldout=[Example("h0", text="item 9 costs 27 coins")])
    rec = Recorder()
    train_on_task(copy.deepcopy(model), tok, task, TrainConfig(method="full", steps=4, batch_size=2, lr=1e-3,
                                                               max_length=16),
                  hooks=[TrackingHook([rec], every=2)], progress=False)
    assert [s for s, _ in rec.calls] == [2, 4]
    assert all(m["train/lr"] == pytest.approx(1e-3) for _, m in rec.calls)
    assert all(set(m) == {"train/loss", "train/lr"} and m["train/loss"] > 0 for _, m in rec.calls)


def test_every_tracker_receives_the_same_scalars_and_is_finished():
    a, b = Recorder(), Recorder()
    hook = TrackingHook([a, b], prefix="sweep/")
    hook.log({"sweep/run_id": "x", "sweep/task_loss_after": 1.25, "sweep/wall_s": 3}, 1)
    hook.close()
    assert a.calls == b.calls == [(1, {"sweep/task_loss_after": 1.25, "sweep/wall_s": 3.0})]
    assert a.closed and b.closed


def _event_runs(logs):
    """{run folder name: EventAccumulator} of every TensorBoard run under a sweep's logs/ folder."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = {}
    for d in sorted(p for p in logs.iterdir() if p.is_dir()):
        acc = EventAccumulator(str(d), size_guidance={"tensors": 0, "scalars": 0})
        acc.Reload()
        out[d.name] = acc
    return out


def test_every_run_of_a_sweep_logs_its_forgetting_to_tensorboard(tiny_dir, tiny_data, tmp_path):
    """The tracker stays open through the upstream evaluation: each run's event file holds its forgetting
    (equal to the stored matrix's row), the most-forgotten texts, its config as hyperparameters and its group."""
    pytest.importorskip("tensorboard", reason="tensorboard not installed")
    import numpy as np
    from conftest import sweep_config_dict
    from tensorboard.plugins.hparams import plugin_data_pb2

    from forgetscope.config import parse_config
    from forgetscope.experiments import run_sweep
    from forgetscope.experiments.run_tracking import sweep_group
    from forgetscope.measure.forgetting import forgotten_share
    from forgetscope.store import SweepLayout

    out = tmp_path / "sweep"
    cfg = parse_config({**sweep_config_dict(tiny_dir, tiny_data, out), "report_to": "tensorboard",
                        "seeds": [0, 1]})
    m = run_sweep(cfg)
    runs = _event_runs(SweepLayout(out).root / "logs")
    assert sorted(runs) == sorted(m.row_names) and len(runs) == 4  # 2 tasks x 2 seeds, one folder each
    group = sweep_group(cfg)
    assert group.startswith("sweep-")
    for i, run_id in enumerate(m.row_names):
        acc = runs[run_id]
        scalars = set(acc.Tags()["scalars"])
        assert {"train/loss", "forgetting/mean", "forgetting/share", "forgetting/max", "forgetting/n",
                "forgetting/lm/mean", "forgetting/instruction/mean"} <= scalars
        row = m.values[i]
        (mean,) = acc.Scalars("forgetting/mean")
        assert mean.step == cfg.train.steps and mean.value == pytest.approx(np.nanmean(row), abs=1e-5)
        assert acc.Scalars("forgetting/share")[0].value == pytest.approx(forgotten_share(row))
        assert acc.Scalars("forgetting/max")[0].value == pytest.approx(np.nanmax(row), abs=1e-5)
        assert acc.Scalars("forgetting/n")[0].value == np.isfinite(row).sum()
        text = acc.Tensors("forgetting/most_forgotten/text_summary")[0].tensor_proto.string_val[0].decode()
        assert text.startswith("| rank | example | kind | F | text |")
        if np.nanmax(row) > 0:  # the most-forgotten example first (a run that forgot nothing: the header only)
            assert f"| 1 | {m.col_names[int(np.nanargmax(row))]} |" in text
        else:
            assert text.count("\n") == 1
        assert group in acc.Tensors("run/group/text_summary")[0].tensor_proto.string_val[0].decode()
        content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
        hp = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
        task, _, seed = run_id.split("__")
        assert hp["task"].string_value == task and hp["seed"].number_value == int(seed[1:])
        assert hp["strategy"].string_value == "plain" and hp["method"].string_value == "full"
        assert hp["lr"].number_value == pytest.approx(cfg.train.lr) and hp["group"].string_value == group


def test_forgetting_metrics_per_kind_and_null():
    import numpy as np
    import pandas as pd

    from forgetscope.experiments.run_tracking import forgetting_metrics

    rows = pd.DataFrame({"example_id": ["a", "b", "c", "d"], "loss_after": [2.5, 1.0, np.nan, 3.0],
                         "loss_null": [2.1, 2.0, 2.0, 2.0]})
    before = pd.Series({"a": 2.0, "b": 2.0, "c": 2.0, "d": 2.0})
    kinds = pd.Series({"a": "lm", "b": "lm", "c": "instruction", "d": "instruction"})
    got = forgetting_metrics(rows, before, kinds)
    assert got["forgetting/mean"] == pytest.approx((0.5 - 1.0 + 1.0) / 3)
    assert got["forgetting/share"] == pytest.approx(2 / 3) and got["forgetting/max"] == 1.0
    assert got["forgetting/n"] == 3 and got["forgetting/null_mean"] == pytest.approx(0.025)
    assert got["forgetting/lm/mean"] == pytest.approx(-0.25) and got["forgetting/instruction/n"] == 1
    assert got["forgetting/lm/null_mean"] == pytest.approx(0.05)
    one_kind = forgetting_metrics(rows.drop(columns="loss_null"), before, kinds.replace("instruction", "lm"))
    assert "forgetting/null_mean" not in one_kind and not any("/lm/" in k for k in one_kind)


def test_wandb_runs_are_grouped_per_sweep_and_named_uniquely_across_sweeps(tiny_dir, tiny_data, tmp_path,
                                                                           monkeypatch):
    from conftest import sweep_config_dict

    from forgetscope.config import parse_config
    from forgetscope.experiments.run_tracking import open_tracking, sweep_group
    from forgetscope.experiments.session import SweepSession, config_fingerprint
    from forgetscope.experiments.spec import RunSpec

    inits = []

    class FakeRun:
        def log(self, values, step):
            pass

        def finish(self):
            pass

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=lambda **kw: inits.append(kw) or FakeRun()))
    names = set()
    for out, lr in ((tmp_path / "a" / "sweep", 1e-2), (tmp_path / "b" / "sweep", 1e-3)):  # same folder name
        cfg = parse_config({**sweep_config_dict(tiny_dir, tiny_data, out, lr=lr), "report_to": "wandb"})
        session = SweepSession(config=cfg, upstream=[], tasks={})
        for spec in (RunSpec("code", 0), RunSpec("qa", 0)):
            hook = open_tracking(session, spec, cfg.train)
            hook.close()
            init = inits[-1]
            assert init["group"] == sweep_group(cfg) == f"sweep-{config_fingerprint(cfg)[:8]}"
            assert init["name"] == f"{sweep_group(cfg)}/{spec.run_id}"
            assert {k: init["config"][k] for k in ("task", "strategy", "seed", "method", "lr")} == \
                {"task": spec.task, "strategy": "plain", "seed": 0, "method": "full", "lr": lr}
            names.add(init["name"])
    assert len(names) == 4  # the same run ids in two sweeps: four distinct run names
