"""Which pool examples a replay run replays: one small object per selection policy.

A policy sets the pool's sampling weights before training (online prediction once more, at the warm-up
boundary) and draws each step's examples. The ``replay`` strategy (:mod:`forgetscope.mitigate.replay`, whose
docstring states every rule) owns the rest: the pool, the schedule, the sampler, the loss and the record.
A policy works through the strategy it is given (``replay``): its ``weights`` and ``fill``, its
``sampler``, its ``probe_losses`` (the sweep's measurement, counted as evaluations) and ``probe_calls``.

* :class:`RandomPolicy`: uniform.
* :class:`OraclePolicy`: the task's true forgetting row.
* :class:`OfflinePredictedPolicy`: a row completed from probe values given (or measured by a pilot).
* :class:`OnlinePredictedPolicy`: random replay for a warm-up, then the row completed from a probe of the
  current model.
* :class:`MIRPolicy`: the candidates the next update interferes with most (:mod:`forgetscope.mitigate.mir`).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from forgetscope.data.encoding import Encoded
from forgetscope.errors import ConfigError, DataError
from forgetscope.mitigate.mir import most_interfered
from forgetscope.mitigate.replay_sampling import (
    online_boundary,
    probe_fill_weights,
    sampling_weights,
    warmup_weights,
)
from forgetscope.predict.completion import PROBE_ONLY, complete_row, fit_known, probe_ids
from forgetscope.train.hooks import Strategy, TrainContext

if TYPE_CHECKING:
    from forgetscope.mitigate.replay import ReplayOptions, ReplayStrategy

#: probe-only + random fill (see :mod:`forgetscope.mitigate.replay`): the probe's examples observed forgotten,
#: then uniform draws from the unprobed pool.
PROBE_FILL = "probe-fill"
#: The predictors that observe the probe and complete nothing (they need no known rows).
OBSERVE_ONLY = (PROBE_ONLY, PROBE_FILL)


class ReplayPolicy:
    """Sets the replay weights of a run and draws each step's examples (by default from the weights)."""

    name: ClassVar[str] = ""

    def __init__(self, options: ReplayOptions):
        self.options = options
        self.info: dict[str, Any] = {}  # what the policy did, for the run record

    def prepare(self, replay: ReplayStrategy, ctx: TrainContext) -> None:
        """Before training: set ``replay.weights`` over the pool."""
        raise NotImplementedError

    def before_step(self, replay: ReplayStrategy, ctx: TrainContext) -> None:
        """Before each step (online prediction switches its weights here)."""

    def draw(self, replay: ReplayStrategy, ctx: TrainContext, batch: list[Encoded], k: int) -> list[int]:
        """Pool indices of the ``k`` examples replayed with the task ``batch``."""
        return replay.sampler.draw(k, replay.weights, fill=replay.fill)

    def check_plan(self, schedule: np.ndarray) -> None:
        """Refuse a replay schedule (examples per step) the policy cannot serve."""

    def evaluations_given(self) -> int:
        """Upstream evaluations spent on values the policy was given (counted beside those it measures)."""
        return 0

    def describe(self) -> dict[str, Any]:
        """The policy's settings for the run record."""
        return {}

    def weigh(self, replay: ReplayStrategy, values: np.ndarray) -> None:
        """Sampling weights from pool values (softmax or linear, as the options say)."""
        o = self.options
        replay.weights = sampling_weights(values, o.weighting, o.temperature)
        self.info["weights_effective_n"] = float(1.0 / np.sum(replay.weights ** 2))


class RandomPolicy(ReplayPolicy):
    name = "random"

    def prepare(self, replay: ReplayStrategy, ctx: TrainContext) -> None:
        replay.weights = np.full(len(replay.pool_ids), 1.0 / len(replay.pool_ids))


class OraclePolicy(ReplayPolicy):
    """Weighted by the true forgetting row of the task (the upper bound no user has)."""

    name = "oracle"

    def prepare(self, replay: ReplayStrategy, ctx: TrainContext) -> None:
        row, evaluations = dict(self.options.forgetting or {}), self.options.forgetting_evaluations
        self.info["row_evaluations"] = int(evaluations if evaluations is not None else len(row))
        values = np.array([row.get(i, np.nan) for i in replay.pool_ids], dtype=float)
        if not np.isfinite(values).any():
            raise DataError("replay oracle: the forgetting row has no value for any pool example")
        self.weigh(replay, values)

    def evaluations_given(self) -> int:
        return int(self.info.get("row_evaluations", 0))


