"""SAM and EWC inside someone else's training loop: mixins for ``transformers.Trainer`` and its subclasses.

forgetscope's strategies plug into its own loop (:mod:`forgetscope.train.trainer`); these mixins give a
Hugging Face ``Trainer`` (or TRL's ``SFTTrainer``, or any subclass) the same update, reusing the
strategies' code and options rather than a second copy of the maths::

    from forgetscope.integrations import ewc_trainer, sam_trainer

    trainer = sam_trainer(SFTTrainer)(model=model, args=args, train_dataset=ds, sam={"rho": 0.05})
    trainer = ewc_trainer(Trainer)(model=model, args=args, train_dataset=ds, processing_class=tok,
                                   ewc={"lam": 10}, ewc_upstream="data/upstream.jsonl")

* **SAM** (:class:`SAMTrainerMixin`) overrides ``training_step``: the gradient at θ, the move to θ + ε by
  :meth:`forgetscope.mitigate.SAM.first_step`, the gradient there, and :meth:`~forgetscope.mitigate.SAM.restore`
  back to θ; the Trainer then clips and steps its optimizer with that gradient, as the ``sam`` strategy
  does. ``base`` given builds the wrapped optimizer as the strategy does (the args' learning rate and
  weight decay on every trainable parameter); left out, the Trainer's own optimizer (``args.optim`` or
  ``optimizers=``) is wrapped.
* **EWC** (:class:`EWCTrainerMixin`) adds ``λ/2 · D`` to every training loss (evaluation losses stay the
  task's), with the Fisher and anchors of the ``ewc`` strategy (for LoRA the effective update ΔW = BA is
  anchored). The Fisher is estimated when ``train()`` starts, at the weights the Trainer holds then,
  from ``n_fisher`` of ``ewc_upstream`` (drawn with ``args.seed`` as a run draws them with its seed), or
  taken as given (``ewc_fisher``, e.g. from :func:`estimate_ewc_fisher`).

Both need ``gradient_accumulation_steps=1``: the Trainer calls ``training_step`` once per micro-batch, so
SAM's ascent could only follow a micro-batch's gradient, and the Trainer scales each micro-batch's loss
in ways that depend on its version and the model, which the penalty would have to follow. DeepSpeed is
refused (it owns backward and shards parameters and gradients). Options are the strategies' pydantic
models (``SAMOptions``, ``EWCOptions``): a bad one is a one-line :class:`~forgetscope.errors.ConfigError`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

import torch
from transformers import Trainer

from forgetscope.config import EvalConfig
from forgetscope.data.encoding import encode_examples
from forgetscope.data.types import Example
from forgetscope.errors import ConfigError
from forgetscope.integrations.hf_trainer import _read_upstream, _tokenizer_of, _unwrap
from forgetscope.measure.record import resolve_chat
from forgetscope.mitigate.ewc import EWCOptions, EWCStrategy
from forgetscope.mitigate.sam import SAM, SAMOptions, SAMStrategy, make_base_optimizer
from forgetscope.models import context_length

__all__ = ["EWCTrainerMixin", "SAMTrainerMixin", "estimate_ewc_fisher", "ewc_trainer", "sam_trainer"]

Upstream = str | os.PathLike[str] | Sequence[Example]


def _strategy(cls: type, options: Any, what: str) -> Any:
    """The strategy built from a mapping or its Options model (validated there: one-line errors)."""
    if options is None:
        options = {}
    elif isinstance(options, cls.Options):
        options = options.model_dump(exclude_unset=True)  # keeps which fields were given
    elif not isinstance(options, Mapping):
        raise ConfigError(f"{what} options must be a mapping or {cls.Options.__name__}, got {type(options).__name__}")
    return cls(**dict(options))


def _check_trainer(trainer: Trainer, what: str) -> None:
    """Refuse the Trainer settings under which the update would not be the strategy's."""
    steps = trainer.args.gradient_accumulation_steps
    if steps != 1:
        raise ConfigError(f"{what} in a Trainer needs gradient_accumulation_steps=1, got {steps}: raise "
                          "per_device_train_batch_size instead (see forgetscope.integrations.trainer_mitigation)")
    if getattr(trainer, "is_deepspeed_enabled", False):
        raise ConfigError(f"{what} in a Trainer does not support DeepSpeed, which owns the backward pass and "
                          "shards the parameters and gradients it reads")


