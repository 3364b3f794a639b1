"""Training curves to TensorBoard or Weights & Biases through accelerate's trackers; off by default.

The switch mirrors Hugging Face's ``report_to``: ``"none"`` (default), ``"tensorboard"``, ``"wandb"``,
``"all"``, or a list / comma-separated string of them. :class:`TrackingHook` is an ordinary training
hook, so curves are logged by the same mechanism as every other plug-in::

    hook = TrackingHook(make_trackers("tensorboard", "sweeps/demo/logs", run_name="code__plain__s0"))
    try:
        train_on_task(model, tok, task, cfg, hooks=[hook])
    finally:
        hook.close()

TensorBoard needs the ``tensorboard`` package (``forgetscope[logging]``), W&B needs ``wandb`` (project from
``WANDB_PROJECT``, default ``forgetscope``; ``WANDB_MODE=offline`` works without network). A requested
backend that is not installed fails at once with the pip command, not after an hour of training.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from forgetscope.config import BACKENDS, OFF, parse_report_to
from forgetscope.errors import ConfigError
from forgetscope.train.hooks import Hook, TrainContext


def _require(module: str, package: str, backend: str) -> None:
    import importlib

    try:
        importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"report_to: {backend} needs the {package} package: pip install {package}") from None


def make_trackers(report_to: str | Iterable[str] | None, logging_dir: str | os.PathLike[str], *, run_name: str,
                  config: dict[str, Any] | None = None) -> list[Any]:
    """Started accelerate trackers for ``report_to`` (an empty list when off: nothing is written)."""
    from accelerate.tracking import TensorBoardTracker, WandBTracker

    trackers = []
    for name in parse_report_to(report_to):
        if name == "tensorboard":
            _require("tensorboard", "tensorboard", name)
            tracker = TensorBoardTracker(run_name, Path(logging_dir))
        else:
            _require("wandb", "wandb", name)
            tracker = WandBTracker(os.environ.get("WANDB_PROJECT", "forgetscope"), name=run_name,
                                   dir=str(logging_dir), config=config or {})
        tracker.start()
        trackers.append(tracker)
    return trackers


def scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """Finite real numbers only (None, NaN, strings and non-scalar tensors are dropped)."""
    out = {}
    for k, v in metrics.items():
        if hasattr(v, "item") and getattr(v, "ndim", 0) == 0:
            v = v.item()
        if isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v)):
            out[str(k)] = float(v)
    return out


class TrackingHook(Hook):
    """Logs the training loss and learning rate every ``every`` steps to each tracker."""

    def __init__(self, trackers: Sequence[Any], *, prefix: str = "train/", every: int = 1):
        if every < 1:
            raise ConfigError(f"every must be >= 1, got {every}")
        self.trackers, self.prefix, self.every = list(trackers), prefix, every

    def log(self, metrics: dict[str, Any], step: int) -> None:
        values = scalars(metrics)
        if values:
            for t in self.trackers:
                t.log(values, step=step)

    def after_step(self, ctx: TrainContext) -> None:
        if not self.trackers or ctx.step % self.every:
            return
        metrics: dict[str, Any] = {self.prefix + "loss": ctx.last_loss}
        if ctx.optimizer is not None and ctx.optimizer.param_groups:
            metrics[self.prefix + "lr"] = ctx.optimizer.param_groups[0].get("lr")
        self.log(metrics, ctx.step)

    def close(self) -> None:
        for t in self.trackers:
            t.finish()


__all__ = ["BACKENDS", "OFF", "TrackingHook", "make_trackers", "parse_report_to"]
