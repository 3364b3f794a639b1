"""Replay: interleave upstream examples into the fine-tuning stream (the ``replay`` strategy).

**How many, and where.** A run trains on ``T = steps × b`` task examples (``b`` = the task examples
per step, the batch size or the whole task set if smaller). Replay adds
``replay_n = int(T · ratio) + 1`` upstream examples (``ratio`` default 1/32: one per 32 task
examples). Replay example k sits at position ``floor(k / ratio)`` of the task stream, i.e. in step
``min(floor(k / ratio) // b, steps − 1)``, so the first is replayed in the first step and the rest
follow evenly. Every replay example is its own example in the batch of its step.

**Training length.** The task batch keeps its size and the number of steps does not change: every
step sees exactly the task examples of the paired plain run, and the steps that hold a replay
example carry it in addition. The examples processed grow by the ratio (T · (1 + ratio)), as in the
reference protocol, where the number of steps grows instead.

**A budget instead of a ratio.** ``budget`` fixes the replay examples per run in absolute terms
(``replay_n = budget``, replay k at position ``floor(k · T / budget)``), so arms compared at several doses,
or against a probe of fixed size, replay exactly the number stated. A config gives ``ratio`` or
``budget``, not both.

**Task gradient independent of the ratio.** A step's loss is

    L = L_task + (k / b) · L_replay

where ``L_task`` is the mean token NLL over the step's b task examples (exactly plain fine-tuning's
loss, whatever the ratio) and ``L_replay`` the mean token NLL over its k replay examples, weighted by
their count relative to the task examples, so a replay example weighs as much as a task example and
the replay share of the gradient is the ratio. A step without replay has plain fine-tuning's loss.
Gradient clipping (``train.grad_clip``) acts on the sum.

**Which examples** (``policy``, one object each in :mod:`forgetscope.mitigate.replay_policies`), from the
pool the trainer gives the strategy (``TrainContext.upstream``; :mod:`forgetscope.experiments.compare` gives it
only the replay half of the upstream set, so forgetting is measured on examples never replayed):

``random``
    uniform.
``oracle``
    weighted by the *true* forgetting row of this task (the ``forgetting`` mapping; in ``compare``: the
    plain run's measured row); the upper bound no user has.
``predicted``
    weighted by the row *predicted* from a small probe set S. The known rows are the forgetting rows
    of *other* tasks, from a sweep (``known``: a :class:`~forgetscope.store.ForgettingMatrix`; rows of
    this task and, when its runs table says, of strategies other than ``known_strategy`` are dropped) or
    a fitted :class:`~forgetscope.predict.Predictor` with its column ids (``predictor_columns``). The
    predictor completes the row; observed probe values replace their predictions.
    ``leave_task_out: false`` keeps the known rows of this task (e.g. an earlier study's fine-tunes of it),
    which the default leaves out.

    Two predictors observe and complete nothing (no known rows needed): ``probe-only`` weighs the probe
    examples by their observed values and every other pool example 0 (once the probe is used up, the
    sampler's uniform rule applies). ``probe-fill`` is **probe-only + random fill**, the arm that credits
    completion fairly when the budget exceeds the probe: the probe examples *observed forgotten*,
    ``F > fill_margin`` (default 0: any observed loss increase; a comparison may set its noise margin),
    are replayed first, all of them, drawn by the arm's weights (softmax(F / T)) restricted to them (at most
    the budget: the first ``budget`` such draws); every further draw is uniform over the *unprobed* pool
    examples. Probe examples at or below the margin are known not to be forgotten and are not replayed
    unless every unprobed example has been. A completing arm differs from it only in how it spends the
    budget beyond the probe: by its predicted row instead of at random.

    * ``mode: offline`` (default): the probe values are given (``probe_values``; ``compare`` passes the
      plain run's forgetting on S, the plain fine-tuned model evaluated on S only), or measured by a
      *pilot* of ``pilot_steps`` plain steps on a copy of the model.
    * ``mode: online``: the first ``warmup_fraction`` of the steps (at least one) replay at random,
      the probe examples excluded; at the warm-up boundary the *current* model is evaluated on the
      ``probe`` examples, their forgetting (against their base losses: the known sweep's
      ``known_base_losses`` with ``probe_base: known``, or measured once before training) completes
      the row, and the remaining steps replay by the predicted weights. Examples already replayed
      are never drawn again (with ``replacement: false``). The only extra cost is the probe
      evaluations.
``mir``
    maximally interfered retrieval (:mod:`forgetscope.mitigate.mir`): for each step with replay, ``candidates``
    pool examples are drawn at random, their losses are evaluated before and after a *virtual* SGD step on the
    current task batch (learning rate ``virtual_lr``, default the optimizer's current one; the
    weights are restored exactly afterwards), and the k with the largest loss increase are replayed.

**Weights** (``weighting``): ``softmax`` (default) ``w ∝ exp(F / temperature)`` with temperature 0.1,
as in the reference protocol; a missing value (NaN) gets weight 0. ``linear``: ``w ∝ max(F, 0)`` plus
a floor of 1e-3 of their mean (NaN counts as the mean). **Draws** (``replacement``): without
replacement by default: an example is not drawn again until every pool example has been drawn, then
the pool is reset (when only zero-weight examples are left, they are drawn uniformly). Each draw takes
one example with probability proportional to the weights of those still available (successive
sampling, the same law as ``numpy``'s ``choice(replace=False, p=w)``).

``summary()["upstream_evaluations"]`` records the upstream example evaluations a policy spent beyond
measuring forgetting itself: |S| for given probe values (the base losses are the sweep's), 2|S| for a
pilot, the probe (plus its base losses when measured) for online mode, 2 × candidates per draw for
MIR, the full row for the oracle (``forgetting_evaluations`` / ``probe_evaluations`` when the given
values say what they cost). Every replayed example's id is reported by :meth:`excluded_upstream_ids`, so
the sweep leaves it out (NaN) of the forgetting measured afterwards.

**Inputs are in memory.** The strategy reads no files, so it runs the same wherever its inputs come
from. A config names paths (``known: SWEEP_DIR`` or a matrix file, ``forgetting_file``, ``probe_file``:
JSON ``{example_id: value}`` or ``{"values": ..., "evaluations": n}``);
:func:`forgetscope.experiments.strategy_inputs.resolve_strategy_inputs` reads them into ``known`` (and,
for ``probe_base: known``, ``known_base_losses``), ``forgetting`` / ``forgetting_evaluations`` and
``probe_values`` / ``probe_evaluations`` before every run, and checks they exist before any work starts:
:meth:`ReplayOptions.inputs` declares which paths, read how, and what a comparison provides for each policy.
Passing a path from Python is a one-line :class:`~forgetscope.errors.ConfigError` that names the loaders
(``forgetscope.load_forgetting``, ``forgetscope.importing.load_any``,
``forgetscope.importing.read_values_file``): a path accepted here would have to be read here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated, Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, StrictBool, StrictInt, field_validator, model_validator

from forgetscope.data.encoding import IGNORE_INDEX, Encoded
from forgetscope.errors import ConfigError
from forgetscope.mitigate.mir import interference
from forgetscope.mitigate.replay_policies import OBSERVE_ONLY, PROBE_FILL, ReplayPolicy, make_policy
from forgetscope.mitigate.replay_sampling import (
    WEIGHTINGS,
    ReplaySampler,
    online_boundary,
    replay_rng,
    replay_schedule,
)
from forgetscope.store.matrix import ForgettingMatrix
from forgetscope.train.hooks import (
    ComparisonDefaults,
    FileInput,
    Strategy,
    StrategyInputs,
    StrategyOptions,
    StrictNumber,
    TrainContext,
    one_of,
    register_strategy,
)

POLICIES = ("random", "predicted", "oracle", "mir")
MODES = ("offline", "online")
PROBE_BASES = ("measure", "known")
MAX_RATIO = 8.0
#: The path-valued inputs of a config (read by :mod:`forgetscope.experiments.strategy_inputs`): how to
#: pass what they hold from Python instead.
PATH_OPTIONS = {
    "known": "load the rows first with forgetscope.load_forgetting(SWEEP_DIR) or "
             "forgetscope.importing.load_any(MATRIX_FILE)",
    "forgetting_file": "pass forgetting={example_id: F} (and forgetting_evaluations), read with "
                       "forgetscope.importing.read_values_file(PATH)",
    "probe_file": "pass probe_values={example_id: F} (and probe_evaluations), read with "
                  "forgetscope.importing.read_values_file(PATH)",
}
_IN_A_CONFIG = ", or give the path in a sweep or compare config (its runs read it)"


class ReplayOptions(StrategyOptions):
    ratio: StrictNumber = Field(1 / 32, gt=0, le=MAX_RATIO,
                                description="replay examples per task example (1/32 = one per 32)")
    policy: Annotated[str, one_of(POLICIES, "unknown policy")] = Field(
        "random", description="random, predicted, oracle or mir")
    mode: Annotated[str, one_of(MODES, "unknown mode")] = Field(
        "offline", description="predicted: offline (given probe values or a pilot) or online")
    weighting: Annotated[str, one_of(WEIGHTINGS, "unknown weighting")] = Field(
        "softmax", description="softmax(F / temperature) or linear max(F, 0)")
    temperature: StrictNumber = Field(0.1, gt=0, description="softmax temperature")
    budget: StrictInt | None = Field(None, ge=1, description="replay examples per run, absolute (replaces ratio)")
    replacement: StrictBool = Field(False, description="draw with replacement")
    warmup_fraction: StrictNumber = Field(0.1, gt=0, lt=1, description="online: share of steps with random replay")
    probe_base: Annotated[str, one_of(PROBE_BASES, "unknown probe_base")] = Field(
        "measure", description="online: base losses of the probe measured once, or read from the known sweep")
    candidates: StrictInt = Field(30, ge=1, description="mir: candidates evaluated per draw")
    virtual_lr: StrictNumber | None = Field(None, gt=0, description="mir: learning rate of the virtual step")
    forgetting: dict[str, float] | None = Field(None, description="oracle: the true row {example_id: F}")
    forgetting_evaluations: int | None = Field(
        None, description="oracle: upstream evaluations the true row cost (default: its length)")
    known: Any = Field(None, description="predicted: the known rows, a ForgettingMatrix (runs with task/strategy)")
    known_base_losses: dict[str, float] | None = Field(
        None, description="online, probe_base 'known': {example_id: loss_before} of the known sweep")
    known_strategy: str | None = "plain"
    known_kind: Annotated[str, one_of(("all", "lm", "instruction"), "unknown known_kind")] = Field(
        "all", description="predicted: the columns of the known rows fitted (all, or one kind of upstream example)")
    leave_task_out: StrictBool = Field(True, description="predicted: drop the known rows of the task being trained")
    fill_margin: StrictNumber = Field(0.0, description="probe-fill: replay the probe examples with observed F above it")
    predictor: Any = Field("knn", description="predicted: a predictor name, 'probe-only' or a fitted Predictor")
    predictor_options: dict[str, Any] | None = None
    predictor_columns: list[str] | None = None
    probe: float = Field(30, gt=0, description="probe size: a count, or a fraction of the pool when < 1")
    probe_values: dict[str, float] | None = None
    probe_evaluations: int | None = Field(
        None, description="upstream evaluations the given probe values cost (default: their count)")
    pilot_steps: StrictInt = Field(5, ge=1, description="plain steps of the pilot that measures the probe")
    seed: int = 0

    @classmethod
    def comparison_defaults(cls, options: Mapping[str, Any], defaults: ComparisonDefaults) -> dict[str, Any]:
        """What an arm takes from its comparison unless it sets it: the budget (not for an arm dosed by
        ``ratio``, which is refused beside a comparison's budget) and, for predicted arms, the predictor,
        the known rows' task rule and kind. Only values other than the options' own defaults are added, so
        the runs of comparisons without them keep their ids."""
        out: dict[str, Any] = {}
        if defaults.budget is not None and "ratio" in options and "budget" not in options:
            raise ValueError("sets ratio while compare.budget sets the budget of every replay arm; give the arm "
                             "budget instead of ratio")
        if "budget" not in options and "ratio" not in options and defaults.budget is not None:
            out["budget"] = int(defaults.budget)
        if options.get("policy", "random") == "predicted":
            out["predictor"] = options.get("predictor", defaults.predictor)
            if not defaults.leave_task_out and "leave_task_out" not in options:
                out["leave_task_out"] = False
            if defaults.known_kind != "all" and "known_kind" not in options:
                out["known_kind"] = defaults.known_kind
        return out

    @classmethod
    def inputs(cls, options: Mapping[str, Any]) -> StrategyInputs:
        """What an experiment provides for ``options`` as a config gives them: the values files and known rows
        its paths name (each read only where the policy uses it), and for a comparison the trained task's own
        row (``oracle``), the plain run's values on a probe (offline ``predicted``) and the known rows."""
        policy, mode = options.get("policy", "random"), options.get("mode", "offline")
        predicted = policy == "predicted"
        ratio = options.get("ratio", cls.model_fields["ratio"].default)
        budget = options.get("budget")
        dose = ("budget", budget) if budget is not None else ("ratio", ratio)
        repeats = bool(options.get("replacement", cls.model_fields["replacement"].default))
        predictor = options.get("predictor", "knn")
        named = isinstance(predictor, str) and predictor in _predictor_names()  # fitted here on the known rows
        files = (
            FileInput("forgetting_file", "values", into="forgetting", cost="forgetting_evaluations",
                      used=policy == "oracle"),
            FileInput("probe_file", "values", into="probe_values", cost="probe_evaluations", used=predicted),
            FileInput("known", "rows", into="known", used=predicted and named),
            FileInput("known", "base_losses", into="known_base_losses", what="replay online: probe_base 'known'",
                      used=predicted and mode == "online" and options.get("probe_base") == "known"),
        )
        if not predicted:
            return StrategyInputs(files=files, policy=policy, replays=True, dose=dose, repeats=repeats,
                                  own_row="forgetting_file" if policy == "oracle" else None)
        completes = str(predictor) not in OBSERVE_ONLY
        warmup = options.get("warmup_fraction", cls.model_fields["warmup_fraction"].default)

        def draws_after_probe(steps: int, per_step: int) -> int:
            schedule = replay_schedule(steps, per_step, ratio, budget)
            return int(schedule[online_boundary(steps, warmup):].sum() if mode == "online" else schedule.sum())

        return StrategyInputs(files=files, policy=policy, replays=True, dose=dose, repeats=repeats,
                              known_rows="known", predictor=str(predictor), probe=options.get("probe"),
                              leave_task_out=bool(options.get("leave_task_out", True)),
                              known_strategy=options.get("known_strategy",
                                                         cls.model_fields["known_strategy"].default),
                              completes=completes, spends_beyond_probe=completes or predictor == PROBE_FILL,
                              probe_row="probe_file" if mode == "offline" else None,
                              measures_probe=mode == "online", mode=mode, draws_after_probe=draws_after_probe)


    @model_validator(mode="before")
    @classmethod
    def _no_paths(cls, data: Any) -> Any:
        """Paths are read by the experiments layer; a strategy takes what they hold."""
        if isinstance(data, dict):
            for key in ("forgetting_file", "probe_file"):
                if key in data:
                    raise ValueError(f"{key} is a path and replay reads no files: {PATH_OPTIONS[key]}"
                                     + _IN_A_CONFIG)
        return data

    @field_validator("known")
    @classmethod
    def _known_rows(cls, v: Any) -> Any:
        if v is None or isinstance(v, ForgettingMatrix):
            return v
        if isinstance(v, (str, os.PathLike)):
            raise ValueError(f"known takes the known rows in memory (a ForgettingMatrix), not the path {str(v)!r}: "
                             f"{PATH_OPTIONS['known']}{_IN_A_CONFIG}")
        raise ValueError(f"known must be a ForgettingMatrix of known rows, got {type(v).__name__}")

    @model_validator(mode="after")
    def _inputs_for_policy(self) -> ReplayOptions:
        if self.budget is not None and "ratio" in self.model_fields_set:
            raise ValueError(f"give ratio or budget, not both (ratio={self.ratio}, budget={self.budget})")
        if "fill_margin" in self.model_fields_set and self.predictor != PROBE_FILL:
            raise ValueError(f"fill_margin applies to predictor {PROBE_FILL!r}, not {self.predictor!r}")
        if self.policy == "oracle" and self.forgetting is None:
            raise ValueError("policy 'oracle' needs the true forgetting row (forgetting={id: value}; in a config "
                             "also forgetting_file: PATH)")
        if self.mode == "online" and self.policy != "predicted":
            raise ValueError(f"mode 'online' applies to policy 'predicted', not {self.policy!r}")
        if self.mode == "online" and self.probe_values is not None:
            raise ValueError("mode 'online' measures its own probe on the current model; drop probe_values/"
                             "probe_file (or use mode 'offline')")
        if self.policy == "predicted":
            from forgetscope.predict import Predictor

            p = self.predictor
            if isinstance(p, Predictor):
                if not hasattr(p, "n_cols_"):
                    raise ValueError("policy 'predicted' needs a fitted predictor; call .fit(known) first")
                if self.predictor_columns is None or len(self.predictor_columns) != p.n_cols_:
                    raise ValueError("a fitted predictor needs predictor_columns, the example ids of its columns")
            elif isinstance(p, str) and p not in OBSERVE_ONLY and p not in _predictor_names():
                raise ValueError(f"unknown predictor {p!r}; choose from {', '.join([*OBSERVE_ONLY, *_predictor_names()])}")
            elif self.known is None and p not in OBSERVE_ONLY:
                what = "online predicted replay" if self.mode == "online" else "policy 'predicted'"
                raise ValueError(f"{what} needs known rows: pass known=<ForgettingMatrix> (forgetting rows of "
                                 "other tasks; in a config known: SWEEP_DIR) or predictor=<fitted Predictor>")
            elif not isinstance(p, str):
                raise ValueError(f"predictor must be a name or a fitted Predictor, got {p!r}")
            if self.mode == "online" and self.probe_base == "known" and self.known_base_losses is None:
                raise ValueError("probe_base 'known' reads the base losses from the known sweep; pass "
                                 "known_base_losses={example_id: loss_before} (in a config known: SWEEP_DIR)")
        return self


def _predictor_names() -> list[str]:
    from forgetscope.predict.registry import PREDICTORS

    return list(PREDICTORS.names())


@register_strategy("replay")
class ReplayStrategy(Strategy):
    """The training-loop side of replay: the pool, the schedule, the draws of each step and the split loss.
    Which examples are drawn is the policy's (:mod:`forgetscope.mitigate.replay_policies`); the module docstring
    states the rules."""

    name = "replay"

    Options = ReplayOptions
    accumulates = False  # its loss weighs the task rows against the replayed rows of the whole batch

    def __init__(self, **options: Any):
        super().__init__(**options)
        o = self.options
        self.ratio = float(o.ratio)
        self.mode = o.mode
        self.policy: ReplayPolicy = make_policy(o)
        self.weights: np.ndarray | None = None
        self.fill: np.ndarray | None = None  # probe-fill: the draw law once the weighted examples are used up
        self.pool_ids: list[str] = []
        self.replayed: list[str] = []
        self.schedule: np.ndarray = np.zeros(0, dtype=int)
        self.replay_n = 0
        self.sampler: ReplaySampler | None = None
        self.probe_calls: list[dict[str, Any]] = []  # online: the probe at the warm-up boundary
        self._n_task = 0
        self._n_replay = 0
        self._info: dict[str, Any] = {}
        self._evaluations = 0

    @property
    def _online(self) -> dict[str, Any] | None:
        """The online policy's state (probe ids, their base losses, the boundary); None in other modes."""
        return getattr(self.policy, "state", None)

    # ---- forward passes on upstream examples ------------------------------------------------
    def evaluate_upstream(self, ctx: TrainContext, encoded: list[Encoded]) -> np.ndarray:
        """Mean token NLL of upstream examples under the current model, in the training encoding
        (MIR's interference: the loss of what would be trained on; counted as evaluations)."""
        from forgetscope.measure import per_example_nll

        self._evaluations += len(encoded)
        return per_example_nll(ctx.model, encoded, pad_id=ctx.pad_id)

    def probe_losses(self, ctx: TrainContext, ids: list[str], model: Any = None, count: bool = True) -> np.ndarray:
        """Mean token NLL of the probe examples ``ids`` under ``model`` (default: the current one), measured
        as the sweep measured the known rows (``ctx.measure_upstream``: its encoding, length and dtype), so
        probe values and known rows are the same quantity. Outside a sweep the training encoding is the
        only one there is; ``summary()["probe_encoding"]`` says which was used. ``count``: add them to the
        evaluations spent (the pilot reports its own)."""
        from forgetscope.measure import per_example_nll

        model = ctx.model if model is None else model
        if count:
            self._evaluations += len(ids)
        if ctx.measure_upstream is not None:
            self._info["probe_encoding"] = "sweep evaluation"
            return np.asarray(ctx.measure_upstream(model, list(ids)), dtype=float)
        self._info["probe_encoding"] = "training (train.max_length; no sweep evaluator)"
        by_id = {e.example_id: e for e in ctx.upstream_encoded}
        return per_example_nll(model, [by_id[i] for i in ids], pad_id=ctx.pad_id)

    def interference(self, ctx: TrainContext, task_batch: list[Encoded], candidates: list[Encoded]) -> np.ndarray:
        """Loss increase of each candidate under a virtual SGD step on the task batch (weights restored;
        :func:`forgetscope.mitigate.mir.interference`, at ``virtual_lr``)."""
        return interference(ctx, task_batch, candidates, lambda enc: self.evaluate_upstream(ctx, enc),
                            lr=self.options.virtual_lr)

    # ---- setup ------------------------------------------------------------------------------
    def before_training(self, ctx: TrainContext) -> None:
        if not ctx.upstream_encoded:
            raise ConfigError("replay needs an upstream pool to replay from (it is empty)")
        o = self.options
        self.pool_ids = [e.example_id for e in ctx.upstream_encoded]
        self._evaluations = 0
        self.sampler = ReplaySampler(len(self.pool_ids), replay_rng(ctx.config.seed, o.seed), replacement=o.replacement)
        per_step = max(1, min(ctx.config.batch_size, len(ctx.train_encoded)))
        self.schedule = self.schedule_for(ctx.config.steps, per_step)
        self.replay_n = int(self.schedule.sum())
        self.policy.prepare(self, ctx)

    def schedule_for(self, steps: int, per_step: int) -> np.ndarray:
        """Replay examples per step of a run of ``steps`` steps with ``per_step`` task examples each."""
        return replay_schedule(steps, per_step, self.ratio, self.options.budget)

    def check_plan(self, config: Any) -> None:
        self.policy.check_plan(self.schedule_for(config.steps, config.batch_size))

    def _fitted_predictor(self, ctx: TrainContext) -> tuple[Any, list[str], str]:
        """``(predictor, its column ids, its name)`` of a predicted policy (see its ``fitted_predictor``)."""
        return self.policy.fitted_predictor(self, ctx)

    def before_step(self, ctx: TrainContext) -> None:
        self.policy.before_step(self, ctx)

    # ---- every step -------------------------------------------------------------------------
    def n_replay(self, step: int) -> int:
        """Replay examples interleaved into step ``step`` (0-based)."""
        return int(self.schedule[step]) if 0 <= step < self.schedule.size else 0

    def augment_batch(self, ctx: TrainContext, batch: list[Encoded]) -> list[Encoded]:
        if self.sampler is None:
            raise ConfigError("replay: before_training() must run before augment_batch()")
        self._n_task = len(batch)
        k = self.n_replay(ctx.step)
        self._n_replay = 0
        if k == 0 or not batch:
            return batch
        idx = self.policy.draw(self, ctx, batch, k)
        extra = [ctx.upstream_encoded[i] for i in idx]
        self.replayed.extend(e.example_id for e in extra)
        self._n_replay = len(extra)
        return list(batch) + extra

    def loss(self, ctx: TrainContext, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``L_task + (k / b) · L_replay``: task and replay rows averaged separately (module docstring)."""
        k, b = self._n_replay, self._n_task
        if k == 0 or batch["input_ids"].shape[0] != k + b:
            return ctx.forward_loss(batch)
        with ctx.autocast():  # the training precision (train.dtype), as the default loss
            out = ctx.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        targets = batch["labels"][:, 1:]
        nll = F.cross_entropy(out.logits[:, :-1].float().transpose(1, 2), targets, ignore_index=IGNORE_INDEX,
                              reduction="none")
        scored = (targets != IGNORE_INDEX).float()
        task = nll[:b].sum() / scored[:b].sum().clamp(min=1)
        replay = nll[b:].sum() / scored[b:].sum().clamp(min=1)
        return task + (k / b) * replay

    # ---- record -----------------------------------------------------------------------------
    def excluded_upstream_ids(self) -> set[str]:
        return set(self.replayed)

    def summary(self) -> dict[str, Any]:
        o = self.options
        info: dict[str, Any] = {"policy": self.policy.name, "weighting": o.weighting,
                                "ratio": self.ratio if o.budget is None else None,
                                "temperature": o.temperature if o.weighting == "softmax" else None,
                                "replacement": o.replacement, "budget": o.budget, "pool_size": len(self.pool_ids),
                                "replay_n": self.replay_n, "n_replayed": len(self.replayed),
                                "n_unique_replayed": len(set(self.replayed)),
                                "pool_resets": self.sampler.resets if self.sampler is not None else 0}
        info.update(self.policy.describe())
        info.update(self._info)
        info.update(self.policy.info)
        info["upstream_evaluations"] = self._evaluations + self.policy.evaluations_given()
        return info


__all__ = ["MAX_RATIO", "MODES", "OBSERVE_ONLY", "PATH_OPTIONS", "POLICIES", "PROBE_BASES", "PROBE_FILL",
           "ReplayOptions", "ReplayStrategy"]
