"""Executors run the unfinished runs of any experiment and hand each result back as soon as it exists.

The interface is one method, :meth:`Executor.run`; the experiment stores every finished run atomically
through the ``finished`` callback, so a crash loses at most the runs in flight. ``local`` runs them in
turn in this process (sharing one loaded base model); ``ray`` (optional extra) spreads them over a Ray
cluster; ``slurm`` (optional extra, submitit) submits them as one Slurm job array. All call the same
:func:`~forgetscope.experiments.run.execute_run`, so they give the same matrix.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import pandas as pd

from forgetscope.registry import Registry

if TYPE_CHECKING:
    from forgetscope.experiments.run import Experiment
    from forgetscope.experiments.session import SweepSession
    from forgetscope.experiments.spec import RunSpec

Finished = Callable[["RunSpec", dict[str, Any], pd.DataFrame], None]


class Executor(Protocol):
    name: str

    def run(self, session: SweepSession, specs: Sequence[RunSpec], finished: Finished, *,
            total: int, done: int, experiment: Experiment) -> None: ...


EXECUTORS: Registry[Callable[[], Executor]] = Registry("executor")
EXECUTORS.register("local", "forgetscope.experiments.executors.local:LocalExecutor")
EXECUTORS.register("ray", "forgetscope.experiments.executors.ray:RayExecutor", extra="ray")
EXECUTORS.register("slurm", "forgetscope.experiments.executors.slurm:SlurmExecutor", extra="slurm")


def register_executor(name: str, factory: Callable[[], Executor]) -> None:
    EXECUTORS.register(name, factory)


def get_executor(name: str) -> Executor:
    """A fresh executor by name (an uninstalled optional one says which extra to install)."""
    return EXECUTORS.build(name)


__all__ = ["EXECUTORS", "Executor", "Finished", "get_executor", "register_executor"]
