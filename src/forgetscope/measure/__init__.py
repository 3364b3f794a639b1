"""Measurement: per-example NLL and exact match (:mod:`.nll`) and what forgetting is (:mod:`.forgetting`)."""

from forgetscope.measure.forgetting import (
    UpstreamReference,
    binary_forgetting,
    cross_entropy_terms,
    forgetting,
    forgotten_share,
    token_weighted_mean,
)
from forgetscope.measure.nll import (
    answer_matches,
    batch_nll,
    bucket_batches,
    evaluate_examples,
    exact_match,
    heldout_loss,
    per_example_nll,
    scored_logits,
    scored_logprobs,
)

__all__ = ["UpstreamReference", "answer_matches", "binary_forgetting", "batch_nll", "bucket_batches", "cross_entropy_terms",
           "evaluate_examples", "exact_match", "forgetting", "forgotten_share", "heldout_loss", "per_example_nll",
           "scored_logits", "scored_logprobs", "token_weighted_mean"]
