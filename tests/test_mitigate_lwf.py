"""LWF: self-generated knowledge, Fisher-weighted forgetting confidence, periodic unlearning of the top samples."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from forgetscope.data.encoding import IGNORE_INDEX
from forgetscope.errors import ConfigError
from forgetscope.mitigate.lwf import LWFStrategy
from forgetscope.train import make_strategy


def _forget_file(tmp_path):
    from conftest import write_jsonl

    return str(write_jsonl(tmp_path / "forget.jsonl",
                           [{"text": f"Poems of the sea number {i} sing of waves and salt."} for i in range(6)]
                           + [{"prompt": "Name a colour of the sea.", "response": "Blue."}]))


def _ctx(tiny):
    from forgetscope.config import TrainConfig
    from forgetscope.data.encoding import encode_examples
    from forgetscope.data.types import Example, Task
    from forgetscope.train import TrainContext

    model, tok = tiny
    up = [Example(f"u{i}", text=f"The quick brown fox number {i} jumps over the dog.") for i in range(5)]
    up.append(Example("q", prompt="What is two plus two?", response="Four."))
    task = Task("t", [Example(f"t{i}", text=f"def f{i}(x): return x * {i}") for i in range(8)],
                [Example("h", text="def g(y): return y")])
    cfg = TrainConfig(method="full", max_length=32, batch_size=4, lr=1e-2)
    ctx = TrainContext(model=copy.deepcopy(model), tokenizer=tok, task=task, config=cfg,
                       device=torch.device("cpu"), pad_id=tok.pad_token_id,
                       train_encoded=encode_examples(tok, task.train, 32), upstream=up,
                       upstream_encoded=encode_examples(tok, up, 32))
    ctx.optimizer = torch.optim.AdamW([p for _, p in ctx.trainable_parameters()], lr=cfg.lr)
    return ctx


def test_self_knowledge_comes_from_forget_data_and_is_scored_on_generation_only(tiny, tmp_path):
    ctx = _ctx(tiny)
    s = LWFStrategy(forget_data=_forget_file(tmp_path), n_self=6, gen_tokens=5, prompt_tokens=3)
    s.before_training(ctx)
    assert 1 <= len(s.self_samples) <= 6
    for e in s.self_samples:
        scored = [t for t in e.labels if t != IGNORE_INDEX]
        assert 1 <= len(scored) <= 5  # only generated tokens are scored
        n_prompt = len(e.labels) - len(scored)
        assert e.labels[n_prompt:] == e.input_ids[n_prompt:]
    upstream_ids = {e.example_id for e in ctx.upstream}
    assert s.source_ids and not set(s.source_ids) & upstream_ids  # prompts from the forgetting task only
    assert s.excluded_upstream_ids() == set()  # nothing upstream was trained on
    assert s.summary()["source"] == "forget_data"


def test_source_upstream_is_the_explicit_option(tiny):
    ctx = _ctx(tiny)
    s = LWFStrategy(source="upstream", n_self=4, gen_tokens=4)
    s.before_training(ctx)
    assert set(s.source_ids) <= {e.example_id for e in ctx.upstream}
    assert s.excluded_upstream_ids() == set(s.source_ids) and s.source_ids


def test_forget_data_from_the_demo_suite(tiny):
    ctx = _ctx(tiny)
    s = LWFStrategy(forget_data="demo:poetry", n_self=2, gen_tokens=3)
    s.before_training(ctx)
    assert len(s.self_samples) == 2 and all(i.startswith("poetry") for i in s.source_ids)


def test_forgetting_confidence_is_fisher_weighted_agreement(tiny, tmp_path):
    from forgetscope.mitigate.fisher import diagonal_fisher, example_gradients

    ctx = _ctx(tiny)
    s = LWFStrategy(forget_data=_forget_file(tmp_path), n_self=4, gen_tokens=5)
    s.before_training(ctx)
    delta = s.intended_update(ctx)
    fc = s.forgetting_confidence(ctx, delta)
    # FC(x) = Σ F̃ g_x Δθ with F̃ the Fisher of D_self divided by its mean
    F = diagonal_fisher(ctx.model, s.self_samples, ctx.pad_id)
    mean = sum(float(f.sum()) for f in F.values()) / sum(f.numel() for f in F.values())
    manual = [sum(float((F[n] / mean * g[n] * delta[n]).sum()) for n in delta)
              for _, g in example_gradients(ctx.model, s.self_samples, ctx.pad_id)]
    assert np.allclose(fc, manual, rtol=1e-5) and np.abs(fc).max() > 0
    zero = {n: torch.zeros_like(d) for n, d in delta.items()}
    assert np.allclose(s.forgetting_confidence(ctx, zero), 0.0)
    assert np.allclose(s.forgetting_confidence(ctx, {n: 2 * d for n, d in delta.items()}), 2 * fc, rtol=1e-5)
    # sign: an update that descends a sample's own loss serves it (FC < 0); one that ascends it conflicts (FC > 0)
    _, g0 = next(example_gradients(ctx.model, s.self_samples[:1], ctx.pad_id))
    serve = s.forgetting_confidence(ctx, {n: -0.01 * g0[n] for n in delta})
    conflict = s.forgetting_confidence(ctx, {n: 0.01 * g0[n] for n in delta})
    assert serve[0] < 0 < conflict[0]
    assert np.allclose(serve, -conflict)


def test_periodic_unlearning_raises_loss_of_top_confidence_samples(tiny, tmp_path):
    ctx = _ctx(tiny)
    ctx.config = ctx.config.model_copy(update={"steps": 10})
    s = LWFStrategy(forget_data=_forget_file(tmp_path), n_self=4, gen_tokens=6, interval=2, top_fraction=0.5,
                    unlearn_weight=1.0, unlearn_steps=3)
    s.before_training(ctx)
    ctx.step = 1
    s.after_step(ctx)
    assert not s.rounds  # not an unlearning step
    ctx.step = 2
    before = {n: p.detach().clone() for n, p in ctx.trainable_parameters()}
    s._rng = np.random.default_rng(0)
    fc = s.forgetting_confidence(ctx, s.intended_update(ctx))  # what after_step will compute
    assert (fc > 0).sum() >= 1
    expected_top = [s.self_samples[i].example_id for i in np.argsort(-fc, kind="stable")[:2] if fc[i] > 0]
    assert all(torch.equal(p, before[n]) for n, p in ctx.trainable_parameters())  # FC leaves the weights alone
    s._rng = np.random.default_rng(0)
    s.after_step(ctx)
    assert len(s.rounds) == 1
    assert s.rounds[0]["unlearned"] == expected_top
    assert s.rounds[0]["n_conflicting"] == int((fc > 0).sum())
    assert s.rounds[0]["fc_max"] == pytest.approx(fc.max()) and s.rounds[0]["fc_mean"] == pytest.approx(fc.mean())
    chosen = [e for e in s.self_samples if e.example_id in s.rounds[0]["unlearned"]]
    after = float(ctx.model(**ctx.collate(chosen)).loss)
    assert after > s.rounds[0]["nll_unlearned_before"]  # gradient ascent unlearned them
    assert any(not torch.equal(p, before[n]) for n, p in ctx.trainable_parameters())  # the optimizer stepped


def test_no_sample_conflicts_no_unlearning(tiny, tmp_path):
    ctx = _ctx(tiny)
    ctx.config = ctx.config.model_copy(update={"steps": 10})
    s = LWFStrategy(forget_data=_forget_file(tmp_path), n_self=3, gen_tokens=4, interval=1)
    s.before_training(ctx)
    s.forgetting_confidence = lambda c, delta=None: np.array([-1.0, -0.5, -2.0])
    before = {n: p.detach().clone() for n, p in ctx.trainable_parameters()}
    ctx.step = 1
    s.after_step(ctx)
    assert s.rounds[0]["unlearned"] == [] and s.rounds[0]["n_conflicting"] == 0
    assert all(torch.equal(p, before[n]) for n, p in ctx.trainable_parameters())


def test_intended_update_is_minus_lr_times_task_gradient(tiny, tmp_path):
    """Δθ = −lr · ∇L_task(θ) on an intent batch drawn from the strategy's own generator."""
    ctx = _ctx(tiny)
    s = LWFStrategy(forget_data=_forget_file(tmp_path), n_self=2, gen_tokens=3, intent_batch=3)
    s.before_training(ctx)
    for g in ctx.optimizer.param_groups:
        g["lr"] = 0.03  # the optimizer's current lr (as a schedule would set it), not the config's
    rng = copy.deepcopy(s._rng)
    delta = s.intended_update(ctx)
    idx = rng.choice(len(ctx.train_encoded), size=3, replace=False)
    batch = ctx.collate([ctx.train_encoded[i] for i in idx])
    params = ctx.trainable_parameters()
    grads = torch.autograd.grad(ctx.model(**batch).loss, [p for _, p in params])
    assert set(delta) == {n for n, _ in params}
    for (n, p), g in zip(params, grads):
        assert delta[n].shape == p.shape
        assert torch.allclose(delta[n], -0.03 * g, atol=1e-8), n
    # ... which is exactly the parameter change of one plain SGD step on that batch
    model = copy.deepcopy(ctx.model)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    start = {n: p.detach().clone() for n, p in named}
    opt = torch.optim.SGD([p for _, p in named], lr=0.03)
    model(**batch).loss.backward()
    opt.step()
    for n, p in named:
        assert torch.allclose(p.detach() - start[n], delta[n], atol=1e-6), n


