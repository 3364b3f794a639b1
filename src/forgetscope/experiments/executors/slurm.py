"""The ``slurm`` executor: every run of a sweep is one Slurm job, and a sweep is one job array (submitit).

    forgetscope run sweep.yaml --executor slurm          # from a Slurm login node: sbatch must be on PATH

How it works:

- the unfinished runs are submitted at once with ``submitit``'s ``map_array``: one job array, one array task
  per run, each asking for the resources of the options below;
- a job rebuilds the :class:`~forgetscope.experiments.session.SweepSession` from the config (the config object
  travels pickled, so experiment configs keep their own type) and calls
  :func:`~forgetscope.experiments.run.execute_run`, the very function the local executor calls: same seed,
  same matrix;
- the driver polls the jobs and stores each result the moment its job finishes (in whatever order they
  finish) through the runner's ``finished`` callback, so the store lives only on the driver's disk and a
  crash, a cancelled job or a timed-out one loses only the runs in flight;
- a job that fails (an exception, a timeout, ``scancel``) is not retried: the other jobs go on and are
  stored, and the failed runs are then reported together in one
  :class:`~forgetscope.errors.ForgetscopeError` naming each run id and its job's stderr file. Running the same
  command again submits only them (resume). A job preempted by Slurm is requeued by submitit and starts its
  run again; Ctrl-C (or an error in the driver) cancels the jobs still queued or running.

The options (``cluster``, ``partition``, ``time_min``, ``gpus_per_node``, ``cpus_per_task``, ``mem_gb``,
``array_parallelism``, ``folder``, ``setup``, ``sbatch``; see :class:`SlurmOptions`) come from the config's
``slurm`` mapping when the config has one, overridden by :class:`SlurmExecutor` arguments. ``cluster: local``
runs the jobs as local subprocesses and ``cluster: debug`` in this process, one after another (submitit's
own local and debug executors), with no Slurm at all. Jobs need forgetscope installed for the driver's
Python, and the config's data, model and output paths on a filesystem every node shares; see
``docs/cluster.md``.
"""

from __future__ import annotations

import difflib
import os
import re
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import submitit  # an ImportError here makes get_executor ask for the extra
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from forgetscope.errors import ConfigError, ForgetscopeError
from forgetscope.experiments.executors.local import SweepProgress

RunFn = Callable[[Any, Any, dict[str, Any], Any], tuple[dict[str, Any], pd.DataFrame]]

#: Where the jobs' scripts, pickles and logs go unless ``folder`` says otherwise (``%j``: the job id).
DEFAULT_FOLDER = "slurm/%j"  # under the sweep's output directory


class SlurmOptions(BaseModel):
    """What each job asks Slurm for, and where submitit keeps its files. None leaves a value to Slurm."""

    model_config = ConfigDict(extra="forbid")

    cluster: Literal["slurm", "local", "debug"] = "slurm"  # passed to submitit.AutoExecutor(cluster=...)
    partition: str | None = None
    time_min: int = Field(60, ge=1)  # wall-clock limit of one run's job, in minutes
    # None: 1, unless the config pins train.device: cpu (then 0)
    gpus_per_node: int | None = Field(None, ge=0)
    cpus_per_task: int = Field(1, ge=1)
    mem_gb: float | None = Field(None, gt=0)
    array_parallelism: int | None = Field(None, ge=1)  # most array tasks running at once (Slurm's %N)
    folder: str | None = None  # None: <output>/slurm/%j
    setup: list[str] = Field(default_factory=list)  # shell lines run before the job (module load ...)
    sbatch: dict[str, str | int | float | bool] = Field(default_factory=dict)  # any other #SBATCH option


FIELDS = tuple(SlurmOptions.model_fields)


def check_options(data: Mapping[str, Any] | None, where: str = "slurm") -> dict[str, Any]:
    """``data`` as validated options (only the keys it gives); a bad key or value is one ConfigError line."""
    data = dict(data or {})
    for name in data:
        if name not in SlurmOptions.model_fields:
            close = (difflib.get_close_matches(str(name), FIELDS, n=1)
                     or [f for f in FIELDS if f.startswith(str(name))])
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{where}: unknown option {name!r}{hint}; choose from {', '.join(FIELDS)}")
    try:
        SlurmOptions.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        raise ConfigError(f"{where}.{loc}: {err['msg']} (got {err.get('input')!r})") from None
    return data


def execute_in_job(config, spec, extras: dict[str, Any], experiment) -> tuple[dict[str, Any], pd.DataFrame]:
    """What one job does: rebuild the session from the config, then run what the local executor runs."""
    from forgetscope.experiments.run import execute_run
    from forgetscope.experiments.session import SweepSession

    os.environ["FORGETSCOPE_NO_PROGRESS"] = "1"  # bars garble job logs
    session = SweepSession.prepare(config)
    session.config = config
    session.extras.update(extras)  # the driver's (the precision of loss_before, an experiment's own)
    t0 = time.perf_counter()
    record, rows = execute_run(session, spec, experiment)
    record.setdefault("wall_s", time.perf_counter() - t0)
    record.setdefault("executor", "slurm")
    try:
        job_id = submitit.JobEnvironment().job_id
    except RuntimeError:  # not inside a submitit job (a direct call)
        job_id = str(os.getpid())
    record.setdefault("worker", f"{os.uname().nodename}:{job_id}")
    return record, rows


