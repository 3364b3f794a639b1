"""The plug-in points of the one training loop: hooks, and strategies (hooks that may also change a step).

One mechanism serves everything that reacts to training: a :class:`Hook` has symmetric no-op
``before_training`` / ``before_step`` / ``after_step`` / ``after_training`` methods, called in order for
the strategy first and then for every extra hook (checkpoint evaluations, metric trackers).

A :class:`Strategy` is a hook that may also change fine-tuning itself without copying the loop: add
examples to each batch (replay), add a term to the loss (EWC), replace the optimizer step (SAM's two
passes), or act between steps (LWF's periodic unlearning). The plain strategy is ordinary fine-tuning.
Strategies register by name in :data:`STRATEGIES` (``@register_strategy("name")``), so configs and the CLI
can name them; the built-in ones live in :mod:`forgetscope.mitigate` and are registered lazily.

A strategy reads no sweep directory or values file. What it needs from the experiment that runs it (known
forgetting rows, the trained task's own row, a probe's values, the files a config names for them) its options
model declares (:meth:`StrategyOptions.inputs`, a :class:`StrategyInputs`), so the experiments layer asks the
options instead of knowing strategies by name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar

import numpy as np
import torch
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from forgetscope.data.encoding import IGNORE_INDEX, Encoded, collate
from forgetscope.data.types import Example, Task
from forgetscope.registry import Registry

#: What a strategy steps on: one collated batch, or a step's micro-batches (``train.grad_accum_steps``).
Batch = dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]


@dataclass
class TrainContext:
    """Everything a strategy may look at or use during one run."""

    model: Any
    tokenizer: Any
    task: Task
    config: Any  # TrainConfig
    device: torch.device
    pad_id: int
    train_encoded: list[Encoded]
    optimizer: torch.optim.Optimizer | None = None
    upstream: list[Example] = field(default_factory=list)  # examples a strategy may train on (replay pool)
    upstream_encoded: list[Encoded] = field(default_factory=list)
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))
    step: int = 0
    chat: bool = False
    last_loss: float | None = None  # training loss of the latest step (for logging callbacks)
    compute_dtype: torch.dtype = torch.float32  # forward passes autocast to it; weights stay as they are
    #: ``(model, example_ids) -> losses``: upstream examples measured as the sweep measures its rows (its
    #: encoding, length, dtype); None outside a sweep, where strategies fall back to ``upstream_encoded``
    measure_upstream: Callable[[Any, list[str]], np.ndarray] | None = None

    def collate(self, batch: list[Encoded]) -> dict[str, torch.Tensor]:
        return collate(batch, self.pad_id, self.device)

    def autocast(self):
        """The forward-pass precision of training (``train.dtype``): bf16 autocast, or nothing for float32.
        Wrap forward passes only; gradients then flow back into the float32 weights."""
        from forgetscope.precision import autocast

        return autocast(self.device, self.compute_dtype)

    def forward_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The model's mean token NLL on a collated batch, computed in the training precision."""
        with self.autocast():
            return self.model(**batch).loss

    def trainable_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        return [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]


class Hook:
    """Reacts to training; every method is a no-op, so a hook overrides only what it needs."""

    def before_training(self, ctx: TrainContext) -> None:
        """Once after the model is prepared and before the optimizer exists (e.g. compute a Fisher)."""

    def before_step(self, ctx: TrainContext) -> None:
        """Before each step; ``ctx.step`` is the number of steps already taken."""

    def after_step(self, ctx: TrainContext) -> None:
        """After each optimizer step; ``ctx.step`` counts it and ``ctx.last_loss`` is its loss."""

    def after_training(self, ctx: TrainContext) -> None:
        """Once after the last step, before the held-out task loss is measured."""


def _no_bool(v: Any) -> Any:
    if isinstance(v, bool):
        raise ValueError("expected a number, got a boolean")
    return v


