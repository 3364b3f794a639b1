"""EWC: diagonal Fisher = mean squared per-example gradient; penalty 0 at θ₀, quadratic in the distance."""

from __future__ import annotations

import copy

import pytest
import torch

from forgetscope.errors import ConfigError
from forgetscope.mitigate.ewc import DEFAULT_LAMBDA, EWCStrategy
from forgetscope.mitigate.fisher import diagonal_fisher
from forgetscope.train import make_strategy


def _ctx(tiny, method="full"):
    from forgetscope.config import TrainConfig
    from forgetscope.data.encoding import encode_examples
    from forgetscope.data.types import Example, Task
    from forgetscope.models import prepare_for_training
    from forgetscope.train import TrainContext

    model, tok = tiny
    model = prepare_for_training(copy.deepcopy(model), method)
    up = [Example(f"u{i}", text=t) for i, t in enumerate(["The fox jumps.", "God created the earth.",
                                                           "def add(a, b): return a + b", "Call me Ishmael."])]
    task = Task("t", [Example("t0", text="x = 1")], [Example("h", text="y = 2")])
    cfg = TrainConfig(method=method, max_length=32)
    return TrainContext(model=model, tokenizer=tok, task=task, config=cfg, device=torch.device("cpu"),
                        pad_id=tok.pad_token_id, train_encoded=encode_examples(tok, task.train, 32),
                        upstream=up, upstream_encoded=encode_examples(tok, up, 32))


def test_fisher_is_mean_squared_example_gradient(tiny):
    ctx = _ctx(tiny)
    F = diagonal_fisher(ctx.model, ctx.upstream_encoded[:2], ctx.pad_id)
    from forgetscope.data.encoding import collate

    params = [p for _, p in ctx.trainable_parameters()]
    sq = None
    for e in ctx.upstream_encoded[:2]:
        g = torch.autograd.grad(ctx.model(**collate([e], ctx.pad_id)).loss, params)
        s = [x ** 2 for x in g]
        sq = s if sq is None else [a + b for a, b in zip(sq, s)]
    for (n, _), s in zip(ctx.trainable_parameters(), sq):
        assert torch.allclose(F[n], s / 2, atol=1e-8), n
    assert all((f >= 0).all() for f in F.values())


def test_penalty_zero_at_anchor_and_quadratic(tiny):
    ctx = _ctx(tiny, "full")
    s = EWCStrategy(lam=3.0, n_fisher=4)
    s.before_training(ctx)
    assert s.penalty(ctx).item() == 0.0 and s.summary()["space"] == "parameters"
    direction = {n: torch.randn_like(p) for n, p in ctx.trainable_parameters()}
    values = []
    for scale in (0.01, 0.02, 0.04):
        with torch.no_grad():
            for n, p in ctx.trainable_parameters():
                p.copy_(s.anchor[n] + scale * direction[n])
        values.append(s.penalty(ctx).item())
    assert 0 < values[0] < values[1] < values[2]
    assert values[1] / values[0] == pytest.approx(4, rel=1e-3) and values[2] / values[1] == pytest.approx(4, rel=1e-3)
    # penalty = λ/2 Σ F (θ − θ0)² exactly
    manual = sum(float((s.fisher[n] * (p.detach() - s.anchor[n]) ** 2).sum()) for n, p in ctx.trainable_parameters())
    assert values[2] == pytest.approx(1.5 * manual, rel=1e-5)
    # the training loss includes it
    batch = ctx.collate(ctx.train_encoded)
    assert float(s.loss(ctx, batch).detach()) == pytest.approx(float(ctx.model(**batch).loss.detach()) + values[2], rel=1e-5)


def _lora_layers(ctx):
    from forgetscope.mitigate.ewc import lora_layers

    return lora_layers(ctx.model)


def test_lora_fisher_is_the_base_weight_fisher(tiny):
    """With LoRA the Fisher is taken in the coordinates of each adapted base weight W, at the base."""
    from forgetscope.models import prepare_for_training

    ctx = _ctx(tiny, "lora")
    s = EWCStrategy(lam=1.0, n_fisher=4, normalize="none")
    s.before_training(ctx)
    layers = _lora_layers(ctx)
    assert layers and set(s.fisher) == {f"{n}.base_layer.weight" for n, _ in layers}
    assert s.anchor == {}  # the factors A and B are not anchored in their own coordinates
    # the same Fisher as full fine-tuning's for those weights: LoRA starts at B = 0, i.e. at the base model
    model, _ = tiny
    full = prepare_for_training(copy.deepcopy(model), "full")
    F_full = diagonal_fisher(full, ctx.upstream_encoded, ctx.pad_id)
    for name, _ in layers:
        plain_name = name.removeprefix("base_model.model.") + ".weight"
        assert torch.allclose(s.fisher[f"{name}.base_layer.weight"], F_full[plain_name], rtol=1e-4, atol=1e-12)
    assert all(not m.base_layer.weight.requires_grad for _, m in layers)  # frozen again afterwards