class PredictedPolicy(ReplayPolicy):
    """Weighted by the row a predictor completes from a probe (or, observe-only, by the probe alone)."""

    name = "predicted"

    def __init__(self, options: ReplayOptions):
        super().__init__(options)
        cols = options.predictor_columns
        self.predictor_columns = [str(c) for c in cols] if cols is not None else None

    def describe(self) -> dict[str, Any]:
        return {"mode": self.options.mode}

    def fitted_predictor(self, replay: ReplayStrategy, ctx: TrainContext) -> tuple[Any, list[str], str]:
        """``(predictor, its column ids, its name)``: a fitted one given, or one fitted on the known rows (None for
        the observe-only predictors, whose columns are the pool)."""
        from forgetscope.predict import Predictor

        o = self.options
        if isinstance(o.predictor, Predictor):
            return o.predictor, list(self.predictor_columns or []), o.predictor.name
        if o.predictor in OBSERVE_ONLY:  # no known rows, nothing completed: every pool example is a column
            return None, list(replay.pool_ids), o.predictor
        fitted, cols, n_known = fit_known(o.predictor, o.known, options=o.predictor_options,
                                          drop_task=ctx.task.name if o.leave_task_out else None,
                                          strategy=o.known_strategy, kind=o.known_kind)
        self.info["known_rows"] = n_known
        return fitted, cols, o.predictor

    def probe_ids(self, replay: ReplayStrategy, cols: list[str]) -> list[str]:
        return probe_ids(replay.pool_ids, cols, self.options.probe, seed=self.options.seed)

    def weigh_completed(self, replay: ReplayStrategy, values: np.ndarray, probed: set[str]) -> None:
        """Weights from the completed row; for ``probe-fill``, the chosen probe examples' weights and the
        uniform fill over the unprobed ones (``probed``: the probe's example ids)."""
        o = self.options
        if o.predictor != PROBE_FILL:
            self.weigh(replay, values)
            return
        mask = np.array([i in probed for i in replay.pool_ids], dtype=bool)
        replay.weights, replay.fill = probe_fill_weights(values, mask, margin=float(o.fill_margin),
                                                         weighting=o.weighting, temperature=o.temperature)
        chosen = int((replay.weights > 0).sum())
        self.info.update({"probe_chosen": chosen, "fill_margin": float(o.fill_margin), "fill_pool": int((~mask).sum())})
        if chosen:
            self.info["weights_effective_n"] = float(1.0 / np.sum(replay.weights ** 2))


class OfflinePredictedPolicy(PredictedPolicy):
    """The probe's values given (or measured by a pilot fine-tune of a copy of the model), completed once."""

    def prepare(self, replay: ReplayStrategy, ctx: TrainContext) -> None:
        o = self.options
        pred, cols, name = self.fitted_predictor(replay, ctx)
        col_set = set(cols)
        given = dict(o.probe_values) if o.probe_values is not None else None
        if given is not None:
            observed = {i: v for i, v in given.items() if i in col_set and np.isfinite(v)}
            if not observed:
                raise DataError("replay predicted: no probe value matches a column of the known rows")
            evaluations = len(observed) if o.probe_evaluations is None else int(o.probe_evaluations)
            probed = set(given) & set(replay.pool_ids)
        else:
            ids = self.probe_ids(replay, cols)
            observed = dict(zip(ids, self.pilot(replay, ctx, ids).tolist()))
            evaluations = 2 * len(ids)
            probed = set(ids)
        values = complete_row(pred, cols, observed, replay.pool_ids)
        self.info.update({"predictor": name, "probe_size": len(observed), "probe_evaluations": int(evaluations),
                          "pilot_steps": o.pilot_steps if given is None else 0,
                          "row_evaluations_saved": int(len(cols) - evaluations)})
        self.weigh_completed(replay, values, probed)

    def pilot(self, replay: ReplayStrategy, ctx: TrainContext, ids: list[str]) -> np.ndarray:
        """Forgetting on the probe examples after a short plain fine-tune of a copy of the model."""
        from forgetscope.train.trainer import run_steps

        model = copy.deepcopy(ctx.model)
        before = replay.probe_losses(ctx, ids, model, count=False)
        plain = Strategy()
        pilot_ctx = dataclasses.replace(ctx, model=model, optimizer=None, step=0,
                                        rng=np.random.default_rng([ctx.config.seed, self.options.seed, 7]))
        pilot_ctx.optimizer = plain.build_optimizer(pilot_ctx, [p for _, p in pilot_ctx.trainable_parameters()])
        run_steps(pilot_ctx, plain, self.options.pilot_steps)  # the one training loop, on a copy
        after = replay.probe_losses(ctx, ids, model, count=False)
        del model, pilot_ctx
        return after - before

    def evaluations_given(self) -> int:
        return int(self.info.get("probe_evaluations", 0))


