"""What forgetting is, defined once.

* **Loss-increase forgetting** (Jin & Ren): ``F = loss_after − loss_before`` per upstream example, where a
  loss is the mean token NLL (nats) of the example; positive means forgotten. :func:`forgetting`.
* **Token-weighted mean loss** of a set of examples (a task's held-out loss): ``Σ nll_i·n_i / Σ n_i``.
  :func:`token_weighted_mean`.
* **Cross-entropy forgetting** (Kalajdzievski 2024): the cross-entropy of the fine-tuned model's next-token
  distribution against the base model's, ``−Σ_v p_base(v) log p_ft(v)`` averaged over scored positions,
  and its KL part ``CE − H(p_base)``. :func:`forgetscope.measure.reference.cross_entropy_terms` (per
  position) and :class:`~forgetscope.measure.reference.UpstreamReference` (the base distributions, kept
  once per experiment).
* **Share forgotten**: the share of *measured* entries with ``F > threshold``; NaN entries (excluded,
  e.g. replayed examples) are left out of numerator and denominator. :func:`forgotten_share`.
* **Binary forgetting** (instruction examples with a gold answer): 1 where the base model's greedy
  answer matched (``em_before == 1``) and the fine-tuned model's does not (``em_after == 0``), 0 where
  it still matches, NaN where the base model did not match (nothing to forget) or either value is
  missing. "Match" is whole-word containment of the normalised gold answer in the first line of the
  greedy output (:func:`forgetscope.measure.nll.answer_matches`). :func:`binary_forgetting_values`
  (a sweep's matrix of it: :func:`forgetscope.predict.binary.binary_forgetting`).

Pure numpy: the cross-entropy view's torch code lives in :mod:`forgetscope.measure.reference`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


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


def binary_forgetting_values(em_before: np.ndarray, em_after: np.ndarray) -> np.ndarray:
    """The binary rule on arrays: 1.0 where ``em_before == 1`` and ``em_after == 0``, 0.0 where both are 1,
    NaN where the base did not match (``em_before != 1``) or either value is missing. ``em_before`` has
    one value per column, ``em_after`` one row per run (or a single row)."""
    before = np.asarray(em_before, np.float64)[None, :]
    after = np.asarray(em_after, np.float64)
    out = np.where(after == 0, 1.0, np.where(after == 1, 0.0, np.nan))
    return np.where((before == 1) & np.isfinite(after), out, np.nan)


__all__ = ["binary_forgetting_values", "forgetting", "forgotten_share", "token_weighted_mean"]
