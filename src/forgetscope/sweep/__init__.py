"""Sweeps: run many fine-tuning runs into one sweep directory (see :func:`run_sweep`)."""

from forgetscope.sweep.executors import Executor, LocalExecutor, get_executor, register_executor
from forgetscope.sweep.runner import RunSpec, SweepSession, execute_run, plan_runs, run_sweep

__all__ = ["Executor", "LocalExecutor", "RunSpec", "SweepSession", "execute_run", "get_executor", "plan_runs",
           "register_executor", "run_sweep"]