class OnlinePredictedPolicy(PredictedPolicy):
    """Random replay (the probe left out) until the warm-up boundary, then the row completed from the probe's
    forgetting on the current model; already replayed examples stay masked by the sampler."""

    def __init__(self, options: ReplayOptions):
        super().__init__(options)
        #: predictor, cols, probe_ids, base (the probe's base losses), boundary, switched
        self.state: dict[str, Any] | None = None

    def prepare(self, replay: ReplayStrategy, ctx: TrainContext) -> None:
        o = self.options
        boundary = online_boundary(ctx.config.steps, o.warmup_fraction)
        pred, cols, name = self.fitted_predictor(replay, ctx)
        ids = self.probe_ids(replay, cols)
        if o.probe_base == "known":
            base = self.known_base_losses(ids)
            base_evaluations = 0
        else:
            base = replay.probe_losses(ctx, ids)  # once, on the model before any step
            base_evaluations = len(ids)
        self.state = {"predictor": pred, "cols": cols, "probe_ids": ids, "base": base, "boundary": boundary,
                      "switched": False}
        self.info.update({"predictor": name, "probe_size": len(ids), "warmup_steps": boundary,
                          "probe_base": o.probe_base, "probe_base_evaluations": base_evaluations})
        replay.weights = warmup_weights(replay.pool_ids, ids)  # uniform, the probe examples left out

    def known_base_losses(self, ids: list[str]) -> np.ndarray:
        up = self.options.known_base_losses or {}
        missing = [i for i in ids if i not in up or not np.isfinite(up[i])]
        if missing:
            raise DataError(f"replay online: the known sweep has no base loss for probe example(s) {missing[:3]}")
        return np.array([float(up[i]) for i in ids])

    def before_step(self, replay: ReplayStrategy, ctx: TrainContext) -> None:
        on = self.state
        if on is None or on["switched"] or ctx.step != on["boundary"]:
            return
        after = replay.probe_losses(ctx, on["probe_ids"])
        observed = {i: float(a - b) for i, a, b in zip(on["probe_ids"], after, on["base"]) if np.isfinite(a - b)}
        if not observed:
            raise DataError("replay online: no finite probe loss at the warm-up boundary")
        replay.probe_calls.append({"step": ctx.step, "ids": list(on["probe_ids"])})
        values = complete_row(on["predictor"], on["cols"], observed, replay.pool_ids)
        self.weigh_completed(replay, values, set(on["probe_ids"]))
        on["switched"] = True
        self.info.update({"probe_step": ctx.step, "probe_evaluations": len(on["probe_ids"]),
                          "replayed_in_warmup": len(replay.replayed)})


class MIRPolicy(ReplayPolicy):
    """For each step with replay, ``candidates`` pool examples drawn at random; the ``k`` that a virtual step
    on the task batch interferes with most are replayed."""

    name = "mir"

    def prepare(self, replay: ReplayStrategy, ctx: TrainContext) -> None:
        self.check_plan(replay.schedule)
        replay.weights = None

    def check_plan(self, schedule: np.ndarray) -> None:
        most = int(schedule.max()) if schedule.size else 0
        if self.options.candidates < most:
            raise ConfigError(f"replay mir: candidates={self.options.candidates} is smaller than the {most} replay "
                              f"examples drawn in one step; use candidates >= {most}")

    def draw(self, replay: ReplayStrategy, ctx: TrainContext, batch: list[Encoded], k: int) -> list[int]:
        cand = replay.sampler.draw_uniform(max(k, self.options.candidates))
        scores = replay.interference(ctx, batch, [ctx.upstream_encoded[i] for i in cand])
        chosen = most_interfered(cand, scores, k)
        replay.sampler.mark(chosen)
        self.info["mir_draws"] = self.info.get("mir_draws", 0) + 1
        self.info["mir_candidates"] = len(cand)
        return chosen

    def describe(self) -> dict[str, Any]:
        return {"candidates": self.options.candidates}


def make_policy(options: ReplayOptions) -> ReplayPolicy:
    """The policy object of replay options (``policy``, and ``mode`` for ``predicted``)."""
    if options.policy == "predicted":
        return OnlinePredictedPolicy(options) if options.mode == "online" else OfflinePredictedPolicy(options)
    return {"random": RandomPolicy, "oracle": OraclePolicy, "mir": MIRPolicy}[options.policy](options)


__all__ = ["OBSERVE_ONLY", "PROBE_FILL", "MIRPolicy", "OfflinePredictedPolicy", "OnlinePredictedPolicy",
           "OraclePolicy", "PredictedPolicy", "RandomPolicy", "ReplayPolicy", "make_policy"]
