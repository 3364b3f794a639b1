"""Predict a new task's forgetting row from a probe subset.

Public API::

    from forgetscope.predict import get_predictor, choose_probe, cross_validate

    p = get_predictor("lowrank", rank=3).fit(known)          # known: M x N, NaN = missing
    S = choose_probe(N, 0.05, method="active", known=known)  # or method="random" (default)
    row = p.predict(S, new_row_values_on_S)                   # -> full row, length N
    rows = p.predict_rows(S, values_R_by_S)                   # several new tasks at once
    table = cross_validate(F, ["additive", "knn", "lowrank"], probe=[0.01, 0.05, 0.2])

Predictors (:data:`PREDICTORS`): ``zero``, ``additive`` (baseline), ``knn``, ``knn-baseline``
(the reference protocol's KNNBaseline), ``lowrank``, ``logistic`` (probabilities of "forgotten")
and ``semantic`` (text-similarity prior art; needs task and example texts, see
:mod:`forgetscope.predict.semantic`).
"""

from forgetscope.predict.base import Predictor
from forgetscope.predict.evaluate import CVResult, cross_validate, evaluate, summarize
from forgetscope.predict.probe import choose_probe, leverage_scores, probe_size
from forgetscope.predict.registry import PREDICTORS, get_predictor, predictor_params

__all__ = [
    "PREDICTORS",
    "CVResult",
    "Predictor",
    "choose_probe",
    "cross_validate",
    "evaluate",
    "get_predictor",
    "leverage_scores",
    "predictor_params",
    "probe_size",
    "summarize",
]