def _torch_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """The torch optimizer inside accelerate's wrapper (SAM shares its parameter groups)."""
    from accelerate.optimizer import AcceleratedOptimizer

    return optimizer.optimizer if isinstance(optimizer, AcceleratedOptimizer) else optimizer


@contextlib.contextmanager
def _uncounted(trainer: Trainer) -> Iterator[None]:
    """Keep a second pass over the same batch out of TRL's running metrics (token count, accuracy, entropy),
    so a SAM step is logged once, as a plain step is."""
    metrics = getattr(trainer, "_metrics", None)
    saved = ({mode: {k: list(v) for k, v in d.items()} for mode, d in metrics.items()}
             if isinstance(metrics, dict) else None)
    tokens = getattr(trainer, "_total_train_tokens", None)
    try:
        yield
    finally:
        if saved is not None:
            for mode, d in metrics.items():
                for k in list(d):
                    if k in saved.get(mode, {}):
                        d[k] = saved[mode][k]
                    else:
                        del d[k]
        if tokens is not None:
            trainer._total_train_tokens = tokens


class SAMTrainerMixin:
    """SAM for a ``transformers.Trainer`` subclass: ``class T(SAMTrainerMixin, Trainer)`` or
    :func:`sam_trainer`. Takes ``sam=`` (a mapping or :class:`~forgetscope.mitigate.sam.SAMOptions`:
    ``rho``, ``adaptive``, ``base``); ``self.sam`` is the strategy, whose ``summary()`` counts the steps."""

    def __init__(self, *args: Any, sam: Mapping[str, Any] | SAMOptions | None = None, **kwargs: Any) -> None:
        self.sam = _strategy(SAMStrategy, sam, "sam")
        self._sam_optimizer: SAM | None = None
        super().__init__(*args, **kwargs)
        _check_trainer(self, "sam")
        if self._sam_builds_base and (self.optimizer is not None
                                      or getattr(self, "optimizer_cls_and_kwargs", None) is not None):
            raise ConfigError("sam: base builds the optimizer SAM wraps, and the Trainer was given one too; "
                              "leave base out to wrap the Trainer's optimizer")

    @property
    def _sam_builds_base(self) -> bool:
        return "base" in self.sam.options.model_fields_set

    def create_optimizer(self, *args: Any, **kwargs: Any) -> torch.optim.Optimizer:
        if self.optimizer is None and self._sam_builds_base:
            model = args[0] if args else kwargs.get("model")
            params = [p for p in (model or self.model).parameters() if p.requires_grad]
            self.optimizer = make_base_optimizer(self.sam.base, params, lr=self.args.learning_rate,
                                                 weight_decay=self.args.weight_decay)
        return super().create_optimizer(*args, **kwargs)

    def train(self, *args: Any, **kwargs: Any) -> Any:
        _check_trainer(self, "sam")  # the args may have changed since construction
        return super().train(*args, **kwargs)

    def _sam(self) -> SAM:
        """A SAM wrapper sharing the parameter groups of the Trainer's current optimizer."""
        base = _torch_optimizer(self.optimizer)
        if self._sam_optimizer is None or self._sam_optimizer.base_optimizer is not base:
            self._sam_optimizer = SAM(base, rho=self.sam.rho, adaptive=self.sam.adaptive)
        return self._sam_optimizer

    def training_step(self, model: Any, inputs: Mapping[str, Any], *args: Any, **kwargs: Any) -> torch.Tensor:
        """Gradient at θ, move to θ + ε, gradient there, back to θ; the Trainer clips and steps with it.
        Returns the loss at θ, as the ``sam`` strategy does."""
        sam = self._sam()
        loss = super().training_step(model, dict(inputs), *args, **kwargs)  # copies: a loss may pop labels
        sam.first_step(zero_grad=True)
        try:
            with _uncounted(self):
                super().training_step(model, dict(inputs), *args, **kwargs)
        finally:
            sam.restore()
        self.sam.n_steps += 1
        return loss


