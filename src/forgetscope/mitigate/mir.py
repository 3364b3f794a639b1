"""Maximally interfered retrieval (MIR): which candidate upstream examples the next update would hurt most.

The ``mir`` replay policy (:mod:`forgetscope.mitigate.replay_policies`) draws candidates at random, scores
them with :func:`interference` and replays the :func:`most_interfered` ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from forgetscope.data.encoding import Encoded
from forgetscope.train.hooks import TrainContext


def interference(ctx: TrainContext, task_batch: list[Encoded], candidates: list[Encoded],
                 losses: Callable[[list[Encoded]], np.ndarray], lr: float | None = None) -> np.ndarray:
    """Loss increase of each candidate under a *virtual* SGD step on the task batch, the weights restored
    exactly afterwards. ``losses`` measures the candidates under the current model; ``lr`` is the step's
    learning rate (None: the optimizer's current one, else ``train.lr``)."""
    before = losses(candidates)
    params = [p for _, p in ctx.trainable_parameters()]
    loss = ctx.forward_loss(ctx.collate(task_batch))  # the gradient of a real training step
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    if lr is None:
        lr = ctx.optimizer.param_groups[0]["lr"] if ctx.optimizer is not None else ctx.config.lr
    saved = [p.detach().clone() for p in params]
    try:
        with torch.no_grad():
            for p, g in zip(params, grads):
                if g is not None:
                    p.sub_(lr * g)
        after = losses(candidates)
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)
    return after - before


def most_interfered(candidates: Sequence[int], scores: np.ndarray, k: int) -> list[int]:
    """The ``k`` candidates with the largest interference (ties in candidate order; NaN counts as least)."""
    scores = np.where(np.isfinite(scores), scores, -np.inf)
    top = np.argsort(-scores, kind="stable")[:k]
    return [candidates[j] for j in top]


__all__ = ["interference", "most_interfered"]
