"""SAM: the update uses the gradient taken at the perturbed point θ + ρ g/||g||; wrapping rules."""

from __future__ import annotations

import copy

import pytest
import torch

from forgetscope.errors import ConfigError
from forgetscope.mitigate.sam import SAM
from forgetscope.train import make_strategy


def _f(w):
    return (w ** 4).sum() / 4 + (w[0] * w[1])


def _grad(w):
    w = w.detach().clone().requires_grad_(True)
    _f(w).backward()
    return w.grad.detach()


@pytest.mark.parametrize("adaptive", [False, True])
def test_sam_step_uses_gradient_at_perturbed_point(adaptive):
    w0 = torch.tensor([0.7, -1.2, 0.3])
    w = torch.nn.Parameter(w0.clone())
    rho, lr = 0.1, 0.5
    opt = SAM(torch.optim.SGD([w], lr=lr), rho=rho, adaptive=adaptive)
    _f(w).backward()
    opt.first_step()
    g = _grad(w0)
    if adaptive:
        e = rho * w0 ** 2 * g / torch.norm(w0.abs() * g)
    else:
        e = rho * g / g.norm()
    assert torch.allclose(w.detach(), w0 + e, atol=1e-6)  # at the perturbed point now
    if not adaptive:  # ‖ε‖ = ρ, along the normalised gradient
        assert float((w.detach() - w0).norm()) == pytest.approx(rho, rel=1e-5)
        assert torch.allclose((w.detach() - w0) / rho, g / g.norm(), atol=1e-6)
    else:  # ASAM: ‖T⁻¹ε‖ = ρ with T = |θ|
        assert float(((w.detach() - w0) / w0.abs()).norm()) == pytest.approx(rho, rel=1e-5)
    assert w.grad is None  # first_step zeroes the gradient for the second pass
    seen = {}

    def at_base_step(optimizer, args, kwargs):  # what the base optimizer sees when it steps
        seen["w"], seen["grad"] = w.detach().clone(), w.grad.detach().clone()

    handle = opt.base_optimizer.register_step_pre_hook(at_base_step)
    _f(w).backward()
    opt.second_step()
    handle.remove()
    assert torch.allclose(seen["w"], w0, atol=1e-7)  # θ restored before the update
    assert torch.allclose(seen["grad"], _grad(w0 + e), atol=1e-6)  # with the perturbed-point gradient
    assert w.grad is None
    expected = w0 - lr * _grad(w0 + e)
    assert torch.allclose(w.detach(), expected, atol=1e-6)
    assert not torch.allclose(w.detach(), w0 - lr * g, atol=1e-4)  # differs from a plain SGD step


def test_sam_closure_step_and_scheduler_share_groups():
    """step(closure) == first_step + closure at θ+ε + second_step, at the lr the scheduler set."""
    rho = 0.05
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0, -0.5]))
    frozen = torch.nn.Parameter(torch.tensor([3.0]))  # no gradient: never perturbed, never stepped
    opt = SAM(torch.optim.SGD([w, frozen], lr=0.1), rho=rho)
    assert opt.param_groups is opt.base_optimizer.param_groups
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 / (s + 1))
    assert opt.base_optimizer.param_groups[0]["lr"] == pytest.approx(0.05)
    points = []

    def closure():
        points.append(w.detach().clone())
        opt.zero_grad()
        loss = _f(w)
        loss.backward()
        return loss

    def expected_after(w_start, lr):
        g = _grad(w_start)
        return w_start - lr * _grad(w_start + rho * g / g.norm()), w_start + rho * g / g.norm()

    for k in range(2):  # the scheduler sets lr = 0.1 · 0.5/(k+1) on the shared groups before step k
        lr = 0.1 * 0.5 / (k + 1)
        assert opt.base_optimizer.param_groups[0]["lr"] == pytest.approx(lr)
        w_start = w.detach().clone()
        closure()  # gradient at θ
        points.clear()
        loss = opt.step(closure)
        want, perturbed = expected_after(w_start, lr)
        assert len(points) == 1 and torch.allclose(points[0], perturbed, atol=1e-6)  # closure ran at θ+ε
        assert float(loss.detach()) == pytest.approx(float(_f(perturbed)), rel=1e-5)  # step returns the closure's loss
        assert torch.allclose(w.detach(), want, atol=1e-6)
        assert torch.equal(frozen.detach(), torch.tensor([3.0]))
        sched.step()
    with pytest.raises(ConfigError, match="closure"):
        opt.step()


