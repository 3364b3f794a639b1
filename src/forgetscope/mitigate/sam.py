"""Sharpness-aware minimisation (Foret et al. 2021) as an optimizer wrapper, and the ``sam`` strategy.

SAM minimises ``max_{||ε|| ≤ ρ} L(θ + ε)``: each step takes the gradient g at θ, moves to the
(first-order) worst point ``θ + ρ g/||g||``, takes the gradient there, returns to θ and lets the base
optimizer step with that second gradient. ASAM (Kwon et al. 2021, ``adaptive=True``) scales the
ascent by ``|θ|`` elementwise, making ρ invariant to parameter rescaling (use a larger ρ, e.g. 0.5-2).

Why our own ~60 lines rather than a package: the maintained implementation on PyPI
(``pytorch-optimizer``'s ``SAM``) builds its base optimizer from a class and would add a dependency
for one small algorithm, while our trainer builds the optimizer through a strategy hook and needs the
two half-steps separately (the second forward/backward is the trainer's loss hook). This wrapper
takes any first-order ``torch.optim.Optimizer`` *instance* (AdamW, Adam, SGD, ...), shares its
``param_groups`` (so LR schedulers work unchanged), and works for full fine-tuning and LoRA alike on
CPU or CUDA (it only touches parameters that have gradients). Optimizers that need a closure to
re-evaluate the loss themselves (LBFGS) cannot be wrapped and are refused.
"""

from __future__ import annotations

from typing import Annotated, Any

import torch
from pydantic import Field

from forgetscope.errors import ConfigError
from forgetscope.train.hooks import (
    Batch,
    Strategy,
    StrategyOptions,
    StrictNumber,
    TrainContext,
    clip_gradients,
    one_of,
    register_strategy,
)

_UNWRAPPABLE = (torch.optim.LBFGS,)


class SAM(torch.optim.Optimizer):
    """Wraps a base optimizer: ``first_step()`` perturbs to θ+ε, ``second_step()`` restores θ and steps.

    ``step(closure)`` does both, with ``closure`` re-computing the loss and gradients at the
    perturbed point (``closure`` must call ``backward``).
    """

    def __init__(self, base_optimizer: torch.optim.Optimizer, rho: float = 0.05, adaptive: bool = False,
                 eps: float = 1e-12):
        if not isinstance(base_optimizer, torch.optim.Optimizer):
            raise ConfigError(f"SAM wraps a torch.optim.Optimizer instance, got {type(base_optimizer).__name__}")
        if isinstance(base_optimizer, SAM):
            raise ConfigError("SAM cannot wrap another SAM optimizer")
        if isinstance(base_optimizer, _UNWRAPPABLE):
            raise ConfigError(f"SAM cannot wrap {type(base_optimizer).__name__}: it re-evaluates the loss "
                              "itself (closure-based); use a first-order optimizer such as AdamW or SGD")
        if not (isinstance(rho, (int, float)) and rho > 0):
            raise ConfigError(f"sam: rho must be a positive number, got {rho!r}")
        self.base_optimizer = base_optimizer
        self.rho = float(rho)
        self.adaptive = bool(adaptive)
        self.eps = eps
        # share state with the base optimizer: schedulers and zero_grad act on the same groups
        super().__init__(base_optimizer.param_groups, dict(base_optimizer.defaults))
        self.param_groups = base_optimizer.param_groups
        self._backup: dict[torch.nn.Parameter, torch.Tensor] = {}

    def _params_with_grad(self) -> list[torch.nn.Parameter]:
        return [p for g in self.param_groups for p in g["params"] if p.grad is not None]

    def _grad_norm(self) -> torch.Tensor:
        params = self._params_with_grad()
        if not params:
            return torch.tensor(0.0)
        dev = params[0].device
        norms = [((p.abs() if self.adaptive else 1.0) * p.grad).norm(2).to(dev) for p in params]
        return torch.norm(torch.stack(norms), 2)

    @torch.no_grad()
    def first_step(self, zero_grad: bool = True) -> None:
        """Move every parameter to the worst point θ + ε, ε = ρ·(T²)g/||T g|| (T = |θ| if adaptive else 1)."""
        scale = self.rho / (self._grad_norm() + self.eps)
        self._backup = {}
        for p in self._params_with_grad():
            self._backup[p] = p.detach().clone()
            e = (p.pow(2) if self.adaptive else 1.0) * p.grad * scale.to(p.device)
            p.add_(e)
        if zero_grad:
            self.zero_grad(set_to_none=True)

    @torch.no_grad()
    def restore(self) -> None:
        """Move every perturbed parameter back to θ; the gradients (taken at θ + ε) stay for the step."""
        for p, old in self._backup.items():
            p.data.copy_(old)
        self._backup = {}

    @torch.no_grad()
    def second_step(self, zero_grad: bool = True) -> None:
        """Restore θ and step the base optimizer with the gradient taken at θ + ε."""
        self.restore()
        self.base_optimizer.step()
        self._opt_called = True  # tell LR schedulers an optimizer step happened (they watch .step)
        if zero_grad:
            self.zero_grad(set_to_none=True)

    def step(self, closure=None):  # type: ignore[override]
        if closure is None:
            raise ConfigError("SAM.step needs a closure that recomputes loss and gradients; "
                              "or call first_step()/second_step() yourself")
        self.first_step(zero_grad=True)
        with torch.enable_grad():
            loss = closure()
        self.second_step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:  # type: ignore[override]
        self.base_optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        return self.base_optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # type: ignore[override]
        self.base_optimizer.load_state_dict(state_dict)


