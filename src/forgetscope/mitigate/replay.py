"""Replay: mix upstream examples into the fine-tuning batches (the ``replay`` strategy).

Each step adds, on average, ``ratio`` upstream examples per task example (``ratio=0.25`` is one replay
example per four task examples; a fractional count per batch is rounded stochastically so the long-run
ratio is exact). Replay examples are drawn with replacement from the upstream pool the trainer gives
the strategy (``TrainContext.upstream``; :mod:`forgetscope.experiments.compare` gives it only the replay
half of the upstream set, so forgetting is measured on examples never replayed) with probabilities:

``random``
    uniform.
``oracle``
    ∝ the positive part of the *true* forgetting row of this task (``forgetting`` mapping or
    ``forgetting_file`` JSON ``{example_id: value}``; in ``compare``: the plain run's measured row);
    the upper bound no user has.
``predicted``
    ∝ the positive part of the row *predicted* from forgetting observed on a small probe set only,
    exactly what a user without this task's row can do:

    1. the known rows: the forgetting rows of *other* tasks from an existing sweep (``known``: sweep
       directory or matrix file; rows of this task and, when the runs table says, of strategies other
       than ``known_strategy`` are dropped), or a fitted :class:`~forgetscope.predict.Predictor` with
       its column ids (``predictor`` + ``predictor_columns``);
    2. the probe set S: ``probe`` (fraction or count) of the pool, chosen at random with ``seed``;
    3. the probe values: either given (``probe_values`` mapping or ``probe_file``; ``compare`` passes
       the plain run's forgetting on S, i.e. the plain fine-tuned model evaluated on S only) or, when
       absent, measured by a *pilot*: ``pilot_steps`` plain fine-tuning steps on a copy of the model,
       the probe examples evaluated before and after it;
    4. the predictor completes the row; observed probe values replace their predictions.

    ``summary()["upstream_evaluations"]`` records what that cost in upstream example evaluations
    (|S| with given probe values — the base losses are shared with the sweep; 2|S| with a pilot),
    against the N evaluations of measuring the row.

Weights are ``max(F, 0)`` plus a floor of 1e-3 of their mean, so an example predicted not to be
forgotten is still drawn occasionally and an all-zero row degrades to uniform. Every replayed
example's id is reported by :meth:`excluded_upstream_ids`, so the sweep leaves it out (NaN) of the
forgetting measured afterwards.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from pydantic import Field, StrictInt, model_validator

from forgetscope.data.encoding import Encoded
from forgetscope.errors import ConfigError, DataError
from forgetscope.train.hooks import (
    Strategy,
    StrategyOptions,
    StrictNumber,
    TrainContext,
    one_of,
    register_strategy,
)

POLICIES = ("random", "predicted", "oracle")
MAX_RATIO = 8.0


def read_values_file(path: str | Path) -> tuple[dict[str, float], int | None]:
    """``{example_id: value}`` from a JSON file (either that mapping or ``{"values": ..., "evaluations": n}``)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"values file not found: {p}")
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{p} is not valid JSON: {exc}") from None
    evaluations = None
    if isinstance(data, dict) and "values" in data:
        evaluations = data.get("evaluations")
        data = data["values"]
    if not isinstance(data, dict):
        raise DataError(f"{p}: expected a mapping of example id to value")
    return {str(k): float("nan") if v is None else float(v) for k, v in data.items()}, evaluations


