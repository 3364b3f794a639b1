import copy

import numpy as np
import pytest
import torch

from forgetscope.config import TrainConfig
from forgetscope.data.types import Example, Task
from forgetscope.errors import ConfigError
from forgetscope.train import Hook, Strategy, make_strategy, train_on_task


def _task(n=12):
    train = [Example(f"c{i}", text=f"def f{i}(x):\n    return x * {i}") for i in range(n)]
    held = [Example(f"h{i}", text=f"def g{i}(x):\n    return x * {i}") for i in range(3)]
    return Task("code", train, held, "toy code")


def _run(tiny, seed=0, **cfg):
    model, tok = tiny
    config = TrainConfig(method="full", steps=6, batch_size=4, lr=1e-2, max_length=32, seed=seed, **cfg)
    return train_on_task(copy.deepcopy(model), tok, _task(), config, progress=False)


def _train_nll(tiny, model) -> float:
    """Mean token NLL of the task's training examples under ``model``."""
    from forgetscope.data.encoding import encode_examples
    from forgetscope.measure import heldout_loss

    _, tok = tiny
    return heldout_loss(model, encode_examples(tok, _task().train, 32), tok.pad_token_id)


def test_training_learns_the_task_and_records_the_run(tiny):
    model, _ = tiny
    result = _run(tiny)
    rec = result.record
    assert rec["task_loss_after"] < rec["task_loss_before"]
    # the training loss falls: on the training examples themselves, and in the recorded step losses
    assert _train_nll(tiny, result.model) < _train_nll(tiny, model) - 0.5
    assert rec["train_loss_last"] < rec["train_loss_first"]
    assert rec["task_loss_before"] == pytest.approx(_heldout(tiny, model))
    assert rec["task_loss_after"] == pytest.approx(_heldout(tiny, result.model))
    assert rec["steps"] == 6 and rec["strategy"] == "plain" and rec["task"] == "code"
    assert rec["method"] == "full" and rec["lora_rank"] is None and rec["seed"] == 0
    assert rec["lr"] == 1e-2 and rec["batch_size"] == 4 and rec["max_length"] == 32
    assert rec["trainable_params"] == sum(p.numel() for p in result.model.parameters())
    assert rec["trainable_params"] == sum(p.numel() for p in model.parameters())  # full: every base weight
    assert rec["train_wall_s"] > 0
    assert result.excluded_upstream_ids == set() and rec["strategy_info"] == {}


def _heldout(tiny, model) -> float:
    from forgetscope.data.encoding import encode_examples
    from forgetscope.measure import heldout_loss

    _, tok = tiny
    return heldout_loss(model, encode_examples(tok, _task().heldout, 32), tok.pad_token_id)


def test_same_seed_same_weights_different_seed_differs(tiny):
    a, b, c = _run(tiny, seed=1), _run(tiny, seed=1), _run(tiny, seed=2)
    wa, wb, wc = (torch.cat([p.flatten() for p in r.model.parameters()]) for r in (a, b, c))
    assert torch.equal(wa, wb)
    assert not torch.equal(wa, wc)
    assert a.record["task_loss_after"] == b.record["task_loss_after"]
    assert a.record["train_loss_first"] == b.record["train_loss_first"]
    assert a.record["train_loss_first"] != c.record["train_loss_first"]  # the seed picks different batches


def test_lora_leaves_base_weights_untouched(tiny):
    model, tok = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = TrainConfig(method="lora", steps=3, batch_size=4, lr=1e-2, max_length=32, lora_rank=2)
    result = train_on_task(copy.deepcopy(model), tok, _task(), cfg, progress=False)
    n_trainable = sum(p.numel() for p in result.model.parameters() if p.requires_grad)
    assert 0 < result.record["trainable_params"] == n_trainable < sum(v.numel() for v in before.values())
    assert result.record["lora_rank"] == 2 and result.record["method"] == "lora"
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    # inside the trained copy too, only adapter weights moved
    trained = dict(result.model.named_parameters())
    frozen = [n for n, p in trained.items() if not p.requires_grad]
    assert frozen and all("lora_" not in n for n in frozen)
    assert all("lora_" in n for n, p in trained.items() if p.requires_grad)


class CountingStrategy(Strategy):
    name = "counting"

    def __init__(self):
        self.batches, self.after = [], 0

    def augment_batch(self, ctx, batch):
        self.batches.append(len(batch))
        return batch

    def after_step(self, ctx):
        self.after += 1

    def summary(self):
        return {"after_calls": self.after}


class Recording(Hook):
    """Records every hook call in order."""

    def __init__(self, seen):
        self.seen = seen

    def before_training(self, ctx):
        self.seen.append(("before_training", ctx.step))

    def before_step(self, ctx):
        self.seen.append(("before_step", ctx.step))

    def after_step(self, ctx):
        self.seen.append(("after_step", ctx.step))

    def after_training(self, ctx):
        self.seen.append(("after_training", ctx.step))


def test_strategy_hooks_are_called_every_step(tiny):
    model, tok = tiny
    strat = CountingStrategy()
    seen = []
    cfg = TrainConfig(method="full", steps=5, batch_size=3, lr=1e-3, max_length=32)
    res = train_on_task(copy.deepcopy(model), tok, _task(), cfg, strategy=strat,
                        hooks=[Recording(seen)], progress=False)
    assert strat.batches == [3] * 5 and strat.after == 5
    assert [s for name, s in seen if name == "after_step"] == [1, 2, 3, 4, 5]
    assert [s for name, s in seen if name == "before_step"] == [0, 1, 2, 3, 4]
    assert seen[0] == ("before_training", 0) and seen[-1] == ("after_training", 5)
    assert res.record["strategy"] == "counting" and res.record["strategy_info"] == {"after_calls": 5}


def test_unknown_strategy_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown strategy 'nope'"):
        make_strategy("nope")


class BatchIds(Strategy):
    name = "batch-ids"

    def __init__(self):
        self.batches = []

    def augment_batch(self, ctx, batch):
        self.batches.append([e.example_id for e in batch])
        return batch


def test_more_steps_than_examples_cycles_epochs(tiny):
    model, tok = tiny
    cfg = TrainConfig(method="full", steps=7, batch_size=5, lr=1e-3, max_length=32)
    strat = BatchIds()
    task = _task(n=6)
    res = train_on_task(copy.deepcopy(model), tok, task, cfg, strategy=strat, progress=False)
    assert res.record["steps"] == 7 and np.isfinite(res.record["task_loss_after"])
    ids = {e.example_id for e in task.train}
    assert len(strat.batches) == 7
    # 6 examples, batches of 5: every step starts a new epoch, so each batch is 5 distinct examples
    assert all(len(b) == 5 == len(set(b)) and set(b) <= ids for b in strat.batches)
    assert set().union(*map(set, strat.batches)) == ids  # nothing is starved over the epochs
    assert len({tuple(b) for b in strat.batches}) > 1  # reshuffled between epochs
