"""Fine-tuning: one loop (:func:`train_on_task`) with one plug-in mechanism (:class:`Hook`, :class:`Strategy`)."""

from forgetscope.train.hooks import (
    STRATEGIES,
    Hook,
    Strategy,
    TrainContext,
    make_strategy,
    register_strategy,
    strategy_names,
)
from forgetscope.train.trainer import TrainResult, train_on_task

__all__ = ["STRATEGIES", "Hook", "Strategy", "TrainContext", "TrainResult", "make_strategy", "register_strategy",
           "strategy_names", "train_on_task"]
