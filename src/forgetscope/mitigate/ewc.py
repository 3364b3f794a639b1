"""Elastic weight consolidation (Kirkpatrick et al. 2017) against the base weights: the ``ewc`` strategy.

At setup, a diagonal Fisher F is estimated from ``n_fisher`` upstream examples at the base weights θ₀
(see :mod:`forgetscope.mitigate.fisher`); training then minimises ``L_task(θ) + λ/2 Σ F (θ − θ₀)²``.

Scale: an LM's raw Fisher entries are tiny and their size depends on the model, so by default
(``normalize="mean"``) F is divided by its mean over all trainable entries, which makes λ comparable
across models (λ = 1 then weighs an average parameter's squared drift by ½). ``normalize="none"``
gives the textbook penalty with the raw Fisher.

With LoRA the penalty applies to the adapter parameters (θ₀ = their initial values, so B₀ = 0); at
the start B = 0 gives A zero gradient, hence zero Fisher, so only B is anchored. This is EWC in the
adapter's coordinates, which bounds the low-rank update through B.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, StrictInt

from forgetscope.errors import ConfigError
from forgetscope.mitigate.fisher import diagonal_fisher
from forgetscope.train.hooks import Strategy, StrategyOptions, StrictNumber, TrainContext, register_strategy


class EWCOptions(StrategyOptions):
    lam: StrictNumber = Field(100.0, ge=0, description="λ, the penalty weight")
    n_fisher: StrictInt = Field(32, ge=1, description="upstream examples for the Fisher estimate")
    normalize: Literal["mean", "none"] = Field("mean", description="divide F by its mean (comparable λ)")


@register_strategy("ewc")
class EWCStrategy(Strategy):
    """Options: ``lam`` (λ, default 100), ``n_fisher`` (upstream examples for F, default 32),
    ``normalize`` (``mean`` default, or ``none``)."""

    name = "ewc"

    Options = EWCOptions

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.lam = float(self.options.lam)
        self.n_fisher = self.options.n_fisher
        self.normalize = self.options.normalize
        self.fisher: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}
        self._last_penalty = 0.0
        self._fisher_ids: list[str] = []

    def before_training(self, ctx: TrainContext) -> None:
        if not ctx.upstream_encoded:
            raise ConfigError("ewc needs upstream examples for its Fisher (the sweep's upstream pool is empty)")
        n = min(self.n_fisher, len(ctx.upstream_encoded))
        rng = np.random.default_rng(ctx.config.seed + 1)  # own generator: task batches stay as in plain runs
        idx = sorted(rng.choice(len(ctx.upstream_encoded), size=n, replace=False).tolist())
        chosen = [ctx.upstream_encoded[i] for i in idx]
        self._fisher_ids = [e.example_id for e in chosen]
        fisher = diagonal_fisher(ctx.model, chosen, ctx.pad_id, ctx.device)
        if self.normalize == "mean":
            total = sum(float(f.sum()) for f in fisher.values())
            count = sum(f.numel() for f in fisher.values())
            mean = total / max(count, 1)
            if mean > 0:
                fisher = {k: v / mean for k, v in fisher.items()}
        self.fisher = fisher
        self.anchor = {n: p.detach().clone() for n, p in ctx.trainable_parameters()}

    def penalty(self, ctx: TrainContext) -> torch.Tensor:
        """λ/2 Σ F (θ − θ₀)² over the trainable parameters (0 at θ₀)."""
        total = None
        for n, p in ctx.trainable_parameters():
            f = self.fisher.get(n)
            if f is None:
                continue
            term = (f * (p - self.anchor[n]) ** 2).sum()
            total = term if total is None else total + term
        if total is None:
            return torch.zeros((), device=ctx.device)
        return 0.5 * self.lam * total

    def loss(self, ctx: TrainContext, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        task = ctx.forward_loss(batch)
        pen = self.penalty(ctx)
        self._last_penalty = float(pen.detach())
        return task + pen

    def summary(self) -> dict[str, Any]:
        return {"lam": self.lam, "n_fisher": len(self._fisher_ids), "normalize": self.normalize,
                "final_penalty": self._last_penalty, "upstream_evaluations": len(self._fisher_ids)}