@pytest.mark.parametrize(("steps", "interval", "expected"), [(4, 2, [2]), (6, 2, [2, 4]), (5, 5, []), (7, 3, [3, 6])])
def test_lwf_never_unlearns_after_the_last_step(tiny, tmp_path, steps, interval, expected):
    from forgetscope.config import TrainConfig
    from forgetscope.train import train_on_task

    ctx = _ctx(tiny)
    cfg = TrainConfig(method="lora", steps=steps, batch_size=4, lr=1e-2, max_length=32)
    strategy = make_strategy("lwf", forget_data=_forget_file(tmp_path), n_self=3, gen_tokens=4, interval=interval,
                             top_fraction=1.0)
    seen = []
    orig = strategy.forgetting_confidence

    def spy(c, delta=None):
        seen.append(c.step)
        return np.abs(orig(c, delta)) + 1.0  # every sample conflicts: each round unlearns
    strategy.forgetting_confidence = spy
    r = train_on_task(ctx.model, ctx.tokenizer, ctx.task, cfg, upstream=ctx.upstream, progress=False,
                      strategy=strategy)
    assert [rd["step"] for rd in strategy.rounds] == expected == seen
    assert steps not in seen  # the final model ends on a task step
    info = r.record["strategy_info"]
    assert info["unlearning_rounds"] == len(expected)
    assert all(len(u) == info["n_self"] for u in info["unlearned_per_round"])
    assert r.excluded_upstream_ids == set()  # forget_data: no upstream example was trained on