def test_sam_refuses_what_it_cannot_wrap():
    w = torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(ConfigError, match="LBFGS"):
        SAM(torch.optim.LBFGS([w]))
    with pytest.raises(ConfigError, match="Optimizer"):
        SAM("adamw")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="rho"):
        SAM(torch.optim.SGD([w], lr=0.1), rho=0)
    with pytest.raises(ConfigError, match="cannot wrap"):
        make_strategy("sam", base="lbfgs")
    with pytest.raises(ConfigError, match="rho"):
        make_strategy("sam", rho=-1)
    with pytest.raises(ConfigError, match="unknown strategy"):
        make_strategy("sharpness")


def test_sam_strategy_step_matches_manual_two_pass(tiny):
    """One trainer step with the sam strategy == θ − lr · ∇L(θ + ρ g/||g||) (SGD base, no clipping)."""
    from forgetscope.config import TrainConfig
    from forgetscope.data.encoding import collate, encode_examples
    from forgetscope.data.types import Example, Task
    from forgetscope.train import train_on_task

    model, tok = tiny
    train = [Example(f"t{i}", text=f"def f{i}(x): return x + {i}") for i in range(4)]
    task = Task("t", train, [Example("h", text="def g(y): return y")])
    cfg = TrainConfig(method="full", steps=1, batch_size=4, lr=0.05, grad_clip=None, max_length=32)
    ref = copy.deepcopy(model)
    rho = 0.05
    result = train_on_task(copy.deepcopy(model), tok, task, cfg, strategy=make_strategy("sam", rho=rho, base="sgd"),
                           progress=False)
    # manual: same batch (all 4 examples; order does not change the mean loss)
    batch = collate(encode_examples(tok, train, 32), tok.pad_token_id)
    params = [p for p in ref.parameters()]
    ref.train()
    g = torch.autograd.grad(ref(**batch).loss, params)
    norm = torch.norm(torch.stack([x.norm() for x in g]))
    with torch.no_grad():
        for p, gi in zip(params, g):
            p.add_(rho * gi / norm)
    g2 = torch.autograd.grad(ref(**batch).loss, params)
    with torch.no_grad():
        for p, gi, g2i in zip(params, g, g2):
            p.sub_(rho * gi / norm).sub_(cfg.lr * g2i)
    for (n, a), b in zip(result.model.named_parameters(), ref.parameters()):
        assert torch.allclose(a, b, atol=1e-5), n
    assert result.record["strategy_info"]["sam_steps"] == 1


@pytest.mark.parametrize("method", ["full", "lora"])
def test_sam_strategy_trains_full_and_lora(tiny, method):
    from forgetscope.config import TrainConfig
    from forgetscope.data.types import Example, Task
    from forgetscope.train import train_on_task

    model, tok = tiny
    task = Task("t", [Example(f"t{i}", text=f"x = {i} * {i}") for i in range(6)], [Example("h", text="y = 3 * 3")])
    cfg = TrainConfig(method=method, steps=3, batch_size=3, lr=1e-2, max_length=32)
    r = train_on_task(copy.deepcopy(model), tok, task, cfg, strategy=make_strategy("sam", rho=0.1, adaptive=True),
                      progress=False)
    assert r.record["strategy"] == "sam" and r.record["task_loss_after"] < r.record["task_loss_before"]
    assert r.record["strategy_info"] == {"rho": 0.1, "adaptive": True, "base": "adamw", "sam_steps": 3}
