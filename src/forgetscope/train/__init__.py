"""Fine-tuning: one loop (:func:`train_on_task`) with pluggable strategies (:class:`Strategy`)."""

from forgetscope.train.strategy import (
           Strategy,
           TrainContext,
           make_strategy,
           register_strategy,
           strategy_names,
)
from forgetscope.train.trainer import TrainResult, train_on_task

__all__ = ["Strategy", "TrainContext", "TrainResult", "make_strategy", "register_strategy", "strategy_names",
           "train_on_task"]
