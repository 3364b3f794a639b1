"""report_to logging: off by default, TensorBoard event files, W&B calls, the train callback."""

import sys
import types

import pytest

from forgetscope.errors import ConfigError
from forgetscope.logging_backends import (
    MultiLogger,
    NullLogger,
    logging_callback,
    make_logger,
    parse_report_to,
    run_callback,
)


class Recorder:
    def __init__(self):
        self.calls, self.closed = [], False

    def log(self, metrics, step):
        self.calls.append((step, dict(metrics)))

    def close(self):
        self.closed = True


def test_off_by_default_and_bad_names_are_named(tmp_path):
    for off in (None, "none", "", ["none"]):
        assert isinstance(make_logger(off, tmp_path / "logs"), NullLogger)
    assert not (tmp_path / "logs").exists()  # nothing is written when off
    assert parse_report_to("tensorboard, wandb") == ["tensorboard", "wandb"]
    assert parse_report_to("all") == ["tensorboard", "wandb"]
    with pytest.raises(ConfigError, match="report_to: unknown backend.*mlflow"):
        make_logger("mlflow", tmp_path)


def test_tensorboard_writes_scalars(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    lg = make_logger("tensorboard", tmp_path / "tb")
    for step in range(1, 4):
        lg.log({"train/loss": 2.0 / step, "train/lr": 1e-3, "note": "skipped", "nan": float("nan")}, step)
    lg.close()
    acc = EventAccumulator(str(tmp_path / "tb"))
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
    lg = make_logger(["wandb"], tmp_path / "wb", run_name="code__plain__s0", config={"lr": 1e-3})
    lg.log({"train/loss": 1.5, "skip": None}, 7)
    lg.close()
    assert calls[0][0] == "init" and calls[0][1]["project"] == "proj" and calls[0][1]["name"] == "code__plain__s0"
    assert calls[1] == ("log", {"train/loss": 1.5}, 7) and calls[2] == ("finish",)


def test_missing_backend_fails_before_training(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    with pytest.raises(Exception, match="pip install wandb"):
        make_logger("wandb", tmp_path)


def test_callback_logs_loss_and_lr_during_training(tiny, tmp_path):
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
                  callbacks=[logging_callback(rec, every=2)], progress=False)
    assert [s for s, _ in rec.calls] == [2, 4]
    assert all(m["train/lr"] == pytest.approx(1e-3) for _, m in rec.calls)
    # the loss appears once the trainer exposes ctx.last_loss (see docs); never a wrong key
    assert all(set(m) <= {"train/loss", "train/lr"} for _, m in rec.calls)


def test_multi_and_run_callback():
    a, b = Recorder(), Recorder()
    multi = MultiLogger([a, b])
    on_run = run_callback(multi)
    on_run(None, {"run_id": "x", "task_loss_after": 1.25, "wall_s": 3})
    multi.close()
    assert a.calls == b.calls == [(1, {"sweep/run_id": "x", "sweep/task_loss_after": 1.25, "sweep/wall_s": 3})]
    assert a.closed and b.closed