def _fisher_inputs(model: Any, tokenizer: Any, examples: list[Example], max_length: int | None,
                   chat: bool | Literal["auto"]) -> tuple[list, int]:
    """The upstream examples encoded as a forgetscope run encodes them, and the pad id."""
    if tokenizer is None:
        raise ConfigError("ewc needs a tokenizer to encode its upstream examples: give the Trainer a "
                          "processing_class")
    if chat not in (True, False, "auto"):
        raise ConfigError(f"ewc_chat must be True, False or 'auto', got {chat!r}")
    context = context_length(model)
    if max_length is None:  # what a sweep's eval.max_length: auto resolves to for this model
        max_length = EvalConfig().effective_max_length(context)
    use_chat = resolve_chat(chat, tokenizer)
    encoded = encode_examples(tokenizer, examples, max_length, model_max_length=context, chat=use_chat)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return encoded, pad_id


def estimate_ewc_fisher(model: Any, tokenizer: Any, upstream: Upstream, *,
                        ewc: Mapping[str, Any] | EWCOptions | None = None, seed: int = 0,
                        max_length: int | None = None,
                        chat: bool | Literal["auto"] = "auto") -> dict[str, torch.Tensor]:
    """The raw diagonal Fisher the ``ewc`` strategy estimates for ``model`` (LoRA applied or not), from
    ``n_fisher`` of the ``upstream`` examples (a list of Example, a data file or a sweep directory), drawn with ``seed`` as a
    run with that seed draws them. ``max_length`` defaults to 512 capped at the model's context; ``chat``
    ``"auto"`` formats pairs with the tokenizer's chat template when it has one. Pass the result as
    ``ewc_fisher=`` to reuse it across trainings."""
    strategy = _strategy(EWCStrategy, ewc, "ewc")
    model = _unwrap(model)
    encoded, pad_id = _fisher_inputs(model, tokenizer, _read_upstream(upstream).examples, max_length, chat)
    return strategy.estimate_fisher(model, encoded, pad_id, next(model.parameters()).device, seed=seed)


