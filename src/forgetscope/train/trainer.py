"""The one fine-tuning loop.

Why our own loop rather than HF ``Trainer``: the mitigation strategies need to reach inside a step
(SAM takes two forward/backward passes, replay changes the batch, EWC adds a penalty, LWF unlearns
between steps). With ``Trainer`` each would subclass ``training_step``/``compute_loss`` and fight its
accelerate, logging and scheduling machinery; a 100-line loop with explicit hooks keeps every strategy a
small plug-in, is fully deterministic on CPU (one seeded generator draws the batches), and has no
hidden data-loader workers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from forgetscope.config import TrainConfig
from forgetscope.data.encoding import encode_examples
from forgetscope.data.types import Example, Task
from forgetscope.measure import heldout_loss
from forgetscope.models import (
    context_length,
    count_trainable,
    input_device,
    prepare_for_training,
    set_gradient_checkpointing,
)
from forgetscope.precision import dtype_name, resolve_train_dtype
from forgetscope.progress import progress_enabled
from forgetscope.store.schema import TrainRecord
from forgetscope.train.hooks import Hook, Strategy, TrainContext


@dataclass
class TrainResult:
    """The fine-tuned model and the run's record (what the store keeps)."""

    model: Any
    record: TrainRecord
    excluded_upstream_ids: set[str] = field(default_factory=set)


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _lr_lambda(warmup: int) -> Callable[[int], float]:
    return lambda step: min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0


def run_steps(ctx: TrainContext, strategy: Strategy, steps: int, *, hooks: Sequence[Hook] = (),
              progress: bool = False, desc: str = "fine-tuning") -> list[float]:
    """The training loop, the one every fine-tune goes through: ``steps`` optimizer steps on
    ``ctx.train_encoded`` in batches of ``ctx.config.batch_size`` (a permutation drawn from ``ctx.rng``,
    redrawn at each epoch), each batch augmented and stepped by ``strategy``, under the learning-rate
    warm-up of ``ctx.config.warmup_steps``; the strategy and then ``hooks`` see every step. Returns the
    training loss of every step. ``ctx.optimizer`` must be set.

    With ``grad_accum_steps`` k > 1 a step takes k·batch_size examples (the same draw a batch of that size
    would take) and hands the strategy its k micro-batches of batch_size, whose gradients it sums
    (:meth:`~forgetscope.train.hooks.Strategy.backward`); k = 1 is the single-batch step, unchanged."""
    cfg = ctx.config
    accum = getattr(cfg, "grad_accum_steps", 1)
    per_step = cfg.batch_size * accum
    every = [strategy, *hooks]
    scheduler = torch.optim.lr_scheduler.LambdaLR(ctx.optimizer, _lr_lambda(cfg.warmup_steps))
    train_enc = ctx.train_encoded
    ctx.model.train()
    order = ctx.rng.permutation(len(train_enc))
    cursor = 0
    train_losses: list[float] = []
    bar = None
    if progress_enabled(progress):
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc=desc, unit="step", leave=False, dynamic_ncols=True)
    try:
        for step in range(steps):
            ctx.step = step
            for h in every:
                h.before_step(ctx)
            if cursor + per_step > len(order):  # next epoch: reshuffle with the same generator
                order = ctx.rng.permutation(len(train_enc))
                cursor = 0
            idx = order[cursor:cursor + per_step]
            cursor += per_step
            examples = strategy.augment_batch(ctx, [train_enc[i] for i in idx])
            if accum == 1:
                loss = strategy.training_step(ctx, ctx.collate(examples))
            else:
                loss = strategy.training_step(ctx, [ctx.collate(examples[i:i + cfg.batch_size])
                                                    for i in range(0, len(examples), cfg.batch_size)])
            scheduler.step()
            train_losses.append(loss)
            ctx.step = step + 1
            ctx.last_loss = loss
            for h in every:
                h.after_step(ctx)
            if bar is not None:
                bar.set_postfix(loss=f"{loss:.3f}")
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return train_losses


