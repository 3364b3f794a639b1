"""Replay: softmax/linear weights, the interleaving schedule, draws without replacement, the task/replay
loss split, online predicted replay, MIR, and bad input."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch

from forgetscope.errors import ConfigError, DataError
from forgetscope.experiments.strategy_inputs import resolve_strategy_inputs
from forgetscope.importing import load_any
from forgetscope.mitigate.replay import ReplayStrategy
from forgetscope.mitigate.replay_sampling import (
    ReplaySampler,
    linear_weights,
    replay_count,
    replay_schedule,
    sampling_weights,
    softmax_weights,
)
from forgetscope.train import make_strategy


def _ctx(tiny, n_up=10, seed=0, steps=30, batch_size=4, n_train=8):
    from forgetscope.config import TrainConfig
    from forgetscope.data.encoding import encode_examples
    from forgetscope.data.types import Example, Task
    from forgetscope.train import TrainContext

    model, tok = tiny
    up = [Example(f"u{i}", text=f"Upstream sentence {i} about the fox.") for i in range(n_up)]
    task = Task("t", [Example(f"t{i}", text=f"def f{i}(x): return x * {i}") for i in range(n_train)],
                [Example("h", text="def g(y): return y")])
    cfg = TrainConfig(method="full", max_length=32, batch_size=batch_size, lr=1e-2, seed=seed, steps=steps)
    return TrainContext(model=copy.deepcopy(model), tokenizer=tok, task=task, config=cfg,
                        device=torch.device("cpu"), pad_id=tok.pad_token_id,
                        train_encoded=encode_examples(tok, task.train, 32), upstream=up,
                        upstream_encoded=encode_examples(tok, up, 32))


# ---- weights --------------------------------------------------------------------------------------
def test_softmax_weights_match_hand_computation():
    e, e2 = math.e, math.e ** 2
    z = 1 + e + e2
    # F = (0, 0.1, 0.2) at T = 0.1: exp(F/T) = (1, e, e²); NaN gets weight 0
    w = softmax_weights(np.array([0.0, 0.1, 0.2, np.nan]), 0.1)
    assert np.allclose(w, [1 / z, e / z, e2 / z, 0.0], atol=1e-12)
    assert np.allclose(w[:3], [0.09003057, 0.24472847, 0.66524096], atol=1e-8)
    # T = 1: exp(F) over the same values, (1, e^0.1, e^0.2) / sum
    w1 = softmax_weights(np.array([0.0, 0.1, 0.2]), 1.0)
    assert np.allclose(w1, np.exp([0.0, 0.1, 0.2]) / np.exp([0.0, 0.1, 0.2]).sum())
    # shifting every value leaves softmax unchanged; huge values do not overflow
    assert np.allclose(softmax_weights(np.array([1000.0, 1000.1, 1000.2]), 0.1), w[:3])
    assert np.allclose(softmax_weights(np.array([np.nan, np.nan])), [0.5, 0.5])
    with pytest.raises(ConfigError, match="temperature"):
        softmax_weights(np.array([1.0]), 0.0)


def test_linear_weights_and_dispatch():
    assert np.allclose(linear_weights(np.array([-1.0, -2.0])), [0.5, 0.5])
    w = linear_weights(np.array([1.0, np.nan, 0.0]))
    assert w[1] > w[2] > 0 and np.isclose(w.sum(), 1)
    v = np.array([0.0, 0.3, 0.9])
    assert np.allclose(sampling_weights(v, "linear"), linear_weights(v))
    assert np.allclose(sampling_weights(v, "softmax", 0.5), softmax_weights(v, 0.5))
    with pytest.raises(ConfigError, match="weighting"):
        sampling_weights(v, "cubic")


def test_oracle_uses_the_same_weighting_on_the_true_row(tiny):
    ctx = _ctx(tiny)
    row = {f"u{i}": 0.05 * i for i in range(10)}
    s = ReplayStrategy(policy="oracle", forgetting=row, temperature=0.2)
    s.before_training(ctx)
    assert np.allclose(s.weights, softmax_weights(np.array([0.05 * i for i in range(10)]), 0.2))
    s = ReplayStrategy(policy="oracle", forgetting=row, weighting="linear")
    s.before_training(ctx)
    assert np.allclose(s.weights, linear_weights(np.array([0.05 * i for i in range(10)])))
    assert s.summary()["upstream_evaluations"] == 10  # the oracle's cost: the full row


# ---- schedule and draws ---------------------------------------------------------------------------
def test_schedule_interleaves_int_t_ratio_plus_one():
    # T = 10 steps x 4 = 40 task examples, ratio 1/8: replay_n = int(5) + 1 = 6 at stream positions
    # 0, 8, 16, 24, 32, 40 -> steps 0, 2, 4, 6, 8 and (40 // 4 = 10, capped) 9
    assert replay_count(10, 4, 1 / 8) == 6
    assert replay_schedule(10, 4, 1 / 8).tolist() == [1, 0, 1, 0, 1, 0, 1, 0, 1, 1]
    # ratio 1/32 (the default) over 1000 x 8 task examples: 251 replay examples
    sched = replay_schedule(1000, 8, 1 / 32)
    assert sched.sum() == 251 == int(8000 / 32) + 1 and sched.max() == 1
    # ratio 2: two replay examples per task example; 3 x 2 = 6 task examples -> 13
    assert replay_schedule(3, 2, 2.0).tolist() == [4, 4, 5]


def test_draws_without_replacement_never_repeat_until_pool_exhausted():
    n = 10
    w = softmax_weights(np.linspace(0, 1, n), 0.1)  # heavily skewed: repeats would show immediately
    s = ReplaySampler(n, np.random.default_rng(0))
    draws = s.draw(25, w)
    assert sorted(draws[:10]) == list(range(10))  # the first 10 draws: every example once
    assert sorted(draws[10:20]) == list(range(10))  # then the pool is reset and it starts again
    assert len(set(draws[20:])) == 5 and s.resets == 2
    # with replacement the same skewed weights repeat the favourite right away
    r = ReplaySampler(n, np.random.default_rng(0), replacement=True)
    drawn = r.draw(25, w)
    assert len(set(drawn)) < 10 and r.resets == 0
    # weights still steer the order: the heaviest example tends to come first
    firsts = [ReplaySampler(n, np.random.default_rng(k)).draw(1, w)[0] for k in range(300)]
    assert np.mean(np.array(firsts) == 9) == pytest.approx(w[9], abs=0.08)


def test_replay_in_trainer_follows_schedule_and_excludes_replayed(tiny):
    from forgetscope.config import TrainConfig
    from forgetscope.train import train_on_task

    ctx = _ctx(tiny)
    cfg = TrainConfig(method="full", steps=10, batch_size=4, lr=1e-2, max_length=32)
    s = make_strategy("replay", ratio=1 / 8)
    sizes = []
    orig = s.augment_batch

    def spy(c, batch):
        out = orig(c, batch)
        sizes.append(len(out) - len(batch))
        return out

    s.augment_batch = spy
    r = train_on_task(ctx.model, ctx.tokenizer, ctx.task, cfg, strategy=s, upstream=ctx.upstream, progress=False)
    assert sizes == replay_schedule(10, 4, 1 / 8).tolist()  # the task batch keeps its size, replay is extra
    info = r.record["strategy_info"]
    assert info["replay_n"] == info["n_replayed"] == 6 and info["n_unique_replayed"] == 6  # no repeats
    assert r.record["steps"] == 10 and r.excluded_upstream_ids == set(s.replayed)
    assert info["weighting"] == "softmax" and info["temperature"] == 0.1 and info["replacement"] is False


def test_task_gradient_does_not_depend_on_the_ratio(tiny):
    """loss = L_task + (k/b)·L_replay: the task term is plain fine-tuning's loss whatever the ratio."""
    ctx = _ctx(tiny, steps=4)
    task_batch = ctx.train_encoded[:4]
    plain = ctx.model(**ctx.collate(task_batch)).loss
    params = [p for _, p in ctx.trainable_parameters()]
    g_plain = torch.autograd.grad(plain, params)
    for ratio in (0.25, 2.0):
        s = ReplayStrategy(ratio=ratio)
        s.before_training(ctx)
        ctx.step = 0
        out = s.augment_batch(ctx, task_batch)
        k = len(out) - 4
        assert k == s.n_replay(0) >= 1
        loss = s.loss(ctx, ctx.collate(out))
        replay = ctx.model(**ctx.collate(out[4:])).loss
        assert float(loss.detach()) == pytest.approx(float(plain.detach()) + k / 4 * float(replay.detach()), rel=1e-5)
        g = torch.autograd.grad(loss, params)
        g_rep = torch.autograd.grad(replay, params)
        for a, b, c in zip(g, g_rep, g_plain):  # the task gradient is plain's, at full scale
            assert torch.allclose(a - k / 4 * b, c, atol=1e-5)
    # a step without replay has exactly plain fine-tuning's loss
    s = ReplayStrategy(ratio=1 / 32)
    s.before_training(ctx)
    ctx.step = 1
    assert s.n_replay(1) == 0
    out = s.augment_batch(ctx, task_batch)
    assert out == task_batch and float(s.loss(ctx, ctx.collate(out))) == float(plain)


