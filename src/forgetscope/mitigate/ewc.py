"""Elastic weight consolidation (Kirkpatrick et al. 2017) against the base weights: the ``ewc`` strategy.

At setup, a diagonal Fisher F is estimated from ``n_fisher`` upstream examples at the base weights
(see :mod:`forgetscope.mitigate.fisher`); training then minimises ``L_task + λ/2 · D`` with the
Fisher-weighted squared drift ``D``:

* **full fine-tuning**: ``D = Σ F_θ ⊙ (θ − θ₀)²`` over the trainable parameters (the textbook form);
* **LoRA**: the anchored quantity is the *effective* update of each adapted weight,
  ``ΔW = scaling · B A`` (transposed where the layer stores W as fan-in × fan-out), and
  ``D = Σ_layers Σ F_W ⊙ (ΔW − ΔW₀)²``, where ``F_W`` is the diagonal Fisher of the base weight W
  itself, in W's coordinates (taken by differentiating the frozen W at the base, where ΔW₀ = 0 with
  the usual B₀ = 0). This is EWC on the model's weights restricted to the low-rank update, so it does
  not depend on how the update is split between the factors: ``B → B/c, A → cA`` leaves it unchanged.
  Anchoring A and B themselves would not bound ΔW (B can shrink while A grows) and, with B₀ = 0, the
  Fisher of A is 0 at the start. Trainable parameters outside the LoRA factors (if any) are anchored
  in their own coordinates as above.

**Scale and the default λ.** An LM's raw Fisher entries are tiny and their size depends on the
model, so by default (``normalize="mean"``) F is divided by its mean over all anchored entries: λ then
weighs an average entry's squared drift by ½. The default λ is calibrated so that the penalty is of
the order of the task loss: with ``lam: 0`` (plain training) a run reports ``weighted_drift`` = D at
its end, and λ = 2 · L_task / D makes ``λ/2 · D`` equal the task loss L_task there. On the tiny test
setting (the 2-layer model of :mod:`forgetscope.testing`, LoRA r = 8 on q/v, 10 steps of batch 4 at
lr 3e-3, the learning rate of ``configs/compare_demo.yaml``) that gives λ ≈ 10, the default (a test
keeps ``λ/2 · D`` within a factor of 10 of the task loss there). D sums over every anchored entry, so
it grows with the model; recalibrate λ the same way for another model or setting — ``summary()``
always reports ``weighted_drift`` and ``final_penalty``. ``normalize="none"`` gives the textbook
penalty with the raw Fisher.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, StrictInt

from forgetscope.data.encoding import Encoded
from forgetscope.errors import ConfigError
from forgetscope.mitigate.fisher import diagonal_fisher, trainable
from forgetscope.train.hooks import Strategy, StrategyOptions, StrictNumber, TrainContext, register_strategy

DEFAULT_LAMBDA = 10.0


def lora_layers(model) -> list[tuple[str, Any]]:
    """(name, module) of every LoRA-adapted linear layer (a base layer plus lora_A/lora_B factors)."""
    return [(n, m) for n, m in model.named_modules()
            if hasattr(m, "base_layer") and hasattr(m, "lora_A") and hasattr(m, "lora_B")
            and hasattr(getattr(m.base_layer, "weight", None), "shape")
            and any(a in m.lora_A for a in getattr(m, "active_adapters", []))]


def lora_delta(module) -> torch.Tensor:
    """ΔW = Σ_active scaling · B A of one LoRA layer, shaped like its base weight (differentiable)."""
    delta = None
    for a in module.active_adapters:
        if a not in module.lora_A:
            continue
        d = module.lora_B[a].weight @ module.lora_A[a].weight * module.scaling[a]
        delta = d if delta is None else delta + d
    w = module.base_layer.weight
    if getattr(module, "fan_in_fan_out", False):
        delta = delta.T
    return delta.to(w.dtype) if delta.shape == w.shape else delta.reshape(w.shape).to(w.dtype)


class EWCOptions(StrategyOptions):
    lam: StrictNumber = Field(DEFAULT_LAMBDA, ge=0, description="λ, the penalty weight")
    n_fisher: StrictInt = Field(32, ge=1, description="upstream examples for the Fisher estimate")
    normalize: Literal["mean", "none"] = Field("mean", description="divide F by its mean (comparable λ)")


@register_strategy("ewc")
class EWCStrategy(Strategy):
    """Options: ``lam`` (λ), ``n_fisher`` (upstream examples for F, default 32), ``normalize``
    (``mean`` default, or ``none``); see the module docstring."""

    name = "ewc"

    Options = EWCOptions

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.lam = float(self.options.lam)
        self.n_fisher = self.options.n_fisher
        self.normalize = self.options.normalize
        self.fisher: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}  # parameter-space anchors (full fine-tuning, extra params)
        self.layers: dict[str, Any] = {}  # Fisher key (base weight name) -> LoRA layer, anchored through ΔW
        self.delta_anchor: dict[str, torch.Tensor] = {}
        self._last_penalty = 0.0
        self._last_drift = 0.0
        self._fisher_ids: list[str] = []

    def before_training(self, ctx: TrainContext) -> None:
        if not ctx.upstream_encoded:
            raise ConfigError("ewc needs upstream examples for its Fisher (the sweep's upstream pool is empty)")
        fisher = self.estimate_fisher(ctx.model, ctx.upstream_encoded, ctx.pad_id, ctx.device, seed=ctx.config.seed)
        self.anchor_at(ctx.model, fisher)

    # The steps below take the model itself, so a training loop other than forgetscope's (a Hugging Face
    # Trainer, see forgetscope.integrations) anchors and penalises exactly as a run does.
    def estimate_fisher(self, model, upstream_encoded: Sequence[Encoded], pad_id: int,
                        device: torch.device | str | None = None, *, seed: int = 0) -> dict[str, torch.Tensor]:
        """The raw diagonal Fisher over :meth:`fisher_targets`, from ``n_fisher`` of the upstream examples,
        chosen with their own generator (``seed + 1``, ``seed`` the run's) so task batches stay as in plain runs."""
        n = min(self.n_fisher, len(upstream_encoded))
        rng = np.random.default_rng(seed + 1)
        idx = sorted(rng.choice(len(upstream_encoded), size=n, replace=False).tolist())
        chosen = [upstream_encoded[i] for i in idx]
        self._fisher_ids = [e.example_id for e in chosen]
        return diagonal_fisher(model, chosen, pad_id, device, params=self.fisher_targets(model))

    def fisher_targets(self, model) -> list[tuple[str, torch.Tensor]]:
        """(name, tensor) whose Fisher EWC weighs: each LoRA layer's base weight (named
        ``<layer>.base_layer.weight``; anchored through ΔW) and every other trainable parameter."""
        layers, params = self._anchored(model)
        return [(k, m.base_layer.weight) for k, m in layers.items()] + params

    def _anchored(self, model) -> tuple[dict[str, Any], list[tuple[str, torch.nn.Parameter]]]:
        layers = {f"{name}.base_layer.weight": m for name, m in lora_layers(model)}
        factor_ids = {id(p) for m in layers.values() for d in (m.lora_A, m.lora_B) for p in d.parameters()}
        return layers, [(n, p) for n, p in trainable(model) if id(p) not in factor_ids]

    def anchor_at(self, model, fisher: dict[str, torch.Tensor]) -> None:
        """Anchor at ``model``'s current weights with ``fisher`` (keys of :meth:`fisher_targets`),
        divided by its mean when ``normalize="mean"`` (so a Fisher normalised once is unchanged)."""
        self.layers, params = self._anchored(model)
        if self.normalize == "mean":
            total = sum(float(f.sum()) for f in fisher.values())
            count = sum(f.numel() for f in fisher.values())
            mean = total / max(count, 1)
            if mean > 0:
                fisher = {k: v / mean for k, v in fisher.items()}
        self.fisher = fisher
        self.anchor = {n: p.detach().clone() for n, p in params}
        with torch.no_grad():
            self.delta_anchor = {k: lora_delta(m).detach().clone() for k, m in self.layers.items()}

    def drift(self, model) -> torch.Tensor:
        """D = Σ F ⊙ (ΔW − ΔW₀)² over LoRA layers + Σ F ⊙ (θ − θ₀)² over other anchored parameters."""
        total = torch.zeros((), device=next(model.parameters()).device)
        for k, m in self.layers.items():
            f = self.fisher.get(k)
            if f is not None:
                total = total + (f * (lora_delta(m) - self.delta_anchor[k]).float() ** 2).sum()
        for n, p in trainable(model):
            f = self.fisher.get(n)
            if f is not None and n in self.anchor:
                total = total + (f * (p - self.anchor[n]).float() ** 2).sum()
        return total

    def add_penalty(self, task_loss: torch.Tensor, model) -> torch.Tensor:
        """``task_loss + λ/2 · D`` at ``model``'s weights; D and the penalty are kept for ``summary()``."""
        drift = self.drift(model)
        pen = 0.5 * self.lam * drift
        self._last_drift = float(drift.detach())
        self._last_penalty = float(pen.detach())
        return task_loss + pen

    def record_final(self, model) -> None:
        """Record D and the penalty at the final weights (the last loss saw them before the last step)."""
        with torch.no_grad():
            drift = float(self.drift(model))
        self._last_drift, self._last_penalty = drift, 0.5 * self.lam * drift

    def weighted_drift(self, ctx: TrainContext) -> torch.Tensor:
        """D at the run's model (:meth:`drift`)."""
        return self.drift(ctx.model)

    def penalty(self, ctx: TrainContext) -> torch.Tensor:
        """λ/2 · D (0 at the base weights)."""
        return 0.5 * self.lam * self.weighted_drift(ctx)

    def loss(self, ctx: TrainContext, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.add_penalty(ctx.forward_loss(batch), ctx.model)

    def after_training(self, ctx: TrainContext) -> None:
        self.record_final(ctx.model)

    def summary(self) -> dict[str, Any]:
        return {"lam": self.lam, "n_fisher": len(self._fisher_ids), "normalize": self.normalize,
                "space": "lora_delta" if self.layers else "parameters", "anchored_lora_layers": len(self.layers),
                "final_penalty": self._last_penalty, "weighted_drift": self._last_drift,
                "upstream_evaluations": len(self._fisher_ids)}
