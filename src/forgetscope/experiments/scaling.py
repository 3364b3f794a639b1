"""The scaling sweep: LoRA at several ranks, forgetting evaluated at checkpoints along each run.

One run per (task, rank, seed) fine-tunes a fresh copy of the base model on one task for
``max(eval_steps)`` steps; a training hook evaluates, at each step in ``eval_steps`` (checkpoint evaluations inside the
run, not separate runs), on the upstream (pretraining-like) examples:

``forgetting``
    forgetscope's measure: mean over examples of the loss increase
    ``NLL_ft(x) - NLL_base(x)`` (mean token NLL of each example, nats).
``ce_forgetting``
    Kalajdzievski's measure (arXiv 2401.05605): the cross-entropy between the
    base model's and the fine-tuned model's next-token predictions,
    ``mean over scored positions of  - sum_v p_base(v | x_<i) log p_ft(v | x_<i)``
    (mean per example, then over examples). Before fine-tuning it equals the base model's entropy.
``kl_forgetting``
    ``ce_forgetting`` minus the base model's entropy = ``KL(p_base || p_ft)``; zero before fine-tuning.
``task_loss``
    the task's held-out loss (token-weighted mean NLL) at that checkpoint: the fine-tuning loss of the
    paper's linear relation.

The base model's log-probabilities on the upstream examples are computed once and cached in memory
(``cache_mb``; above it they are recomputed with the base model at every checkpoint).

Config (``forgetscope scaling CONFIG.yaml``; see ``configs/scaling_demo.yaml``): a sweep config
(:class:`~forgetscope.config.SweepConfig`: model, upstream, tasks, train, eval, load, executor, report_to)
plus the grid and the fit::

    model: smollm2-135m-instruct
    output: sweeps/scaling_demo
    upstream: {source: demo, n: 32}
    task: code                        # or {name: ..., source: ..., heldout: ...}; or tasks: [a, b, ...]
    train: {steps: 40, lr: 1e-3, batch_size: 8, max_length: 64}   # method is always lora
    ranks: [1, 2, 4, 8, 16]           # at least 3 values
    eval_steps: [5, 10, 20, 40]       # at least 3 values
    holdout: largest_t                # none | largest_t | largest_p | random
    laws: [shifted, increasing, power]
    criteria: {target: ce_forgetting, law: increasing, min_tasks: 1}   # optional, judged after the fit

A grid of fewer than 3 ranks or steps, or a hold-out rule that leaves a task fewer points than the
shifted law needs, is refused when the config is read, and again by :func:`run_scaling_sweep` before
anything is written (:func:`~forgetscope.experiments.validate.validate_scaling`).

Files under ``OUTPUT/``::

    manifest.json                the sweep's manifest (config, fingerprint, model and data hashes, status),
                                 written and checked on resume as a sweep's (a changed config is refused)
    scaling/runs/<run>.parquet   checkpoint rows of one finished run (the resume unit)
    scaling/points.parquet/.csv  all rows (see analysis.scaling), plus the t = 0 rows of the base model
    scaling/fit.json, *.png      written by :func:`write_scaling_results` (the config's own hold-out: primary)
    scaling/fit_<rule>.json, *_<rule>.png   a refit with another hold-out rule (secondary; never fit.json)

Every name comes from :class:`~forgetscope.store.layout.ScalingLayout` (``SweepLayout.scaling``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from forgetscope.analysis.scaling import BASELINES, LAWS, MIN_FIT_POINTS, ScalingError
from forgetscope.config import EvalConfig, SourceConfig, SweepConfig, TaskConfig, TrainConfig
from forgetscope.errors import StoreError
from forgetscope.experiments.run import Experiment
from forgetscope.experiments.session import SweepSession, config_fingerprint
from forgetscope.experiments.spec import RunSpec
from forgetscope.experiments.validate import validate_scaling
from forgetscope.measure.nll import heldout_loss
from forgetscope.measure.reference import UpstreamReference
from forgetscope.models import count_trainable
from forgetscope.store.layout import SweepLayout
from forgetscope.store.lock import holds_output
from forgetscope.train.hooks import Hook, TrainContext

if TYPE_CHECKING:
    from forgetscope.analysis.scaling import ScalingReport


MIN_GRID = 3  # fewest distinct ranks and checkpoint steps: a power law in a variable needs three values


def fit_points_per_task(ranks: Sequence[int], eval_steps: Sequence[int], holdout: str, n_seeds: int = 1) -> int:
    """How many checkpoint points of one task the fit gets after ``holdout`` takes its share (``t = 0`` is
    never fitted): the planned grid, known before anything trains."""
    n_r, n_t = len(set(ranks)), len(set(eval_steps))
    total = n_seeds * n_r * n_t
    held = {"none": 0, "largest_t": n_seeds * n_r, "largest_p": n_seeds * n_t,
            "random": max(1, round(0.2 * total))}.get(holdout)
    if held is None:
        raise ScalingError(f"unknown hold-out rule {holdout!r}; use none, largest_t, largest_p or random")
    return total - held


def holdout_shortfall(ranks: Sequence[int], eval_steps: Sequence[int], holdout: str, n_seeds: int = 1) -> str | None:
    """Why ``holdout`` leaves a task too few points of the planned grid to fit the shifted law (None: enough):
    the one check of a config's own rule and of a secondary one."""
    left = fit_points_per_task(ranks, eval_steps, holdout, n_seeds)
    if left >= MIN_FIT_POINTS:
        return None
    return (f"holdout: {holdout} leaves {left} points of each task to fit ({len(ranks)} ranks x {len(eval_steps)} "
            f"steps); the shifted law needs {MIN_FIT_POINTS}")


