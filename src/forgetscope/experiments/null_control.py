"""The null control: a random-direction update as large as a run's, measured like the run.

A fine-tune moves the weights; almost any move of the weights changes the loss of every upstream example
a little, and fragile examples more than others. That generic sensitivity alone gives a forgetting matrix
a strong rank-1 part (every task "forgets" the same fragile examples). The null control separates it from
task-example association: for each run, the base model is perturbed along a random Gaussian direction
in exactly the tensors the run changed, each tensor's perturbation scaled to the Frobenius norm of that
tensor's update (LoRA: the effective update ``ΔW = s·BA`` of each adapted weight, read off a merged copy;
full fine-tuning: the weight difference). For a LoRA run the direction has the adapter's rank by default
(``null_rank: adapter``: the product of two Gaussian factors, the shape of what the run could have
learned); ``null_rank: full`` spreads the same norm over every direction of the matrix, a much weaker
move of the outputs. Its row of forgetting is what a task-agnostic move of the same size does to each
example.

Matched in norm (``null_match: norm``, the default) the null is a lower bound: a random direction misses the
directions learning uses, and moves the upstream losses far less than the run did. ``null_match: effect``
keeps the direction and scales it (:func:`match_effect`) until its mean forgetting on a fixed subset of
upstream examples matches the run's: the control for "generic fragility at this effect size".
"""

from __future__ import annotations

import copy
import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from forgetscope.errors import ModelError


def null_seed(run_id: str) -> int:
    """A stable seed for a run's null direction (the same run id always gets the same direction)."""
    return int(hashlib.sha256(f"null:{run_id}".encode()).hexdigest()[:8], 16)


