"""Replay inside someone else's ``transformers.Trainer`` (TRL's ``SFTTrainer`` included): offline or online
predicted replay, with the schedule and the draws of forgetscope's own ``replay`` strategy::

    from forgetscope.integrations import ReplayCallback

    trainer = SFTTrainer(model=model, args=args, train_dataset=task, processing_class=tokenizer)
    replay = ReplayCallback("data/upstream.jsonl", known="sweeps/demo").attach(trainer)  # online
    trainer.train()
    replay.replayed, replay.probe_calls, replay.summary()

**What is replayed.** ``upstream`` is the pool (a list of :class:`~forgetscope.data.types.Example`, a data
file or a sweep directory). Its examples are chosen by weights, as :mod:`forgetscope.mitigate.replay`
chooses them: ``softmax(F / temperature)`` (or ``linear``) of a forgetting row, drawn one at a time
without replacement (:class:`~forgetscope.mitigate.replay_sampling.ReplaySampler`, seeded by
:func:`~forgetscope.mitigate.replay_sampling.replay_rng` with the Trainer's ``args.seed`` and ``seed``).
The row is, by mode:

* ``values`` given (offline): a row the caller has, e.g. a forecast's ``row`` (``forgetscope.forecast``);
  the draws are then those of ``replay-mix`` and of the strategy's ``oracle`` policy for the same row.
* ``known`` given (online): random replay for the first ``warmup_fraction`` of the optimizer steps (at
  least one), the ``probe`` examples left out; after that many steps the *current* model is evaluated on
  the probe, once, with forgetscope's evaluator (base losses measured on the model at ``on_train_begin``),
  the predictor fitted on the known rows completes the row
  (:func:`forgetscope.predict.completion.complete_row`, the strategy's code path), and the remaining
  steps replay by the predicted weights. Already replayed examples stay masked.
* neither: uniform.

**Where.** The strategy's schedule (:func:`~forgetscope.mitigate.replay_sampling.replay_schedule`): a run of
``T = max_steps × b`` task examples (``b`` per optimizer step: ``per_device_train_batch_size ×
gradient_accumulation_steps``, or the data set if smaller) gets ``int(T · ratio) + 1`` replay examples,
example k in optimizer step ``min(floor(k / ratio) // b, max_steps − 1)``. A step's replay examples are
appended, as extra rows, to its first micro-batch.

**Why at the training step, not in the data pipeline.** The batches a ``Trainer`` trains on are collated
ahead of training: accelerate's ``DataLoaderShard`` fetches one batch ahead, and the Trainer fetches a
whole gradient-accumulation window before its first forward pass. A replay choice made in a collator or a
wrapper data set could not see the model at the warm-up boundary, so :meth:`ReplayCallback.attach`
wraps the trainer's ``training_step`` instead: the task batches, their order and the data loader are
exactly those of the plain run (replay examples are extra, drawn from forgetscope's own random stream),
and only the rows of the batch that reaches the model grow.

**Loss.** The replay rows are encoded as forgetscope's loop encodes its replay pool (plain text scored on
every token, prompt/response on the response; at ``train_max_length``), right-padded with the batch to a
common width (``input_ids``, ``attention_mask`` and ``labels``; a batch with other per-row tensors, such as
a padding-free collator's ``position_ids``, is refused). The Trainer still divides the summed token loss
by the task tokens it counted for the step (``num_items_in_batch``, for models that take loss keyword
arguments, as TRL and the causal LMs of transformers do), so the task gradient is the plain run's and a
replay token weighs as much as a task token: the token-level form of the strategy's
``L_task + (k / b) · L_replay``. A model without loss keyword arguments averages over every row instead.

Single process only: a multi-process launch is refused (every process would replay the same draws). A run
resumed from a checkpoint keeps the schedule but draws afresh; online replay refuses to resume (its probe's
base losses are the model's before any step).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator
from transformers import Trainer, TrainerCallback

from forgetscope.config import DEFAULT_EVAL_MAX_LENGTH, parse_config
from forgetscope.data.encoding import IGNORE_INDEX, Encoded, collate, encode_examples
from forgetscope.data.types import Example
from forgetscope.errors import ConfigError, DataError
from forgetscope.integrations.hf_trainer import _read_upstream, _tokenizer_of, _unwrap, measure_losses
from forgetscope.measure.evaluator import Evaluator
from forgetscope.measure.record import EvalRecord, resolve_chat
from forgetscope.mitigate.replay_sampling import (
    ReplaySampler,
    online_boundary,
    replay_rng,
    replay_schedule,
    sampling_weights,
    warmup_weights,
)
from forgetscope.predict.completion import PROBE_ONLY, complete_row, fit_known
from forgetscope.predict.completion import probe_ids as choose_probe_ids
from forgetscope.store import SweepStore
from forgetscope.store.matrix import ForgettingMatrix

__all__ = ["ReplayCallback", "ReplayCallbackOptions"]

_MIXED_KEYS = ("input_ids", "attention_mask", "labels")


class ReplayCallbackOptions(BaseModel):
    """The settings of :class:`ReplayCallback`; the same names and defaults as the ``replay`` strategy's."""

    model_config = ConfigDict(extra="forbid")

    ratio: float = Field(1 / 32, gt=0, le=8, description="replay examples per task example (1/32 = one per 32)")
    weighting: Literal["softmax", "linear"] = Field("softmax", description="softmax(F / temperature) or linear")
    temperature: float = Field(0.1, gt=0, description="softmax temperature")
    replacement: StrictBool = Field(False, description="draw with replacement")
    warmup_fraction: float = Field(0.1, gt=0, lt=1, description="online: share of the steps with random replay")
    probe: float = Field(30, gt=0, description="online: probe size, a count or a fraction of the pool when < 1")
    predictor: str = Field("knn", description="online: a predictor of forgetscope.predict, or 'probe-only'")
    predictor_options: dict[str, Any] | None = Field(None, description="online: the predictor's options")
    known_strategy: str | None = Field("plain", description="online: keep known rows of this strategy (None: all)")
    task: str | None = Field(None, description="online: leave the known rows of this task out")
    seed: int = Field(0, description="the probe's and the draws' seed")
    train_seed: int | None = Field(None, description="the draws' training seed (default: the Trainer's args.seed)")
    max_length: int | None = Field(None, ge=2, description="the probe's evaluation length (default 512, capped "
                                                           "at the model's context)")
    train_max_length: int | None = Field(None, ge=2, description="the replay rows' length (default: args.max_length "
                                                                 "when the Trainer has one, else max_length)")
    chat: bool | Literal["auto"] = Field("auto", description="format prompt/response pairs with the chat template")
    max_batch_tokens: int = Field(4096, ge=16, description="the probe evaluation's batching (speed only)")

    @field_validator("predictor")
    @classmethod
    def _known_predictor(cls, v: str) -> str:
        from forgetscope.predict.registry import PREDICTORS

        names = [PROBE_ONLY, *PREDICTORS.names()]
        if v not in names:
            raise ValueError(f"unknown predictor {v!r}; choose from {', '.join(names)}")
        return v


