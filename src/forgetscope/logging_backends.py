"""Optional metric logging to TensorBoard or Weights & Biases, off by default (``report_to: none``).

The switch mirrors Hugging Face's ``report_to``: ``"none"`` (default), ``"tensorboard"``, ``"wandb"``, or a
list / comma-separated string of them::

    from forgetscope.logging_backends import make_logger, logging_callback

    logger = make_logger("tensorboard", "sweeps/demo/logs/code__plain__s0")
    try:
        train_on_task(model, tok, task, cfg, callbacks=[logging_callback(logger)])
    finally:
        logger.close()

Each backend is imported only when asked for, so neither is a dependency: TensorBoard needs the
``tensorboard`` package (``torch.utils.tensorboard`` writes the event files), W&B needs ``wandb`` (its
project comes from ``WANDB_PROJECT``, default ``forgetscope``; ``WANDB_MODE=offline`` works without network).
A requested backend that is not installed fails at once with the pip command, not after an hour of training.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

from forgetscope.errors import ConfigError, ForgetscopeError

BACKENDS = ("tensorboard", "wandb")
OFF = ("none", "", "off", "false", "no")


class MetricsLogger(Protocol):
    def log(self, metrics: dict[str, Any], step: int) -> None: ...

    def close(self) -> None: ...


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """Finite real numbers only (None, NaN, strings and tensors' non-scalars are dropped)."""
    out = {}
    for k, v in metrics.items():
        if hasattr(v, "item") and getattr(v, "ndim", 0) == 0:
            v = v.item()
        if isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v)):
            out[str(k)] = float(v)
    return out


class NullLogger:
    """Logs nothing (the default)."""

    name = "none"

    def log(self, metrics: dict[str, Any], step: int) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoardLogger:
    """Scalars to TensorBoard event files under ``log_dir`` (view with ``tensorboard --logdir DIR``)."""

    name = "tensorboard"

    def __init__(self, log_dir: str | os.PathLike[str]):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise ForgetscopeError(f"report_to=tensorboard needs TensorBoard: pip install tensorboard ({exc})") from None
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(log_dir=str(self.log_dir))

    def log(self, metrics: dict[str, Any], step: int) -> None:
        for k, v in _scalars(metrics).items():
            self.writer.add_scalar(k, v, global_step=int(step))

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


class WandbLogger:
    """Metrics to a W&B run (``WANDB_PROJECT``, default ``forgetscope``; files under ``log_dir``)."""

    name = "wandb"

    def __init__(self, log_dir: str | os.PathLike[str], *, run_name: str | None = None,
                 config: dict[str, Any] | None = None, project: str | None = None):
        try:
            import wandb
        except ImportError as exc:
            raise ForgetscopeError(f"report_to=wandb needs Weights & Biases: pip install wandb ({exc})") from None
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=project or os.environ.get("WANDB_PROJECT", "forgetscope"), dir=str(log_dir),
                              name=run_name, config=config or {}, reinit=True)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        values = _scalars(metrics)
        if values:
            self.run.log(values, step=int(step))

    def close(self) -> None:
        self.run.finish()


class MultiLogger:
    """Fans each call out to several loggers (``report_to: [tensorboard, wandb]``)."""

    name = "multi"

    def __init__(self, loggers: Iterable[MetricsLogger]):
        self.loggers = list(loggers)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        for lg in self.loggers:
            lg.log(metrics, step)

    def close(self) -> None:
        for lg in self.loggers:
            lg.close()


def parse_report_to(report_to: str | Iterable[str] | None) -> list[str]:
    """Normalise the switch to a list of backend names; unknown names raise a ConfigError naming them."""
    if report_to is None:
        return []
    items = report_to.split(",") if isinstance(report_to, str) else list(report_to)
    names = [str(x).strip().lower() for x in items]
    names = [n for n in names if n not in OFF]
    if "all" in names:
        names = list(BACKENDS)
    bad = sorted(set(names) - set(BACKENDS))
    if bad:
        raise ConfigError(f"report_to: unknown backend(s) {', '.join(bad)}; choose none, {', '.join(BACKENDS)}")
    return list(dict.fromkeys(names))


def make_logger(report_to: str | Iterable[str] | None, log_dir: str | os.PathLike[str], *,
                run_name: str | None = None, config: dict[str, Any] | None = None) -> MetricsLogger:
    """A logger for ``report_to`` writing under ``log_dir``; :class:`NullLogger` when off (the default)."""
    names = parse_report_to(report_to)
    loggers: list[MetricsLogger] = []
    for n in names:
        if n == "tensorboard":
            loggers.append(TensorBoardLogger(log_dir))
        elif n == "wandb":
            loggers.append(WandbLogger(log_dir, run_name=run_name or Path(log_dir).name, config=config))
    if not loggers:
        return NullLogger()
    return loggers[0] if len(loggers) == 1 else MultiLogger(loggers)


def logging_callback(logger: MetricsLogger, *, prefix: str = "train/", every: int = 1) -> Callable[[Any], None]:
    """A ``train_on_task(..., callbacks=[...])`` step callback logging the step's loss and learning rate.

    Reads ``ctx.last_loss`` (or ``ctx.loss``) when the trainer sets it, and the first parameter group's
    learning rate; logs every ``every`` steps at global step ``ctx.step``.
    """
    if every < 1:
        raise ConfigError(f"every must be >= 1, got {every}")

    def callback(ctx: Any) -> None:
        step = int(getattr(ctx, "step", 0))
        if step % every:
            return
        metrics: dict[str, Any] = {}
        loss = getattr(ctx, "last_loss", None)
        if loss is None:
            loss = getattr(ctx, "loss", None)
        if loss is not None:
            metrics[prefix + "loss"] = loss
        opt = getattr(ctx, "optimizer", None)
        if opt is not None and getattr(opt, "param_groups", None):
            metrics[prefix + "lr"] = opt.param_groups[0].get("lr")
        if metrics:
            logger.log(metrics, step)

    return callback


def run_callback(logger: MetricsLogger, *, prefix: str = "sweep/") -> Callable[[Any, dict[str, Any]], None]:
    """A ``run_sweep(..., on_run=...)`` callback logging each finished run's numeric record fields."""
    count = {"n": 0}

    def on_run(spec: Any, record: dict[str, Any]) -> None:
        count["n"] += 1
        logger.log({f"{prefix}{k}": v for k, v in record.items()}, count["n"])

    return on_run