class ScalingCriteria(BaseModel):
    """Criteria fixed before a scaling study runs, judged per task by
    :func:`forgetscope.analysis.scaling.judge_laws` on the fit (written to ``fit.json`` as ``criteria``)."""

    model_config = ConfigDict(extra="forbid")

    target: Literal["ce_forgetting", "kl_forgetting", "forgetting"] = Field(
        "ce_forgetting", description="the forgetting column the laws are judged on")
    law: Literal["shifted", "increasing"] = Field("increasing", description="the (P, t) law judged")
    baselines: list[Literal["last_observed", "loglinear"]] = Field(
        default_factory=lambda: list(BASELINES), min_length=1,
        description="trivial rules the law must beat on held-out points (at least one: beating none is no test)")
    exponent_ci: bool = Field(True, description="growth needs both exponents' 95% CIs to exclude 0")
    negative_slope: bool = Field(True, description="also require forgetting to fall linearly with task loss")
    min_tasks: int = Field(1, ge=1, description="a criterion holds when it holds on at least this many tasks")


class ScalingConfig(SweepConfig):
    """A scaling sweep: a sweep config whose runs are plain LoRA fine-tunes (no ``strategy``, no
    ``null_control``) swept over ``ranks`` and evaluated at the checkpoints ``eval_steps``. It opens, resumes
    and is fingerprinted as a sweep is (``manifest.json``); the fit settings (``holdout``, ``laws``,
    ``criteria``) are not part of the fingerprint."""

    output: Path = Field(Path("sweeps/scaling"), description="the sweep directory written (rerunning resumes it)")
    upstream: SourceConfig = Field(SourceConfig(n=32), description="the upstream examples, as in a sweep")
    tasks: list[TaskConfig] = Field(default_factory=list, description="the tasks, each swept over every rank; "
                                    "task: NAME (or a task mapping) names a single one")
    train: TrainConfig = Field(TrainConfig(), description="how each run fine-tunes (method must be lora; "
                               "lora_rank is set by ranks)")
    eval: EvalConfig = Field(EvalConfig(exact_match=False), description="how upstream examples are measured")
    ranks: list[int] = Field(default_factory=lambda: [1, 2, 4, 8], description="the LoRA ranks swept (three "
                             "or more distinct values)")
    eval_steps: list[int] = Field(default_factory=lambda: [5, 10, 20, 40], description="the optimizer steps at "
                                  "which each run is evaluated (three or more distinct values)")
    holdout: Literal["none", "largest_t", "largest_p", "random"] = Field(
        "largest_t", description="the points kept out of the fit to test it: the last checkpoint, the largest "
        "rank, a seeded 20%, or none")
    laws: list[str] = Field(default_factory=lambda: list(LAWS), description="the (P, t) laws fitted")
    criteria: ScalingCriteria | None = Field(None, description="criteria fixed before the study runs "
                                             "(null: the fit is not judged)")
    pending: list[str] = Field(default_factory=list, description="config fields that are still placeholders: "
                                                                  "checked, but nothing trains until it is empty")
    cache_mb: int = Field(1024, ge=0, description="memory (MB) for the base model's cached log-probabilities; "
                          "above it they are recomputed at every checkpoint")
    figures: bool = Field(True, description="write the figures with the fit")

    @model_validator(mode="before")
    @classmethod
    def _one_task(cls, data: Any) -> Any:
        """``task: NAME`` (or a task mapping) is ``tasks: [NAME]``."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        task = data.pop("task", None)
        if task is not None and data.get("tasks") is not None:
            raise ValueError("task: give either task (one) or tasks (several), not both")
        if task is not None:
            data["tasks"] = [task]
        elif not data.get("tasks"):
            raise ValueError("task: name the task to fine-tune (task: NAME, or tasks: [NAME, ...])")
        return data

    @field_validator("ranks", "eval_steps")
    @classmethod
    def _positive_unique(cls, v: list[int]) -> list[int]:
        if any(x < 1 for x in v):
            raise ValueError("values must be >= 1")
        if len(set(v)) < MIN_GRID:
            raise ValueError(f"needs at least {MIN_GRID} distinct values to fit a power law in it, got {sorted(set(v))}")
        return sorted(set(v))

    @field_validator("laws")
    @classmethod
    def _known_laws(cls, v: list[str]) -> list[str]:
        unknown = [x for x in v if x not in LAWS]
        if unknown or not v:
            raise ValueError(f"unknown law {unknown[0]!r}; choose from {', '.join(LAWS)}" if unknown
                             else f"name at least one of {', '.join(LAWS)}")
        return list(dict.fromkeys(v))

    @model_validator(mode="after")
    def _lora_only(self) -> ScalingConfig:
        if self.train.method != "lora":
            raise ValueError("train.method: the scaling sweep varies the LoRA rank; method must be 'lora'")
        if self.strategy != "plain" or self.strategy_options:
            raise ValueError(f"strategy: the scaling sweep fine-tunes without a mitigation strategy (given "
                             f"{self.strategy!r} with options {sorted(self.strategy_options)}); leave strategy "
                             "plain and strategy_options empty")
        if self.null_control:
            raise ValueError("null_control: the scaling sweep evaluates checkpoints, not a null control; "
                             "set null_control: false")
        short = holdout_shortfall(self.ranks, self.eval_steps, self.holdout, len(self.seed_list))
        if short:
            raise ValueError(short)
        for i, name in enumerate(self.pending):
            if name.partition(".")[0] not in type(self).model_fields:
                raise ValueError(f"pending.{i}: {name!r} is not a config field (e.g. train, train.lr)")
        if self.criteria is not None:
            if self.criteria.law not in self.laws:
                raise ValueError(f"criteria.law: {self.criteria.law!r} is not among the fitted laws {self.laws}")
            if self.criteria.min_tasks > len(self.tasks):
                raise ValueError(f"criteria.min_tasks: {self.criteria.min_tasks} is more than the "
                                 f"{len(self.tasks)} tasks")
        return self

    @property
    def task_list(self) -> list[TaskConfig]:
        return list(self.tasks)

    def fingerprint(self) -> str:
        """The sweep's fingerprint (:func:`~forgetscope.experiments.session.config_fingerprint`): what a resume
        must match."""
        return config_fingerprint(self)


def load_scaling_config(path: str | Path, **overrides: Any) -> ScalingConfig:
    from forgetscope.config import load_config

    return load_config(path, model=ScalingConfig, **overrides)


# --------------------------------------------------------------------------- the experiment
def run_id(task: str, rank: int, seed: int) -> str:
    return f"{task}__lora_r{rank}__s{seed}"


class CheckpointEvaluator(Hook):
    """At the chosen steps, evaluate forgetting against the base model and the task loss; keeps the rows."""

    def __init__(self, reference: UpstreamReference, heldout_encoded: list, pad_id: int, steps: Sequence[int],
                 base: dict[str, Any]):
        self.reference, self.heldout_encoded, self.pad_id = reference, heldout_encoded, pad_id
        self.steps = {int(s) for s in steps}
        self.base = base
        self.rows: list[dict[str, Any]] = []

    def after_step(self, ctx: TrainContext) -> None:
        if ctx.step not in self.steps:
            return
        t0 = time.perf_counter()
        per_ex = self.reference.evaluate(ctx.model)
        self.rows.append({**self.base, "P": int(count_trainable(ctx.model)), "t": int(ctx.step),
                          **self.reference.summary(per_ex),
                          "task_loss": heldout_loss(ctx.model, self.heldout_encoded, self.pad_id),
                          "eval_s": time.perf_counter() - t0})


@dataclass
class ScalingExperiment(Experiment):
    """Checkpoint evaluations inside each LoRA run; the run's rows are its checkpoints (t = 0 included)."""

    eval_steps: tuple[int, ...]
    max_length: int  # the task's held-out encoding (train.max_length); upstream: the session's evaluator
    cache_mb: int
    name = "scaling"

    def _reference(self, session: SweepSession, task_name: str) -> dict[str, Any]:
        """The base model's distributions and t = 0 summary (once per process), and the task's held-out
        encoding and base task loss (once per task)."""
        ref = session.cache.get("scaling_reference")
        if ref is None:
            base, _ = session.base()
            reference = UpstreamReference(base, session.evaluator, session.upstream, cache_mb=self.cache_mb)
            ref = {"reference": reference, "base_summary": reference.summary(reference.evaluate(base)), "tasks": {}}
            session.cache["scaling_reference"] = ref
        if task_name not in ref["tasks"]:
            base, _ = session.base()
            held = session.evaluator.encode(session.tasks[task_name].heldout, max_length=self.max_length)
            ref["tasks"][task_name] = {"heldout": held,
                                       "base_task_loss": heldout_loss(base, held, ref["reference"].pad_id)}
        return {**ref, **ref["tasks"][task_name]}

    def hooks(self, session: SweepSession, spec: RunSpec) -> list[Hook]:
        ref = self._reference(session, spec.task)
        meta = {"run": spec.run_id, "task": spec.task, "seed": spec.seed,
                "rank": dict(spec.train_overrides)["lora_rank"]}
        return [CheckpointEvaluator(ref["reference"], ref["heldout"], ref["reference"].pad_id, self.eval_steps,
                                    meta)]

    def evaluate(self, session: SweepSession, spec: RunSpec, model: Any, hooks: list[Hook]) -> pd.DataFrame:
        ref = self._reference(session, spec.task)
        cb = next(h for h in hooks if isinstance(h, CheckpointEvaluator))
        start = {**cb.base, "P": int(count_trainable(model)), "t": 0, **ref["base_summary"],
                 "task_loss": ref["base_task_loss"], "eval_s": 0.0}
        return pd.DataFrame([start, *cb.rows])