# ---- offline predicted --------------------------------------------------------------------------
def _known_rows(n_cols=10, m=5, seed=0):
    rng = np.random.default_rng(seed)
    pattern = np.linspace(-0.2, 1.0, n_cols)
    return pattern[None, :] * rng.uniform(0.5, 1.5, size=(m, 1)) + rng.normal(scale=0.01, size=(m, n_cols))


def test_predicted_with_fitted_predictor_and_probe_values(tiny):
    from forgetscope.predict import get_predictor

    ctx = _ctx(tiny)
    cols = [f"u{i}" for i in range(10)]
    pred = get_predictor("knn", k=3).fit(_known_rows())
    probe = {"u2": 0.1, "u7": 0.8}
    s = ReplayStrategy(policy="predicted", predictor=pred, predictor_columns=cols, probe_values=probe)
    s.before_training(ctx)
    # the completed row follows the known pattern; softmax at T = 0.1 puts most mass on the top
    assert np.argmax(s.weights) >= 7 and s.weights[9] > 10 * s.weights[0]
    row = pred.predict(np.array([2, 7]), np.array([0.1, 0.8]))
    row[2], row[7] = 0.1, 0.8
    assert np.allclose(s.weights, softmax_weights(row, 0.1))
    info = s.summary()
    assert info["upstream_evaluations"] == 2 and info["probe_size"] == 2 and info["pilot_steps"] == 0


