"""Forgetting as a training metric: a ``transformers.TrainerCallback`` that logs upstream forgetting.

A sweep measures forgetting after training; this callback measures it *while* an ordinary Hugging Face
``Trainer`` trains, so the forgetting curve sits next to the loss curve in ``trainer.state.log_history``
and in every ``report_to`` backend (TensorBoard, W&B, ...)::

    from forgetscope.integrations import ForgettingCallback

    callback = ForgettingCallback("data/upstream.jsonl", eval_steps=50)
    trainer = Trainer(model=model, args=args, train_dataset=ds, processing_class=tokenizer,
                      callbacks=[callback])   # or callback.attach(trainer) after building it
    trainer.train()
    callback.history[-1]["metrics"]["forgetting/mean"], callback.last_row.nlargest(10)

``F[j] = loss_now(j) - loss_before(j)`` per upstream example j (mean token NLL in nats, as everywhere in
forgetscope; positive means forgotten). The upstream set is a list of :class:`~forgetscope.data.types.Example`,
a data file :func:`~forgetscope.data.loading.load_examples` reads, or a sweep directory.
"""

from __future__ import annotations

import hashlib
import math
import numbers
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import ExportableState

from forgetscope.config import EvalConfig
from forgetscope.data.encoding import Encoded
from forgetscope.data.loading import load_examples
from forgetscope.data.types import Example
from forgetscope.errors import ConfigError, DataError, StoreError
from forgetscope.measure.evaluator import Evaluator
from forgetscope.measure.forgetting import forgotten_share
from forgetscope.measure.record import EvalRecord
from forgetscope.predict.completion import complete_from_probe
from forgetscope.store import SweepStore

__all__ = ["ForgettingCallback"]

_SUPPORTED_FORM = ("Trainer(model=model, processing_class=tokenizer, callbacks=[ForgettingCallback(upstream)]) "
                   "or ForgettingCallback(upstream, tokenizer=tokenizer).attach(trainer)")
_TABLE_TEXT_CHARS = 200  # the most-forgotten table shows the start of each text


@dataclass
class _Upstream:
    """The upstream set and what a sweep knows about it (base losses, token counts, eval settings)."""

    examples: list[Example]
    source: str
    store: SweepStore | None = None
    loss_before: np.ndarray | None = None
    n_tokens: np.ndarray | None = None
    record: EvalRecord | None = None  # how the sweep measured loss_before (None: not from a sweep)

    @property
    def ids(self) -> list[str]:
        return [e.example_id for e in self.examples]


def _from_sweep(store: SweepStore) -> _Upstream:
    """Upstream examples, base losses and eval settings of a sweep directory."""
    table = store.read_upstream()
    examples = store.upstream_examples(table=table)
    loss_before, n_tokens = store.base_losses(table=table)
    # how the sweep measured loss_before (its one record; loss_after is measured the same way)
    try:
        record: EvalRecord | None = store.eval_record()
    except StoreError:  # a matrix imported without a config: nothing recorded to follow
        record = None
    return _Upstream(examples, str(store.path), store=store, loss_before=loss_before, n_tokens=n_tokens,
                     record=record)


def _read_upstream(upstream: Any) -> _Upstream:
    """Normalise the accepted upstream inputs: a sweep directory, a data file, or a list of examples."""
    if isinstance(upstream, SweepStore):
        return _from_sweep(upstream)
    if isinstance(upstream, (str, os.PathLike)):
        path = Path(upstream).expanduser()
        if path.is_dir() and SweepStore(path).exists():
            return _from_sweep(SweepStore(path))
        return _Upstream(load_examples(path), str(path))
    if isinstance(upstream, Example):
        upstream = [upstream]
    if isinstance(upstream, (list, tuple)) and upstream and all(isinstance(x, dict) for x in upstream):
        upstream = [_example_from_record(r) for r in upstream]  # as state() writes them to a checkpoint
    try:
        items = list(upstream)
    except TypeError:
        raise ConfigError(
            f"upstream must be a sweep directory, a data file or a list of Example, got {type(upstream).__name__}"
        ) from None
    if not items:
        raise DataError("the upstream set is empty: pass at least one example")
    wrong = next((x for x in items if not isinstance(x, Example)), None)
    if wrong is not None:
        raise DataError(f"upstream items must be forgetscope Example objects, got {type(wrong).__name__}")
    dups = sorted(k for k, c in Counter(e.example_id for e in items).items() if c > 1)
    if dups:
        raise DataError(f"upstream example ids are not unique: {', '.join(map(repr, dups[:5]))}")
    return _Upstream(items, "examples")


