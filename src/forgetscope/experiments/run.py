"""One run, executed the same way by every experiment and every executor.

:func:`execute_run` fine-tunes a fresh copy of the base model with the run's strategy, lets the
experiment add its hooks (checkpoint evaluations) and measurements (sharpness of the unmerged adapter),
evaluates (and, with ``null_control``, evaluates a random perturbation of the same size:
:mod:`forgetscope.experiments.null_control`), masks the upstream examples the strategy trained on, and
returns a typed run record with the rows to store. An :class:`Experiment` changes only what it needs;
the default is a sweep run: evaluate every upstream example after fine-tuning.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd

from forgetscope.errors import DataError
from forgetscope.experiments.null_control import (
    effect_matched_null,
    null_perturbation,
    null_seed,
    weight_updates,
)
from forgetscope.experiments.session import SweepSession, controlled_tasks
from forgetscope.experiments.spec import RunSpec
from forgetscope.experiments.strategy_inputs import resolve_strategy_inputs
from forgetscope.precision import DTYPES, merge_for_evaluation
from forgetscope.store.schema import RunRecord
from forgetscope.train.hooks import Hook


class Experiment:
    """The per-run parts of an experiment; every method has the sweep's behaviour by default.

    Instances travel to remote workers (Ray), so they hold only small, picklable settings.
    """

    name = "sweep"

    def hooks(self, session: SweepSession, spec: RunSpec) -> list[Hook]:
        """Extra training hooks for this run (after the strategy and the tracker)."""
        return []

    def measure_unmerged(self, session: SweepSession, spec: RunSpec, model: Any) -> dict[str, Any]:
        """Record fields measured on the fine-tuned model before a LoRA adapter is merged."""
        return {}

    def evaluate(self, session: SweepSession, spec: RunSpec, model: Any, hooks: list[Hook]) -> pd.DataFrame:
        """The run's rows: ``loss_after`` and ``em_after`` of every upstream example."""
        model = merge_for_evaluation(model, DTYPES[session.precision().dtype])
        after = session.evaluate(model, session.upstream, desc=f"upstream after {spec.task}")
        return after.rename(columns={"loss": "loss_after", "em": "em_after"})[
            ["example_id", "loss_after", "em_after"]]

    def evaluate_null(self, session: SweepSession, spec: RunSpec, model: Any) -> pd.DataFrame:
        """The null control's rows (``loss_null`` of every upstream example), measured like :meth:`evaluate`."""
        after = session.evaluate(model, session.upstream, desc=f"upstream null of {spec.task}")
        return after.rename(columns={"loss": "loss_null"})[["example_id", "loss_null"]]


SWEEP = Experiment()


def effect_subset(session: SweepSession, rows: pd.DataFrame, excluded: set[str]) -> list[str]:
    """The upstream examples an effect-matched null is matched on: the first ``null_match_subset`` plain-text
    (lm) examples (instruction pairs when the set has no plain text) that the run measured and did not
    train on."""
    measured = set(rows.loc[rows["loss_after"].notna(), "example_id"]) - excluded
    kind = "lm" if any(e.kind == "lm" for e in session.upstream) else "instruction"
    ids = [e.example_id for e in session.upstream if e.kind == kind and e.example_id in measured]
    if not ids:
        raise DataError("null_match: effect needs upstream examples the run measured and did not train on")
    return ids[:session.config.null_match_subset]


def null_control(session: SweepSession, spec: RunSpec, train_cfg: Any, updates: dict[str, Any],
                 rows: pd.DataFrame, excluded: set[str]) -> tuple[Any, dict[str, Any]]:
    """The run's null model and its record fields: matched in norm (the lower bound) or, with
    ``null_match: effect``, scaled until its mean F on :func:`effect_subset` matches the run's there."""
    cfg = session.config
    base = session.base()[0]
    adapter = train_cfg.method == "lora" and cfg.null_rank == "adapter"
    rank = train_cfg.lora_rank if adapter else None
    if cfg.null_match == "norm":
        return null_perturbation(base, updates, null_seed(spec.run_id), rank=rank)
    ids = effect_subset(session, rows, excluded)
    key = ("null_match_before", tuple(ids))
    if key not in session.cache:
        session.cache[key] = float(np.mean(session.upstream_losses(base, ids)))
    before = session.cache[key]
    after = rows.set_index("example_id").loc[ids, "loss_after"].to_numpy(dtype=float)
    model, info = effect_matched_null(
        base, updates, null_seed(spec.run_id), rank,
        lambda m: float(np.mean(session.upstream_losses(m, ids))) - before,
        float(np.mean(after)) - before, tol=cfg.null_match_tol, max_steps=cfg.null_match_steps)
    return model, {**info, "null_match_subset": len(ids)}


def execute_run(session: SweepSession, spec: RunSpec,
                experiment: Experiment = SWEEP) -> tuple[RunRecord, pd.DataFrame]:
    """Fine-tune a fresh copy of the base model for one run; return its record and rows.

    The run's tracker (``report_to``) stays open through the upstream evaluation, so it logs the run's
    forgetting beside its training curves (:mod:`forgetscope.experiments.run_tracking`).
    """
    from forgetscope.experiments.run_tracking import log_forgetting, open_tracking
    from forgetscope.train import make_strategy, train_on_task

    session.check_precision(session.extras.get("eval_precision"))  # before any training time is spent
    t0 = time.perf_counter()
    model, tok = session.fresh_model()
    train_cfg = session.config.train.model_copy(update={"seed": spec.seed, **dict(spec.train_overrides)})
    options = resolve_strategy_inputs(spec.strategy, dict(spec.strategy_options))  # the strategy reads no files
    strategy = make_strategy(spec.strategy, **options)
    strategy_upstream = session.extras.get("strategy_upstream", session.upstream)
    tracking = open_tracking(session, spec, train_cfg)
    hooks = [tracking, *experiment.hooks(session, spec)]
    try:
        result = train_on_task(model, tok, session.tasks[spec.task], train_cfg, strategy=strategy,
                               upstream=strategy_upstream, chat=session.chat, hooks=hooks,
                               measure_upstream=session.upstream_losses)
        extra = experiment.measure_unmerged(session, spec, result.model)
        updates = weight_updates(session.base()[0], result.model) if session.config.null_control else None
        t1 = time.perf_counter()
        rows = experiment.evaluate(session, spec, result.model, hooks)
        if updates is not None:
            null_model, null_info = null_control(session, spec, train_cfg, updates, rows,
                                                 set(result.excluded_upstream_ids or ()))
            del updates
            null_rows = experiment.evaluate_null(session, spec, null_model)
            rows = rows.merge(null_rows, on="example_id", how="left", validate="one_to_one")
            extra.update(null_info)
        if result.excluded_upstream_ids and "example_id" in rows:
            gone = rows["example_id"].isin(result.excluded_upstream_ids)
            rows.loc[gone, [c for c in ("loss_after", "em_after", "loss_null") if c in rows]] = np.nan
        log_forgetting(tracking, session, rows, step=int(result.record.get("steps") or train_cfg.steps))
    finally:
        tracking.close()
    task = session.tasks[spec.task]
    if task.control is not None:  # a control copy of a task: which control, and of which task of the sweep
        extra.update(control=task.control, control_of=controlled_tasks(session.config).get(spec.task))
    record: RunRecord = {"run_id": spec.run_id, **result.record, "strategy_options": dict(spec.strategy_options),
                         "family": task.family, "task_text": task.text_summary(), **extra,
                         **session.precision().run_fields(),
                         "eval_wall_s": time.perf_counter() - t1, "wall_s": time.perf_counter() - t0}
    return record, rows