def test_predicted_from_sweep_with_pilot(tiny, tmp_path):
    """Known rows from a sweep directory (this task's row left out), probe values from a pilot fine-tune."""
    ctx = _ctx(tiny)
    _write_known_sweep(tmp_path / "known")
    s = make_strategy("replay", policy="predicted", known=load_any(tmp_path / "known"), probe=4, pilot_steps=2,
                      predictor="knn", predictor_options={"k": 2})
    s.before_training(ctx)
    info = s.summary()
    assert info["known_rows"] == 3  # the task's own row ("t") is never used
    assert info["probe_size"] == 4 and info["upstream_evaluations"] == 8 and info["pilot_steps"] == 2
    assert np.isclose(s.weights.sum(), 1.0)


def _write_known_sweep(path, n_cols=10):
    import pandas as pd

    from forgetscope.store import SweepStore

    cols = [f"u{i}" for i in range(n_cols)]
    store = SweepStore(path)
    store.write_manifest({"source": "test"})
    store.write_upstream(pd.DataFrame({"example_id": cols, "loss_before": np.full(n_cols, 2.0)}))
    for j, task in enumerate(["a", "b", "c", "t"]):
        rec = {"run_id": f"{task}__plain__s0", "task": task, "strategy": "plain"}
        vals = 2.0 + np.linspace(0, 1, n_cols) * (j + 1) if task != "t" else np.full(n_cols, 99.0)
        store.write_run(rec, pd.DataFrame({"example_id": cols, "loss_after": vals}))
    store.consolidate()
    return cols


def test_predicted_probe_file_cost(tiny, tmp_path):
    from forgetscope.predict import get_predictor

    ctx = _ctx(tiny)
    cols = [f"u{i}" for i in range(10)]
    pred = get_predictor("additive").fit(np.tile(np.linspace(0, 1, 10), (3, 1)))
    f = tmp_path / "probe.json"
    f.write_text(json.dumps({"values": {"u1": 0.0, "u8": 1.0, "u5": 0.5, "u9": None}, "evaluations": 5}))
    opts = resolve_strategy_inputs("replay", {"policy": "predicted", "predictor": pred, "predictor_columns": cols,
                                              "probe_file": str(f)})
    assert opts["probe_evaluations"] == 5 and "probe_file" not in opts
    s = ReplayStrategy(**opts)
    s.before_training(ctx)
    assert s.summary()["upstream_evaluations"] == 5 == s.summary()["probe_evaluations"]  # what the file says
    s = ReplayStrategy(policy="predicted", predictor=pred, predictor_columns=cols, probe_values=opts["probe_values"])
    s.before_training(ctx)
    assert s.summary()["upstream_evaluations"] == 3  # without a count: the finite probe values