def _example_record(example: Example) -> dict[str, Any]:
    """An example as JSON-able fields (its ``meta`` is left out), for a checkpoint's trainer state."""
    record = asdict(example)
    record.pop("meta", None)
    record["prompt_messages"] = [list(turn) for turn in example.prompt_messages]
    return record


def _example_from_record(record: dict[str, Any]) -> Example:
    fields = dict(record)
    fields["prompt_messages"] = tuple(tuple(turn) for turn in fields.get("prompt_messages") or ())
    try:
        return Example(**fields)
    except TypeError as e:
        raise DataError(f"upstream record {record.get('example_id')!r} is not an Example: {e}") from None


def _fingerprint(ids: Sequence[str]) -> str:
    """A short digest of the upstream ids, so a checkpoint's base losses are reused only for the same set."""
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


def _rank_world() -> tuple[int, int]:
    """This process's rank and the world size of ``torch.distributed`` ((0, 1) when it is not initialised)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_gather(values: np.ndarray) -> list[np.ndarray]:
    """Every rank's ``values``, in rank order."""
    import torch.distributed as dist

    pieces: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(pieces, values)
    return [np.asarray(p, dtype=np.float64) for p in pieces]


def _unwrap(model: Any) -> Any:
    """The module itself, out of DataParallel/DDP and ``torch.compile`` wrappers."""
    parallel = (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)
    while True:
        if isinstance(model, parallel):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), torch.nn.Module):
            model = model._orig_mod
        else:
            return model


def measure_losses(evaluator: Evaluator, model: Any, examples: Sequence[Example],
                   encoded: Sequence[Encoded]) -> np.ndarray:
    """Mean token NLL of ``examples`` under the model a Trainer is training, without gradients (the
    module itself, out of its wrappers); its train/eval mode is restored."""
    model = _unwrap(model)
    was_training = model.training
    try:
        with torch.no_grad():
            table = evaluator.evaluate(model, list(examples), encoded=list(encoded))
    finally:
        model.train(was_training)
    return table["loss"].to_numpy(dtype=np.float64)


def _tokenizer_of(processing_class: Any) -> Any:
    """A tokenizer from the Trainer's ``processing_class`` (a processor carries one as ``.tokenizer``)."""
    if processing_class is None:
        return None
    inner = getattr(processing_class, "tokenizer", None)
    return inner if inner is not None and callable(inner) else processing_class