def one_of(allowed: Any, what: str) -> AfterValidator:
    """A field check: the value must be one of ``allowed`` (a message that names ``what`` otherwise)."""
    def check(v: Any) -> Any:
        if v not in allowed:
            raise ValueError(f"{what} {v!r}; choose from {', '.join(map(str, allowed))}")
        return v
    return AfterValidator(check)


StrictNumber = Annotated[float, BeforeValidator(_no_bool), Field(allow_inf_nan=False)]  # 1 and 0.5, not True


class NoOptions(BaseModel):
    """A strategy without options."""

    model_config = ConfigDict(extra="forbid")


#: How the experiments layer turns a path-valued option into what a strategy takes (:class:`FileInput`).
FILE_READERS = ("values", "rows", "base_losses")


@dataclass(frozen=True)
class FileInput:
    """A path-valued option of a config and what it becomes before the strategy is built.

    ``reader``: ``values`` (a JSON values file: a mapping ``{example_id: value}``, and the evaluations it says
    the values cost, into ``cost``), ``rows`` (known forgetting rows: a sweep directory or a matrix file) or
    ``base_losses`` (a sweep's ``{example_id: loss_before}``). ``into`` is the option that takes what the file
    holds (it may be ``option`` itself, which then also accepts the object in memory). An input the options
    do not use (``used`` false) is dropped unread."""

    option: str
    reader: str
    into: str
    cost: str | None = None
    used: bool = True
    what: str = ""  # who needs it, for the error when the path holds no such thing

    def __post_init__(self) -> None:
        if self.reader not in FILE_READERS:
            raise ValueError(f"unknown reader {self.reader!r}; choose from {', '.join(FILE_READERS)}")


@dataclass(frozen=True)
class StrategyInputs:
    """What an experiment must provide for one strategy's options (:meth:`StrategyOptions.inputs`).

    Option names say where each input goes; None (or false) means the options need no such input."""

    #: path-valued options, read by :mod:`forgetscope.experiments.strategy_inputs` before every run
    files: tuple[FileInput, ...] = ()
    #: the selection rule these options choose (replay: random, predicted, oracle, mir), for naming and pairing
    #: arms in a comparison
    policy: str | None = None
    #: trains on pool examples (its options model's ``comparison_defaults`` says whether a comparison's budget
    #: applies)
    replays: bool = False
    #: that dose: ``("budget", examples per run)`` or ``("ratio", replay examples per task example)``; arms of one
    #: dose are compared head to head
    dose: tuple[str, float] | None = None
    #: its draws may repeat an example (so a dose above the pool is possible)
    repeats: bool = False
    #: the probe size it sets itself (None: the comparison's)
    probe: float | None = None
    #: its known rows leave the trained task out, and keep the rows of this strategy (a runs table's name)
    leave_task_out: bool = True
    known_strategy: str | None = "plain"
    #: the option (a values file) that takes the trained task's own forgetting row over the pool
    own_row: str | None = None
    #: the option (a values file) that takes the paired plain run's forgetting on a probe of the pool
    probe_row: str | None = None
    #: the run measures a probe of the pool itself, on its own model
    measures_probe: bool = False
    #: the option (a path or rows in memory) that takes the forgetting rows of other tasks
    known_rows: str | None = None
    #: the predictor that turns the probe into weights (a registered name, ``probe-only`` or ``probe-fill``)
    predictor: str | None = None
    #: the known rows complete the row (not only observed probe values)
    completes: bool = False
    #: the budget beyond the probe is spent by a rule of its own (completion, or random fill)
    spends_beyond_probe: bool = False
    #: offline or online (predicted replay)
    mode: str | None = None
    #: options that name training data (a data path, ``demo:NAME`` or ``hf:NAME``), checked to exist before a run
    data_sources: tuple[str, ...] = ()
    #: the replay examples drawn by the arm's own rule once its probe is known, for a run of (steps, examples
    #: per step): the whole dose offline, what follows the random warm-up online
    draws_after_probe: Callable[[int, int], int] | None = None

    def files_from(self, option: str) -> list[FileInput]:
        """The inputs read from the path in ``option``."""
        return [f for f in self.files if f.option == option]