# ---- online predicted -----------------------------------------------------------------------------
def test_online_evaluates_the_probe_once_on_the_current_model_at_the_warmup_boundary(tiny):
    from forgetscope.config import TrainConfig
    from forgetscope.predict import get_predictor
    from forgetscope.train import Hook, train_on_task

    model, tok = tiny
    ctx = _ctx(tiny, n_up=24)
    cols = [f"u{i}" for i in range(24)]
    pattern = np.r_[np.zeros(20), np.full(4, 3.0)]  # u20..u23 are the ones predicted to be forgotten
    known = pattern[None, :] * np.array([[1.0], [1.2], [0.8]])
    pred = get_predictor("additive").fit(known)
    cfg = TrainConfig(method="full", steps=10, batch_size=4, lr=1e-2, max_length=32)
    s = make_strategy("replay", policy="predicted", mode="online", predictor=pred, predictor_columns=cols,
                      probe=6, warmup_fraction=0.3, ratio=0.5, seed=3)
    calls = []
    base_params = {n: p.detach().clone() for n, p in model.named_parameters()}
    orig = s.probe_losses

    class StepCounter(Hook):
        steps = 0

        def after_step(self, c):
            StepCounter.steps += 1

    def spy(c, ids, model=None, count=True):
        changed = any(not torch.equal(p, base_params[n]) for n, p in c.model.named_parameters())
        calls.append({"ids": list(ids), "step": c.step, "optimizer_steps": StepCounter.steps,
                      "model": c.model, "changed": changed, "replayed": list(s.replayed)})
        return orig(c, ids, model, count)

    s.probe_losses = spy
    r = train_on_task(copy.deepcopy(model), tok, ctx.task, cfg, strategy=s, upstream=ctx.upstream,
                      hooks=[StepCounter()], progress=False)
    probe = s._online["probe_ids"]
    assert len(probe) == 6
    # one base evaluation before training, then exactly one on the current model after the warm-up
    assert [c["ids"] for c in calls] == [probe, probe]
    base, boundary = calls
    assert base["optimizer_steps"] == 0 and not base["changed"]
    assert boundary["step"] == boundary["optimizer_steps"] == 3  # int(0.3 x 10) steps of random replay
    assert boundary["model"] is r.model and boundary["changed"]  # the live, fine-tuned model, not a copy
    # warm-up replay left the probe examples alone; after the switch nothing is drawn twice
    assert not set(boundary["replayed"]) & set(probe)
    assert len(s.replayed) == len(set(s.replayed)) == replay_count(10, 4, 0.5)
    info = r.record["strategy_info"]
    assert info["mode"] == "online" and info["probe_step"] == 3 and info["warmup_steps"] == 3
    assert info["upstream_evaluations"] == 12  # the probe after the warm-up + its base losses
    # the predicted phase follows the completed row: the examples predicted to be forgotten that are
    # still available (not probes, whose observed values replace the prediction; not replayed) come first
    hot = {"u20", "u21", "u22", "u23"} - set(probe) - set(boundary["replayed"])
    after_switch = s.replayed[len(boundary["replayed"]):]
    assert hot and set(after_switch[:len(hot)]) == hot


def test_online_masks_already_replayed_examples(tiny):
    """Predicted weights concentrated on examples the warm-up already replayed: they are not drawn again."""
    ctx = _ctx(tiny, n_up=12, steps=10)
    from forgetscope.predict import get_predictor

    cols = [f"u{i}" for i in range(12)]
    pred = get_predictor("additive").fit(np.tile(np.arange(12.0), (3, 1)))
    s = ReplayStrategy(policy="predicted", mode="online", predictor=pred, predictor_columns=cols, probe=2,
                       ratio=0.25, warmup_fraction=0.5)
    s.before_training(ctx)
    for step in range(10):
        ctx.step = step
        s.before_step(ctx)
        s.augment_batch(ctx, ctx.train_encoded[:4])
    assert len(s.replayed) == replay_count(10, 4, 0.25) == 11
    assert len(set(s.replayed)) == 11  # 11 of 12 pool examples, none twice, across both phases


def test_online_probe_base_from_known_sweep(tiny, tmp_path):
    ctx = _ctx(tiny, steps=10)
    _write_known_sweep(tmp_path / "known")
    opts = resolve_strategy_inputs("replay", {"policy": "predicted", "mode": "online", "known": str(tmp_path / "known"),
                                              "probe": 3, "probe_base": "known", "predictor": "additive"})
    s = make_strategy("replay", **opts)
    s.before_training(ctx)
    assert np.allclose(s._online["base"], 2.0) and s._evaluations == 0  # read, not measured
    ctx.step = 1
    s.before_step(ctx)
    assert s.summary()["upstream_evaluations"] == 3 and s.summary()["known_rows"] == 3


# ---- MIR ------------------------------------------------------------------------------------------
def test_mir_picks_the_most_interfered_candidates(tiny):
    from forgetscope.measure import per_example_nll

    ctx = _ctx(tiny, n_up=8, steps=4)
    ctx.optimizer = torch.optim.SGD([p for _, p in ctx.trainable_parameters()], lr=0.5)
    s = ReplayStrategy(policy="mir", ratio=0.25, candidates=8)  # every pool example is a candidate
    s.before_training(ctx)
    ctx.step = 0
    task_batch = ctx.train_encoded[:4]
    # by hand: losses before and after one SGD step (lr 0.5) on the task batch, on a copy of the model
    model = copy.deepcopy(ctx.model)
    before = per_example_nll(model, ctx.upstream_encoded, pad_id=ctx.pad_id)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model(**ctx.collate(task_batch)).loss.backward()
    opt.step()
    rise = per_example_nll(model, ctx.upstream_encoded, pad_id=ctx.pad_id) - before
    assert np.ptp(rise) > 1e-3  # the constructed case separates the candidates
    start = {n: p.detach().clone() for n, p in ctx.trainable_parameters()}
    k = s.n_replay(0)
    out = s.augment_batch(ctx, task_batch)
    assert [e.example_id for e in out[4:]] == [f"u{i}" for i in np.argsort(-rise)[:k]]
    assert all(torch.equal(p, start[n]) for n, p in ctx.trainable_parameters())  # virtual step undone
    assert s.summary()["upstream_evaluations"] == 16 and s.summary()["mir_draws"] == 1


