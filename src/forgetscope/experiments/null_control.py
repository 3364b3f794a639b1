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
"""

from __future__ import annotations

import copy
import hashlib
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


def null_perturbation(base: torch.nn.Module, updates: dict[str, torch.Tensor], seed: int,
                      rank: int | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A copy of ``base`` moved along a seeded random direction with the per-tensor norms of ``updates``.

    ``rank``: each matrix's direction has this rank (a LoRA run's adapter rank, so the null has the shape of
    what the run could learn); None: full rank. Returns the model and what the record keeps: the seed,
    the rank, the number of tensors perturbed and the total Frobenius norm (equal to the update's).
    """
    model = copy.deepcopy(base)
    params = dict(model.named_parameters())
    gen = torch.Generator().manual_seed(seed)
    total = 0.0
    with torch.no_grad():
        for name in sorted(updates):
            delta = updates[name]
            direction = random_direction(delta.shape, gen, rank)
            step = direction * (delta.norm() / direction.norm())
            p = params[name]
            p.add_(step.to(device=p.device, dtype=p.dtype))
            total += float(delta.norm()) ** 2
    return model, {"null_seed": seed, "null_rank": str(rank) if rank is not None else "full",
                   "null_tensors": len(updates), "update_norm": total ** 0.5}


def check_trainable(model: torch.nn.Module, method: str, **lora: Any) -> int:
    """The number of parameters ``method`` would train on ``model`` (a copy is prepared and dropped);
    zero is a ModelError, so a null control with nothing to match fails before any run."""
    from forgetscope.models import count_trainable, prepare_for_training

    n = count_trainable(prepare_for_training(copy.deepcopy(model), method, **lora))
    if n == 0:
        raise ModelError(f"the null control needs trainable parameters, but {method} fine-tuning of this model "
                         "trains none (check train.target_modules)")
    return n