def test_lora_penalty_anchors_the_effective_update_and_is_invariant_to_factor_scaling(tiny):
    from forgetscope.mitigate.ewc import lora_delta

    ctx = _ctx(tiny, "lora")
    s = EWCStrategy(lam=2.0, n_fisher=4)
    s.before_training(ctx)
    assert s.penalty(ctx).item() == 0.0  # B = 0 at the start: ΔW = 0
    layers = _lora_layers(ctx)
    torch.manual_seed(0)
    with torch.no_grad():
        for _, m in layers:
            m.lora_B["default"].weight.normal_(std=0.05)
    pen = s.penalty(ctx).item()
    # λ/2 Σ F_W (scaling · B A)², by hand
    manual = 0.0
    for name, m in layers:
        d = m.scaling["default"] * m.lora_B["default"].weight @ m.lora_A["default"].weight
        assert torch.allclose(lora_delta(m), d)
        manual += float((s.fisher[f"{name}.base_layer.weight"] * d.detach() ** 2).sum())
    assert pen > 0 and pen == pytest.approx(1.0 * manual, rel=1e-5)
    # B -> B / c, A -> c A leaves ΔW = BA, hence the penalty, unchanged
    for c in (10.0, 0.1):
        with torch.no_grad():
            for _, m in layers:
                m.lora_B["default"].weight.div_(c)
                m.lora_A["default"].weight.mul_(c)
        assert s.penalty(ctx).item() == pytest.approx(pen, rel=1e-4)
        with torch.no_grad():
            for _, m in layers:
                m.lora_B["default"].weight.mul_(c)
                m.lora_A["default"].weight.div_(c)
    # ... while shrinking B alone shrinks it quadratically
    with torch.no_grad():
        for _, m in layers:
            m.lora_B["default"].weight.mul_(0.5)
    assert s.penalty(ctx).item() == pytest.approx(pen / 4, rel=1e-4)
    # the penalty's gradient reaches both factors
    s.penalty(ctx).backward()
    assert all(m.lora_A["default"].weight.grad is not None and m.lora_A["default"].weight.grad.abs().sum() > 0
               for _, m in layers)
    assert s.summary()["space"] == "lora_delta" and s.summary()["anchored_lora_layers"] == len(layers)


def test_ewc_keeps_weights_closer_to_base(tiny):
    from forgetscope.config import TrainConfig
    from forgetscope.data.types import Example, Task
    from forgetscope.train import train_on_task

    model, tok = tiny
    up = [Example(f"u{i}", text=f"The quick brown fox number {i} jumps.") for i in range(6)]
    task = Task("t", [Example(f"t{i}", text=f"def f{i}(x): return x * {i}") for i in range(8)],
                [Example("h", text="def g(y): return y")])
    cfg = TrainConfig(method="full", steps=5, batch_size=4, lr=1e-2, max_length=32)
    base = dict(model.named_parameters())

    def drift(strategy):
        r = train_on_task(copy.deepcopy(model), tok, task, cfg, strategy=strategy, upstream=up, progress=False)
        return sum(float((p.detach() - base[n].detach()).pow(2).sum()) for n, p in r.model.named_parameters())

    assert drift(make_strategy("ewc", lam=1e4, n_fisher=6)) < drift(make_strategy("plain"))


def test_ewc_bad_options_and_no_upstream(tiny):
    with pytest.raises(ConfigError, match="lam"):
        make_strategy("ewc", lam=-1)
    with pytest.raises(ConfigError, match="n_fisher"):
        make_strategy("ewc", n_fisher=0)
    with pytest.raises(ConfigError, match="normalize"):
        make_strategy("ewc", normalize="max")
    ctx = _ctx(tiny)
    ctx.upstream_encoded = []
    with pytest.raises(ConfigError, match="upstream"):
        EWCStrategy().before_training(ctx)
    # the documented defaults still build a working strategy: lam=DEFAULT_LAMBDA, n_fisher=32, normalize="mean"
    default = make_strategy("ewc")
    assert isinstance(default, EWCStrategy)
    big = _ctx(tiny)
    big.upstream_encoded = big.upstream_encoded * 10  # 40 examples: more than the default n_fisher
    default.before_training(big)
    info = default.summary()
    assert info["lam"] == DEFAULT_LAMBDA and info["normalize"] == "mean"
    assert info["n_fisher"] == 32 and info["upstream_evaluations"] == 32
    assert set(default.fisher) == {n for n, _ in big.trainable_parameters()}
    # boundary values are valid, not errors
    make_strategy("ewc", lam=0, n_fisher=1, normalize="none")


