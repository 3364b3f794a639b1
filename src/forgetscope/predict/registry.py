"""Predictors by name: ``get_predictor("lowrank", rank=3)``; unknown names/parameters fail in one line."""

from __future__ import annotations

import inspect
from typing import Any

from forgetscope.errors import ConfigError
from forgetscope.predict.additive import AdditivePredictor, ZeroPredictor
from forgetscope.predict.base import Predictor
from forgetscope.predict.knn import KNNPredictor
from forgetscope.predict.knn_baseline import KNNBaselinePredictor
from forgetscope.predict.logistic import LogisticPredictor
from forgetscope.predict.lowrank import LowRankPredictor
from forgetscope.predict.semantic import SemanticPredictor

PREDICTORS: dict[str, type[Predictor]] = {
    cls.name: cls
    for cls in (ZeroPredictor, AdditivePredictor, KNNPredictor, KNNBaselinePredictor, LowRankPredictor,
                LogisticPredictor, SemanticPredictor)
}


def predictor_params(name: str) -> list[str]:
    """The keyword parameters a predictor accepts."""
    cls = _lookup(name)
    return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]


def get_predictor(name: str, **params: Any) -> Predictor:
    """A fresh, unfitted predictor called ``name`` with ``params``."""
    cls = _lookup(name)
    accepted = predictor_params(name)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ConfigError(f"predictor {name!r} has no parameter(s) {', '.join(unknown)}; "
                          f"it accepts: {', '.join(accepted) or 'none'}")
    return cls(**params)


def _lookup(name: str) -> type[Predictor]:
    try:
        return PREDICTORS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown predictor {name!r}; choose from {', '.join(PREDICTORS)}") from None