def test_mir_interference_matches_manual_virtual_step(tiny):
    ctx = _ctx(tiny, n_up=6, steps=4)
    s = ReplayStrategy(policy="mir", candidates=6, virtual_lr=0.3)
    s.before_training(ctx)
    from forgetscope.measure import per_example_nll

    model = copy.deepcopy(ctx.model)
    before = per_example_nll(model, ctx.upstream_encoded, pad_id=ctx.pad_id)
    grads = torch.autograd.grad(model(**ctx.collate(ctx.train_encoded[:4])).loss, list(model.parameters()))
    with torch.no_grad():
        for p, g in zip(model.parameters(), grads):
            p.sub_(0.3 * g)
    expected = per_example_nll(model, ctx.upstream_encoded, pad_id=ctx.pad_id) - before
    got = s.interference(ctx, ctx.train_encoded[:4], ctx.upstream_encoded)
    assert np.allclose(got, expected, atol=1e-5)


# ---- bad input ------------------------------------------------------------------------------------
@pytest.mark.parametrize("opts,msg", [
    ({"ratio": 0}, "ratio"), ({"ratio": -0.5}, "ratio"), ({"ratio": 8.5}, "ratio"), ({"ratio": float("nan")}, "ratio"),
    ({"ratio": True}, "ratio"),
    ({"temperature": 0}, "temperature"), ({"temperature": -1}, "temperature"),
    ({"policy": "best"}, "unknown policy"), ({"weighting": "cubic"}, "unknown weighting"),
    ({"mode": "streaming"}, "unknown mode"),
    ({"policy": "predicted"}, "known rows"),
    ({"policy": "predicted", "mode": "online"}, "online predicted replay needs known rows"),
    ({"policy": "random", "mode": "online"}, "applies to policy 'predicted'"),
    ({"policy": "predicted", "mode": "online", "probe_values": {"a": 1.0}}, "measures its own probe"),
    ({"policy": "predicted", "mode": "online", "probe_base": "known", "predictor": "probe-only"}, "known_base_losses"),
    ({"policy": "predicted", "known": "sweeps/x"}, r"not the path 'sweeps/x': load the rows first with "
                                                   r"forgetscope\.load_forgetting"),
    ({"policy": "predicted", "known": {"a": 1.0}}, "known must be a ForgettingMatrix"),
    ({"policy": "oracle", "forgetting_file": "f.json"}, "forgetting_file is a path and replay reads no files"),
    ({"policy": "predicted", "probe_file": "p.json"}, r"probe_file is a path .*read_values_file"),
    ({"policy": "oracle"}, "true forgetting"),
    ({"policy": "mir", "candidates": 0}, "candidates"),
    ({"warmup_fraction": 1.0}, "warmup_fraction"),
])
def test_replay_bad_options(opts, msg):
    with pytest.raises(ConfigError, match=msg) as exc:
        make_strategy("replay", **opts)
    assert "\n" not in str(exc.value)


def test_replay_ratio_boundaries_are_valid():
    assert make_strategy("replay", ratio=8).ratio == 8.0
    assert make_strategy("replay").ratio == 1 / 32  # the default


def test_mir_candidates_smaller_than_the_draw(tiny):
    ctx = _ctx(tiny, steps=2)
    s = ReplayStrategy(policy="mir", ratio=2.0, candidates=3)  # 8 replay examples per step of 4
    with pytest.raises(ConfigError, match="candidates=3 is smaller") as exc:
        s.before_training(ctx)
    assert "\n" not in str(exc.value)


def test_online_needs_room_for_warmup(tiny):
    from forgetscope.predict import get_predictor

    ctx = _ctx(tiny, steps=1)
    pred = get_predictor("additive").fit(np.ones((2, 10)))
    s = ReplayStrategy(policy="predicted", mode="online", predictor=pred, predictor_columns=[f"u{i}" for i in range(10)],
                       probe=2)
    with pytest.raises(ConfigError, match="at least 2 steps"):
        s.before_training(ctx)


def test_predicted_with_unfitted_predictor():
    from forgetscope.predict import get_predictor

    with pytest.raises(ConfigError, match="fitted"):
        ReplayStrategy(policy="predicted", predictor=get_predictor("knn"), predictor_columns=["a"])


def test_empty_pool(tiny):
    ctx = _ctx(tiny)
    ctx.upstream_encoded = []
    with pytest.raises(ConfigError, match="pool"):
        ReplayStrategy().before_training(ctx)
    with pytest.raises(DataError, match="empty"):
        ReplaySampler(0, np.random.default_rng(0))