def sampling_weights(values: np.ndarray) -> np.ndarray:
    """Probabilities ∝ max(v, 0) + floor (NaN counts as the mean); uniform when nothing is positive."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        raise DataError("no values to turn into sampling weights")
    fill = np.nanmean(v) if np.isfinite(v).any() else 0.0
    v = np.where(np.isfinite(v), v, fill)
    w = np.clip(v, 0.0, None)
    if w.sum() <= 0:
        return np.full(v.size, 1.0 / v.size)
    w = w + 1e-3 * w.mean()
    return w / w.sum()


class ReplayOptions(StrategyOptions):
    ratio: StrictNumber = Field(0.25, gt=0, le=MAX_RATIO,
                                description="replay examples per task example (0.25 = 1 per 4)")
    policy: Annotated[str, one_of(POLICIES, "unknown policy")] = Field("random", description="random, predicted or oracle")
    forgetting: dict[str, float] | None = Field(None, description="oracle: the true row {example_id: F}")
    forgetting_file: str | None = Field(None, description="oracle: JSON file with the true row")
    known: str | None = Field(None, description="predicted: sweep dir or matrix file with known rows")
    known_strategy: str | None = "plain"
    predictor: Any = Field("knn", description="predicted: a predictor name or a fitted Predictor")
    predictor_options: dict[str, Any] | None = None
    predictor_columns: list[str] | None = None
    probe: float = Field(0.1, gt=0, description="probe size: fraction of the pool or a count")
    probe_values: dict[str, float] | None = None
    probe_file: str | None = None
    pilot_steps: StrictInt = Field(5, ge=1, description="plain steps of the pilot that measures the probe")
    seed: int = 0

    @model_validator(mode="after")
    def _inputs_for_policy(self) -> ReplayOptions:
        if self.policy == "oracle" and self.forgetting is None and self.forgetting_file is None:
            raise ValueError("policy 'oracle' needs the true forgetting row (forgetting={id: value} or "
                             "forgetting_file=PATH)")
        if self.policy == "predicted":
            from forgetscope.predict import Predictor

            p = self.predictor
            if isinstance(p, Predictor):
                if not hasattr(p, "n_cols_"):
                    raise ValueError("policy 'predicted' needs a fitted predictor; call .fit(known) first")
                if self.predictor_columns is None or len(self.predictor_columns) != p.n_cols_:
                    raise ValueError("a fitted predictor needs predictor_columns, the example ids of its columns")
            elif self.known is None:
                raise ValueError("policy 'predicted' needs a fitted predictor: pass known=SWEEP_DIR (forgetting "
                                 "rows of other tasks) or predictor=<fitted Predictor>")
            elif not isinstance(p, str):
                raise ValueError(f"predictor must be a name or a fitted Predictor, got {p!r}")
        return self


@register_strategy("replay")
class ReplayStrategy(Strategy):
    """See the module docstring for the policies and options."""

    name = "replay"

    Options = ReplayOptions

    def __init__(self, **options: Any):
        super().__init__(**options)
        o = self.options
        ratio, policy, forgetting, predictor = o.ratio, o.policy, o.forgetting, o.predictor
        forgetting_file, known, known_strategy = o.forgetting_file, o.known, o.known_strategy
        predictor_options, predictor_columns = o.predictor_options, o.predictor_columns
        probe, probe_values, probe_file, pilot_steps, seed = (o.probe, o.probe_values, o.probe_file,
                                                              o.pilot_steps, o.seed)
        self.ratio = float(ratio)
        self.policy = policy
        self.forgetting = dict(forgetting) if forgetting is not None else None
        self.forgetting_file = forgetting_file
        self.known = known
        self.known_strategy = known_strategy
        self.predictor = predictor
        self.predictor_options = dict(predictor_options or {})
        self.predictor_columns = [str(c) for c in predictor_columns] if predictor_columns is not None else None
        self.probe = probe
        self.probe_values = dict(probe_values) if probe_values is not None else None
        self.probe_file = probe_file
        self.pilot_steps = pilot_steps
        self.seed = seed
        self.weights: np.ndarray | None = None
        self.pool_ids: list[str] = []
        self.replayed: list[str] = []
        self._rng: np.random.Generator | None = None
        self._info: dict[str, Any] = {}

    # ---- setup: the sampling weights --------------------------------------------------------
    def before_training(self, ctx: TrainContext) -> None:
        if not ctx.upstream_encoded:
            raise ConfigError("replay needs an upstream pool to replay from (it is empty)")
        self.pool_ids = [e.example_id for e in ctx.upstream_encoded]
        self._rng = np.random.default_rng([ctx.config.seed, self.seed, 104729])  # own stream: task batches as in plain
        if self.policy == "random":
            values = np.ones(len(self.pool_ids))
        elif self.policy == "oracle":
            if self.forgetting is not None:
                row, evaluations = self.forgetting, None
            else:
                row, evaluations = read_values_file(self.forgetting_file)
            self._info["upstream_evaluations"] = int(evaluations if evaluations is not None else len(row))
            values = np.array([row.get(i, np.nan) for i in self.pool_ids], dtype=float)
            if not np.isfinite(values).any():
                raise DataError("replay oracle: the forgetting row has no value for any pool example")
        else:
            values = self._predicted_values(ctx)
        self.weights = sampling_weights(values)
        self._info["weights_effective_n"] = float(1.0 / np.sum(self.weights ** 2))

    def _known_matrix(self, ctx: TrainContext) -> tuple[np.ndarray, list[str]]:
        from forgetscope.importing import load_any

        m = load_any(self.known)
        keep = np.ones(m.shape[0], dtype=bool)
        runs = m.runs
        if runs is not None and len(runs) == m.shape[0]:
            if "task" in runs:
                keep &= (runs["task"].astype(str) != ctx.task.name).to_numpy()
            if self.known_strategy and "strategy" in runs:
                keep &= (runs["strategy"].astype(str) == self.known_strategy).to_numpy()
        X = m.values[keep]
        X = X[np.isfinite(X).any(axis=1)] if X.size else X
        if X.shape[0] == 0:
            raise DataError(f"replay predicted: no known rows left in {self.known} after leaving out task "
                            f"{ctx.task.name!r}" + (f" and strategies other than {self.known_strategy!r}"
                                                    if self.known_strategy else ""))
        cols = np.isfinite(X).any(axis=0)
        return X[:, cols], [c for c, k in zip(m.col_names, cols) if k]

    def _predicted_values(self, ctx: TrainContext) -> np.ndarray:
        from forgetscope.predict import Predictor, choose_probe, get_predictor

        if isinstance(self.predictor, Predictor):
            pred, cols = self.predictor, list(self.predictor_columns or [])
            name = self.predictor.name
        else:
            X, cols = self._known_matrix(ctx)
            name = self.predictor
            pred = get_predictor(name, **self.predictor_options).fit(X)
            self._info["known_rows"] = int(X.shape[0])
        col_index = {c: j for j, c in enumerate(cols)}
        # the probe set and its observed values
        given = self.probe_values
        evaluations = None
        if given is None and self.probe_file is not None:
            given, evaluations = read_values_file(self.probe_file)
        if given is not None:
            observed = {i: v for i, v in given.items() if i in col_index and np.isfinite(v)}
            if not observed:
                raise DataError("replay predicted: no probe value matches a column of the known rows")
            evaluations = len(observed) if evaluations is None else int(evaluations)
        else:
            candidates = [i for i in self.pool_ids if i in col_index]
            if not candidates:
                raise DataError("replay predicted: no pool example is a column of the known rows")
            pick = choose_probe(len(candidates), self.probe, seed=self.seed)
            probe_ids = [candidates[k] for k in pick]
            vals = self._pilot(ctx, probe_ids)
            observed = dict(zip(probe_ids, vals.tolist()))
            evaluations = 2 * len(probe_ids)
        ids = list(observed)
        row = pred.predict(np.array([col_index[i] for i in ids]), np.array([observed[i] for i in ids]))
        values = np.array([observed.get(i, row[col_index[i]] if i in col_index else np.nan)
                           for i in self.pool_ids], dtype=float)
        self._info.update({"predictor": name, "probe_size": len(ids), "upstream_evaluations": int(evaluations),
                           "pilot_steps": self.pilot_steps if given is None else 0,
                           "row_evaluations_saved": int(len(cols) - evaluations)})
        return values

    def _pilot(self, ctx: TrainContext, probe_ids: list[str]) -> np.ndarray:
        """Forgetting on the probe examples after a short plain fine-tune of a copy of the model."""
        from forgetscope.measure import per_example_nll

        by_id = {e.example_id: e for e in ctx.upstream_encoded}
        enc = [by_id[i] for i in probe_ids]
        model = copy.deepcopy(ctx.model)
        before = per_example_nll(model, enc, pad_id=ctx.pad_id)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=ctx.config.lr, weight_decay=ctx.config.weight_decay)
        pilot_ctx = dataclasses.replace(ctx, model=model, optimizer=opt)
        plain = Strategy()
        rng = np.random.default_rng([ctx.config.seed, self.seed, 7])
        bs = min(ctx.config.batch_size, len(ctx.train_encoded))
        model.train()
        for _ in range(self.pilot_steps):
            idx = rng.choice(len(ctx.train_encoded), size=bs, replace=False)
            plain.training_step(pilot_ctx, pilot_ctx.collate([ctx.train_encoded[i] for i in idx]))
        after = per_example_nll(model, enc, pad_id=ctx.pad_id)
        del model, opt, pilot_ctx
        return after - before

    # ---- every step -------------------------------------------------------------------------
    def n_replay(self, n_task: int) -> int:
        """Replay examples for a batch of ``n_task`` task examples (stochastic rounding of ratio × n)."""
        k = self.ratio * n_task
        base = math.floor(k)
        rng = self._rng or np.random.default_rng(self.seed)
        return base + int(rng.random() < k - base)

    def augment_batch(self, ctx: TrainContext, batch: list[Encoded]) -> list[Encoded]:
        if self.weights is None:
            raise ConfigError("replay: setup() must run before augment_batch()")
        n = self.n_replay(len(batch))
        if n == 0:
            return batch
        idx = self._rng.choice(len(self.pool_ids), size=n, replace=True, p=self.weights)
        extra = [ctx.upstream_encoded[i] for i in idx]
        self.replayed.extend(e.example_id for e in extra)
        return list(batch) + extra

    def excluded_upstream_ids(self) -> set[str]:
        return set(self.replayed)

    def summary(self) -> dict[str, Any]:
        info = {"policy": self.policy, "ratio": self.ratio, "pool_size": len(self.pool_ids),
                "n_replayed": len(self.replayed), "n_unique_replayed": len(set(self.replayed))}
        info.setdefault("upstream_evaluations", 0)
        info.update(self._info)
        return info
