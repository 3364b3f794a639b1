"""The plug-in points of the one training loop.

A :class:`Strategy` changes fine-tuning without copying the loop: it may add examples to each batch
(replay), add a term to the loss (EWC), replace the optimizer step (SAM's two passes), or act between
steps (LWF's periodic unlearning). The plain strategy is ordinary fine-tuning. Strategies register by
name with :func:`register_strategy` so configs and the CLI can name them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from forgetscope.data.encoding import Encoded, collate
from forgetscope.data.types import Example, Task
from forgetscope.errors import ConfigError


@dataclass
class TrainContext:
    """Everything a strategy may look at or use during one run."""

    model: Any
    tokenizer: Any
    task: Task
    config: Any  # TrainConfig
    device: torch.device
    pad_id: int
    train_encoded: list[Encoded]
    optimizer: torch.optim.Optimizer | None = None
    upstream: list[Example] = field(default_factory=list)  # examples a strategy may train on (replay pool)
    upstream_encoded: list[Encoded] = field(default_factory=list)
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))
    step: int = 0
    chat: bool = False
    last_loss: float | None = None  # training loss of the latest step (for logging callbacks)

    def collate(self, batch: list[Encoded]) -> dict[str, torch.Tensor]:
        return collate(batch, self.pad_id, self.device)

    def trainable_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        return [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]


class Strategy:
    """Plain fine-tuning; subclasses override only the hooks they need."""

    name = "plain"

    def setup(self, ctx: TrainContext) -> None:
        """Called once after the model is prepared, before the first step (e.g. compute a Fisher)."""

    def build_optimizer(self, ctx: TrainContext, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        cfg = ctx.config
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    def augment_batch(self, ctx: TrainContext, batch: list[Encoded]) -> list[Encoded]:
        """Change the examples of a step (replay mixes upstream examples in)."""
        return batch

    def loss(self, ctx: TrainContext, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The training loss of one collated batch (mean token NLL; EWC adds its penalty)."""
        return ctx.model(**batch).loss

    def training_step(self, ctx: TrainContext, batch: dict[str, torch.Tensor]) -> float:
        """One optimizer step; SAM overrides this to take the gradient at a perturbed point."""
        loss = self.loss(ctx, batch)
        loss.backward()
        clip_gradients(ctx)
        ctx.optimizer.step()
        ctx.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    def after_step(self, ctx: TrainContext) -> None:
        """Called after each optimizer step (LWF unlearns here every few steps)."""

    def excluded_upstream_ids(self) -> set[str]:
        """Upstream examples this strategy trained on; they are left out of the forgetting measurement."""
        return set()

    def summary(self) -> dict[str, Any]:
        """Strategy-specific facts for the run record (e.g. upstream evaluations spent)."""
        return {}


def clip_gradients(ctx: TrainContext) -> None:
    if ctx.config.grad_clip:
        torch.nn.utils.clip_grad_norm_([p for _, p in ctx.trainable_parameters()], ctx.config.grad_clip)


_REGISTRY: dict[str, Callable[..., Strategy]] = {"plain": Strategy}


def register_strategy(name: str) -> Callable[[Callable[..., Strategy]], Callable[..., Strategy]]:
    def deco(factory: Callable[..., Strategy]) -> Callable[..., Strategy]:
        _REGISTRY[name] = factory
        return factory
    return deco


def strategy_names() -> list[str]:
    _load_builtin_strategies()
    return sorted(_REGISTRY)


def make_strategy(name: str, **options: Any) -> Strategy:
    """Build a registered strategy by name; unknown names and options are config errors."""
    _load_builtin_strategies()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown strategy {name!r}; choose from {', '.join(sorted(_REGISTRY))}")
    try:
        return _REGISTRY[name](**options)
    except TypeError as exc:
        raise ConfigError(f"bad options for strategy {name!r}: {exc}") from None


def _load_builtin_strategies() -> None:
    """Import the mitigation package so its strategies register themselves (if it is present)."""
    try:
        import forgetscope.mitigate  # noqa: F401
    except ImportError:
        pass
