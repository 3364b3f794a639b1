"""Replay: requested ratio per batch, sampling follows the weights, replayed ids excluded, bad input."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from forgetscope.errors import ConfigError
from forgetscope.mitigate.replay import ReplayStrategy, sampling_weights
from forgetscope.train import make_strategy


def _ctx(tiny, n_up=10, seed=0):
    from forgetscope.config import TrainConfig
    from forgetscope.data.encoding import encode_examples
    from forgetscope.data.types import Example, Task
    from forgetscope.train import TrainContext

    model, tok = tiny
    up = [Example(f"u{i}", text=f"Upstream sentence {i} about the fox.") for i in range(n_up)]
    task = Task("t", [Example(f"t{i}", text=f"def f{i}(x): return x * {i}") for i in range(8)],
                [Example("h", text="def g(y): return y")])
    cfg = TrainConfig(method="full", max_length=32, batch_size=4, lr=1e-2, seed=seed)
    return TrainContext(model=copy.deepcopy(model), tokenizer=tok, task=task, config=cfg,
                        device=torch.device("cpu"), pad_id=tok.pad_token_id,
                        train_encoded=encode_examples(tok, task.train, 32), upstream=up,
                        upstream_encoded=encode_examples(tok, up, 32))


def test_batches_contain_requested_ratio(tiny):
    ctx = _ctx(tiny)
    s = ReplayStrategy(ratio=0.5)
    s.before_training(ctx)
    batch = ctx.train_encoded[:4]
    for _ in range(20):
        out = s.augment_batch(ctx, batch)
        assert out[:4] == batch and len(out) == 6  # 0.5 x 4 = exactly 2 replay examples
        assert all(e.example_id.startswith("u") for e in out[4:])
    # fractional ratio: stochastic rounding keeps the long-run ratio
    s = ReplayStrategy(ratio=0.3)
    s.before_training(ctx)
    counts = [len(s.augment_batch(ctx, batch)) - 4 for _ in range(4000)]
    assert set(counts) <= {1, 2}
    assert np.mean(counts) / 4 == pytest.approx(0.3, abs=0.01)
    assert s.excluded_upstream_ids() == set(s.replayed) and s.replayed


def test_oracle_sampling_follows_weights(tiny):
    ctx = _ctx(tiny)
    row = {f"u{i}": float(i) for i in range(10)}  # u0 never forgotten, u9 most
    s = ReplayStrategy(ratio=1.0, policy="oracle", forgetting=row)
    s.before_training(ctx)
    for _ in range(3000):
        s.augment_batch(ctx, ctx.train_encoded[:4])
    freq = np.array([s.replayed.count(f"u{i}") for i in range(10)]) / len(s.replayed)
    w = sampling_weights(np.arange(10.0))
    assert np.allclose(freq, w, atol=0.01)
    assert freq[0] < 0.005 and freq[9] > freq[5] > freq[1]


def test_predicted_with_fitted_predictor_and_probe_values(tiny):
    from forgetscope.predict import get_predictor

    ctx = _ctx(tiny)
    cols = [f"u{i}" for i in range(10)]
    rng = np.random.default_rng(0)
    pattern = np.linspace(-0.2, 1.0, 10)
    known = pattern[None, :] * rng.uniform(0.5, 1.5, size=(5, 1)) + rng.normal(scale=0.01, size=(5, 10))
    pred = get_predictor("knn", k=3).fit(known)
    probe = {"u2": 0.1, "u7": 0.8}
    s = ReplayStrategy(ratio=1.0, policy="predicted", predictor=pred, predictor_columns=cols, probe_values=probe)
    s.before_training(ctx)
    # predicted row follows the known pattern: weights increase with i; probes keep their observed values
    assert np.argmax(s.weights) >= 7 and s.weights[0] < s.weights[9]
    info = s.summary()
    assert info["upstream_evaluations"] == 2 and info["probe_size"] == 2 and info["pilot_steps"] == 0
    for _ in range(2000):
        s.augment_batch(ctx, ctx.train_encoded[:4])
    freq = np.array([s.replayed.count(c) for c in cols]) / len(s.replayed)
    assert np.allclose(freq, s.weights, atol=0.015)


def test_predicted_from_sweep_with_pilot(tiny, tmp_path):
    """Known rows from a sweep directory (this task's row left out), probe values from a pilot fine-tune."""
    import pandas as pd

    from forgetscope.store import SweepStore

    ctx = _ctx(tiny)
    cols = [f"u{i}" for i in range(10)]
    store = SweepStore(tmp_path / "known")
    store.write_manifest({"source": "test"})
    store.write_upstream(pd.DataFrame({"example_id": cols, "loss_before": np.zeros(10)}))
    for j, task in enumerate(["a", "b", "c", "t"]):
        rec = {"run_id": f"{task}__plain__s0", "task": task, "strategy": "plain"}
        vals = np.linspace(0, 1, 10) * (j + 1) if task != "t" else np.full(10, 99.0)
        store.write_run(rec, pd.DataFrame({"example_id": cols, "loss_after": vals}))
    store.consolidate()
    s = make_strategy("replay", ratio=0.5, policy="predicted", known=str(tmp_path / "known"), probe=4,
                      pilot_steps=2, predictor="knn", predictor_options={"k": 2})
    s.before_training(ctx)
    info = s.summary()
    assert info["known_rows"] == 3  # the task's own row ("t") is never used
    assert info["probe_size"] == 4 and info["upstream_evaluations"] == 8 and info["pilot_steps"] == 2
    assert np.isclose(s.weights.sum(), 1.0)


def test_predicted_probe_file_cost(tiny, tmp_path):
    from forgetscope.predict import get_predictor

    ctx = _ctx(tiny)
    cols = [f"u{i}" for i in range(10)]
    pred = get_predictor("additive").fit(np.tile(np.linspace(0, 1, 10), (3, 1)))
    f = tmp_path / "probe.json"
    f.write_text(json.dumps({"values": {"u1": 0.0, "u8": 1.0, "u5": 0.5}, "evaluations": 3}))
    s = ReplayStrategy(policy="predicted", predictor=pred, predictor_columns=cols, probe_file=str(f))
    s.before_training(ctx)
    assert s.summary()["upstream_evaluations"] == 3


def test_replay_in_trainer_excludes_replayed(tiny):
    from forgetscope.config import TrainConfig
    from forgetscope.train import train_on_task

    ctx = _ctx(tiny)
    cfg = TrainConfig(method="full", steps=4, batch_size=4, lr=1e-2, max_length=32)
    r = train_on_task(ctx.model, ctx.tokenizer, ctx.task, cfg, strategy=make_strategy("replay", ratio=0.5),
                      upstream=ctx.upstream, progress=False)
    info = r.record["strategy_info"]
    assert info["n_replayed"] == 8 and r.excluded_upstream_ids and len(r.excluded_upstream_ids) == info["n_unique_replayed"]


@pytest.mark.parametrize("opts,msg", [
    ({"ratio": 0}, "ratio"), ({"ratio": -0.5}, "ratio"), ({"ratio": 100}, "ratio"), ({"ratio": float("nan")}, "ratio"),
    ({"ratio": True}, "ratio"),
    ({"policy": "best"}, "unknown policy"),
    ({"policy": "predicted"}, "fitted predictor"),
    ({"policy": "oracle"}, "true forgetting"),
])
def test_replay_bad_options(opts, msg):
    with pytest.raises(ConfigError, match=msg):
        make_strategy("replay", **opts)


def test_predicted_with_unfitted_predictor():
    from forgetscope.predict import get_predictor

    with pytest.raises(ConfigError, match="fitted"):
        ReplayStrategy(policy="predicted", predictor=get_predictor("knn"), predictor_columns=["a"])


def test_sampling_weights_edge_cases():
    assert np.allclose(sampling_weights(np.array([-1.0, -2.0])), [0.5, 0.5])
    w = sampling_weights(np.array([1.0, np.nan, 0.0]))
    assert w[1] > w[2] > 0 and np.isclose(w.sum(), 1)
