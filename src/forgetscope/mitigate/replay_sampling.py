"""Which upstream examples replay draws, and where they sit: weights from forgetting values, the
interleaving schedule and draws without replacement (pure numpy; the strategy is
:mod:`forgetscope.mitigate.replay`, whose docstring states the rules these implement).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from forgetscope.errors import ConfigError, DataError

WEIGHTINGS = ("softmax", "linear")

def softmax_weights(values: np.ndarray, temperature: float = 0.1) -> np.ndarray:
    """Probabilities ``exp(v / T) / Σ exp(v / T)``; NaN gets weight 0; all NaN gives uniform."""
    if not temperature > 0:
        raise ConfigError(f"replay: temperature must be positive, got {temperature}")
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        raise DataError("no values to turn into sampling weights")
    ok = np.isfinite(v)
    if not ok.any():
        return np.full(v.size, 1.0 / v.size)
    z = (v[ok] - v[ok].max()) / temperature  # shifted: no overflow, the largest weight is exp(0)
    w = np.zeros(v.size)
    w[ok] = np.exp(z)
    return w / w.sum()

def linear_weights(values: np.ndarray) -> np.ndarray:
    """Probabilities ∝ max(v, 0) + floor (NaN counts as the mean); uniform when nothing is positive."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        raise DataError("no values to turn into sampling weights")
    fill = np.nanmean(v) if np.isfinite(v).any() else 0.0
    v = np.where(np.isfinite(v), v, fill)
    w = np.clip(v, 0.0, None)
    if w.sum() <= 0:
        return np.full(v.size, 1.0 / v.size)
    w = w + 1e-3 * w.mean()
    return w / w.sum()

def sampling_weights(values: np.ndarray, weighting: str = "softmax", temperature: float = 0.1) -> np.ndarray:
    """Replay probabilities from forgetting values (see the module docstring)."""
    if weighting == "softmax":
        return softmax_weights(values, temperature)
    if weighting == "linear":
        return linear_weights(values)
    raise ConfigError(f"replay: unknown weighting {weighting!r}; choose from {', '.join(WEIGHTINGS)}")

def replay_count(steps: int, per_step: int, ratio: float) -> int:
    """``replay_n = int(T · ratio) + 1`` with T = steps × per_step task examples."""
    return int(steps * per_step * ratio) + 1

def replay_schedule(steps: int, per_step: int, ratio: float) -> np.ndarray:
    """Replay examples per step: replay k sits at task-stream position floor(k / ratio)."""
    n = replay_count(steps, per_step, ratio)
    positions = np.floor(np.arange(n) / ratio)
    step_of = np.minimum(positions // per_step, steps - 1).astype(int)
    return np.bincount(step_of, minlength=steps)

def replay_rng(train_seed: int, seed: int) -> np.random.Generator:
    """The replay draws' own random stream (task batches stay those of the plain run): the one seeding
    shared by the ``replay`` strategy and :func:`draw_replay`, so both draw the same ids."""
    return np.random.default_rng([int(train_seed), int(seed), 104729])


class ReplaySampler:
    """Draws pool indices by weight. Without replacement, an index is not drawn again until every
    index has been drawn; then the pool is reset (``resets`` counts how often)."""

    def __init__(self, n: int, rng: np.random.Generator, replacement: bool = False):
        if n < 1:
            raise DataError("replay: the pool is empty")
        self.n = n
        self.rng = rng
        self.replacement = replacement
        self.used = np.zeros(n, dtype=bool)
        self.resets = 0

    def available(self) -> np.ndarray:
        """Indices that may be drawn now (resets the pool when it is exhausted)."""
        if self.replacement:
            return np.arange(self.n)
        if self.used.all():
            self.used[:] = False
            self.resets += 1
        return np.flatnonzero(~self.used)

    def mark(self, indices: Any) -> None:
        if not self.replacement:
            self.used[np.asarray(indices, dtype=int)] = True

    def draw(self, k: int, weights: np.ndarray) -> list[int]:
        """``k`` indices, one at a time, each ∝ the weights of those still available."""
        out = []
        for _ in range(k):
            avail = self.available()
            w = np.asarray(weights, dtype=float)[avail]
            total = w.sum()
            p = w / total if total > 0 else None  # only zero-weight examples left: uniform among them
            i = int(avail[self.rng.choice(avail.size, p=p)])
            self.mark([i])
            out.append(i)
        return out

    def draw_uniform(self, k: int) -> list[int]:
        """``k`` distinct available indices at random, without marking them (MIR's candidates)."""
        avail = self.available()
        if avail.size < k and not self.replacement:  # too few left for a full draw: start over
            self.used[:] = False
            self.resets += 1
            avail = self.available()
        pick = self.rng.choice(avail.size, size=min(k, avail.size), replace=False)
        return [int(avail[j]) for j in pick]


def draw_replay(values: np.ndarray, k: int, *, weighting: str = "softmax", temperature: float = 0.1,
                train_seed: int = 0, seed: int = 0, replacement: bool = False) -> list[int]:
    """``k`` pool indices drawn by the weights of ``values`` (one per draw, without replacement by
    default): what the ``replay`` strategy replays over a whole run with the same values and seeds, in
    the same order, since its per-step draws consume one stream."""
    if int(k) < 1:
        raise ConfigError(f"replay: the number of examples to draw must be >= 1, got {k}")
    values = np.asarray(values, dtype=float)
    sampler = ReplaySampler(values.size, replay_rng(train_seed, seed), replacement=replacement)
    return sampler.draw(int(k), sampling_weights(values, weighting, temperature))


__all__ = ["WEIGHTINGS", "ReplaySampler", "draw_replay", "replay_rng", "linear_weights", "replay_count", "replay_schedule", "sampling_weights",
           "softmax_weights"]