def train_on_task(model, tokenizer, task: Task, config: TrainConfig | None = None, *,
                  strategy: Strategy | None = None, upstream: Sequence[Example] = (),
                  hooks: Sequence[Hook] = (), progress: bool = True,
                  chat: bool = False,
                  measure_upstream: Callable[[Any, list[str]], np.ndarray] | None = None) -> TrainResult:
    """Fine-tune ``model`` on ``task`` and return it with the run record.

    ``model`` is modified in place (LoRA wraps it); pass a fresh copy of the base weights for each run.
    ``upstream`` is the pool strategies may train on (replay) or use for statistics (EWC's Fisher).
    ``hooks`` see the run after the strategy does (checkpoint evaluations, metric trackers).
    ``measure_upstream(model, example_ids)`` measures upstream examples as the sweep does (a sweep passes
    :meth:`~forgetscope.experiments.session.SweepSession.upstream_losses`); strategies that probe
    forgetting during training use it, so their probe values are comparable with the sweep's rows.
    The record has the trainable parameter count, steps, wall time, and the task's held-out loss
    before and after (token-weighted mean NLL).

    Precision: the weights and the optimiser state keep the model's dtype (float32 as forgetscope loads
    it: the master weights); ``config.dtype`` only sets the forward pass's autocast (``auto``: bf16 on
    CUDA, float32 on a CPU), so small updates are accumulated in float32 and never rounded to bf16.
    ``config.gradient_checkpointing`` and ``config.grad_accum_steps`` trade compute for memory.
    """
    cfg = config or TrainConfig()
    strategy = strategy or Strategy()
    strategy.check_config(cfg)
    seed_everything(cfg.seed)
    t0 = time.perf_counter()
    device = input_device(model)
    max_ctx = context_length(model)
    train_enc = encode_examples(tokenizer, task.train, cfg.max_length, model_max_length=max_ctx, chat=chat)
    held_enc = encode_examples(tokenizer, task.heldout, cfg.max_length, model_max_length=max_ctx, chat=chat)
    up_enc = encode_examples(tokenizer, list(upstream), cfg.max_length, model_max_length=max_ctx, chat=chat)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    loss_before = heldout_loss(model, held_enc, pad_id)

    model = prepare_for_training(model, cfg.method, lora_rank=cfg.lora_rank, lora_alpha=cfg.lora_alpha,
                                 lora_dropout=cfg.lora_dropout, target_modules=cfg.target_modules,
                                 gradient_checkpointing=cfg.gradient_checkpointing)
    ctx = TrainContext(model=model, tokenizer=tokenizer, task=task, config=cfg, device=device, pad_id=pad_id,
                       train_encoded=train_enc, upstream=list(upstream), upstream_encoded=up_enc,
                       rng=np.random.default_rng(cfg.seed), chat=chat,
                       compute_dtype=resolve_train_dtype(cfg.dtype, device), measure_upstream=measure_upstream)
    every = [strategy, *hooks]
    for h in every:
        h.before_training(ctx)
    params = [p for _, p in ctx.trainable_parameters()]
    ctx.optimizer = strategy.build_optimizer(ctx, params)
    train_losses = run_steps(ctx, strategy, cfg.steps, hooks=hooks, progress=progress,
                             desc=f"fine-tuning {task.name}")
    for h in every:
        h.after_training(ctx)
    if cfg.gradient_checkpointing:
        set_gradient_checkpointing(model, False)  # the trained model is evaluated and perturbed, not trained on
    model.eval()
    loss_after = heldout_loss(model, held_enc, pad_id)
    record: TrainRecord = {
        "task": task.name,
        "method": cfg.method,
        "strategy": strategy.name,
        "seed": cfg.seed,
        "steps": cfg.steps,
        "lr": cfg.lr,
        "batch_size": cfg.batch_size,
        "max_length": cfg.max_length,
        "lora_rank": cfg.lora_rank if cfg.method == "lora" else None,
        "trainable_params": count_trainable(model),
        "task_loss_before": loss_before,
        "task_loss_after": loss_after,
        "train_loss_first": train_losses[0] if train_losses else None,
        "train_loss_last": float(np.mean(train_losses[-5:])) if train_losses else None,
        "train_wall_s": time.perf_counter() - t0,
        "train_dtype": dtype_name(ctx.compute_dtype),
        "strategy_info": strategy.summary(),
    }
    return TrainResult(model=model, record=record, excluded_upstream_ids=strategy.excluded_upstream_ids())
