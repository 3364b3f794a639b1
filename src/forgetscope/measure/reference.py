"""The cross-entropy view of forgetting (Kalajdzievski 2024), which needs the models' distributions.

:func:`cross_entropy_terms` per scored position and :class:`UpstreamReference`, the base model's
next-token distributions on the upstream examples kept once per experiment; the loss-increase
definition they report beside it is :func:`forgetscope.measure.forgetting.forgetting`. The examples are
encoded, padded and batched by the experiment's :class:`~forgetscope.measure.evaluator.Evaluator`, so
its length (``eval.max_length`` as the sweep resolved it) and chat format are the sweep's.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from forgetscope.measure.evaluator import Evaluator
from forgetscope.measure.forgetting import forgetting


def cross_entropy_terms(base_logp: torch.Tensor, logp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per position: cross-entropy ``−Σ p_base log p`` and the base entropy ``−Σ p_base log p_base``."""
    p_base = base_logp.exp()
    return -(p_base * logp).sum(-1), -(p_base * base_logp).sum(-1)


def _per_row(values: torch.Tensor, rows: torch.Tensor, n: int) -> np.ndarray:
    """Mean of position values per example (``rows`` maps each position to its example)."""
    rows = rows.cpu()
    total = torch.zeros(n, dtype=torch.float64).index_add_(0, rows, values.double().cpu())
    count = torch.zeros(n, dtype=torch.float64).index_add_(0, rows, torch.ones(len(rows), dtype=torch.float64))
    return (total / count.clamp(min=1)).numpy()


class UpstreamReference:
    """The base model's next-token distributions on upstream examples, for repeated evaluations.

    :meth:`evaluate` returns per example ``loss`` (mean token NLL), ``forgetting`` (loss increase over the
    base), ``ce`` (cross-entropy against the base distribution), ``entropy`` (the base's) and
    ``kl = ce − entropy``. Base log-probabilities are cached in memory up to ``cache_mb``; above that
    they are recomputed with the base model at every evaluation. ``evaluator`` encodes, pads and batches
    the examples (its record's length, chat format and batch budgets; the models' own precision).
    """

    def __init__(self, base_model, evaluator: Evaluator, examples, *, cache_mb: float = 1024):
        self.base = base_model
        self.evaluator = evaluator
        self.pad_id = evaluator.pad_id
        self.encoded = evaluator.encode(examples)
        self.example_ids = [e.example_id for e in self.encoded]
        self.batches = evaluator.batches(self.encoded)
        self.device = next(base_model.parameters()).device
        n = len(self.encoded)
        self.base_loss = np.zeros(n)
        self.entropy = np.zeros(n)
        self._cache: list[torch.Tensor] | None = []
        budget, used = cache_mb * 2 ** 20, 0.0
        for idx, logp, tgt, rows in self._score(self.base):
            nll = -logp.gather(1, tgt[:, None])[:, 0]
            _, ent = cross_entropy_terms(logp, logp)
            self.base_loss[idx] = _per_row(nll, rows, len(idx))
            self.entropy[idx] = _per_row(ent, rows, len(idx))
            used += logp.numel() * logp.element_size()
            if self._cache is not None and used <= budget:
                self._cache.append(logp.cpu())
            else:
                self._cache = None

    @property
    def cached(self) -> bool:
        return self._cache is not None

    def _collate(self, idx: list[int]) -> dict[str, torch.Tensor]:
        return self.evaluator.collate([self.encoded[i] for i in idx], self.device)

    def _score(self, model):
        """(batch indices, log-probs at scored positions, targets, row of each position) per batch."""
        from forgetscope.measure.nll import scored_logprobs

        was = model.training
        model.eval()
        try:
            with torch.inference_mode():
                for idx in self.batches:
                    logp, tgt, rows = scored_logprobs(model, self._collate(idx))
                    yield idx, logp, tgt, rows
        finally:
            model.train(was)

    def _base_logprobs(self, k: int, idx: list[int]) -> torch.Tensor:
        if self._cache is not None:
            return self._cache[k].to(self.device)
        from forgetscope.measure.nll import scored_logprobs

        with torch.inference_mode():
            return scored_logprobs(self.base, self._collate(idx))[0]

    def evaluate(self, model) -> pd.DataFrame:
        n = len(self.encoded)
        loss, ce = np.zeros(n), np.zeros(n)
        for k, (idx, logp, tgt, rows) in enumerate(self._score(model)):
            nll = -logp.gather(1, tgt[:, None])[:, 0]
            cross, _ = cross_entropy_terms(self._base_logprobs(k, idx), logp)
            loss[idx] = _per_row(nll, rows, len(idx))
            ce[idx] = _per_row(cross, rows, len(idx))
        return pd.DataFrame({"example_id": self.example_ids, "loss": loss,
                             "forgetting": forgetting(loss, self.base_loss), "ce": ce, "entropy": self.entropy,
                             "kl": ce - self.entropy})

    @staticmethod
    def summary(per_example: pd.DataFrame) -> dict[str, float]:
        """Means over examples: forgetting, ce_forgetting, kl_forgetting, upstream_loss."""
        return {"forgetting": float(per_example["forgetting"].mean()),
                "ce_forgetting": float(per_example["ce"].mean()),
                "kl_forgetting": float(per_example["kl"].mean()),
                "upstream_loss": float(per_example["loss"].mean())}


__all__ = ["UpstreamReference", "cross_entropy_terms"]
