"""Training curves to TensorBoard or Weights & Biases through accelerate's trackers; off by default.

The switch mirrors Hugging Face's ``report_to``: ``"none"`` (default), ``"tensorboard"``, ``"wandb"``,
``"all"``, or a list / comma-separated string of them. :class:`TrackingHook` is an ordinary training
hook, so curves are logged by the same mechanism as every other plug-in::

    hook = TrackingHook(make_trackers("tensorboard", "sweeps/demo/logs", run_name="code__plain__s0",
                                      config={"task": "code", "lr": 2e-3}, group="demo-52e3aab4"))
    try:
        train_on_task(model, tok, task, cfg, hooks=[hook])
        hook.log({"forgetting/mean": 0.04}, step=20)          # after the upstream evaluation
        hook.log_table("forgetting/most_forgotten", ["example", "F", "text"], rows, step=20)
    finally:
        hook.close()

A run's ``config`` is its hyperparameters: TensorBoard's HParams tab (written into the run's own event file,
with ``metrics`` named so the tab shows them beside each run) and W&B's run config. ``group`` gathers the runs
of one sweep (W&B's run group; an ``hparams`` value and a text entry in TensorBoard, whose runs are folders of
the sweep's ``logs/`` already); ``display_name`` is the W&B run name, unique across sweeps.

TensorBoard needs the ``tensorboard`` package (``forgetscope[logging]``), W&B needs ``wandb`` (``forgetscope[wandb]``; project from
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


#: The module each ``report_to`` backend imports and the package that provides it.
BACKEND_PACKAGES = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb")}


def check_backends(report_to: str | Iterable[str] | None) -> list[str]:
    """The backends ``report_to`` names, each one's package imported: a missing package is a one-line
    ConfigError when an experiment is validated, before anything is written, not after its first run trained."""
    names = parse_report_to(report_to)
    for name in names:
        module, package = BACKEND_PACKAGES[name]
        _require(module, package, name)
    return names


def hparam_values(config: dict[str, Any]) -> dict[str, bool | int | float | str]:
    """``config`` as hyperparameter values both backends take: numbers, booleans and strings (None reads
    ``none``; anything else its ``str``)."""
    out: dict[str, bool | int | float | str] = {}
    for k, v in config.items():
        if hasattr(v, "item") and getattr(v, "ndim", 0) == 0:
            v = v.item()
        out[str(k)] = v if isinstance(v, (bool, int, float, str)) else "none" if v is None else str(v)
    return out


def _tensorboard_hparams(writer: Any, config: dict[str, Any], metrics: Sequence[str]) -> None:
    """The HParams tab's record of one run, in the run's own event file (accelerate's
    ``store_init_configuration`` would open a second, time-stamped run for it)."""
    from torch.utils.tensorboard.summary import hparams

    for summary in hparams(hparam_values(config), dict.fromkeys(metrics, 0.0)):
        writer.file_writer.add_summary(summary)
    writer.flush()


def make_trackers(report_to: str | Iterable[str] | None, logging_dir: str | os.PathLike[str], *, run_name: str,
                  config: dict[str, Any] | None = None, group: str | None = None, display_name: str | None = None,
                  metrics: Sequence[str] = ()) -> list[Any]:
    """Started accelerate trackers for ``report_to`` (an empty list when off: nothing is written).

    TensorBoard writes to ``logging_dir/run_name``; ``config`` becomes the run's hyperparameters (``metrics``:
    the scalar tags the HParams tab shows beside them) and ``group`` one more of them. W&B gets ``config``,
    ``group`` and ``display_name`` (default ``run_name``) at ``wandb.init``.
    """
    from accelerate.tracking import TensorBoardTracker, WandBTracker

    names = check_backends(report_to)
    if names:  # accelerate's trackers log through its logger, which needs its process state
        from accelerate.state import PartialState

        PartialState()
    trackers = []
    for name in names:
        if name == "tensorboard":
            tracker = TensorBoardTracker(run_name, Path(logging_dir))
            tracker.start()
            if config or group:
                _tensorboard_hparams(tracker.writer, {**(config or {}), **({"group": group} if group else {})},
                                     metrics)
            if group:
                tracker.writer.add_text("run/group", f"{group} / {display_name or run_name}", 0)
        else:
            extra = {"group": group} if group else {}
            tracker = WandBTracker(os.environ.get("WANDB_PROJECT", "forgetscope"), name=display_name or run_name,
                                   dir=str(logging_dir), config=hparam_values(config or {}), **extra)
            tracker.start()
        trackers.append(tracker)
    return trackers


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (TensorBoard renders a text entry as Markdown); ``|`` and newlines in cells escaped."""
    def cell(v: Any) -> str:
        text = f"{v:.4g}" if isinstance(v, float) else str(v)
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(map(cell, columns)) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(map(cell, r)) + " |" for r in rows]
    return "\n".join(lines)


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

    def log_table(self, name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], step: int) -> None:
        """A table of text (e.g. the most-forgotten examples): a W&B Table, a Markdown text entry in
        TensorBoard, the Markdown as a value to any other tracker."""
        for t in self.trackers:
            if hasattr(t, "log_table"):
                t.log_table(name, columns=list(columns), data=[list(r) for r in rows], step=step)
            elif getattr(t, "writer", None) is not None:
                t.writer.add_text(name, markdown_table(columns, rows), step)
                t.writer.flush()
            else:
                t.log({name: markdown_table(columns, rows)}, step=step)

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


__all__ = ["BACKENDS", "BACKEND_PACKAGES", "OFF", "TrackingHook", "check_backends", "hparam_values", "make_trackers",
           "markdown_table", "parse_report_to"]