# ---- the probe is the sweep's measurement -------------------------------------------------------------
def _session_with_long_upstream(tiny_dir, tiny_data, tmp_path):
    """A sweep session whose upstream texts are longer than ``train.max_length`` (8 tokens) and shorter
    than ``eval.max_length`` (64), so the training and the evaluation encodings differ."""
    from conftest import sweep_config_dict, write_jsonl

    from forgetscope.config import SweepConfig
    from forgetscope.experiments.session import SweepSession

    up = write_jsonl(tmp_path / "long_up.jsonl", [
        {"id": f"u{i}", "text": f"Sentence {i} tells of the quick brown fox that jumps over the lazy dog {i} times."}
        for i in range(12)])
    d = sweep_config_dict(tiny_dir, tiny_data, tmp_path / "sw", steps=4, max_length=8)
    d["upstream"] = {"source": str(up)}
    d["eval"] = {"max_length": 64, "max_batch_tokens": 256}
    return SweepSession.prepare(SweepConfig.model_validate(d))


@pytest.mark.parametrize("mode", ["online", "offline-pilot"])
def test_the_probe_is_measured_as_the_sweep_measures_its_rows(tiny_dir, tiny_data, tmp_path, mode):
    """The probe's base losses equal the sweep's ``loss_before`` of the same examples (its encoding,
    ``eval.max_length`` and dtype), not a re-encoding at ``train.max_length``."""
    from forgetscope.predict import get_predictor
    from forgetscope.train import train_on_task

    session = _session_with_long_upstream(tiny_dir, tiny_data, tmp_path)
    base, tok = session.base()
    sweep = session.evaluate(base, session.upstream, desc="before").set_index("example_id")["loss"]
    ids = [e.example_id for e in session.upstream]
    pred = get_predictor("additive").fit(np.tile(np.linspace(0, 1, len(ids)), (3, 1)))
    opts = {"policy": "predicted", "predictor": pred, "predictor_columns": ids, "probe": 4, "ratio": 0.5}
    if mode == "online":
        opts.update(mode="online", warmup_fraction=0.5)
    s = make_strategy("replay", **opts)
    seen = []
    orig = s.probe_losses

    def spy(c, probe_ids, model=None, count=True):
        out = orig(c, probe_ids, model, count)
        seen.append((list(probe_ids), out))
        return out

    s.probe_losses = spy
    task = session.tasks["code"]
    r = train_on_task(copy.deepcopy(base), tok, task, session.config.train, strategy=s, upstream=session.upstream,
                      measure_upstream=session.upstream_losses, progress=False)
    probe_ids, first = seen[0]  # online: the base losses; pilot: the copy of the model before its steps
    assert np.allclose(first, sweep.loc[probe_ids].to_numpy(), atol=1e-5)
    assert r.record["strategy_info"]["probe_encoding"] == "sweep evaluation"
    # the training encoding (8 tokens) would have measured another quantity: the test can fail
    from forgetscope.measure import per_example_nll

    by_id = {e.example_id: e for e in encode_examples_for(tok, session.upstream, 8)}
    short = per_example_nll(base, [by_id[i] for i in probe_ids], pad_id=tok.pad_token_id)
    assert not np.allclose(short, first, atol=1e-3)


def encode_examples_for(tok, examples, max_length):
    from forgetscope.data.encoding import encode_examples

    return encode_examples(tok, examples, max_length)


def test_outside_a_sweep_the_probe_says_it_used_the_training_encoding(tiny):
    ctx = _ctx(tiny, n_up=12, steps=10)
    from forgetscope.predict import get_predictor

    cols = [f"u{i}" for i in range(12)]
    pred = get_predictor("additive").fit(np.tile(np.arange(12.0), (3, 1)))
    s = ReplayStrategy(policy="predicted", mode="online", predictor=pred, predictor_columns=cols, probe=2)
    s.before_training(ctx)
    assert s.summary()["probe_encoding"].startswith("training")


# ---- probe-only and additive arms on a planted matrix --------------------------------------------------
def test_probe_only_replays_the_probe_by_its_observed_values_and_completes_nothing(tiny):
    ctx = _ctx(tiny, n_up=12, steps=8, batch_size=4)
    observed = {"u1": 0.0, "u4": 0.5, "u7": 2.0}  # the probe; u7 is the one forgotten most
    s = make_strategy("replay", policy="predicted", predictor="probe-only", probe_values=observed, ratio=0.125,
                      seed=1)
    s.before_training(ctx)
    w = dict(zip(s.pool_ids, s.weights))
    assert {i for i, x in w.items() if x > 0} == set(observed)  # no completion: the others weigh 0
    assert np.allclose([w["u1"], w["u4"], w["u7"]], softmax_weights(np.array([0.0, 0.5, 2.0])))
    assert s.summary()["predictor"] == "probe-only" and "known_rows" not in s.summary()


