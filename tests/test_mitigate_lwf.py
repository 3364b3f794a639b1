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
    delta = s.intended_update(copy.copy(ctx))
    s._rng = np.random.default_rng(0)
    s.after_step(ctx)
    assert len(s.rounds) == 1
    chosen = [e for e in s.self_samples if e.example_id in s.rounds[0]["unlearned"]]
    assert len(chosen) == 2
    after = float(ctx.model(**ctx.collate(chosen)).loss)
    assert after > s.rounds[0]["nll_unlearned_before"]  # gradient ascent unlearned them
    assert delta  # intended update was computable


def test_lwf_in_trainer(tiny):
    from forgetscope.config import TrainConfig
    from forgetscope.train import train_on_task

    ctx = _ctx(tiny)
    cfg = TrainConfig(method="lora", steps=4, batch_size=4, lr=1e-2, max_length=32)
    r = train_on_task(ctx.model, ctx.tokenizer, ctx.task, cfg, upstream=ctx.upstream, progress=False,
                      strategy=make_strategy("lwf", n_self=3, gen_tokens=4, interval=2))
    info = r.record["strategy_info"]
    assert info["unlearning_rounds"] == 2 and len(info["fc_mean_per_round"]) == 2
    assert r.excluded_upstream_ids


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