@dataclass(frozen=True)
class ComparisonDefaults:
    """What a comparison sets for all its arms, which each arm's options model may take
    (:meth:`StrategyOptions.comparison_defaults`): a replay budget, a predictor, whether known rows leave the
    trained task out, and the kind of their columns."""

    budget: int | None = None
    predictor: str = "knn"
    leave_task_out: bool = True
    known_kind: str = "all"


class StrategyOptions(BaseModel):
    """Base of every strategy's options model: unknown fields are errors; arbitrary objects allowed
    (a fitted predictor can be passed from Python)."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    @classmethod
    def comparison_defaults(cls, options: Mapping[str, Any], defaults: ComparisonDefaults) -> dict[str, Any]:
        """The options an arm with ``options`` takes from its comparison's ``defaults`` because it does not set
        them itself; none unless a strategy says otherwise."""
        return {}

    @classmethod
    def inputs(cls, options: Mapping[str, Any]) -> StrategyInputs:
        """What an experiment must provide for ``options`` (as a config gives them, before validation):
        nothing, unless the strategy's options model says otherwise."""
        return StrategyInputs()


class Strategy(Hook):
    """Plain fine-tuning; subclasses override only the hooks and step parts they need.

    A strategy's options are declared once, as the pydantic model ``Options`` beside the strategy; the
    constructor validates them there (whether the strategy is built from a config, the CLI or Python)
    and keeps the result in ``self.options``.
    """

    name = "plain"
    Options: ClassVar[type[BaseModel]] = NoOptions
    #: How a comparison reports it: ``mitigation``, or ``graceful forgetting`` (judged by the target task).
    kind: ClassVar[str] = "mitigation"
    #: Whether a step may be split into micro-batches (``train.grad_accum_steps`` > 1): true where the
    #: loss is a token mean over the batch (plus terms that do not depend on it), so weighting each
    #: micro-batch by its share of the scored tokens gives the whole batch's gradient.
    accumulates: ClassVar[bool] = True

    def __init__(self, **options: Any):
        from forgetscope.config import parse_config

        self.options = parse_config(options, f"for strategy {self.name!r}", self.Options, what="options")

    def build_optimizer(self, ctx: TrainContext, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        cfg = ctx.config
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    def augment_batch(self, ctx: TrainContext, batch: list[Encoded]) -> list[Encoded]:
        """Change the examples of a step (replay mixes upstream examples in)."""
        return batch

    def loss(self, ctx: TrainContext, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The training loss of one collated batch (mean token NLL; EWC adds its penalty)."""
        return ctx.forward_loss(batch)

    def check_config(self, config: Any) -> None:
        """Refuse training settings this strategy cannot honour (a ConfigError naming the field)."""
        if getattr(config, "grad_accum_steps", 1) > 1 and not self.accumulates:
            from forgetscope.errors import ConfigError

            raise ConfigError(f"train.grad_accum_steps: the {self.name} strategy weighs the parts of its batch "
                              "against each other and cannot split a step into micro-batches; use "
                              "grad_accum_steps: 1 (and a batch_size that fits)")

    def check_plan(self, config: Any) -> None:
        """Refuse a run of ``config`` with full task batches (``batch_size`` examples a step) that this strategy
        could not run: what an experiment checks before any work (``before_training`` checks the run it gets)."""

    def backward(self, ctx: TrainContext, batch: Batch) -> float:
        """Gradient of one step's loss, accumulated into ``.grad``; returns the loss.

        ``batch`` is one collated batch, or a step's micro-batches (``train.grad_accum_steps``): each
        micro-batch's loss is then weighted by its share of the step's scored tokens, so the summed
        gradient and the returned loss are those of the whole batch's token mean."""
        if isinstance(batch, dict):
            loss = self.loss(ctx, batch)
            loss.backward()
            return float(loss.detach())
        counts = [scored_tokens(b) for b in batch]
        total = max(1, sum(counts))
        value = 0.0
        for micro, n in zip(batch, counts):
            weight = n / total
            loss = self.loss(ctx, micro)
            (loss * weight).backward()
            value += weight * float(loss.detach())
        return value

    def training_step(self, ctx: TrainContext, batch: Batch) -> float:
        """One optimizer step; SAM overrides this to take the gradient at a perturbed point."""
        loss = self.backward(ctx, batch)
        clip_gradients(ctx)
        ctx.optimizer.step()
        ctx.optimizer.zero_grad(set_to_none=True)
        return loss

    def excluded_upstream_ids(self) -> set[str]:
        """Upstream examples this strategy trained on; they are left out of the forgetting measurement."""
        return set()

    def summary(self) -> dict[str, Any]:
        """Strategy-specific facts for the run record (e.g. upstream evaluations spent)."""
        return {}


def scored_tokens(batch: dict[str, torch.Tensor]) -> int:
    """The tokens a collated batch's mean NLL averages over (labels after the first position, not ignored)."""
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())


def clip_gradients(ctx: TrainContext) -> None:
    if ctx.config.grad_clip:
        torch.nn.utils.clip_grad_norm_([p for _, p in ctx.trainable_parameters()], ctx.config.grad_clip)


STRATEGIES: Registry[Callable[..., Strategy]] = Registry("strategy")
STRATEGIES.register("plain", Strategy)
# Built-ins register lazily ("module:Class"), so a broken import fails loudly instead of "unknown strategy".
STRATEGIES.register("replay", "forgetscope.mitigate.replay:ReplayStrategy")
STRATEGIES.register("sam", "forgetscope.mitigate.sam:SAMStrategy")
STRATEGIES.register("ewc", "forgetscope.mitigate.ewc:EWCStrategy")
STRATEGIES.register("lwf", "forgetscope.mitigate.lwf:LWFStrategy")


def register_strategy(name: str) -> Callable[[type[Strategy]], type[Strategy]]:
    """Class decorator: make a :class:`Strategy` subclass available by ``name`` in configs."""
    def deco(cls: type[Strategy]) -> type[Strategy]:
        cls.name = name
        STRATEGIES.register(name, cls)
        return cls
    return deco


def strategy_names() -> list[str]:
    return STRATEGIES.names()


def make_strategy(name: str, **options: Any) -> Strategy:
    """Build a registered strategy by name; unknown names and bad options are config errors."""
    return STRATEGIES.build(name, **options)


def _options_hook(name: str, hook: str) -> Callable[..., Any] | None:
    """Classmethod ``hook`` of strategy ``name``'s options model; None for an unknown name or a model without it."""
    if name not in STRATEGIES:
        return None
    return getattr(getattr(STRATEGIES.get(name), "Options", None), hook, None)


def declared_defaults(name: str, options: Mapping[str, Any], defaults: ComparisonDefaults) -> dict[str, Any]:
    """The options strategy ``name`` with ``options`` takes from a comparison (its options model's
    :meth:`~StrategyOptions.comparison_defaults`); none for an unknown name or a model without options."""
    take = _options_hook(name, "comparison_defaults")
    return take(options, defaults) if take is not None else {}


def declared_inputs(name: str, options: Mapping[str, Any]) -> StrategyInputs:
    """What strategy ``name`` with ``options`` needs an experiment to provide (its options model's
    :meth:`~StrategyOptions.inputs`); nothing for an unknown name or an options model without them."""
    declare = _options_hook(name, "inputs")
    return declare(options) if declare is not None else StrategyInputs()


def strategy_kind(name: str) -> str:
    """How a comparison reports strategy ``name`` (:attr:`Strategy.kind`)."""
    return getattr(STRATEGIES.get(name), "kind", Strategy.kind) if name in STRATEGIES else Strategy.kind