def weight_updates(base: torch.nn.Module, tuned: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Per-tensor update of a fine-tune against its base, keyed by the base model's parameter names.

    A PEFT model is merged on a copy first, so a LoRA run's update is ``s·BA`` on each adapted weight;
    tensors the run did not change are left out. A run that changed nothing is a ModelError.
    """
    merged = copy.deepcopy(tuned).merge_and_unload() if hasattr(tuned, "merge_and_unload") else tuned
    base_params = dict(base.named_parameters())
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, p in merged.named_parameters():
            b = base_params.get(name)
            if b is None or b.shape != p.shape:
                raise ModelError(f"cannot match the fine-tuned parameter {name!r} to the base model")
            delta = p.detach().float().cpu() - b.detach().float().cpu()
            if torch.count_nonzero(delta):
                out[name] = delta
    if not out:
        raise ModelError("the run changed no parameter, so there is no update for a null control to match")
    return out


def random_direction(shape: torch.Size, gen: torch.Generator, rank: int | None = None) -> torch.Tensor:
    """A Gaussian direction of ``shape``; for a matrix and a ``rank``, the product of two Gaussian factors
    (a random matrix of that rank, like a LoRA update's ``BA``)."""
    if rank is None or len(shape) != 2 or rank >= min(shape):
        return torch.randn(shape, generator=gen, dtype=torch.float32)
    left = torch.randn((shape[0], rank), generator=gen, dtype=torch.float32)
    return left @ torch.randn((rank, shape[1]), generator=gen, dtype=torch.float32)


def null_steps(updates: dict[str, torch.Tensor], seed: int,
               rank: int | None = None) -> dict[str, torch.Tensor]:
    """The seeded random step of each tensor of ``updates``, with that tensor's update norm (see
    :func:`null_perturbation`); tensors are drawn in name order, so the same seed gives the same steps."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name in sorted(updates):
        delta = updates[name]
        direction = random_direction(delta.shape, gen, rank)
        out[name] = direction * (delta.norm() / direction.norm())
    return out


def perturb(base: torch.nn.Module, steps: dict[str, torch.Tensor], scale: float = 1.0,
            into: torch.nn.Module | None = None) -> torch.nn.Module:
    """``base`` moved by ``scale`` times ``steps``: a copy, or ``into`` (an earlier copy of ``base``, whose
    stepped tensors are reset from ``base`` first, so repeated calls do not accumulate)."""
    model = copy.deepcopy(base) if into is None else into
    params, base_params = dict(model.named_parameters()), dict(base.named_parameters())
    with torch.no_grad():
        for name, step in steps.items():
            p = params[name]
            p.copy_(base_params[name])
            p.add_((scale * step).to(device=p.device, dtype=p.dtype))
    return model


def null_info(updates: dict[str, torch.Tensor], seed: int, rank: int | None) -> dict[str, Any]:
    """What a run record keeps of its null: the seed, the rank, the tensors moved and the update's norm."""
    total = sum(float(d.norm()) ** 2 for d in updates.values())
    return {"null_seed": seed, "null_rank": str(rank) if rank is not None else "full",
            "null_tensors": len(updates), "update_norm": total ** 0.5}


def null_perturbation(base: torch.nn.Module, updates: dict[str, torch.Tensor], seed: int,
                      rank: int | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A copy of ``base`` moved along a seeded random direction with the per-tensor norms of ``updates``.

    ``rank``: each matrix's direction has this rank (a LoRA run's adapter rank, so the null has the shape of
    what the run could learn); None: full rank. Returns the model and what the record keeps: the seed,
    the rank, the number of tensors perturbed and the total Frobenius norm (equal to the update's).
    """
    return perturb(base, null_steps(updates, seed, rank)), null_info(updates, seed, rank)


@dataclass
class EffectMatch:
    """Result of :func:`match_effect`: the scale chosen and every (scale, mean F) it evaluated."""

    target: float
    scale: float
    value: float  # mean F at ``scale``
    status: str  # matched | not_matched (closest of the evaluations kept) | target_not_positive
    evaluations: list[tuple[float, float]] = field(default_factory=list)
    wall_s: float = 0.0

    def record(self) -> dict[str, Any]:
        """The run record's fields (``null_norm_effect``: mean F of the norm-matched null, scale 1)."""
        at_one = next((v for s, v in self.evaluations if s == 1.0), float("nan"))
        return {"null_match": "effect", "null_scale": self.scale, "null_match_target": self.target,
                "null_match_value": self.value, "null_match_status": self.status,
                "null_match_steps": len(self.evaluations), "null_match_wall_s": self.wall_s,
                "null_norm_effect": at_one}


def _next_scale(below: tuple[float, float] | None, above: tuple[float, float] | None,
                target: float) -> tuple[float, bool]:
    """The next scale to try, and whether it is an interpolation: inside a bracket, a power-law
    interpolation ``F ∝ s^p`` between its ends when that lands in the bracket's middle, else the geometric
    midpoint (bisection in log scale); outside one, a step towards the target assuming ``F ∝ s²``, by a
    factor between 2 and 64."""
    if below is not None and above is not None:
        (s0, f0), (s1, f1) = below, above
        if f0 > 0 and f1 > f0:
            p = math.log(f1 / f0) / math.log(s1 / s0)
            guess = s0 * (target / f0) ** (1.0 / p)
            if s0 * (s1 / s0) ** 0.1 <= guess <= s0 * (s1 / s0) ** 0.9:
                return guess, True
        return math.sqrt(s0 * s1), False
    if below is not None:
        s, f = below
        return s * (min(max(math.sqrt(target / f), 2.0), 64.0) if f > 0 else 4.0), False
    assert above is not None
    s, f = above
    return s * min(max(math.sqrt(target / f), 1 / 64), 0.5), False


def match_effect(mean_f: Callable[[float], float], target: float, *, tol: float = 0.05,
                 max_steps: int = 8) -> EffectMatch:
    """The scale ``s`` of a null direction whose mean forgetting ``mean_f(s)`` matches ``target``.

    Starts at the norm-matched scale 1, brackets the target and narrows the bracket in log scale (power-law
    interpolation; bisection when that leaves the bracket's middle or keeps moving the same end) until
    ``|mean_f(s) − target| ≤ tol · target`` or ``max_steps`` evaluations are spent; then the closest
    evaluation is kept (status ``not_matched``). A random move of the weights almost never lowers the loss on average, so a target
    ≤ 0 (a run that improved the subset) cannot be matched: the norm-matched scale is kept
    (``target_not_positive``) without evaluating anything.
    """
    t0 = time.perf_counter()
    if not target > 0:
        return EffectMatch(target, 1.0, float("nan"), "target_not_positive")
    evals: list[tuple[float, float]] = []
    below: tuple[float, float] | None = None
    above: tuple[float, float] | None = None
    scale, interpolated, status = 1.0, False, "not_matched"
    moved: list[tuple[bool, bool]] = []  # per evaluation: (interpolated, fell below the target)
    for _ in range(max_steps):
        value = float(mean_f(scale))
        evals.append((scale, value))
        if abs(value - target) <= tol * target:
            status = "matched"
            break
        if value < target:
            below = (scale, value) if below is None or scale > below[0] else below
        else:
            above = (scale, value) if above is None or scale < above[0] else above
        moved.append((interpolated, value < target))
        scale, interpolated = _next_scale(below, above, target)
        stalled = len(moved) >= 2 and moved[-1][0] and moved[-2][0] and moved[-1][1] == moved[-2][1]
        if interpolated and stalled:  # two interpolations in a row moved the same end of the bracket: bisect
            scale, interpolated = math.sqrt(below[0] * above[0]), False  # type: ignore[index]
    best = min(evals, key=lambda e: abs(e[1] - target))
    return EffectMatch(target, best[0], best[1], status, evals, time.perf_counter() - t0)


def effect_matched_null(base: torch.nn.Module, updates: dict[str, torch.Tensor], seed: int, rank: int | None,
                        subset_forgetting: Callable[[torch.nn.Module], float], target: float, *,
                        tol: float = 0.05, max_steps: int = 8) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The null of :func:`null_perturbation` scaled until its mean forgetting on a subset matches ``target``.

    ``subset_forgetting(model)`` is the subset's mean loss under ``model`` minus the base model's (its mean F);
    one copy of the base model is moved to each scale in turn. Returns the model at the scale found and the
    record's fields (:meth:`EffectMatch.record` beside :func:`null_info`).
    """
    t0 = time.perf_counter()
    steps = null_steps(updates, seed, rank)
    model = copy.deepcopy(base)
    match = match_effect(lambda s: subset_forgetting(perturb(base, steps, s, into=model)), target,
                         tol=tol, max_steps=max_steps)
    perturb(base, steps, match.scale, into=model)
    match.wall_s = time.perf_counter() - t0  # the whole cost: directions, copy and every evaluation
    return model, {**null_info(updates, seed, rank), **match.record()}


def check_trainable(model: torch.nn.Module, method: str, **lora: Any) -> int:
    """The number of parameters ``method`` would train on ``model`` (a copy is prepared and dropped);
    zero is a ModelError, so a null control with nothing to match fails before any run."""
    from forgetscope.models import count_trainable, prepare_for_training

    n = count_trainable(prepare_for_training(copy.deepcopy(model), method, **lora))
    if n == 0:
        raise ModelError(f"the null control needs trainable parameters, but {method} fine-tuning of this model "
                         "trains none (check train.target_modules)")
    return n
