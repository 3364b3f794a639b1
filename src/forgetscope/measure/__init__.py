"""Measurement: per-example NLL and exact match (:mod:`.nll`), what forgetting is (:mod:`.forgetting`,
pure numpy) and its cross-entropy view (:mod:`.reference`).

Names load lazily, so ``forgetscope.measure.forgetting`` (needed by the store and the analysis) does
not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

# numpy only, so bound now (which also keeps the name ``forgetting`` the function, not the submodule)
from forgetscope.measure.forgetting import (
    binary_forgetting_values,
    forgetting,
    forgotten_share,
    token_weighted_mean,
)

_WHERE = {
    "EvalRecord": "record", "Evaluator": "evaluator",
    "UpstreamReference": "reference", "cross_entropy_terms": "reference",
    "answer_matches": "nll", "batch_nll": "nll", "bucket_batches": "nll", "evaluate_examples": "nll",
    "exact_match": "nll", "greedy_answers": "nll", "heldout_loss": "nll", "per_example_nll": "nll", "scored_logits": "nll",
    "scored_logprobs": "nll",
}

__all__ = ["EvalRecord", "Evaluator", "UpstreamReference", "answer_matches", "batch_nll", "binary_forgetting_values", "bucket_batches",
           "cross_entropy_terms", "evaluate_examples", "exact_match", "greedy_answers", "forgetting", "forgotten_share", "heldout_loss",
           "per_example_nll", "scored_logits", "scored_logprobs", "token_weighted_mean"]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'forgetscope.measure' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"forgetscope.measure.{_WHERE[name]}"), name)
    globals()[name] = value
    return value