def test_additive_arm_ranks_unprobed_examples_by_the_other_tasks_column_effects(tiny, tmp_path):
    """Known rows = row offset + column effect: under softmax the row offset cancels, so the additive arm's
    weights over unprobed examples follow the known rows' column means."""
    ctx = _ctx(tiny, n_up=10, steps=8)
    effects = np.linspace(-1.0, 1.0, 10)
    known = effects[None, :] + np.array([[0.0], [0.3], [-0.2]])
    import pandas as pd

    pd.DataFrame(known, index=["a", "b", "c"], columns=[f"u{i}" for i in range(10)]).to_csv(tmp_path / "known.csv")
    observed = {"u0": 0.1, "u5": 0.2}
    s = make_strategy("replay", policy="predicted", predictor="additive", known=load_any(tmp_path / "known.csv"),
                      probe_values=observed, temperature=1.0)
    s.before_training(ctx)
    w = dict(zip(s.pool_ids, s.weights))
    unprobed = [f"u{i}" for i in range(10) if f"u{i}" not in observed]
    got = np.log([w[i] for i in unprobed])
    want = effects[[int(i[1:]) for i in unprobed]]
    assert np.allclose(got - got.mean(), want - want.mean(), atol=1e-6)  # exp(column effect / T), T = 1


def test_an_unknown_predictor_fails_in_one_line():
    with pytest.raises(ConfigError, match="unknown predictor 'knnn'") as exc:
        make_strategy("replay", policy="predicted", predictor="knnn", known=_in_memory_rows())
    assert "\n" not in str(exc.value)


def _in_memory_rows():
    from forgetscope.store import ForgettingMatrix

    return ForgettingMatrix(_known_rows(), [f"r{i}" for i in range(5)], [f"u{i}" for i in range(10)])


# ---- a budget in examples, probe-only + random fill, leave-task-out ---------------------------------------
def test_a_budget_replays_exactly_that_many_examples_spread_over_the_run():
    # T = 10 x 4 = 40 task examples, budget 7: replay k at position floor(40 k / 7) = 0, 5, 11, 17, 22, 28, 34
    assert replay_schedule(10, 4, 1 / 32, budget=7).tolist() == [1, 1, 1, 0, 1, 1, 0, 1, 1, 0]
    assert replay_schedule(3, 2, 1 / 32, budget=13).tolist() == [5, 4, 4]  # more replay than task examples
    with pytest.raises(ConfigError, match="give ratio or budget, not both") as exc:
        make_strategy("replay", ratio=0.5, budget=3)
    assert "\n" not in str(exc.value)
    with pytest.raises(ConfigError, match="fill_margin applies to predictor 'probe-fill'"):
        make_strategy("replay", policy="predicted", predictor="probe-only", probe_values={"u1": 1.0}, fill_margin=0.1)


def test_probe_fill_weights_choose_the_probe_examples_observed_forgotten_and_fill_from_the_unprobed():
    from forgetscope.mitigate.replay_sampling import probe_fill_weights

    values = np.array([0.5, -0.2, np.nan, 2.0, 0.05, np.nan, 0.3, np.nan])
    probed = np.array([True, True, True, True, True, False, False, False])  # 0.3 at index 6 is not observed
    w, fill = probe_fill_weights(values, probed, margin=0.1, temperature=0.1)
    assert np.flatnonzero(w).tolist() == [0, 3]  # observed and above the margin: 0.5 and 2.0 (not 0.05, -0.2)
    assert np.allclose(w[[0, 3]], softmax_weights(np.array([0.5, 2.0]), 0.1))
    assert np.allclose(fill, [0, 0, 0, 0, 0, 1 / 3, 1 / 3, 1 / 3])  # uniform over the unprobed examples
    w0, _ = probe_fill_weights(values, probed, margin=5.0)
    assert not w0.any()  # nothing observed forgotten: the whole budget is fill


def test_probe_fill_replays_the_forgotten_probe_examples_then_unprobed_ones_at_random(tiny):
    """Budget 8 from a pool of 12 with a probe of 4, two of them observed forgotten: the first two draws are
    those two (in softmax order), the other six are unprobed examples, and the probe examples observed not
    forgotten are never replayed."""
    ctx = _ctx(tiny, n_up=12, steps=8, batch_size=4)
    observed = {"u1": 0.4, "u4": -0.3, "u7": 1.5, "u9": 0.0}  # forgotten (F > 0): u1 and u7
    firsts = []
    for seed in range(20):
        s = make_strategy("replay", policy="predicted", predictor="probe-fill", probe_values=observed, budget=8,
                          seed=seed)
        s.before_training(ctx)
        batch = ctx.train_encoded[:4]
        for step in range(ctx.config.steps):
            ctx.step = step
            s.augment_batch(ctx, batch)
        assert len(s.replayed) == 8 and len(set(s.replayed)) == 8
        assert set(s.replayed[:2]) == {"u1", "u7"}
        assert not set(s.replayed[2:]) & set(observed)  # the fill: unprobed examples only
        firsts.append(s.replayed[0])
    info = s.summary()
    assert info["predictor"] == "probe-fill" and info["probe_chosen"] == 2 and info["fill_pool"] == 8
    assert info["budget"] == 8 and info["ratio"] is None and "known_rows" not in info
    assert firsts.count("u7") > firsts.count("u1")  # the softmax over the chosen ones orders the draws