class ForgettingCallback(TrainerCallback, ExportableState):
    """Logs how much the model being trained forgets of an upstream set, every ``eval_steps`` steps.

    Works with ``transformers.Trainer`` and its subclasses (TRL's ``SFTTrainer``, ``DPOTrainer``, ...),
    with full fine-tuning and peft adapters; it needs no TRL import. Pass it in ``Trainer(callbacks=[...])``:
    the model and tokenizer come with the Trainer's callback events (``model``, ``processing_class``). Or
    attach it with ``callback.attach(trainer)`` (or ``ForgettingCallback(..., trainer=trainer)``), which
    adds it to the trainer's callbacks when needed and keeps the trainer to log through: only then do the
    training-time values reach the ``report_to`` backends (see *Why Trainer.log*); without it they are
    appended to ``trainer.state.log_history`` directly.

    **Evaluation metrics.** Each Trainer evaluation gets the values with an ``eval_`` prefix
    (``eval_forgetting/mean``, ...) in its metrics dict and its ``log_history`` entry, so
    ``metric_for_best_model="eval_forgetting/mean"`` with ``greater_is_better=False``,
    ``load_best_model_at_end`` and ``EarlyStoppingCallback`` select and stop on forgetting. They are
    added in ``on_log`` (the Trainer logs the evaluation metrics before ``on_evaluate``, in place), so
    they are there whatever the callbacks' order; ``on_evaluate`` adds them when a trainer logged a copy.

    **Checkpoints.** The callback is an ``ExportableState``: a checkpoint's ``trainer_state.json`` holds
    the base losses and history, and ``train(resume_from_checkpoint=...)`` reuses them instead of
    measuring the (already trained) model again, when the upstream ids and evaluation settings match.

    **Distributed.** Under ``torch.distributed`` with more than one process each rank evaluates every
    world-size-th upstream example and the losses are gathered, so every rank holds the whole row.

    **Most forgotten.** At the end of training a ``{prefix}top`` entry, a list of the ``top_k`` most
    forgotten examples (id, F, start of the text), is appended to ``trainer.state.log_history``;
    :meth:`most_forgotten` returns it as a DataFrame.

    **Base losses.** With a sweep directory as ``upstream`` the sweep's ``loss_before`` is used, so no
    base evaluation is needed; this is valid **only when the model being trained is that sweep's base
    model** (same weights, tokenizer, ``max_length`` and chat setting; the last three are checked
    through the sweep's token counts and settings, the weights cannot be). Otherwise the losses are
    measured once on the model as it is at ``on_train_begin`` (a LoRA model with fresh adapters equals
    its base); a second ``train()`` call keeps the first base.

    **Probe mode.** ``probe=k`` (a count, or a fraction of N; with a sweep of at least 2 finished runs)
    evaluates only a seeded random subset of k upstream examples each time and completes the row with the sweep's knn predictor
    (``get_predictor("knn").fit(F).predict(probe_idx, probe_values)``), cutting the evaluation cost by
    ``1 - k/N``; ``last_row`` holds measured values on the probe and predictions elsewhere.

    **Logged values** (``prefix`` + name): ``mean`` (mean F over finite entries), ``share_forgotten``
    (share of finite entries with F > 0), ``max`` and ``evaluated`` (upstream examples evaluated this
    time). TensorBoard and W&B show them as ``train/forgetting/...`` (transformers prefixes training logs).

    **Why ``Trainer.log``.** The values go through the base ``transformers.Trainer.log`` of the attached
    trainer: that appends them to ``trainer.state.log_history`` and calls ``on_log`` of every reporting
    callback, the path the training loss takes. Setting ``control.should_log`` and adding the values to
    ``logs`` in ``on_log`` does not work: ``Trainer.log`` stores a copy of ``logs`` in ``log_history``
    before ``on_log`` runs, and the ``report_to`` callbacks, registered before user callbacks, have
    already written by then. The base method is called rather than the trainer's own ``log``, because
    TRL trainers override ``log`` to fold their accumulated metrics (token accuracy, entropy) into the
    next call and clear them, which would move them onto the forgetting entry. ``control.should_log`` is
    restored afterwards, since ``on_log`` clears it and the trainer's own loss log at that step would
    otherwise be skipped.

    Evaluation happens at every ``eval_steps`` in ``on_step_end``, at the last step, and in
    ``on_train_end`` if training stopped between those; it runs without gradients, in eval mode,
    restoring the model's train/eval mode afterwards. A Trainer evaluation at a step already measured
    reuses that measurement. The reporting callbacks write from the main process only.
    """

    def __init__(self, upstream: str | os.PathLike[str] | SweepStore | Sequence[Example], *,
                 tokenizer: Any = None, probe: float | None = None, seed: int = 0,
                 max_length: int | None = None, eval_steps: int | None = None, top_k: int = 10,
                 chat: bool | Literal["auto"] | None = None, prefix: str = "forgetting/",
                 max_batch_tokens: int = 4096, trainer: Trainer | None = None) -> None:
        """``max_length`` and ``chat`` default to the sweep's evaluation record (else 512 tokens, capped at the
        model's context, and ``"auto"``): they decide what a loss means, so an explicit value that
        contradicts the sweep is refused. ``max_batch_tokens`` only trades memory for speed (the callback's
        own, not the sweep's: it measures beside the optimizer's state). ``eval_steps`` defaults to the
        Trainer's ``eval_steps`` when its evaluation strategy is ``"steps"``, else its ``logging_steps``."""
        if eval_steps is not None and (isinstance(eval_steps, bool) or not isinstance(eval_steps, int)
                                       or eval_steps < 1):
            raise ConfigError(f"eval_steps must be a positive integer, got {eval_steps!r}")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ConfigError(f"top_k must be a positive integer, got {top_k!r}")
        if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, numbers.Integral)
                                       or max_length < 2):
            raise ConfigError(f"max_length must be an integer of at least 2 tokens, got {max_length!r}")
        max_length = None if max_length is None else int(max_length)
        if isinstance(max_batch_tokens, bool) or not isinstance(max_batch_tokens, numbers.Integral) \
                or max_batch_tokens < 16:
            raise ConfigError(f"max_batch_tokens must be at least 16, got {max_batch_tokens}")
        if chat not in (None, True, False, "auto"):
            raise ConfigError(f"chat must be True, False or 'auto', got {chat!r}")
        self.upstream = _read_upstream(upstream)
        # the JSON-able constructor arguments state() writes, so transformers can rebuild the callback
        self._args = {"upstream": (self.upstream.source if self.upstream.source != "examples"
                                   else [_example_record(e) for e in self.upstream.examples]),
                      "probe": probe, "seed": seed, "max_length": max_length, "eval_steps": eval_steps,
                      "top_k": top_k, "chat": chat, "prefix": prefix, "max_batch_tokens": max_batch_tokens}
        self.tokenizer = tokenizer
        self.seed = seed
        self.eval_steps = eval_steps
        self.top_k = top_k
        self.prefix = prefix
        self.max_batch_tokens = int(max_batch_tokens)
        self.max_length = self._setting("max_length", max_length, None)  # None: the default, set in _prepare
        self.chat_setting = self._setting("chat", chat, "auto", strict=False)  # checked once resolved
        self.history: list[dict[str, Any]] = []
        self.last_row: pd.Series | None = None
        self._trainer: Trainer | None = None
        self._encoded: list[Encoded] | None = None
        self._evaluator: Evaluator | None = None
        self._chat = False
        self._steps = 0
        self._checkpoint: dict[str, Any] | None = None  # set by transformers from a checkpoint's state
        self._last_step: int | None = None
        n = len(self.upstream.examples)
        self._loss_before = None if self.upstream.loss_before is None else self.upstream.loss_before.copy()
        self._probe_idx: np.ndarray | None = None
        self._predictor = None
        if probe is not None:
            self._setup_probe(probe, n)
        if trainer is not None:
            self.attach(trainer)

    # ---- setup ---------------------------------------------------------------------------------
    def _setting(self, name: str, given: Any, default: Any, *, strict: bool = True) -> Any:
        """The user's value, else the sweep's record's, else the default; a contradiction with the sweep is an
        error."""
        swept = None if self.upstream.record is None else getattr(self.upstream.record, name)
        if given is None:
            return default if swept is None else swept
        if strict and swept is not None and given != swept and self.upstream.loss_before is not None:
            raise ConfigError(f"{name}={given!r} differs from the sweep's {name}={swept!r}, so its loss_before "
                              f"values would not apply; leave {name} unset")
        return given

    def _setup_probe(self, probe: float, n: int) -> None:
        from forgetscope.predict import choose_probe, get_predictor, probe_size

        store = self.upstream.store
        if store is None:
            raise ConfigError("probe mode needs a sweep directory as upstream: its measured forgetting rows "
                              "complete the examples that are not evaluated")
        count = probe_size(probe, n)  # DataError for 0, negative, or more than n
        known = store.load_matrix().values
        known = known[np.isfinite(known).any(axis=1)]
        if known.shape[0] < 2:
            raise DataError(f"probe mode needs a sweep with at least 2 finished runs; {store.path} has "
                            f"{known.shape[0]}")
        idx = choose_probe(n, count, seed=self.seed)
        if self._loss_before is not None and not np.isfinite(self._loss_before[idx]).any():
            raise DataError(f"the sweep {store.path} has no finite loss_before on any of the {count} probe examples")
        self._probe_idx = idx
        self._predictor = get_predictor("knn").fit(known)

    def attach(self, trainer: Trainer) -> ForgettingCallback:
        """Keep ``trainer`` to log through (adding this callback to it if absent); returns the callback."""
        if not isinstance(trainer, Trainer):
            raise ConfigError(f"attach needs a transformers.Trainer, got {type(trainer).__name__}")
        self._trainer = trainer
        if self not in trainer.callback_handler.callbacks:
            trainer.add_callback(self)
        return self

    @property
    def probe_ids(self) -> list[str] | None:
        """Ids of the probe examples evaluated in probe mode (None when every example is evaluated)."""
        if self._probe_idx is None:
            return None
        ids = self.upstream.ids
        return [ids[i] for i in self._probe_idx]

    @property
    def base_losses(self) -> pd.Series | None:
        """Mean token NLL of each upstream example before training (NaN where not known)."""
        if self._loss_before is None:
            return None
        return pd.Series(self._loss_before, index=pd.Index(self.upstream.ids, name="example_id"), name="loss_before")

    def _eval_indices(self) -> np.ndarray:
        return self._probe_idx if self._probe_idx is not None else np.arange(len(self.upstream.examples))

    def _resolve_eval_steps(self, args: Any, state: Any) -> int:
        if self.eval_steps is not None:
            return self.eval_steps
        strategy = getattr(args, "eval_strategy", None) or getattr(args, "evaluation_strategy", None)
        if str(getattr(strategy, "value", strategy)) == "steps":
            steps = getattr(state, "eval_steps", None) or args.eval_steps or args.logging_steps
        else:
            steps = getattr(state, "logging_steps", None) or args.logging_steps
        if 0 < steps < 1:  # a fraction of the run, as transformers allows
            steps = math.ceil(max(1, state.max_steps) * steps)
        return max(1, int(steps))

    def _prepare(self, model: Any, tokenizer: Any) -> None:
        """Build the evaluator once (the sweep's settings, else the defaults for this model), encode the
        upstream set with it and check it against the sweep (chat format, token counts)."""
        from forgetscope.models import context_length

        if self._encoded is not None:
            return
        context = context_length(model)
        swept = self.upstream.record
        if swept is not None:  # the sweep's record: its dtype (loss_after in the dtype of loss_before)
            base = replace(swept, chat=self.chat_setting)
        else:  # resolved as a sweep's eval config would be for this model (auto length), in its own dtype
            base = replace(EvalRecord.resolve(EvalConfig(chat=self.chat_setting), tokenizer, context), dtype=None)
        # the callback's own batching; a length above the context is refused by the encoding, as in a sweep
        record = replace(base, max_length=base.max_length if self.max_length is None else self.max_length,
                         max_batch_tokens=self.max_batch_tokens, max_batch_size=EvalConfig().max_batch_size)
        self.max_length = record.max_length
        self._evaluator = Evaluator(tokenizer, record, model_max_length=context)
        self._chat = self._evaluator.chat
        uses_sweep = self.upstream.loss_before is not None  # the sweep's base losses are used: they must apply
        where = f"the sweep {self.upstream.source}"
        if uses_sweep and swept is not None:
            self._evaluator.check_chat(swept.chat, where)
        self._encoded = self._evaluator.encode(self.upstream.examples)
        if uses_sweep:
            self._evaluator.check_counts([e.n_scored for e in self._encoded], self.upstream.n_tokens, where)

    # ---- measuring -----------------------------------------------------------------------------
    def _losses(self, model: Any, idx: np.ndarray) -> np.ndarray:
        """Current mean token NLL of the upstream examples ``idx``; the model's mode is restored. Under
        ``torch.distributed`` each rank measures ``idx[rank::world]`` and the shards are gathered."""
        assert self._encoded is not None and self._evaluator is not None
        rank, world = _rank_world()
        mine = idx[rank::world] if world > 1 else idx
        values = measure_losses(self._evaluator, model, [self.upstream.examples[i] for i in mine],
                                [self._encoded[i] for i in mine])
        if world <= 1:
            return values
        out = np.full(idx.size, np.nan)
        for r, piece in enumerate(_all_gather(values)):
            out[r::world] = piece
        return out

    def measure(self, model: Any, step: int) -> dict[str, float]:
        """Evaluate ``model`` now; updates ``history`` and ``last_row`` and returns the prefixed metrics."""
        if self._encoded is None or self._loss_before is None:
            raise ConfigError("the callback is not prepared; it measures from on_train_begin of a Trainer run")
        idx = self._eval_indices()
        observed = self._losses(model, idx) - self._loss_before[idx]
        if self._predictor is not None:
            row = complete_from_probe(self._predictor, idx, observed)  # measured values win on the probe
        else:
            row = observed
        ids = self.upstream.ids
        finite = np.isfinite(row)
        values = row[finite]
        p = self.prefix
        metrics = {
            f"{p}mean": float(values.mean()) if values.size else math.nan,
            f"{p}share_forgotten": forgotten_share(values),
            f"{p}max": float(values.max()) if values.size else math.nan,
            f"{p}evaluated": int(idx.size),
        }
        finite_ids = np.flatnonzero(finite)
        top = finite_ids[np.argsort(-values, kind="stable")[: self.top_k]]
        self.last_row = pd.Series(row, index=pd.Index(ids, name="example_id"), name=step)
        self.history.append({"step": step, "metrics": dict(metrics), "top_ids": [ids[i] for i in top]})
        self._last_step = step
        return metrics

    def most_forgotten(self) -> pd.DataFrame:
        """The ``top_k`` most forgotten upstream examples of the last measurement: id, F and the start of
        the text, largest F first (empty before any measurement)."""
        columns = ["example_id", "forgetting", "text"]
        if self.last_row is None:
            return pd.DataFrame(columns=columns)
        top = self.last_row.dropna().sort_values(ascending=False, kind="stable").head(self.top_k)
        by_id = {e.example_id: e for e in self.upstream.examples}

        def text(example: Example) -> str:
            full = example.text if example.text is not None else f"{example.prompt or ''} {example.response or ''}"
            return full.strip()[:_TABLE_TEXT_CHARS]

        return pd.DataFrame({"example_id": top.index.tolist(), "forgetting": top.to_numpy(dtype=float),
                             "text": [text(by_id[i]) for i in top.index]}, columns=columns)

    # ---- checkpoint state (transformers' ExportableState) ----------------------------------------
    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps: the constructor arguments and the base losses with the settings they
        were measured under, so a resumed run does not measure its already trained model as the base."""
        before = None if self._loss_before is None else [
            float(v) if np.isfinite(v) else None for v in self._loss_before]
        payload = {"ids": _fingerprint(self.upstream.ids), "max_length": self.max_length, "chat": self._chat,
                   "loss_before": before, "history": self.history}
        return {"args": dict(self._args), "attributes": {"_checkpoint": payload}}

    def _restore(self, state: Any) -> None:
        """Base losses and history from the checkpoint being resumed, when they belong to this upstream set
        and evaluation settings (``state.stateful_callbacks`` holds the checkpoint's states at train begin)."""
        saved = getattr(state, "stateful_callbacks", None) or {}
        entries = saved.get(type(self).__name__, [])
        entries = entries if isinstance(entries, list) else [entries]
        payloads = [e.get("attributes", {}).get("_checkpoint") for e in entries if isinstance(e, dict)]
        if self._checkpoint is not None:
            payloads.insert(0, self._checkpoint)
        for payload in payloads:
            if (isinstance(payload, dict) and payload.get("loss_before") is not None
                    and payload.get("ids") == _fingerprint(self.upstream.ids)
                    and payload.get("max_length") == self.max_length and payload.get("chat") == self._chat):
                before = np.array([np.nan if v is None else v for v in payload["loss_before"]], dtype=np.float64)
                if before.shape == (len(self.upstream.examples),):
                    self._loss_before = before
                    self.history = list(payload.get("history") or self.history)
                    return

    # ---- Trainer events ------------------------------------------------------------------------
    def _ready(self, args: Any, state: Any, kwargs: dict[str, Any]) -> Any:
        """Prepare on first use (tokenizer, encoding, base losses: restored or measured); returns the model."""
        model = self._model(kwargs)
        if model is None:
            raise ConfigError(f"ForgettingCallback got no model from the Trainer; use {_SUPPORTED_FORM}")
        if self.tokenizer is None:
            candidates = (kwargs.get("processing_class"), kwargs.get("tokenizer"),
                          getattr(self._trainer, "processing_class", None))
            self.tokenizer = _tokenizer_of(next((c for c in candidates if c is not None), None))
        if self.tokenizer is None:
            raise ConfigError(f"ForgettingCallback needs a tokenizer and the Trainer has no processing_class; "
                              f"use {_SUPPORTED_FORM}")
        if self._encoded is None:
            self._prepare(_unwrap(model), self.tokenizer)
            self._steps = self._resolve_eval_steps(args, state)
        if self._loss_before is None:
            self._restore(state)
        if self._loss_before is None:
            self._measure_base(model)
        return model

    def _measure_base(self, model: Any) -> None:
        idx = self._eval_indices()
        before = np.full(len(self.upstream.examples), np.nan)
        before[idx] = self._losses(model, idx)
        self._loss_before = before

    def _emit(self, metrics: dict[str, float], state: Any, control: Any) -> None:
        """Log the training-time values: through the attached trainer's base ``Trainer.log`` (class
        docstring), else straight into ``log_history``."""
        trainer = self._trainer
        if trainer is None:
            state.log_history.append({**metrics, "step": state.global_step})
            return
        should_log = control.should_log
        Trainer.log(trainer, dict(metrics))
        control.should_log = should_log
        trainer.control.should_log = should_log

    def _eval_metrics(self, args: Any, state: Any, kwargs: dict[str, Any]) -> dict[str, float]:
        """The values at this step with an ``eval_`` prefix: the step's measurement, else a new one."""
        model = self._ready(args, state, kwargs)
        if self._last_step != state.global_step or not self.history:
            self.measure(model, state.global_step)
        return {f"eval_{k}": v for k, v in self.history[-1]["metrics"].items()}

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._ready(args, state, kwargs)
        self._steps = self._resolve_eval_steps(args, state)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        step = state.global_step
        last = step >= state.max_steps or control.should_training_stop
        if step > 0 and (step % self._steps == 0 or last) and step != self._last_step:
            self._emit(self.measure(self._model(kwargs), step), state, control)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
               **kwargs: Any) -> None:
        # an evaluation's metrics: the Trainer hands the dict it returns (and checks for the best model and
        # early stopping) to on_log before on_evaluate, so adding the values here reaches every consumer
        if not logs or f"eval_{self.prefix}mean" in logs or not any(str(k).startswith("eval_") for k in logs):
            return
        values = self._eval_metrics(args, state, kwargs)
        logs.update(values)
        entry = state.log_history[-1] if state.log_history else None
        if isinstance(entry, dict) and entry.get("step") == state.global_step and all(
                k in entry for k in logs if k not in values):
            entry.update(values)

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, Any] | None = None,
                    **kwargs: Any) -> None:
        if metrics is not None and f"eval_{self.prefix}mean" not in metrics:
            metrics.update(self._eval_metrics(args, state, kwargs))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._encoded is not None and state.global_step > 0 and state.global_step != self._last_step:
            self._emit(self.measure(self._model(kwargs), state.global_step), state, control)
        if self.last_row is not None:
            table = self.most_forgotten()
            state.log_history.append({f"{self.prefix}top": table.to_dict(orient="records"),
                                      "step": state.global_step})

    def _model(self, kwargs: dict[str, Any]) -> Any:
        """The model the Trainer passes to callbacks, else the attached trainer's."""
        model = kwargs.get("model")
        if model is None and self._trainer is not None:
            model = self._trainer.model
        return model
