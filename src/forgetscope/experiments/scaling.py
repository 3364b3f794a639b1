"""The scaling sweep: LoRA at several ranks, forgetting evaluated at checkpoints along each run.

One run per (rank, seed) fine-tunes a fresh copy of the base model on one task for ``max(eval_steps)``
steps; a training hook evaluates, at each step in ``eval_steps`` (checkpoint evaluations inside the
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

Config (``forgetscope scaling CONFIG.yaml``; see ``configs/scaling_demo.yaml``)::

    model: smollm2-135m-instruct
    output: sweeps/scaling_demo
    upstream: {source: demo, n: 32}
    task: code                        # or {name: ..., source: ..., heldout: ...}
    train: {steps: 40, lr: 1e-3, batch_size: 8, max_length: 64}   # method is always lora
    ranks: [1, 2, 4, 8, 16]
    eval_steps: [5, 10, 20, 40]
    holdout: largest_t                # none | largest_t | largest_p | random

Files under ``OUTPUT/``::

    scaling_config.json          the validated config (a changed config refuses to resume)
    scaling/runs/<run>.parquet   checkpoint rows of one finished run (the resume unit)
    scaling/points.parquet/.csv  all rows (see analysis.scaling), plus the t = 0 rows of the base model
    scaling/fit.json, *.png      written by :func:`write_scaling_results`

Every name comes from :class:`~forgetscope.store.layout.ScalingLayout` (``SweepLayout.scaling``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from forgetscope.config import EvalConfig, SourceConfig, SweepConfig, TaskConfig, TrainConfig
from forgetscope.data.encoding import encode_examples
from forgetscope.errors import StoreError
from forgetscope.experiments.run import Experiment
from forgetscope.experiments.session import SweepSession
from forgetscope.experiments.spec import RunSpec
from forgetscope.measure.nll import heldout_loss
from forgetscope.measure.reference import UpstreamReference
from forgetscope.models import context_length, count_trainable
from forgetscope.store.layout import SweepLayout
from forgetscope.store.lock import has_content, holds_output
from forgetscope.train.hooks import Hook, TrainContext

if TYPE_CHECKING:
    from forgetscope.analysis.scaling import ScalingReport


class ScalingConfig(BaseModel):
    """A scaling sweep: one task, several LoRA ranks, checkpoint evaluations at ``eval_steps``."""

    model_config = ConfigDict(extra="forbid")

    model: str = "smollm2-135m-instruct"
    output: Path = Path("sweeps/scaling")
    seed: int = 0
    seeds: list[int] | None = None
    upstream: SourceConfig = SourceConfig(n=32)
    task: TaskConfig
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig(exact_match=False)
    ranks: list[int] = Field(default_factory=lambda: [1, 2, 4, 8])
    eval_steps: list[int] = Field(default_factory=lambda: [5, 10, 20, 40])
    holdout: Literal["none", "largest_t", "largest_p", "random"] = "largest_t"
    cache_mb: int = Field(1024, ge=0)
    figures: bool = True
    executor: str = "local"  # local | ray: where the runs execute (not part of the fingerprint)

    @field_validator("task", mode="before")
    @classmethod
    def _name_to_task(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v

    @field_validator("ranks", "eval_steps")
    @classmethod
    def _positive_unique(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("needs at least one value")
        if any(x < 1 for x in v):
            raise ValueError("values must be >= 1")
        return sorted(set(v))

    @model_validator(mode="after")
    def _lora_only(self) -> ScalingConfig:
        if self.train.method != "lora":
            raise ValueError("train.method: the scaling sweep varies the LoRA rank; method must be 'lora'")
        return self

    @property
    def seed_list(self) -> list[int]:
        return self.seeds or [self.seed]

    def sweep_config(self) -> SweepConfig:
        """The equivalent one-task sweep config (to reuse the sweep's data and model loading)."""
        return SweepConfig(model=self.model, output=self.output, seed=self.seed, upstream=self.upstream,
                           tasks=[self.task], train=self.train, eval=self.eval)

    def fingerprint(self) -> str:
        data = self.model_dump(mode="json", exclude={"output", "holdout", "figures", "cache_mb", "executor"})
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


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
    max_length: int
    max_batch_tokens: int
    max_batch_size: int
    cache_mb: int
    name = "scaling"

    def _reference(self, session: SweepSession) -> dict[str, Any]:
        """The base model's distributions, held-out encoding and t = 0 summary: once per process."""
        ref = session.cache.get("scaling_reference")
        if ref is None:
            base, tok = session.base()
            task = next(iter(session.tasks.values()))
            reference = UpstreamReference(base, tok, session.upstream, max_length=session.eval_max_length,
                                          chat=session.chat, max_batch_tokens=self.max_batch_tokens,
                                          max_batch_size=self.max_batch_size, cache_mb=self.cache_mb)
            held = encode_examples(tok, task.heldout, self.max_length, model_max_length=context_length(base),
                                   chat=session.chat)
            ref = {"reference": reference, "heldout": held,
                   "base_summary": reference.summary(reference.evaluate(base)),
                   "base_task_loss": heldout_loss(base, held, reference.pad_id)}
            session.cache["scaling_reference"] = ref
        return ref

    def hooks(self, session: SweepSession, spec: RunSpec) -> list[Hook]:
        ref = self._reference(session)
        meta = {"run": spec.run_id, "task": spec.task, "seed": spec.seed,
                "rank": dict(spec.train_overrides)["lora_rank"]}
        return [CheckpointEvaluator(ref["reference"], ref["heldout"], ref["reference"].pad_id, self.eval_steps,
                                    meta)]

    def evaluate(self, session: SweepSession, spec: RunSpec, model: Any, hooks: list[Hook]) -> pd.DataFrame:
        ref = self._reference(session)
        cb = next(h for h in hooks if isinstance(h, CheckpointEvaluator))
        start = {**cb.base, "P": int(count_trainable(model)), "t": 0, **ref["base_summary"],
                 "task_loss": ref["base_task_loss"], "eval_s": 0.0}
        return pd.DataFrame([start, *cb.rows])


def _open_output(config: ScalingConfig, output: Path, overwrite: bool, session: SweepSession) -> SweepLayout:
    """Create the results directory, or reopen it for the same config, model and data (a change is refused,
    naming it, unless ``overwrite``); every example is encoded first, so bad input writes nothing."""
    from forgetscope.experiments.session import input_changes
    from forgetscope.store.io import write_json

    layout = SweepLayout(output)
    cfg_path = layout.scaling_config
    replace = False
    if cfg_path.is_file():
        old = json.loads(cfg_path.read_text())
        why = "config changed" if old.get("fingerprint") != config.fingerprint() else \
            "; ".join(input_changes(old.get("inputs") or {}, session.inputs))
        if why and not overwrite:
            raise StoreError(f"{output} holds a different scaling sweep ({why}); "
                             "choose another output or pass --overwrite")
        replace = bool(why)
    elif has_content(output) and not overwrite:
        raise StoreError(f"{output} exists and is not a scaling sweep; choose another output or pass --overwrite")
    session.preflight()
    if replace:
        shutil.rmtree(layout.scaling_dir, ignore_errors=True)
    layout.scaling.runs_dir.mkdir(parents=True, exist_ok=True)
    write_json(cfg_path, {"fingerprint": config.fingerprint(), "config": config.model_dump(mode="json"),
                          "inputs": session.inputs, "eval": session.eval_summary()})
    return layout


def plan_scaling_runs(config: ScalingConfig) -> list[RunSpec]:
    """One LoRA run per (seed, rank), trained for the largest checkpoint step."""
    steps = max(config.eval_steps)
    return [RunSpec(config.task.name, seed, "plain",
                    train_overrides=(("lora_rank", rank), ("method", "lora"), ("steps", steps)),
                    label=run_id(config.task.name, rank, seed))
            for seed in config.seed_list for rank in config.ranks]


@holds_output("forgetscope scaling")
def run_scaling_sweep(config: ScalingConfig, *, output: str | Path | None = None, overwrite: bool = False,
                      session=None, on_run: Callable[[str, list[dict]], None] | None = None) -> pd.DataFrame:
    """Run (or resume) the scaling sweep and return the tidy checkpoint table (also written to disk).

    Runs go through ``config.executor``; ``session`` (a :class:`SweepSession`) may be passed to reuse a
    loaded model.
    """
    from forgetscope.experiments.executors import get_executor
    from forgetscope.store.io import write_parquet

    output = Path(output or config.output)
    sweep_cfg = config.sweep_config().model_copy(update={"output": output})
    session = session or SweepSession.prepare(sweep_cfg)
    session.config = sweep_cfg
    layout = _open_output(config, output, overwrite, session)
    experiment = ScalingExperiment(tuple(config.eval_steps), config.train.max_length, config.eval.max_batch_tokens,
                                   config.eval.max_batch_size, config.cache_mb)
    specs = plan_scaling_runs(config)
    todo = [s for s in specs if not layout.scaling_run(s.run_id).is_file()]

    def finished(spec: RunSpec, record: dict[str, Any], rows: pd.DataFrame) -> None:
        rows = rows.assign(run_wall_s=record["train_wall_s"])
        write_parquet(layout.scaling_run(spec.run_id), rows)
        if on_run is not None:
            on_run(spec.run_id, rows.to_dict("records"))

    get_executor(config.executor).run(session, todo, finished, total=len(specs), done=len(specs) - len(todo),
                                      experiment=experiment)
    points = read_points(output)
    ref = session.cache.get("scaling_reference")  # absent when every run came from disk or a remote worker
    points["cached_reference"] = bool(ref and ref["reference"].cached)
    return points


def write_scaling_results(points: pd.DataFrame, report: ScalingReport, out_dir: str | os.PathLike[str], *,
                          figures: bool = True, primary: str | None = None) -> dict[str, Path]:
    """Write ``points.parquet``/``points.csv``, ``fit.json`` and the PNGs (of ``primary``, default the first
    of ``TARGETS`` that was fitted) into ``out_dir``; returns every path by name."""
    from forgetscope.analysis.plots import write_scaling_figures
    from forgetscope.analysis.scaling import TARGETS
    from forgetscope.store.layout import ScalingLayout
    from forgetscope.store.scaling import write_scaling_tables

    paths = write_scaling_tables(points, report.to_dict(), out_dir)
    if figures:
        primary = primary or next((t for t in TARGETS if t in report.fits), None)
        if primary is not None:
            paths.update(write_scaling_figures(points, report, ScalingLayout(out_dir).figure, target=primary))
    return paths


def fit_and_write(points: pd.DataFrame, config: ScalingConfig, output: str | Path | None = None):
    """Fit the laws to the points of a sweep and write ``OUTPUT/scaling/{points,fit.json,*.png}``."""
    from forgetscope.analysis.scaling import fit_scaling

    out = SweepLayout(output or config.output).scaling_dir
    report = fit_scaling(points, holdout=config.holdout, seed=config.seed)
    paths = write_scaling_results(points, report, out, figures=config.figures)
    return report, paths


def read_points(output: str | Path) -> pd.DataFrame:
    """The checkpoint table of a (possibly unfinished) sweep, from its per-run files."""
    runs = sorted(SweepLayout(output).scaling.runs_dir.glob("*.parquet"))
    if not runs:
        raise StoreError(f"no finished scaling runs under {output}")
    return pd.concat([pd.read_parquet(p) for p in runs], ignore_index=True).sort_values(
        ["seed", "rank", "t"]).reset_index(drop=True)