def _refuse_earlier_record(layout: SweepLayout, overwrite: bool) -> None:
    """A directory holding a scaling sweep recorded before scaling sweeps wrote ``manifest.json`` (its config in
    ``scaling_config.json``, fingerprinted another way) cannot be resumed; it is named, not called foreign."""
    if layout.scaling_config.is_file() and not layout.manifest.is_file() and not overwrite:
        raise StoreError(f"{layout.root} holds a scaling sweep recorded by an earlier forgetscope "
                         f"({layout.scaling_config.name}), which cannot be resumed: fit its finished runs with "
                         "`forgetscope scaling CONFIG --refit`, or pass --overwrite to run it again")


def plan_scaling_runs(config: ScalingConfig) -> list[RunSpec]:
    """One LoRA run per (task, seed, rank), trained for the largest checkpoint step."""
    steps = max(config.eval_steps)
    return [RunSpec(task.name, seed, "plain",
                    train_overrides=(("lora_rank", rank), ("method", "lora"), ("steps", steps)),
                    label=run_id(task.name, rank, seed))
            for task in config.task_list for seed in config.seed_list for rank in config.ranks]


@holds_output("forgetscope scaling", validate_scaling)  # the whole config, before the output directory exists
def run_scaling_sweep(config: ScalingConfig, *, output: str | Path | None = None, overwrite: bool = False,
                      session=None, on_run: Callable[[str, list[dict]], None] | None = None) -> pd.DataFrame:
    """Run (or resume) the scaling sweep and return the tidy checkpoint table (also written to disk).

    The directory is opened as a sweep's (:func:`~forgetscope.experiments.sweep.open_store`: ``manifest.json``,
    the same fingerprint and resume checks); each finished run's checkpoint rows are
    ``scaling/runs/<run>.parquet``. Runs go through ``config.executor``; ``session`` (a :class:`SweepSession`)
    may be passed to reuse a loaded model. A config whose ``pending`` lists placeholders starts nothing (and
    creates no directory).
    """
    from forgetscope.experiments.executors import get_executor
    from forgetscope.experiments.sweep import open_store
    from forgetscope.store.io import write_parquet

    output = Path(output or config.output)
    config = config.model_copy(update={"output": output})
    layout = SweepLayout(output)
    _refuse_earlier_record(layout, overwrite)
    session = session or SweepSession.prepare(config)
    session.config = config
    store = open_store(config, session, output, overwrite, source="scaling")
    layout.scaling.runs_dir.mkdir(parents=True, exist_ok=True)
    experiment = ScalingExperiment(tuple(config.eval_steps), config.train.max_length, config.cache_mb)
    specs = plan_scaling_runs(config)
    todo = [s for s in specs if not layout.scaling_run(s.run_id).is_file()]

    def finished(spec: RunSpec, record: dict[str, Any], rows: pd.DataFrame) -> None:
        rows = rows.assign(run_wall_s=record["train_wall_s"])
        write_parquet(layout.scaling_run(spec.run_id), rows)
        if on_run is not None:
            on_run(spec.run_id, rows.to_dict("records"))

    get_executor(config.executor).run(session, todo, finished, total=len(specs), done=len(specs) - len(todo),
                                      experiment=experiment)
    store.update_manifest(status="complete", completed=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    points = read_points(output)
    ref = session.cache.get("scaling_reference")  # absent when every run came from disk or a remote worker
    points["cached_reference"] = bool(ref and ref["reference"].cached)
    return points


def write_scaling_results(points: pd.DataFrame, report: ScalingReport, out_dir: str | os.PathLike[str], *,
                          figures: bool = True, primary: str | None = None,
                          suffix: str | None = None) -> dict[str, Path]:
    """Write ``points.parquet``/``points.csv``, ``fit.json`` and the PNGs (of ``primary``, default the first
    of ``TARGETS`` that was fitted) into ``out_dir``; returns every path by name. With ``suffix`` (a
    secondary analysis) only ``fit_<suffix>.json`` and ``<figure>_<suffix>.png`` are written, so the
    primary files are never replaced."""
    from forgetscope.analysis.plots import write_scaling_figures
    from forgetscope.analysis.scaling import TARGETS
    from forgetscope.store.io import write_json
    from forgetscope.store.layout import ScalingLayout
    from forgetscope.store.scaling import json_safe, write_scaling_tables

    layout = ScalingLayout(out_dir)
    if suffix:
        layout.root.mkdir(parents=True, exist_ok=True)
        paths = {"fit": layout.secondary_fit(suffix)}
        write_json(paths["fit"], json_safe(report.to_dict()))
    else:
        paths = write_scaling_tables(points, report.to_dict(), out_dir)
    if figures:
        primary = primary or next((t for t in TARGETS if t in report.fits), None)
        if primary is not None:
            path_for = (lambda name: layout.figure(f"{name}_{suffix}")) if suffix else layout.figure
            paths.update(write_scaling_figures(points, report, path_for, target=primary))
    return paths


def check_holdout(config: ScalingConfig, holdout: str | None = None) -> str:
    """The hold-out rule a fit uses: ``holdout``, or the config's own; another rule is a secondary analysis
    and must leave each task :data:`MIN_FIT_POINTS` points of the planned grid, as the config's must."""
    rule = holdout or config.holdout
    short = holdout_shortfall(config.ranks, config.eval_steps, rule, len(config.seed_list))
    if short:
        raise ScalingError(short)
    return rule


def task_reports(points: pd.DataFrame, report: ScalingReport,
                 config: ScalingConfig | None = None) -> dict[str, ScalingReport | None]:
    """The report judged for each task: its own fit (``report.by_task``), the report itself when the points
    hold one task, and ``None`` for a task whose fit failed or whose runs have no points yet, so that it
    meets no criterion (a pooled fit never stands in for a task)."""
    names = sorted(map(str, points["task"].dropna().unique())) if "task" in points.columns else []
    if len(names) > 1:
        out: dict[str, ScalingReport | None] = {name: report.by_task.get(name) for name in names}
    else:
        out = {names[0] if names else "all": report}
    for task in config.task_list if config is not None else []:
        out.setdefault(task.name, None)
    return out


def fit_and_write(points: pd.DataFrame, config: ScalingConfig, output: str | Path | None = None, *,
                  holdout: str | None = None):
    """Fit the laws to the points of a sweep (pooled, and per task when there are several), judge the
    config's ``criteria`` on the per-task fits, and write ``OUTPUT/scaling/{points,fit.json,*.png}``.

    ``holdout`` other than the config's own is a secondary analysis: it is written to
    ``fit_<holdout>.json`` and ``<figure>_<holdout>.png``, its criteria marked
    ``criteria_role: secondary``, and the primary ``fit.json`` is left as it is."""
    from forgetscope.analysis.scaling import fit_scaling_by_task, judge_laws

    rule = check_holdout(config, holdout)
    role = "primary" if rule == config.holdout else "secondary"
    out = SweepLayout(output or config.output).scaling_dir
    report = fit_scaling_by_task(points, holdout=rule, seed=config.seed, laws=config.laws)
    report.holdout_role = role
    if config.criteria is not None:
        c = config.criteria
        report.criteria = judge_laws(task_reports(points, report, config), target=c.target, law=c.law,
                                     baselines=c.baselines, exponent_ci=c.exponent_ci,
                                     negative_slope=c.negative_slope, min_tasks=c.min_tasks)
        report.criteria = {"criteria_role": role, "holdout_rule": rule, **report.criteria}
    paths = write_scaling_results(points, report, out, figures=config.figures,
                                  suffix=rule if role == "secondary" else None)
    return report, paths


def read_points(output: str | Path) -> pd.DataFrame:
    """The checkpoint table of a (possibly unfinished) sweep, from its per-run files."""
    runs = sorted(SweepLayout(output).scaling.runs_dir.glob("*.parquet"))
    if not runs:
        raise StoreError(f"no finished scaling runs under {output}")
    points = pd.concat([pd.read_parquet(p) for p in runs], ignore_index=True)
    return points.sort_values([c for c in ("task", "seed", "rank", "t") if c in points.columns]).reset_index(drop=True)