def _known_matrix(known: Any) -> ForgettingMatrix:
    if isinstance(known, ForgettingMatrix):
        return known
    if isinstance(known, (str, os.PathLike)):
        store = SweepStore(known)
        if not store.exists():
            raise DataError(f"known: {known} is not a sweep directory; pass its rows as a ForgettingMatrix "
                            "(forgetscope.load_forgetting or forgetscope.importing.load_any)")
        return store.load_matrix()
    raise ConfigError(f"known must be a ForgettingMatrix or a sweep directory, got {type(known).__name__}")


class ReplayCallback(TrainerCallback):
    """Mixes upstream examples into a Trainer's batches by forgetscope's replay rules (module docstring).

    Attach it with ``callback.attach(trainer)`` (or ``trainer=``). After training, ``replayed`` lists the
    replayed ids in order (leave them out when measuring forgetting), ``draws`` the ids of each step,
    ``probe_calls`` the online probe (step, ids, observed forgetting), ``row`` the values that weigh the
    pool and ``summary()`` the counts.
    """

    def __init__(self, upstream: str | os.PathLike[str] | SweepStore | Sequence[Example], *,
                 values: Mapping[str, float] | pd.Series | None = None, known: Any = None,
                 tokenizer: Any = None, trainer: Trainer | None = None, ratio: float = 1 / 32,
                 weighting: str = "softmax", temperature: float = 0.1, replacement: bool = False,
                 warmup_fraction: float = 0.1, probe: float = 30, predictor: str = "knn",
                 predictor_options: dict[str, Any] | None = None, known_strategy: str | None = "plain",
                 task: str | None = None, seed: int = 0, train_seed: int | None = None,
                 max_length: int | None = None, train_max_length: int | None = None,
                 chat: bool | str = "auto", max_batch_tokens: int = 4096) -> None:
        settings = {"ratio": ratio, "weighting": weighting, "temperature": temperature, "replacement": replacement,
                    "warmup_fraction": warmup_fraction, "probe": probe, "predictor": predictor,
                    "predictor_options": predictor_options, "known_strategy": known_strategy, "task": task,
                    "seed": seed, "train_seed": train_seed, "max_length": max_length,
                    "train_max_length": train_max_length, "chat": chat, "max_batch_tokens": max_batch_tokens}
        self.options: ReplayCallbackOptions = parse_config(settings, "for ReplayCallback", ReplayCallbackOptions,
                                                           what="options")
        if values is not None and known is not None:
            raise ConfigError("give values (offline: a forgetting row) or known (online: known rows), not both")
        self.mode: Literal["random", "offline", "online"] = (
            "offline" if values is not None else "online" if known is not None else "random")
        self.pool = _read_upstream(upstream).examples
        self.pool_ids = [e.example_id for e in self.pool]
        self._at = {i: k for k, i in enumerate(self.pool_ids)}
        self.tokenizer = tokenizer
        self.replayed: list[str] = []
        self.draws: list[dict[str, Any]] = []
        self.probe_calls: list[dict[str, Any]] = []
        self.row: pd.Series | None = None
        self.schedule = np.zeros(0, dtype=int)
        self.boundary: int | None = None
        self._trainer: Trainer | None = None
        self._sampler: ReplaySampler | None = None
        self._pending: list[Encoded] | None = None
        self._encoded: dict[str, Encoded] = {}
        self._train_length = 0
        self._pad_id = 0
        self._probe: dict[str, Any] = {}
        self._predictor: Any = None
        self._columns: list[str] = []
        self._known_rows = 0
        if self.mode == "offline":
            self._set_row(self._given_row(values))
        elif self.mode == "online":
            self._fit_known(known)
        else:
            self.weights = np.full(len(self.pool_ids), 1.0 / len(self.pool_ids))
        if trainer is not None:
            self.attach(trainer)

    # ---- weights -------------------------------------------------------------------------------
    def _given_row(self, values: Mapping[str, float] | pd.Series) -> np.ndarray:
        given = {str(k): float(v) for k, v in dict(values).items()}
        row = np.array([given.get(i, np.nan) for i in self.pool_ids], dtype=float)
        if not np.isfinite(row).any():
            raise DataError("values: the forgetting row has no value for any pool example")
        return row

    def _set_row(self, row: np.ndarray) -> None:
        o = self.options
        self.row = pd.Series(row, index=pd.Index(self.pool_ids, name="example_id"), name="forgetting")
        self.weights = sampling_weights(row, o.weighting, o.temperature)

    def _fit_known(self, known: Any) -> None:
        """The predictor, its columns and the probe, fixed before training; random weights for the warm-up."""
        o = self.options
        if o.predictor == PROBE_ONLY:
            self._columns = list(self.pool_ids)
        else:
            self._predictor, self._columns, self._known_rows = fit_known(
                o.predictor, _known_matrix(known), options=o.predictor_options, drop_task=o.task,
                strategy=o.known_strategy, what="replay online")
        self._probe["ids"] = choose_probe_ids(self.pool_ids, self._columns, o.probe, seed=o.seed, what="replay online")
        self.weights = warmup_weights(self.pool_ids, self._probe["ids"])

    @property
    def probe_ids(self) -> list[str]:
        """The online probe's example ids (empty in the other modes)."""
        return list(self._probe.get("ids", []))

    # ---- attaching -----------------------------------------------------------------------------
    def attach(self, trainer: Trainer) -> ReplayCallback:
        """Add this callback to ``trainer`` and wrap its ``training_step`` to mix the replay rows in."""
        if not isinstance(trainer, Trainer):
            raise ConfigError(f"attach needs a transformers.Trainer, got {type(trainer).__name__}")
        owner = getattr(trainer.training_step, "_forgetscope_replay", None)
        if owner is not None and owner is not self:
            raise ConfigError("this trainer already has a ReplayCallback; one trainer takes one")
        self._trainer = trainer
        if self not in trainer.callback_handler.callbacks:
            trainer.add_callback(self)
        if owner is None:
            original = trainer.training_step

            def training_step(model: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
                return original(model, self._mix(inputs), *args, **kwargs)

            training_step._forgetscope_replay = self  # type: ignore[attr-defined]
            trainer.training_step = training_step  # type: ignore[method-assign]
        return self

    # ---- Trainer events ------------------------------------------------------------------------
    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        from forgetscope.models import context_length

        trainer = self._trainer
        if trainer is None:
            raise ConfigError("ReplayCallback is not attached: call callback.attach(trainer), which also makes "
                              "the trainer's steps carry the replay examples")
        if getattr(args, "world_size", 1) > 1:
            raise ConfigError("ReplayCallback runs in one process: in a multi-process launch every process would "
                              "replay the same draws")
        o = self.options
        if self.tokenizer is None:
            candidates = (kwargs.get("processing_class"), getattr(trainer, "processing_class", None))
            self.tokenizer = _tokenizer_of(next((c for c in candidates if c is not None), None))
        if getattr(self.tokenizer, "pad_token_id", None) is None:
            raise ConfigError("ReplayCallback needs a tokenizer with a pad token: pass tokenizer=... or give the "
                              "Trainer a processing_class")
        self._pad_id = int(self.tokenizer.pad_token_id)
        model = _unwrap(kwargs["model"] if kwargs.get("model") is not None else trainer.model)
        context = context_length(model)
        cap = context or DEFAULT_EVAL_MAX_LENGTH
        probe_length = min(o.max_length or DEFAULT_EVAL_MAX_LENGTH, cap)
        given = o.train_max_length or getattr(args, "max_length", None)
        self._train_length = min(int(given), cap) if isinstance(given, int) and given >= 2 else probe_length
        self._chat = resolve_chat(o.chat, self.tokenizer)
        self._encoded = {}

        steps = int(state.max_steps)
        per_step = int(args.train_batch_size) * int(args.gradient_accumulation_steps)
        data = getattr(trainer, "train_dataset", None)
        if hasattr(data, "__len__") and len(data) > 0:
            per_step = min(per_step, len(data))
        self.schedule = replay_schedule(steps, max(1, per_step), o.ratio)
        seed = int(args.seed) if o.train_seed is None else o.train_seed
        self._sampler = ReplaySampler(len(self.pool_ids), replay_rng(seed, o.seed), replacement=o.replacement)
        self.replayed, self.draws, self.probe_calls, self._pending = [], [], [], None
        if self.mode == "online":
            if state.global_step > 0:
                raise ConfigError(f"online replay cannot resume at step {state.global_step}: the probe's base losses "
                                  "are those of the model before any step; start the run afresh")
            self.boundary = online_boundary(steps, o.warmup_fraction)
            self.weights = warmup_weights(self.pool_ids, self._probe["ids"])
            record = EvalRecord(max_length=probe_length, chat=self._chat, dtype=None,
                                max_batch_tokens=o.max_batch_tokens)
            evaluator = Evaluator(self.tokenizer, record, model_max_length=context)
            examples = [self.pool[self._at[i]] for i in self._probe["ids"]]
            self._probe.update(evaluator=evaluator, examples=examples, encoded=evaluator.encode(examples))
            self._probe["base"] = self._probe_losses(model)  # once, on the model before any step

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Draw this step's replay examples; the first micro-batch of the step carries them."""
        step = int(state.global_step)
        k = int(self.schedule[step]) if 0 <= step < self.schedule.size else 0
        if k == 0 or self._sampler is None:
            self._pending = None
            return
        ids = [self.pool_ids[i] for i in self._sampler.draw(k, self.weights)]
        self.replayed.extend(ids)
        self.draws.append({"step": step, "ids": ids})
        self._pending = [self._encode(i) for i in ids]

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.mode != "online" or self.probe_calls or state.global_step != self.boundary:
            return
        model = kwargs.get("model")
        after = self._probe_losses(model if model is not None else self._trainer.model)
        observed = {i: float(a - b) for i, a, b in zip(self._probe["ids"], after, self._probe["base"])
                    if np.isfinite(a - b)}
        if not observed:
            raise DataError("replay online: no finite probe loss at the warm-up boundary")
        self.probe_calls.append({"step": int(state.global_step), "ids": list(self._probe["ids"]),
                                 "values": dict(observed), "replayed_in_warmup": len(self.replayed)})
        self._set_row(complete_row(self._predictor, self._columns, observed, self.pool_ids))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._pending = None

    # ---- the rows ------------------------------------------------------------------------------
    def _probe_losses(self, model: Any) -> np.ndarray:
        p = self._probe
        return measure_losses(p["evaluator"], model, p["examples"], p["encoded"])

    def _encode(self, example_id: str) -> Encoded:
        """A pool example in forgetscope's training encoding (encoded once, when first drawn)."""
        if example_id not in self._encoded:
            self._encoded[example_id] = encode_examples(self.tokenizer, [self.pool[self._at[example_id]]],
                                                        self._train_length, chat=self._chat)[0]
        return self._encoded[example_id]

    def _mix(self, inputs: Any) -> Any:
        """The step's batch with the pending replay rows appended (a new mapping; ``inputs`` is untouched)."""
        rows, self._pending = self._pending, None
        if not rows:
            return inputs
        if not isinstance(inputs, Mapping) or not torch.is_tensor(inputs.get("input_ids")):
            raise ConfigError("ReplayCallback needs batches with an input_ids tensor to append replay rows to")
        task_ids = inputs["input_ids"]
        n = task_ids.shape[0]
        if "labels" not in inputs:
            raise ConfigError("ReplayCallback needs batches with labels (the collator of a causal LM Trainer sets "
                              "them) to append replay rows to")
        other = [k for k, v in inputs.items() if k not in _MIXED_KEYS and torch.is_tensor(v)
                 and v.dim() > 0 and v.shape[0] == n]
        if other:
            raise ConfigError(f"ReplayCallback appends rows to {', '.join(_MIXED_KEYS)}; the batch also holds "
                              f"{', '.join(map(repr, other))}, which it cannot extend (a padding-free or packed "
                              "collator?): turn padding_free/packing off")
        replay = collate(rows, self._pad_id, task_ids.device)
        width = max(task_ids.shape[1], replay["input_ids"].shape[1])
        fill = {"input_ids": self._pad_id, "attention_mask": 0, "labels": IGNORE_INDEX}
        mixed = dict(inputs)
        for key in _MIXED_KEYS:
            if key in inputs:
                mixed[key] = torch.cat([_pad_right(inputs[key], width, fill[key]),
                                        _pad_right(replay[key].to(inputs[key].dtype), width, fill[key])])
        return mixed

    # ---- record --------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """What the run replayed and what choosing it cost (upstream evaluations beyond training)."""
        o = self.options
        info: dict[str, Any] = {"mode": self.mode, "ratio": o.ratio, "weighting": o.weighting,
                                "temperature": o.temperature if o.weighting == "softmax" else None,
                                "replacement": o.replacement, "pool_size": len(self.pool_ids),
                                "replay_n": int(self.schedule.sum()), "n_replayed": len(self.replayed),
                                "n_unique_replayed": len(set(self.replayed)),
                                "pool_resets": self._sampler.resets if self._sampler is not None else 0,
                                "upstream_evaluations": 0}
        if self.mode == "online":
            info.update(predictor=o.predictor, known_rows=self._known_rows, probe_size=len(self.probe_ids),
                        warmup_steps=self.boundary,
                        probe_step=self.probe_calls[0]["step"] if self.probe_calls else None,
                        replayed_in_warmup=self.probe_calls[0]["replayed_in_warmup"] if self.probe_calls else None,
                        upstream_evaluations=len(self.probe_ids) * (1 + len(self.probe_calls)))
        return info


def _pad_right(x: torch.Tensor, width: int, value: int) -> torch.Tensor:
    """``x`` (rows × length) right-padded with ``value`` to ``width`` columns."""
    if x.shape[1] >= width:
        return x
    return torch.nn.functional.pad(x, (0, width - x.shape[1]), value=value)