def test_penalty_matches_hand_computation():
    """λ/2 Σ F (θ − θ₀)² on a 3-parameter case worked out by hand; frozen parameters are ignored."""
    from forgetscope.train import TrainContext

    lin = torch.nn.Linear(2, 1)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, -2.0]]))
        lin.bias.copy_(torch.tensor([0.5]))
    ctx = TrainContext(model=lin, tokenizer=None, task=None, config=None, device=torch.device("cpu"),
                       pad_id=0, train_encoded=[])
    s = EWCStrategy(lam=3.0)
    s.fisher = {"weight": torch.tensor([[2.0, 0.5]]), "bias": torch.tensor([4.0])}
    s.anchor = {"weight": torch.tensor([[0.0, -1.0]]), "bias": torch.tensor([0.0])}
    # θ − θ₀ = (1, −1, 0.5): 3/2 · (2·1 + 0.5·1 + 4·0.25) = 1.5 · 3.5 = 5.25
    pen = s.penalty(ctx)
    assert float(pen.detach()) == pytest.approx(5.25, abs=1e-6)
    pen.backward()  # ∂/∂θ = λ F (θ − θ₀)
    assert torch.allclose(lin.weight.grad, torch.tensor([[6.0, -1.5]]))
    assert torch.allclose(lin.bias.grad, torch.tensor([6.0]))
    lin.bias.requires_grad_(False)  # only trainable parameters are penalised
    assert s.penalty(ctx).item() == pytest.approx(1.5 * 2.5, abs=1e-6)
    s.lam = 0.0
    assert s.penalty(ctx).item() == 0.0


@pytest.mark.parametrize("normalize", ["none", "mean"])
def test_fisher_normalisation(tiny, normalize):
    """normalize='none' keeps the raw Fisher of the chosen examples; 'mean' divides it by its mean (→ mean 1)."""
    ctx = _ctx(tiny)
    s = EWCStrategy(lam=1.0, n_fisher=len(ctx.upstream_encoded), normalize=normalize)
    s.before_training(ctx)
    raw = diagonal_fisher(ctx.model, ctx.upstream_encoded, ctx.pad_id)  # n_fisher = pool: every example
    total = sum(float(f.sum()) for f in raw.values())
    count = sum(f.numel() for f in raw.values())
    scale = total / count if normalize == "mean" else 1.0
    assert set(s.fisher) == set(raw)
    for n, f in raw.items():
        assert torch.allclose(s.fisher[n], f / scale, rtol=1e-5, atol=1e-12), n
    if normalize == "mean":
        mean = sum(float(f.sum()) for f in s.fisher.values()) / count
        assert mean == pytest.approx(1.0, rel=1e-5)
    # the anchor is θ₀: a detached copy, not the live parameter
    for n, p in ctx.trainable_parameters():
        assert torch.equal(s.anchor[n], p.detach()) and s.anchor[n].data_ptr() != p.data_ptr()


def test_default_lambda_makes_the_penalty_of_the_order_of_the_task_loss(tiny):
    """The calibration behind DEFAULT_LAMBDA: at the end of an unpenalised run (lam = 0) in the tiny
    setting (LoRA r = 8, 10 steps of batch 4 at lr 3e-3), λ/2 · D is within a factor 10 of the task loss."""
    from forgetscope.config import TrainConfig
    from forgetscope.data.types import Example, Task
    from forgetscope.train import train_on_task

    model, tok = tiny
    from conftest import TEXTS

    up = [Example(f"u{i}", text=t) for i, t in enumerate(TEXTS)]
    task = Task("code", [Example(f"t{i}", text=f"def f{i}(x):\n    return x * {i} + {i % 3}") for i in range(12)],
                [Example(f"h{i}", text=f"def g{i}(y): return y - {i}") for i in range(3)])
    cfg = TrainConfig(method="lora", steps=10, batch_size=4, lr=3e-3, max_length=32)
    s = make_strategy("ewc", lam=0.0, n_fisher=12)
    r = train_on_task(copy.deepcopy(model), tok, task, cfg, strategy=s, upstream=up, progress=False)
    info = r.record["strategy_info"]
    assert info["final_penalty"] == 0.0 and info["weighted_drift"] > 0
    ratio = 0.5 * DEFAULT_LAMBDA * info["weighted_drift"] / r.record["train_loss_last"]
    assert 0.1 < ratio < 10