def _rows_with_the_trained_task(path):
    """A sweep whose other tasks' rows rise with the column index and whose rows of task ``t`` (the task
    trained in ``_ctx``) fall steeply: with ``t`` in the known rows the column means fall instead."""
    import pandas as pd

    from forgetscope.store import SweepStore

    cols = [f"u{i}" for i in range(10)]
    store = SweepStore(path)
    store.write_manifest({"source": "test"})
    store.write_upstream(pd.DataFrame({"example_id": cols, "loss_before": np.full(10, 2.0)}))
    rows = {"a": np.linspace(0, 1, 10), "b": np.linspace(0, 1, 10) + 0.2, "t": np.linspace(0, -20, 10)}
    for task, f in rows.items():
        for seed in (0, 1):
            store.write_run({"run_id": f"{task}__plain__s{seed}", "task": task, "strategy": "plain"},
                            pd.DataFrame({"example_id": cols, "loss_after": 2.0 + f}))
    store.consolidate()


@pytest.mark.parametrize("leave_task_out", [True, False])
def test_leave_task_out_known_rows_never_include_the_trained_task(tiny, tmp_path, leave_task_out):
    ctx = _ctx(tiny, n_up=10, steps=8)  # trains task "t"
    _rows_with_the_trained_task(tmp_path / "known")
    observed = {"u0": 0.0, "u5": 0.5}
    s = make_strategy("replay", policy="predicted", predictor="additive", known=load_any(tmp_path / "known"),
                      probe_values=observed, temperature=1.0, leave_task_out=leave_task_out)
    s.before_training(ctx)
    assert s.summary()["known_rows"] == (4 if leave_task_out else 6)
    w = dict(zip(s.pool_ids, s.weights))
    unprobed = [f"u{i}" for i in range(10) if f"u{i}" not in observed]
    rising = np.all(np.diff([w[i] for i in unprobed]) > 0)  # the other tasks' column effects
    assert rising == leave_task_out


# ---- one object per policy, MIR as a function ----------------------------------------------------------
@pytest.mark.parametrize("opts,cls", [
    ({}, "RandomPolicy"), ({"policy": "oracle", "forgetting": {"u0": 1.0}}, "OraclePolicy"),
    ({"policy": "predicted", "predictor": "probe-only", "probe_values": {"u0": 1.0}}, "OfflinePredictedPolicy"),
    ({"policy": "predicted", "mode": "online", "predictor": "probe-only"}, "OnlinePredictedPolicy"),
    ({"policy": "mir"}, "MIRPolicy"),
])
def test_each_policy_is_its_own_object(opts, cls):
    s = make_strategy("replay", **opts)
    assert type(s.policy).__name__ == cls and s.policy.name == opts.get("policy", "random")
    assert s.summary()["policy"] == s.policy.name


def test_most_interfered_takes_the_largest_rise_nan_last_ties_in_candidate_order():
    from forgetscope.mitigate.mir import most_interfered

    cand = [7, 3, 9, 1, 5]
    assert most_interfered(cand, np.array([0.2, np.nan, 0.5, 0.2, -1.0]), 3) == [9, 7, 1]
    assert most_interfered(cand, np.array([np.nan] * 5), 2) == [7, 3]


def test_mir_refuses_a_plan_whose_largest_draw_exceeds_its_candidates():
    from forgetscope.config import TrainConfig

    s = make_strategy("replay", policy="mir", ratio=2.0, candidates=4)
    with pytest.raises(ConfigError, match="candidates=4 is smaller than the 9 replay examples"):
        s.check_plan(TrainConfig(method="full", steps=2, batch_size=4))
    make_strategy("replay", ratio=2.0).check_plan(TrainConfig(method="full", steps=2, batch_size=4))  # random: any


def test_known_rows_of_one_kind_fit_only_those_columns_and_never_a_control():
    """A study's known rows may carry instruction columns beside the human-written texts; ``known_kind: lm``
    fits the completion on the lm columns alone, as the cross-validation that chose the predictor did. Its
    format-only control rows are not tasks and are never known rows."""
    import pandas as pd

    from forgetscope.predict.completion import fit_known
    from forgetscope.store import ForgettingMatrix

    upstream = pd.DataFrame({"example_id": [f"u{i}" for i in range(10)],
                             "kind": ["lm"] * 7 + ["instruction"] * 3})
    runs = pd.DataFrame({"task": [f"t{i}" for i in range(5)], "strategy": "plain",
                         "control": [None, None, None, None, "shuffled_responses"]})
    matrix = ForgettingMatrix(_known_rows(), [f"r{i}" for i in range(5)], upstream["example_id"].tolist(),
                              runs=runs, upstream=upstream)
    _, cols_all, _ = fit_known("knn", matrix)
    _, cols_lm, n = fit_known("knn", matrix, kind="lm", drop_task="t0")
    # t0 left out, and t4's row is a format-only control: three known rows
    assert cols_all == [f"u{i}" for i in range(10)] and cols_lm == [f"u{i}" for i in range(7)] and n == 3
    with pytest.raises(ConfigError, match="known_kind"):
        ReplayStrategy(policy="predicted", known_kind="text", known=matrix)