@pytest.mark.parametrize("opts,msg", [
    ({}, "needs forget_data"),
    ({"source": "upstream", "forget_data": "x.jsonl"}, "drop forget_data"),
    ({"source": "pretraining"}, "unknown source"),
    ({"n_self": 0}, "n_self"), ({"interval": 0}, "interval"), ({"top_fraction": 0}, "top_fraction"),
    ({"top_fraction": 1.5}, "top_fraction"), ({"unlearn_weight": -1}, "unlearn_weight"),
    ({"temperature": 0}, "temperature"), ({"top_p": 0}, "top_p"),
])
def test_lwf_bad_options(opts, msg):
    if msg not in ("needs forget_data", "drop forget_data", "unknown source"):
        opts = {"forget_data": "x.jsonl", **opts}
    with pytest.raises(ConfigError, match=msg) as exc:
        make_strategy("lwf", **opts)
    assert "lwf" in str(exc.value) and "\n" not in str(exc.value)


def test_lwf_needs_prompts(tiny, tmp_path):
    from forgetscope.errors import DataError

    ctx = _ctx(tiny)
    ctx.upstream = []
    with pytest.raises(ConfigError, match="upstream"):
        LWFStrategy(source="upstream").before_training(ctx)
    with pytest.raises(DataError, match="not found|no such|does not exist"):
        LWFStrategy(forget_data=str(tmp_path / "missing.jsonl")).before_training(_ctx(tiny))
