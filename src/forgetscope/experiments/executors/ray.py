"""The ``ray`` executor: every run of a sweep is a Ray task; results come back to the driver's store.

    forgetscope run sweep.yaml --executor ray            # local Ray (all cores), or the cluster in RAY_ADDRESS
    RAY_ADDRESS=ray://head:10001 forgetscope run sweep.yaml --executor ray

How it works:

- each run is one ``@ray.remote`` task asking for ``num_cpus``/``num_gpus`` (defaults: 1 CPU, and 1 GPU when
  the cluster has GPUs and the config does not pin ``train.device: cpu``; override with the environment
  variables ``FORGETSCOPE_RAY_NUM_CPUS``, ``FORGETSCOPE_RAY_NUM_GPUS``, ``FORGETSCOPE_RAY_MAX_RETRIES`` or
  :class:`RayExecutor` arguments);
- a worker rebuilds the :class:`~forgetscope.experiments.session.SweepSession` from the config once per worker process
  (cached by config fingerprint, so later runs on the same worker reuse the loaded base model) and calls
  :func:`~forgetscope.experiments.run.execute_run`, the very function the local executor calls: same seed, same
  matrix;
- the driver collects results as they finish (``ray.wait``) and stores each one at once through the runner's
  ``finished`` callback, so the store lives only on the driver's disk and a crash loses only runs in flight;
- a failing run is retried ``max_retries`` times (worker crashes and exceptions alike); runs that still fail are
  reported together in one :class:`~forgetscope.errors.ForgetscopeError` at the end, after every other run has
  finished and been stored; running the same command again retries only them (resume).

Workers need forgetscope installed and the data/model paths of the config readable (a shared filesystem, or
absolute paths that exist on every node); see ``docs/cluster.md``.
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
import ray  # an ImportError here makes get_executor ask for the extra

from forgetscope.errors import ConfigError, ForgetscopeError
from forgetscope.experiments.executors.local import SweepProgress

# Worker-side cache: config fingerprint -> SweepSession (one per worker process, reused across runs).
_SESSIONS: dict[str, Any] = {}

RunFn = Callable[[Any, Any, dict[str, Any], Any], tuple[dict[str, Any], pd.DataFrame]]


def worker_session(config):
    """The worker's :class:`SweepSession` for this config, prepared on first use and then cached.

    The config object itself travels (not a dict), so experiment configs keep their own type and fields.
    """
    from forgetscope.experiments.session import SweepSession, config_fingerprint

    key = f"{type(config).__name__}:{config_fingerprint(config)}"
    session = _SESSIONS.get(key)
    if session is None:
        session = SweepSession.prepare(config)
        _SESSIONS[key] = session
    session.config = config  # the same results-relevant config; output and logging as the driver has them
    return session


def execute_in_worker(config, spec, extras: dict[str, Any], experiment) -> tuple[dict[str, Any], pd.DataFrame]:
    """What one Ray task does: rebuild (or reuse) the session, then run exactly what the local executor runs."""
    from forgetscope.experiments.run import execute_run

    session = worker_session(config)
    session.extras.clear()  # the driver's extras are the truth (a cached session may hold another sweep's)
    session.extras.update(extras)
    t0 = time.perf_counter()
    record, rows = execute_run(session, spec, experiment)
    record.setdefault("wall_s", time.perf_counter() - t0)
    record.setdefault("executor", "ray")
    record.setdefault("worker", f"{os.uname().nodename}:{os.getpid()}")
    return record, rows


def _remote_body(run_fn: RunFn, config, spec, extras: dict[str, Any], experiment):
    return run_fn(config, spec, extras, experiment)


def _env_float(name: str, default: float | None) -> float | None:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None


class RayExecutor:
    """Runs each run of a sweep as a Ray task (see the module docstring)."""

    name = "ray"

    def __init__(self, *, num_cpus: float | None = None, num_gpus: float | None = None,
                 max_retries: int | None = None, address: str | None = None,
                 runtime_env: dict[str, Any] | None = None, run_fn: RunFn | None = None):
        self.num_cpus = num_cpus if num_cpus is not None else _env_float("FORGETSCOPE_RAY_NUM_CPUS", 1.0)
        self.num_gpus = num_gpus if num_gpus is not None else _env_float("FORGETSCOPE_RAY_NUM_GPUS", None)
        retries = max_retries if max_retries is not None else _env_float("FORGETSCOPE_RAY_MAX_RETRIES", 2)
        self.max_retries = int(retries)  # type: ignore[arg-type]
        if self.max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0, got {self.max_retries}")
        self.address = address  # None: RAY_ADDRESS if set, else a local instance
        self.runtime_env = runtime_env
        self.run_fn: RunFn = run_fn or execute_in_worker
        self.failures: dict[str, str] = {}

    # ---- resources --------------------------------------------------------------------------
    def _gpus_per_run(self, session) -> float:
        if self.num_gpus is not None:
            return float(self.num_gpus)
        device = str(getattr(session.config.train, "device", "auto"))
        if device == "cpu":
            return 0.0
        return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0

    def _init_ray(self) -> bool:
        """Connect to (or start) Ray unless already connected; returns whether we started it."""
        if ray.is_initialized():
            return False
        kwargs: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": True}
        address = self.address or os.environ.get("RAY_ADDRESS")
        if address:
            kwargs["address"] = address
        env = dict(self.runtime_env or {})
        env_vars = {"FORGETSCOPE_NO_PROGRESS": "1", **env.get("env_vars", {})}  # bars in workers garble logs
        env["env_vars"] = env_vars
        kwargs["runtime_env"] = env
        ray.init(**kwargs)
        return True

    # ---- the Executor protocol ----------------------------------------------------------------
    def run(self, session, specs: Sequence, finished, *, total: int, done: int, experiment) -> None:
        self.failures = {}
        if not specs:
            return
        started = self._init_ray()
        try:
            self._run(session, list(specs), finished, total=total, done=done, experiment=experiment)
        finally:
            if started:
                ray.shutdown()
        if self.failures:
            lines = "; ".join(f"{rid}: {msg}" for rid, msg in self.failures.items())
            raise ForgetscopeError(
                f"{len(self.failures)} of {len(specs)} run(s) failed after {self.max_retries} retr"
                f"{'y' if self.max_retries == 1 else 'ies'} (the other runs are stored; run the same command "
                f"again to retry only these): {lines}")

    def _run(self, session, specs: list, finished, *, total: int, done: int, experiment) -> None:
        gpus = self._gpus_per_run(session)
        remote = ray.remote(_remote_body)
        options = {"num_cpus": self.num_cpus, "num_gpus": gpus, "max_retries": self.max_retries,
                   "retry_exceptions": True}
        config_ref = ray.put(session.config)
        experiment_ref = ray.put(experiment)
        extras_ref = ray.put(dict(session.extras))
        fn_ref = ray.put(self.run_fn)
        pending = {}
        for spec in specs:
            ref = remote.options(**options, name=f"forgetscope:{spec.run_id}").remote(fn_ref, config_ref, spec, extras_ref,
                                                                                    experiment_ref)
            pending[ref] = (spec, time.perf_counter())
        bar = SweepProgress(total, done)
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    spec, t0 = pending.pop(ref)
                    try:
                        record, rows = ray.get(ref)
                    except (ray.exceptions.RayTaskError, ray.exceptions.RayError) as exc:
                        self.failures[spec.run_id] = _short_error(exc)
                        _postfix(bar, f"FAILED {spec.run_id}", len(pending), len(self.failures))
                        continue
                    record.setdefault("wall_s", time.perf_counter() - t0)
                    finished(spec, record, rows)
                    bar.advance(spec.run_id)
                    _postfix(bar, spec.run_id, len(pending), len(self.failures))
        except BaseException:
            for ref in pending:  # Ctrl-C or a store error: do not leave runs burning cluster time
                ray.cancel(ref, force=True)
            raise
        finally:
            bar.close()


def _postfix(bar: SweepProgress, last: str, running: int, failed: int) -> None:
    if bar.bar is not None:
        bar.bar.set_postfix_str(f"last={last} queued/running={running}" + (f" failed={failed}" if failed else ""))


def _short_error(exc: BaseException) -> str:
    """The user's exception in one line (Ray wraps it in a long RayTaskError with a remote traceback)."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}".splitlines()[0][:300]
    text = str(exc).strip().splitlines()
    last = next((ln for ln in reversed(text) if ln.strip()), type(exc).__name__)
    return last.strip()[:300] or "".join(traceback.format_exception_only(type(exc), exc)).strip()


