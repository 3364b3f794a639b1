"""The only package that trains models.

An experiment plans :class:`RunSpec` s (and, through an :class:`Experiment`, the hooks and measurements
each run adds); :func:`execute_run` runs one of them; an executor (``local`` or ``ray``) runs them all.
Experiments: :func:`run_sweep` (the forgetting matrix), :func:`~forgetscope.experiments.compare.run_compare`
(strategies against plain fine-tuning), :func:`~forgetscope.experiments.scaling.run_scaling_sweep`
(LoRA ranks x checkpoints), :func:`~forgetscope.experiments.sharpness.sharpness_sweep`.
"""

from forgetscope.experiments.executors import EXECUTORS, Executor, get_executor, register_executor
from forgetscope.experiments.run import Experiment, execute_run
from forgetscope.experiments.session import SweepSession
from forgetscope.experiments.spec import RunSpec
from forgetscope.experiments.sweep import plan_runs, run_specs, run_sweep

__all__ = ["EXECUTORS", "Executor", "Experiment", "RunSpec", "SweepSession", "execute_run", "get_executor",
           "plan_runs", "register_executor", "run_specs", "run_sweep"]
