"""Predict a new task's forgetting row from a probe subset.

Public API::

    from forgetscope.predict import get_predictor, choose_probe, cross_validate

    p = get_predictor("lowrank", rank=3).fit(known)          # known: M x N, NaN = missing
    S = choose_probe(N, 30, method="active", known=known)    # or method="random" (default)
    row = p.predict(S, new_row_values_on_S)                   # -> full row, length N
    rows = p.predict_rows(S, values_R_by_S)                   # several new tasks at once
    result = evaluate(matrix, ["additive", "knn", "lowrank"], probe=[30], draws=10)  # task-grouped CV
    result.summary()                                          # mean and sd over draws

Predictors (:data:`PREDICTORS`): ``zero``, ``additive`` (baseline), ``knn``, ``knn-baseline``
(the reference protocol's KNNBaseline), ``lowrank`` (rank chosen by task-grouped CV unless given),
``logistic`` (probabilities of "forgotten"; binary forgetting), ``semantic`` (frozen-embedding
similarity (MiniLM); needs task and example texts, see :mod:`forgetscope.predict.semantic`) and
``additive-features`` / ``lowrank-features`` (per-example features of the upstream table, passed to ``fit``
as ``upstream=``; see :mod:`forgetscope.predict.side_information`). Each task's noise floor and the share
of the gap to it a predictor closes: :mod:`forgetscope.predict.noise`.
A new fine-tuned model's row is forecast from a sweep with :func:`forgetscope.experiments.forecast.forecast` (``forgetscope.forecast``), which completes
the row with :mod:`forgetscope.predict.forecast`.
"""

from forgetscope.predict.base import Predictor
from forgetscope.predict.evaluate import (
    DEFAULT_TAU,
    CVResult,
    cross_validate,
    evaluate,
    make_splits,
    noise_margin,
    summarize,
)
from forgetscope.predict.probe import choose_probe, leverage_scores, probe_size
from forgetscope.predict.registry import PREDICTORS, get_predictor, predictor_params

__all__ = [
    "DEFAULT_TAU",
    "PREDICTORS",
    "CVResult",
    "Predictor",
    "choose_probe",
    "cross_validate",
    "evaluate",
    "get_predictor",
    "leverage_scores",
    "make_splits",
    "noise_margin",
    "predictor_params",
    "probe_size",
    "summarize",
]