class SlurmExecutor:
    """Runs each run of a sweep as one job of a Slurm job array (see the module docstring).

    Keyword arguments are :class:`SlurmOptions` fields and override the config's ``slurm`` mapping;
    ``run_fn`` replaces what a job calls (tests), ``poll_s`` is how often finished jobs are looked for.
    """

    name = "slurm"

    def __init__(self, *, run_fn: RunFn | None = None, poll_s: float | None = None, **options: Any):
        self.options = check_options(options, where="SlurmExecutor")
        self.run_fn: RunFn = run_fn or execute_in_job
        self.poll_s = poll_s
        self.failures: dict[str, str] = {}

    # ---- options ------------------------------------------------------------------------------
    def resolve(self, config) -> SlurmOptions:
        """The options for ``config``: its ``slurm`` mapping (if it has one), then this executor's own."""
        block = getattr(config, "slurm", None)
        if isinstance(block, BaseModel):
            block = block.model_dump(exclude_unset=True)
        merged = {**check_options(block), **self.options}
        opts = SlurmOptions.model_validate(merged)
        if opts.gpus_per_node is None:
            device = str(getattr(getattr(config, "train", None), "device", "auto"))
            opts = opts.model_copy(update={"gpus_per_node": 0 if device == "cpu" else 1})
        if opts.cluster == "slurm" and shutil.which("sbatch") is None:
            raise ConfigError("executor 'slurm': sbatch is not on PATH; submit from a Slurm login node, or "
                              "set the slurm option cluster: local to run the jobs as local processes")
        return opts

    def check_config(self, config) -> None:
        """Raise a one-line ConfigError for options that cannot run (before any work is done)."""
        self.resolve(config)

    def folder(self, opts: SlurmOptions, config) -> Path:
        if opts.folder is not None:
            return Path(opts.folder).expanduser()
        return Path(getattr(config, "output", ".")) / DEFAULT_FOLDER

    def make_executor(self, opts: SlurmOptions, config) -> submitit.AutoExecutor:
        """A submitit executor asking, per job, for one task on one node with the options' resources."""
        ex = submitit.AutoExecutor(folder=self.folder(opts, config), cluster=opts.cluster)
        params: dict[str, Any] = {
            "name": "forgetscope", "timeout_min": opts.time_min, "nodes": 1, "tasks_per_node": 1,
            "cpus_per_task": opts.cpus_per_task, "mem_gb": opts.mem_gb,
            "gpus_per_node": opts.gpus_per_node or None,  # 0: no GPU line in the batch script at all
            "slurm_partition": opts.partition, "slurm_array_parallelism": opts.array_parallelism,
            "slurm_additional_parameters": dict(opts.sbatch) or None,
        }
        if opts.setup:
            params["slurm_setup"] = list(opts.setup)
            params["local_setup"] = list(opts.setup)
        ex.update_parameters(**params)
        return ex

    # ---- the Executor protocol ----------------------------------------------------------------
    def run(self, session, specs: Sequence, finished, *, total: int, done: int, experiment) -> None:
        self.failures = {}
        specs = list(specs)
        if not specs:
            return
        opts = self.resolve(session.config)
        ex = self.make_executor(opts, session.config)
        n = len(specs)
        jobs = ex.map_array(self.run_fn, [session.config] * n, specs, [dict(session.extras)] * n,
                            [experiment] * n)
        poll = self.poll_s if self.poll_s is not None else (5.0 if opts.cluster == "slurm" else 0.5)
        self._collect(dict(zip(jobs, specs)), finished, total=total, done=done, poll=poll)
        if self.failures:
            order = [s.run_id for s in specs if s.run_id in self.failures]
            lines = "; ".join(f"{rid}: {self.failures[rid]}" for rid in order)
            raise ForgetscopeError(
                f"{len(order)} of {n} run(s) failed (the other runs are stored; run the same command again "
                f"to retry only these): {lines}")

    def _collect(self, pending: dict, finished, *, total: int, done: int, poll: float) -> None:
        bar = SweepProgress(total, done)
        try:
            while pending:
                seen = 0
                for job in list(pending):  # each finished job is stored before the next one is looked at
                    if not _done(job):
                        continue
                    spec = pending.pop(job)
                    seen += 1
                    try:
                        record, rows = job.result()
                    except Exception as exc:  # the job raised, timed out, was cancelled or died
                        self.failures[spec.run_id] = f"{_short_error(exc)} (log: {job.paths.stderr})"
                        _postfix(bar, f"FAILED {spec.run_id}", len(pending), len(self.failures))
                        continue
                    finished(spec, record, rows)
                    bar.advance(spec.run_id)
                    _postfix(bar, spec.run_id, len(pending), len(self.failures))
                if pending and not seen:
                    time.sleep(poll)
        except BaseException:
            for job in pending:  # Ctrl-C or a store error: do not leave runs burning cluster time
                try:
                    job.cancel(check=False)
                except Exception:  # best effort: the error being raised matters more
                    pass
            raise
        finally:
            bar.close()


def _done(job) -> bool:
    try:
        return bool(job.done())
    except Exception:  # a debug job runs inside done() and raises its run's error: it is done (failed)
        return True


def _postfix(bar: SweepProgress, last: str, running: int, failed: int) -> None:
    if bar.bar is not None:
        tail = f" failed={failed}" if failed else ""
        bar.bar.set_postfix_str(f"last={last} queued/running={running}{tail}")


def _short_error(exc: BaseException) -> str:
    """The job's error in one line: the last line of its traceback, or why it ended without a result."""
    text = str(exc)
    trace = re.search(r"-{10,}\n(.*?)\n-{10,}", text, re.S)  # FailedJobError: the remote traceback
    if trace:
        lines = [ln.strip() for ln in trace.group(1).splitlines() if ln.strip()]
        if lines:
            return lines[-1][:300]
    state = re.search(r"has not produced any output \(state: ([^)]*)\)", text)  # UncompletedJobError
    if state:
        return f"the job ended without a result (state: {state.group(1)})"
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return f"{type(exc).__name__}: {first}"[:300] if first else type(exc).__name__
