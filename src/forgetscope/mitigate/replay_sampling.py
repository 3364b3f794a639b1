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

def replay_schedule(steps: int, per_step: int, ratio: float, budget: int | None = None) -> np.ndarray:
    """Replay examples per step: replay k sits at task-stream position floor(k / ratio). With ``budget``
    (an absolute count, which replaces the ratio), replay k of n = budget sits at floor(k · T / n), T =
    steps × per_step: the same even spread, for a dose fixed in examples rather than in a share."""
    if budget is not None:
        if int(budget) < 1:
            raise ConfigError(f"replay: budget must be >= 1 replay example, got {budget}")
        positions = (np.arange(int(budget)) * (steps * per_step)) // int(budget)
        step_of = np.minimum(positions // per_step, steps - 1).astype(int)
        return np.bincount(step_of, minlength=steps)
    n = replay_count(steps, per_step, ratio)
    positions = np.floor(np.arange(n) / ratio)
    step_of = np.minimum(positions // per_step, steps - 1).astype(int)
    return np.bincount(step_of, minlength=steps)

def online_boundary(steps: int, warmup_fraction: float) -> int:
    """Online predicted replay: the step at which the probe is evaluated, after ``warmup_fraction`` of the
    steps (at least one) of random replay; the predicted phase needs at least one step after it."""
    boundary = max(1, int(warmup_fraction * steps))
    if boundary >= steps:
        raise ConfigError(f"replay online: {steps} step(s) leave no room for a warm-up of {boundary} step(s) "
                          "and a predicted phase; train for at least 2 steps")
    return boundary


def warmup_weights(pool_ids: list[str], probe_ids: list[str]) -> np.ndarray:
    """Online warm-up: uniform over the pool with the probe examples left out (their measurement stays
    clean); uniform over everything when the probe is the whole pool."""
    excluded = set(probe_ids)
    w = np.array([0.0 if i in excluded else 1.0 for i in pool_ids])
    return w / w.sum() if w.sum() > 0 else np.full(len(pool_ids), 1.0 / len(pool_ids))


def probe_fill_weights(values: np.ndarray, probed: np.ndarray, *, margin: float = 0.0,
                       weighting: str = "softmax", temperature: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """``(weights, fill)`` of *probe-only + random fill* over a pool (see :mod:`forgetscope.mitigate.replay`).

    ``values`` holds the observed forgetting of the probe examples (``probed`` True; other entries are
    ignored). The chosen examples are the probe examples observed forgotten, F > ``margin``: ``weights``
    is :func:`sampling_weights` of their values, 0 elsewhere, so they are drawn first, in the same law as
    any weighted arm. ``fill`` is uniform over the unprobed examples: what :meth:`ReplaySampler.draw`
    draws once the chosen ones are used up. Probe examples at or below the margin weigh 0 in both (known
    not to be forgotten, they are drawn only after every other pool example)."""
    v = np.asarray(values, dtype=float)
    probed = np.asarray(probed, dtype=bool)
    if v.shape != probed.shape:
        raise DataError(f"probe fill: {v.size} values for a pool of {probed.size}")
    chosen = probed & np.isfinite(v) & (v > margin)
    weights = np.zeros(v.size)
    if chosen.any():
        weights[chosen] = sampling_weights(v[chosen], weighting, temperature)
    fill = (~probed).astype(float)
    return weights, fill / fill.sum() if fill.sum() > 0 else fill


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

    def draw(self, k: int, weights: np.ndarray, fill: np.ndarray | None = None) -> list[int]:
        """``k`` indices, one at a time, each ∝ the weights of those still available. When every available
        index weighs 0, ∝ ``fill`` (when given and not all 0 there), else uniform among them."""
        out = []
        for _ in range(k):
            avail = self.available()
            w = np.asarray(weights, dtype=float)[avail]
            if w.sum() <= 0 and fill is not None:
                w = np.asarray(fill, dtype=float)[avail]
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


__all__ = ["WEIGHTINGS", "ReplaySampler", "draw_replay", "replay_rng", "linear_weights", "online_boundary",
           "probe_fill_weights", "replay_count", "replay_schedule", "sampling_weights", "softmax_weights",
           "warmup_weights"]