def _check_fisher(fisher: Any, targets: list[tuple[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    if not isinstance(fisher, Mapping) or not all(isinstance(v, torch.Tensor) for v in fisher.values()):
        raise ConfigError("ewc_fisher must map parameter names to tensors (see estimate_ewc_fisher)")
    shapes = {n: tuple(t.shape) for n, t in targets}
    missing = [n for n in shapes if n not in fisher]
    unknown = [n for n in fisher if n not in shapes]
    if missing or unknown:
        raise ConfigError(f"ewc_fisher does not fit the model being trained: missing {missing[:3]}, unknown "
                          f"{unknown[:3]} (estimate it on this model, LoRA applied, with estimate_ewc_fisher)")
    wrong = [n for n in shapes if tuple(fisher[n].shape) != shapes[n]]
    if wrong:
        raise ConfigError(f"ewc_fisher[{wrong[0]!r}] has shape {tuple(fisher[wrong[0]].shape)}, the parameter "
                          f"{shapes[wrong[0]]}")
    return dict(fisher)


class EWCTrainerMixin:
    """EWC for a ``transformers.Trainer`` subclass: ``class T(EWCTrainerMixin, Trainer)`` or
    :func:`ewc_trainer`.

    Takes ``ewc=`` (a mapping or :class:`~forgetscope.mitigate.ewc.EWCOptions`: ``lam``, ``n_fisher``,
    ``normalize``) and exactly one of ``ewc_upstream`` (a list of Example, a data file or a sweep directory: the Fisher is
    estimated from ``n_fisher`` of them when ``train()`` starts) and ``ewc_fisher`` (a given raw Fisher;
    ``normalize`` applies to it too). ``ewc_max_length`` (default: the args' ``max_length``, as
    ``SFTConfig`` has, else 512; capped at the model's context) and ``ewc_chat`` encode the upstream
    examples. The anchor is the weights when ``train()`` is first called, before any checkpoint it resumes
    from is loaded. ``self.ewc`` is the strategy: its ``summary()`` reports ``final_penalty`` and
    ``weighted_drift``, and the penalty is logged next to the loss as ``ewc_penalty``.
    """

    def __init__(self, *args: Any, ewc: Mapping[str, Any] | EWCOptions | None = None,
                 ewc_upstream: Upstream | None = None, ewc_fisher: Mapping[str, torch.Tensor] | None = None,
                 ewc_max_length: int | None = None, ewc_chat: bool | Literal["auto"] = "auto",
                 **kwargs: Any) -> None:
        self.ewc = _strategy(EWCStrategy, ewc, "ewc")
        if (ewc_upstream is None) == (ewc_fisher is None):
            raise ConfigError("ewc in a Trainer needs exactly one of ewc_upstream (examples to estimate its "
                              "Fisher from) and ewc_fisher (a given Fisher)")
        if ewc_chat not in (True, False, "auto"):
            raise ConfigError(f"ewc_chat must be True, False or 'auto', got {ewc_chat!r}")
        self._ewc_upstream = None if ewc_upstream is None else _read_upstream(ewc_upstream)
        self._ewc_max_length = ewc_max_length
        self._ewc_chat = ewc_chat
        self._ewc_model: Any = None
        super().__init__(*args, **kwargs)
        _check_trainer(self, "ewc")
        if getattr(self, "model_init", None) is not None:
            raise ConfigError("ewc in a Trainer cannot follow model_init: the model it anchors would be replaced")
        self._ewc_fisher = (None if ewc_fisher is None
                            else _check_fisher(ewc_fisher, self.ewc.fisher_targets(_unwrap(self.model))))

    def _anchor(self) -> None:
        """Estimate (or take) the Fisher and anchor at the model's current weights, once."""
        model = _unwrap(self.model)
        if self._ewc_model is model:
            return
        device = next(model.parameters()).device
        if self._ewc_fisher is not None:
            fisher = {k: v.detach().to(device, torch.float32) for k, v in self._ewc_fisher.items()}
        else:
            max_length = self._ewc_max_length or getattr(self.args, "max_length", None)
            context = context_length(model)
            if max_length is not None and context is not None:
                max_length = min(max_length, context)
            encoded, pad_id = _fisher_inputs(model, _tokenizer_of(self.processing_class), self._ewc_upstream.examples,
                                             max_length, self._ewc_chat)
            fisher = self.ewc.estimate_fisher(model, encoded, pad_id, device, seed=self.args.seed)
        self.ewc.anchor_at(model, fisher)
        self._ewc_model = model

    def train(self, *args: Any, **kwargs: Any) -> Any:
        _check_trainer(self, "ewc")
        self._anchor()
        result = super().train(*args, **kwargs)
        self.ewc.record_final(self._ewc_model)
        return result

    def compute_loss(self, model: Any, inputs: Any, return_outputs: bool = False, **kwargs: Any) -> Any:
        out = super().compute_loss(model, inputs, return_outputs=return_outputs, **kwargs)
        if not model.training:  # evaluation reports the task's loss
            return out
        if self._ewc_model is None:
            raise ConfigError("ewc is anchored when train() starts; call trainer.train()")
        loss, outputs = out if return_outputs else (out, None)
        device = next(self._ewc_model.parameters()).device
        with torch.autocast(device.type, enabled=False):  # the penalty in float32, as in forgetscope's loop
            loss = self.ewc.add_penalty(loss, self._ewc_model)
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if "loss" in logs and self._ewc_model is not None:
            logs = {**logs, "ewc_penalty": self.ewc.summary()["final_penalty"]}
        super().log(logs, *args, **kwargs)


def _mixed(mixin: type, trainer_cls: type, prefix: str) -> type:
    if not (isinstance(trainer_cls, type) and issubclass(trainer_cls, Trainer)):
        raise ConfigError(f"expected a transformers.Trainer subclass, got {trainer_cls!r}")
    name = f"{prefix}{trainer_cls.__name__}"
    return type(name, (mixin, trainer_cls), {"__module__": __name__, "__qualname__": name})


def sam_trainer(trainer_cls: type = Trainer) -> type:
    """``trainer_cls`` (``Trainer``, TRL's ``SFTTrainer``, ...) with :class:`SAMTrainerMixin` in front."""
    return _mixed(SAMTrainerMixin, trainer_cls, "SAM")


def ewc_trainer(trainer_cls: type = Trainer) -> type:
    """``trainer_cls`` (``Trainer``, TRL's ``SFTTrainer``, ...) with :class:`EWCTrainerMixin` in front."""
    return _mixed(EWCTrainerMixin, trainer_cls, "EWC")