BASE_OPTIMIZERS = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}


def make_base_optimizer(name: str, params: list[torch.nn.Parameter], *, lr: float,
                        weight_decay: float) -> torch.optim.Optimizer:
    """The optimizer SAM wraps (``base``: adamw, adam or sgd), with the run's lr and weight decay on
    every parameter: one place, so another training loop builds it as the ``sam`` strategy does."""
    return BASE_OPTIMIZERS[name](params, lr=lr, weight_decay=weight_decay)


class SAMOptions(StrategyOptions):
    rho: StrictNumber = Field(0.05, gt=0, description="radius of the ascent step")
    adaptive: bool = Field(False, description="ASAM: scale the step by |θ|")
    base: Annotated[str, one_of(BASE_OPTIMIZERS, "cannot wrap optimizer")] = Field(
        "adamw", description="the wrapped optimizer: adamw, adam or sgd")


@register_strategy("sam")
class SAMStrategy(Strategy):
    """Fine-tune with SAM: two forward/backward passes per step, the update uses the perturbed gradient.

    Options: ``rho`` (radius, default 0.05), ``adaptive`` (ASAM, default False), ``base``
    (``adamw`` default, ``adam`` or ``sgd``; the trainer's lr and weight decay apply).
    """

    name = "sam"

    Options = SAMOptions

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.rho = float(self.options.rho)
        self.adaptive = self.options.adaptive
        self.base = self.options.base
        self.n_steps = 0

    def build_optimizer(self, ctx: TrainContext, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        base = make_base_optimizer(self.base, params, lr=ctx.config.lr, weight_decay=ctx.config.weight_decay)
        return SAM(base, rho=self.rho, adaptive=self.adaptive)

    def training_step(self, ctx: TrainContext, batch: Batch) -> float:
        opt = ctx.optimizer
        if not isinstance(opt, SAM):
            raise ConfigError("the sam strategy needs its SAM optimizer (build_optimizer was bypassed)")
        loss = self.backward(ctx, batch)  # over every micro-batch, so ε follows the whole batch's gradient
        opt.first_step(zero_grad=True)  # θ -> θ + ε
        self.backward(ctx, batch)  # gradient at the perturbed point
        clip_gradients(ctx)
        opt.second_step(zero_grad=True)  # back to θ, base step with that gradient
        self.n_steps += 1
        return loss

    def summary(self) -> dict[str, Any]:
        return {"rho": self.rho, "adaptive": self.adaptive, "base": self.base, "sam_steps": self.n_steps}
