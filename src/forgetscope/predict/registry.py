"""Predictors by name: ``get_predictor("lowrank", rank=3)``; unknown names/parameters fail in one line.

Predictors live in :data:`PREDICTORS`, a :class:`~forgetscope.registry.Registry`; a new one registers
with ``PREDICTORS.register("name", MyPredictor)`` (or as a lazy ``"module:Class"`` string).
"""

from __future__ import annotations

import inspect
from typing import Any

from forgetscope.errors import ConfigError
from forgetscope.predict.additive import (
    AdditiveALSPredictor,
    AdditivePredictor,
    ColumnMeanPredictor,
    ProbeMeanPredictor,
    ZeroPredictor,
)
from forgetscope.predict.base import Predictor
from forgetscope.predict.knn import KNNPredictor
from forgetscope.predict.knn_baseline import KNNBaselineALSPredictor, KNNBaselinePredictor
from forgetscope.predict.logistic import LogisticPredictor
from forgetscope.predict.lowrank import LowRankPredictor
from forgetscope.predict.semantic import SemanticNeighboursPredictor, SemanticPredictor
from forgetscope.predict.side_information import AdditiveFeaturesPredictor, LowRankFeaturesPredictor
from forgetscope.registry import Registry

PREDICTORS: Registry[type[Predictor]] = Registry("predictor")
for _cls in (ZeroPredictor, AdditivePredictor, AdditiveALSPredictor, ColumnMeanPredictor, ProbeMeanPredictor,
             KNNPredictor, KNNBaselinePredictor, KNNBaselineALSPredictor, LowRankPredictor, LogisticPredictor,
             SemanticPredictor, SemanticNeighboursPredictor, AdditiveFeaturesPredictor, LowRankFeaturesPredictor):
    PREDICTORS.register(_cls.name, _cls)


def predictor_params(name: str) -> list[str]:
    """The keyword parameters a predictor accepts."""
    return [p for p in inspect.signature(PREDICTORS.get(name).__init__).parameters if p != "self"]


def get_predictor(name: str, **params: Any) -> Predictor:
    """A fresh, unfitted predictor called ``name`` with ``params``."""
    accepted = predictor_params(name)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ConfigError(f"predictor {name!r} has no parameter(s) {', '.join(unknown)}; "
                          f"it accepts: {', '.join(accepted) or 'none'}")
    return PREDICTORS.build(name, **params)
