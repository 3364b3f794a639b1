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

    fake = types.SimpleNamespace(init=lambda **kw: calls.append(("init", kw)) or FakeRun())
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setenv("WANDB_PROJECT", "proj")
    hook = TrackingHook(make_trackers(["wandb"], tmp_path / "wb", run_name="code__plain__s0", config={"lr": 1e-3}))
    hook.log({"train/loss": 1.5, "skip": None}, 7)
    hook.close()
    assert calls[0][0] == "init" and calls[0][1]["project"] == "proj" and calls[0][1]["name"] == "code__plain__s0"
    assert calls[1] == ("log", {"train/loss": 1.5}, 7) and calls[2] == ("finish",)


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
