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


def test_self_knowledge_is_generated_and_scored_on_generation_only(tiny):
    ctx = _ctx(tiny)
    s = LWFStrategy(n_self=6, gen_tokens=5, prompt_tokens=3)
    s.before_training(ctx)
    assert 1 <= len(s.self_samples) <= 6
    for e in s.self_samples:
        scored = [t for t in e.labels if t != IGNORE_INDEX]
        assert 1 <= len(scored) <= 5  # only generated tokens are scored
        n_prompt = len(e.labels) - len(scored)
        assert e.labels[n_prompt:] == e.input_ids[n_prompt:]
    assert s.excluded_upstream_ids() == set(s.source_ids)


def test_forgetting_confidence_is_fisher_weighted_update(tiny):
    from forgetscope.mitigate.fisher import example_gradients

    ctx = _ctx(tiny)
    s = LWFStrategy(n_self=4, gen_tokens=5)
    s.before_training(ctx)
    delta = s.intended_update(ctx)
    fc = s.forgetting_confidence(ctx, delta)
    manual = [0.5 * sum(float((g[n] ** 2 * delta[n] ** 2).sum()) for n in delta)
              for _, g in example_gradients(ctx.model, s.self_samples, ctx.pad_id)]
    assert np.allclose(fc, manual, rtol=1e-5) and (fc >= 0).all() and fc.max() > 0
    zero = {n: torch.zeros_like(d) for n, d in delta.items()}
    assert np.allclose(s.forgetting_confidence(ctx, zero), 0.0)
    # scaling the intended update by 2 scales FC by 4 (quadratic in Δθ)
    double = {n: 2 * d for n, d in delta.items()}
    assert np.allclose(s.forgetting_confidence(ctx, double), 4 * fc, rtol=1e-5)


def test_periodic_unlearning_raises_loss_of_top_confidence_samples(tiny):
    ctx = _ctx(tiny)
    s = LWFStrategy(n_self=4, gen_tokens=6, interval=2, top_fraction=0.5, unlearn_weight=1.0, unlearn_steps=3)
    s.before_training(ctx)
    ctx.step = 1
    s.after_step(ctx)
    assert not s.rounds  # not an unlearning step
    ctx.step = 2
    before = {n: p.detach().clone() for n, p in ctx.trainable_parameters()}
    delta = s.intended_update(copy.copy(ctx))
    # the intended update is one tensor per trainable parameter, shaped like it, nonzero, and
    # computing it leaves the weights alone
    assert list(delta) == [n for n, _ in ctx.trainable_parameters()]
    assert all(delta[n].shape == p.shape for n, p in ctx.trainable_parameters())
    assert sum(float(d.abs().sum()) for d in delta.values()) > 0
    assert all(torch.equal(p, before[n]) for n, p in ctx.trainable_parameters())
    s._rng = np.random.default_rng(0)
    fc = s.forgetting_confidence(ctx, s.intended_update(ctx))  # what after_step will compute
    expected_top = {s.self_samples[i].example_id for i in np.argsort(-fc, kind="stable")[:2]}
    s._rng = np.random.default_rng(0)
    s.after_step(ctx)
    assert len(s.rounds) == 1
    assert set(s.rounds[0]["unlearned"]) == expected_top
    assert s.rounds[0]["fc_max"] == pytest.approx(fc.max()) and s.rounds[0]["fc_mean"] == pytest.approx(fc.mean())
    chosen = [e for e in s.self_samples if e.example_id in s.rounds[0]["unlearned"]]
    assert len(chosen) == 2
    after = float(ctx.model(**ctx.collate(chosen)).loss)
    assert after > s.rounds[0]["nll_unlearned_before"]  # gradient ascent unlearned them
    assert s.rounds[0]["step"] == 2
    assert s.rounds[0]["fc_max"] >= s.rounds[0]["fc_mean"] > 0
    assert any(not torch.equal(p, before[n]) for n, p in ctx.trainable_parameters())  # the optimizer stepped


def test_intended_update_is_minus_lr_times_task_gradient(tiny):
    """Δθ_L = −lr · ∇L_task(θ) on an intent batch drawn from the strategy's own generator."""
    ctx = _ctx(tiny)
    s = LWFStrategy(n_self=2, gen_tokens=3, intent_batch=3)
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
    assert max(float(d.abs().max()) for d in delta.values()) > 0


def test_lwf_in_trainer(tiny):
    from forgetscope.config import TrainConfig
    from forgetscope.train import train_on_task

    ctx = _ctx(tiny)
    cfg = TrainConfig(method="lora", steps=4, batch_size=4, lr=1e-2, max_length=32)
    strategy = make_strategy("lwf", n_self=3, gen_tokens=4, interval=2)
    r = train_on_task(ctx.model, ctx.tokenizer, ctx.task, cfg, upstream=ctx.upstream, progress=False,
                      strategy=strategy)
    info = r.record["strategy_info"]
    assert info["unlearning_rounds"] == 2 and len(info["fc_mean_per_round"]) == 2
    # "every interval steps": after steps 2 and 4 (the code does not skip the last step)
    assert [rd["step"] for rd in strategy.rounds] == [2, 4]
    k = max(1, round(0.25 * info["n_self"]))  # default top_fraction 0.25
    assert [len(u) for u in info["unlearned_per_round"]] == [k, k]
    assert all(x > 0 for x in info["fc_mean_per_round"])
    # the upstream examples that seeded D_self are excluded, and only those
    upstream_ids = {e.example_id for e in ctx.upstream}
    assert r.excluded_upstream_ids == set(strategy.source_ids) <= upstream_ids
    assert len(r.excluded_upstream_ids) == info["n_self"] == len(strategy.self_samples)
    assert all(u.removeprefix("self:") in r.excluded_upstream_ids for rnd in info["unlearned_per_round"] for u in rnd)


@pytest.mark.parametrize("opts", [{"n_self": 0}, {"interval": 0}, {"top_fraction": 0}, {"top_fraction": 1.5},
                                  {"unlearn_weight": -1}, {"temperature": 0}, {"top_p": 0}])
def test_lwf_bad_options(opts):
    with pytest.raises(ConfigError, match="lwf"):
        make_strategy("lwf", **opts)


def test_lwf_needs_upstream(tiny):
    ctx = _ctx(tiny)
    ctx.upstream = []
    with pytest.raises(ConfigError, match="upstream"):
        LWFStrategy().before_training(ctx)
