"""Sharpness of the fine-tuned minimum and its link to forgetting (after Li et al. 2024,
*Revisiting Catastrophic Forgetting in Large Language Model Tuning*, which relates forgetting to the
flatness of the loss landscape and mitigates it with SAM).

Measures of a fine-tuned model on its **task data** (token-weighted mean NLL ``L`` over a fixed set of
task batches; every measure is a loss *rise*, so 0 means perfectly flat):

``random``  (:func:`random_sharpness`)
    mean (and std, over ``n_draws`` seeded draws) of ``L(θ + δ) − L(θ)``, where each parameter tensor
    gets Gaussian noise rescaled to ``ρ · ||θ_tensor||`` (relative radius ρ, per tensor, so layers of
    different scale are perturbed alike; a zero tensor stays unperturbed).
``sam``  (:func:`sam_sharpness`)
    ``L(θ + ε) − L(θ)`` with the SAM ascent step ``ε = ρ_sam · g / ||g||`` (``g`` the task-loss gradient;
    absolute radius as in SAM, ``relative=True`` scales it by ``||θ||``). A zero gradient gives 0.
``hessian_trace``  (:func:`hessian_trace`, optional)
    Hutchinson's estimate ``E[vᵀHv]`` with Rademacher ``v``, on the trainable (LoRA) parameters by default.
``landscape``  (:func:`landscape_1d`)
    the loss along one direction (random per-tensor-normalised, or the normalised gradient), for plots.

Every function takes ``loss_fn(model, batch) -> (sum of losses, count)`` so any model can be measured;
the default :func:`lm_loss` is the token NLL of a collated LM batch.

The sweep that measures every fine-tuned model this way is
:func:`forgetscope.experiments.sharpness.sharpness_sweep`; this module only measures. The correlation
across runs is :func:`forgetscope.analysis.sharpness.correlate_with_forgetting` (pure), the figures
:mod:`forgetscope.analysis.plots`.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from forgetscope.data.types import kind_option
from forgetscope.errors import ForgetscopeError

LossFn = Callable[[Any, Any], "tuple[torch.Tensor, float]"]
Scope = Literal["all", "trainable"]


# --------------------------------------------------------------------------- losses and parameters
def lm_loss(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, float]:
    """Sum of token NLL over a collated LM batch and the number of scored tokens."""
    from forgetscope.measure.nll import batch_nll

    total, count = batch_nll(model, batch)
    return total.sum(), float(count.sum())


def batches_loss(model, batches: Sequence[Any], loss_fn: LossFn = lm_loss) -> float:
    """Weighted mean loss over the batches, without gradients."""
    was = model.training
    model.eval()
    try:
        total, count = 0.0, 0.0
        with torch.no_grad():
            for b in batches:
                s, c = loss_fn(model, b)
                total += float(s)
                count += c
        return total / count if count > 0 else math.nan
    finally:
        model.train(was)


def select_parameters(model, scope: Scope | str = "all") -> list[torch.nn.Parameter]:
    """The parameters a measure perturbs: all, or the trainable ones (all when none is trainable)."""
    if scope not in ("all", "trainable"):
        raise ForgetscopeError(f"unknown parameter scope {scope!r}; use 'all' or 'trainable'")
    params = [p for p in model.parameters() if p.requires_grad] if scope == "trainable" else []
    if not params:
        params = list(model.parameters())
    seen, out = set(), []
    for p in params:  # tied weights appear once
        if id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


@contextlib.contextmanager
def _requires_grad(params: Sequence[torch.nn.Parameter]):
    old = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(True)
        yield
    finally:
        for p, r in zip(params, old):
            p.requires_grad_(r)


@contextlib.contextmanager
def _restored(params: Sequence[torch.nn.Parameter]):
    """Restore the exact parameter values on exit (perturbations never leak)."""
    backup = [p.detach().clone() for p in params]
    try:
        yield backup
    finally:
        with torch.no_grad():
            for p, b in zip(params, backup):
                p.copy_(b)


def _gradient(model, params, batches, loss_fn: LossFn) -> list[torch.Tensor]:
    """Gradient of the mean loss over all batches w.r.t. ``params`` (eval mode, no dropout)."""
    was = model.training
    model.eval()
    grads = [torch.zeros_like(p) for p in params]
    count = 0.0
    try:
        with _requires_grad(params):
            sums = []
            for b in batches:
                s, c = loss_fn(model, b)
                g = torch.autograd.grad(s, params, allow_unused=True)
                sums.append(g)
                count += c
            for g in sums:
                for acc, gi in zip(grads, g):
                    if gi is not None:
                        acc.add_(gi)
    finally:
        model.train(was)
    if count > 0:
        for acc in grads:
            acc.div_(count)
    return grads


def _global_norm(tensors: Iterable[torch.Tensor]) -> float:
    return math.sqrt(sum(float(t.detach().double().pow(2).sum()) for t in tensors))


# --------------------------------------------------------------------------- measures
def random_sharpness(model, batches: Sequence[Any], *, rho: float = 0.02, n_draws: int = 5, seed: int = 0,
                     scope: Scope | str = "all", loss_fn: LossFn = lm_loss,
                     base_loss: float | None = None) -> dict[str, Any]:
    """Mean/std loss rise under random perturbations of relative radius ``rho`` (per tensor)."""
    if n_draws < 1:
        raise ForgetscopeError("n_draws must be >= 1")
    params = select_parameters(model, scope)
    base = batches_loss(model, batches, loss_fn) if base_loss is None else base_loss
    gen = torch.Generator().manual_seed(int(seed))
    rises: list[float] = []
    with _restored(params) as backup:
        for _ in range(n_draws):
            with torch.no_grad():
                for p, b in zip(params, backup):
                    noise = torch.randn(p.shape, generator=gen, dtype=torch.float32).to(p.device, p.dtype)
                    nn_, pn = float(noise.norm()), float(b.norm())
                    scale = rho * pn / nn_ if nn_ > 0 else 0.0
                    p.copy_(b + noise * scale)
            rises.append(batches_loss(model, batches, loss_fn) - base)
            with torch.no_grad():
                for p, b in zip(params, backup):
                    p.copy_(b)
    arr = np.asarray(rises, dtype=float)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0,
            "max": float(arr.max()), "draws": arr.tolist(), "rho": rho, "base_loss": base}


def sam_sharpness(model, batches: Sequence[Any], *, rho: float = 0.05, relative: bool = False,
                  scope: Scope | str = "all", loss_fn: LossFn = lm_loss,
                  base_loss: float | None = None) -> dict[str, Any]:
    """Loss rise after the SAM ascent step ``ε = ρ g/||g||`` (``ρ·||θ||`` when ``relative``)."""
    params = select_parameters(model, scope)
    base = batches_loss(model, batches, loss_fn) if base_loss is None else base_loss
    grads = _gradient(model, params, batches, loss_fn)
    gnorm = _global_norm(grads)
    radius = rho * _global_norm(params) if relative else rho
    if not math.isfinite(gnorm) or gnorm == 0.0 or radius == 0.0:
        return {"rise": 0.0, "grad_norm": gnorm if math.isfinite(gnorm) else math.nan, "radius": radius,
                "base_loss": base, "note": "zero gradient or radius: no ascent direction"}
    with _restored(params) as backup:
        with torch.no_grad():
            for p, b, g in zip(params, backup, grads):
                p.copy_(b + g.to(p.dtype) * (radius / gnorm))
        rise = batches_loss(model, batches, loss_fn) - base
    return {"rise": float(rise), "grad_norm": gnorm, "radius": radius, "base_loss": base}


def hessian_trace(model, batches: Sequence[Any], *, n_samples: int = 8, seed: int = 0,
                  scope: Scope | str = "trainable", loss_fn: LossFn = lm_loss) -> dict[str, Any]:
    """Hutchinson estimate of tr(H) of the mean loss w.r.t. the chosen parameters (Rademacher probes)."""
    params = select_parameters(model, scope)
    gen = torch.Generator().manual_seed(int(seed))
    count = 0.0
    was = model.training
    model.eval()
    estimates = []
    try:
        sdpa = contextlib.nullcontext()
        try:  # double backward needs the math attention kernel
            from torch.nn.attention import SDPBackend, sdpa_kernel

            sdpa = sdpa_kernel(SDPBackend.MATH)
        except ImportError:
            pass
        with _requires_grad(params), sdpa:
            vs_all = [[(torch.randint(0, 2, p.shape, generator=gen, dtype=torch.int8).to(p.device, p.dtype) * 2 - 1)
                       for p in params] for _ in range(n_samples)]
            acc = np.zeros(n_samples)
            for b in batches:
                s, c = loss_fn(model, b)
                count += c
                g = torch.autograd.grad(s, params, create_graph=True, allow_unused=True)
                pairs = [(gi, i) for i, gi in enumerate(g) if gi is not None and gi.requires_grad]
                if not pairs:
                    continue
                gs = [gi for gi, _ in pairs]
                for k, vs in enumerate(vs_all):
                    hv = torch.autograd.grad(gs, [params[i] for _, i in pairs], grad_outputs=[vs[i] for _, i in pairs],
                                             retain_graph=True, allow_unused=True)
                    acc[k] += sum(float((h * vs[i]).sum()) for h, (_, i) in zip(hv, pairs) if h is not None)
            estimates = (acc / count).tolist() if count > 0 else [math.nan] * n_samples
    finally:
        model.train(was)
    arr = np.asarray(estimates, dtype=float)
    return {"trace": float(arr.mean()), "stderr": float(arr.std(ddof=1) / math.sqrt(len(arr))) if len(arr) > 1 else 0.0,
            "samples": arr.tolist(), "n_params": int(sum(p.numel() for p in params))}


def landscape_1d(model, batches: Sequence[Any], *, direction: Literal["random", "gradient"] = "random",
                 alphas: Sequence[float] | None = None, scope: Scope | str = "all", seed: int = 0,
                 loss_fn: LossFn = lm_loss) -> pd.DataFrame:
    """Loss at ``θ + α d`` for each α; ``d`` is random with ``||d_tensor|| = ||θ_tensor||`` (so α is a
    relative radius, as in :func:`random_sharpness`) or the gradient scaled to ``||θ||`` overall."""
    params = select_parameters(model, scope)
    alphas = np.asarray(alphas if alphas is not None else np.linspace(-0.1, 0.1, 21), dtype=float)
    if direction == "random":
        gen = torch.Generator().manual_seed(int(seed))
        dirs = []
        for p in params:
            n = torch.randn(p.shape, generator=gen, dtype=torch.float32).to(p.device, p.dtype)
            nn_ = float(n.norm())
            dirs.append(n * (float(p.detach().norm()) / nn_) if nn_ > 0 else torch.zeros_like(p))
    elif direction == "gradient":
        grads = _gradient(model, params, batches, loss_fn)
        gnorm = _global_norm(grads)
        scale = _global_norm(params) / gnorm if gnorm > 0 and math.isfinite(gnorm) else 0.0
        dirs = [g.to(p.dtype) * scale for g, p in zip(grads, params)]
    else:
        raise ForgetscopeError(f"unknown direction {direction!r}; use 'random' or 'gradient'")
    losses = []
    with _restored(params) as backup:
        for a in alphas:
            with torch.no_grad():
                for p, b, d in zip(params, backup, dirs):
                    p.copy_(b + d * float(a))
            losses.append(batches_loss(model, batches, loss_fn))
    return pd.DataFrame({"direction": direction, "alpha": alphas, "loss": losses})


# --------------------------------------------------------------------------- one model, all measures
class SharpnessOptions(BaseModel):
    """What :func:`measure_sharpness` computes (the ``sharpness:`` block of a sharpness sweep config)."""

    model_config = ConfigDict(extra="forbid")

    rho: float = Field(0.02, ge=0, description="relative radius of the random perturbations")
    n_draws: int = Field(5, ge=1, description="random perturbations drawn")
    sam_rho: float = Field(0.05, ge=0, description="SAM ascent radius (absolute unless sam_relative)")
    sam_relative: bool = Field(False, description="scale sam_rho by the weights' norm")
    scope: Literal["all", "trainable"] = Field("all", description="the parameters perturbed: every weight or "
                                               "the trainable ones only")
    hessian: bool = Field(False, description="also estimate the Hutchinson trace of the Hessian (double "
                          "backward: slower)")
    hessian_samples: int = Field(8, ge=1, description="Hutchinson probe vectors")
    hessian_scope: Literal["all", "trainable"] = Field("trainable", description="the parameters of the trace")
    landscape: bool = Field(True, description="record the loss along one random direction")
    landscape_points: int = Field(11, ge=3, description="points of the landscape")
    landscape_radius: float = Field(0.1, gt=0, description="the landscape spans -radius .. +radius (relative)")
    max_examples: int = Field(32, ge=1, description="task training examples the loss is measured on")
    batch_size: int = Field(8, ge=1, description="examples per batch")
    seed: int = Field(0, description="seed of the examples drawn and the directions")
    kind: str | None = Field(None, description="which upstream examples the run's mean forgetting averages "
                             "(lm, instruction, all; null: the sweep's default kind); not used by "
                             "measure_sharpness")

    _kind = field_validator("kind")(kind_option)


@dataclass
class SharpnessResult:
    """All measures of one model; :meth:`to_record` gives flat ``sharpness_*`` keys for run records."""

    task_loss: float
    random_mean: float
    random_std: float
    random_max: float
    sam_rise: float
    grad_norm: float
    hessian_trace: float | None = None
    hessian_stderr: float | None = None
    n_examples: int = 0
    wall_s: float = 0.0
    landscape: pd.DataFrame | None = field(default=None, repr=False)

    def to_record(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "landscape"}
        return {f"sharpness_{k}": (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in d.items()}


def task_batches(tokenizer, examples, *, max_length: int = 64, batch_size: int = 8, max_examples: int = 32,
                 device: torch.device | str = "cpu", chat: bool = False, seed: int = 0,
                 model_max_length: int | None = None) -> list[dict[str, torch.Tensor]]:
    """A fixed, seeded subset of task examples, encoded and collated into batches."""
    from forgetscope.data.encoding import collate, encode_examples

    examples = list(examples)
    if len(examples) > max_examples:
        idx = np.random.default_rng(seed).choice(len(examples), size=max_examples, replace=False)
        examples = [examples[i] for i in sorted(idx)]
    enc = encode_examples(tokenizer, examples, max_length, model_max_length=model_max_length, chat=chat)
    enc.sort(key=len)
    return [collate(enc[i:i + batch_size], tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
                    device) for i in range(0, len(enc), batch_size)]


def measure_sharpness(model, batches: Sequence[Any], options: SharpnessOptions | None = None, *,
                      loss_fn: LossFn = lm_loss) -> SharpnessResult:
    """Every measure of :class:`SharpnessOptions` on one model and fixed batches."""
    o = options or SharpnessOptions()
    t0 = time.perf_counter()
    base = batches_loss(model, batches, loss_fn)
    rnd = random_sharpness(model, batches, rho=o.rho, n_draws=o.n_draws, seed=o.seed, scope=o.scope,
                           loss_fn=loss_fn, base_loss=base)
    sam = sam_sharpness(model, batches, rho=o.sam_rho, relative=o.sam_relative, scope=o.scope, loss_fn=loss_fn,
                        base_loss=base)
    res = SharpnessResult(task_loss=base, random_mean=rnd["mean"], random_std=rnd["std"], random_max=rnd["max"],
                          sam_rise=sam["rise"], grad_norm=sam["grad_norm"],
                          n_examples=int(sum(len(b["input_ids"]) if isinstance(b, dict) and "input_ids" in b
                                             else 0 for b in batches)))
    if o.hessian:
        h = hessian_trace(model, batches, n_samples=o.hessian_samples, seed=o.seed, scope=o.hessian_scope,
                          loss_fn=loss_fn)
        res.hessian_trace, res.hessian_stderr = h["trace"], h["stderr"]
    if o.landscape:
        alphas = np.linspace(-o.landscape_radius, o.landscape_radius, o.landscape_points)
        res.landscape = landscape_1d(model, batches, direction="random", alphas=alphas, scope=o.scope,
                                     seed=o.seed, loss_fn=loss_fn)
    res.wall_s = time.perf_counter() - t0
    return res
