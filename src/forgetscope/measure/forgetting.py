"""What forgetting is, defined once.

* **Loss-increase forgetting** (Jin & Ren): ``F = loss_after − loss_before`` per upstream example, where a
  loss is the mean token NLL (nats) of the example; positive means forgotten. :func:`forgetting`.
* **Token-weighted mean loss** of a set of examples (a task's held-out loss): ``Σ nll_i·n_i / Σ n_i``.
  :func:`token_weighted_mean`.
* **Cross-entropy forgetting** (Kalajdzievski 2024): the cross-entropy of the fine-tuned model's next-token
  distribution against the base model's, ``−Σ_v p_base(v) log p_ft(v)`` averaged over scored positions,
  and its KL part ``CE − H(p_base)``. :func:`cross_entropy_terms` (per position) and
  :class:`UpstreamReference` (the base distributions, kept once per experiment).
* **Share forgotten**: the share of *measured* entries with ``F > threshold``; NaN entries (excluded,
  e.g. replayed examples) are left out of numerator and denominator. :func:`forgotten_share`.
* **Binary forgetting** (instruction examples with a gold answer): 1 where the base model's greedy
  answer matched (``em_before == 1``) and the fine-tuned model's does not (``em_after == 0``), 0 where
  it still matches, NaN where the base model did not match (nothing to forget) or either value is
  missing. "Match" is whole-word containment of the normalised gold answer in the first line of the
  greedy output (:func:`forgetscope.measure.nll.answer_matches`). :func:`binary_forgetting`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # torch is imported where tensors are made, so the store and analysis stay light
    import os

    import torch

    from forgetscope.store.matrix import ForgettingMatrix


def forgetting(loss_after: np.ndarray | float, loss_before: np.ndarray | float) -> np.ndarray:
    """Loss increase per example (NaN stays NaN)."""
    return np.asarray(loss_after, dtype=float) - np.asarray(loss_before, dtype=float)


def token_weighted_mean(losses: Sequence[float] | np.ndarray, n_tokens: Sequence[float] | np.ndarray) -> float:
    """Mean NLL per token over several examples (each example weighted by its scored tokens)."""
    w = np.asarray(n_tokens, dtype=float)
    x = np.asarray(losses, dtype=float)
    ok = np.isfinite(x)
    if not ok.any():
        return float("nan")
    return float(np.sum(x[ok] * w[ok]) / max(w[ok].sum(), 1.0))


def forgotten_share(values: np.ndarray, threshold: float = 0.0) -> float:
    """Share of finite entries above ``threshold`` (NaN when none is finite)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return float(np.mean(v > threshold)) if v.size else float("nan")


def binary_forgetting(matrix: ForgettingMatrix | str | os.PathLike[str]) -> ForgettingMatrix:
    """The M x N_instruction binary forgetting matrix of a sweep (see the module docstring).

    Reads ``em_after`` per run from the sweep's long ``forgetting.parquet`` and ``em_before`` from its
    upstream table; columns are the sweep's instruction examples, rows its runs (in the matrix's order).
    Values are 1.0 (forgotten), 0.0 (kept) or NaN (not forgettable or not measured).
    """
    from forgetscope.errors import DataError
    from forgetscope.store.matrix import ForgettingMatrix
    from forgetscope.store.sweep_store import SweepStore

    if not isinstance(matrix, ForgettingMatrix):
        matrix = SweepStore(matrix).load_matrix()
    inst = matrix.select_kind("instruction")
    if inst.path is None or inst.upstream is None or "em_before" not in inst.upstream:
        raise DataError("binary forgetting needs a sweep directory with exact-match columns (em_before, em_after)")
    long = SweepStore(inst.path).read_forgetting()
    if "em_after" not in long:
        raise DataError(f"the sweep {inst.path} has no em_after column (exact match was off)")
    after = long.assign(run_id=long["run_id"].astype(str), example_id=long["example_id"].astype(str)).pivot_table(
        index="run_id", columns="example_id", values="em_after", aggfunc="first", dropna=False)
    after = after.reindex(index=inst.row_names, columns=inst.col_names).to_numpy(dtype=float)
    before = pd.to_numeric(inst.upstream["em_before"], errors="coerce").to_numpy(dtype=float)[None, :]
    values = np.where((before == 1) & np.isfinite(after), (after == 0).astype(float), np.nan)
    return ForgettingMatrix(values, inst.row_names, inst.col_names, runs=inst.runs, upstream=inst.upstream,
                            path=inst.path, meta={**inst.meta, "quantity": "binary_forgetting"}, kinds=inst.kinds)


def cross_entropy_terms(base_logp: torch.Tensor, logp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per position: cross-entropy ``−Σ p_base log p`` and the base entropy ``−Σ p_base log p_base``."""
    p_base = base_logp.exp()
    return -(p_base * logp).sum(-1), -(p_base * base_logp).sum(-1)


def _per_row(values: torch.Tensor, rows: torch.Tensor, n: int) -> np.ndarray:
    """Mean of position values per example (``rows`` maps each position to its example)."""
    import torch

    rows = rows.cpu()
    total = torch.zeros(n, dtype=torch.float64).index_add_(0, rows, values.double().cpu())
    count = torch.zeros(n, dtype=torch.float64).index_add_(0, rows, torch.ones(len(rows), dtype=torch.float64))
    return (total / count.clamp(min=1)).numpy()


class UpstreamReference:
    """The base model's next-token distributions on upstream examples, for repeated evaluations.

    :meth:`evaluate` returns per example ``loss`` (mean token NLL), ``forgetting`` (loss increase over the
    base), ``ce`` (cross-entropy against the base distribution), ``entropy`` (the base's) and
    ``kl = ce − entropy``. Base log-probabilities are cached in memory up to ``cache_mb``; above that
    they are recomputed with the base model at every evaluation.
    """

    def __init__(self, base_model, tokenizer, examples, *, max_length: int = 64, chat: bool = False,
                 max_batch_tokens: int = 4096, max_batch_size: int = 64, cache_mb: float = 1024):
        from forgetscope.data.encoding import encode_examples
        from forgetscope.measure.nll import bucket_batches
        from forgetscope.models import context_length

        self.base = base_model
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.encoded = encode_examples(tokenizer, list(examples), max_length,
                                                      model_max_length=context_length(base_model), chat=chat)
        self.example_ids = [e.example_id for e in self.encoded]
        self.batches = bucket_batches([len(e) for e in self.encoded], max_batch_tokens, max_batch_size)
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
        from forgetscope.data.encoding import collate

        return collate([self.encoded[i] for i in idx], self.pad_id, self.device)

    def _score(self, model):
        """(batch indices, log-probs at scored positions, targets, row of each position) per batch."""
        import torch

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
        import torch

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


__all__ = ["UpstreamReference", "binary_forgetting", "cross_entropy_terms", "forgetting", "forgotten_share",
           "token_weighted_mean"]
