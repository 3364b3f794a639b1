"""Executors run the unfinished runs of a sweep and hand each result back as soon as it exists.

The interface is one method, :meth:`Executor.run`; the sweep runner stores every finished run
atomically through the ``finished`` callback, so a crash loses at most the runs in flight.
``local`` runs them in turn in this process (sharing one loaded base model); ``ray`` (optional extra)
spreads them over a Ray cluster.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import pandas as pd

from forgetscope.errors import ConfigError
from forgetscope.progress import progress_enabled

if TYPE_CHECKING:
    from forgetscope.sweep.runner import RunSpec, SweepSession

Finished = Callable[["RunSpec", dict[str, Any], pd.DataFrame], None]


class Executor(Protocol):
    name: str

    def run(self, session: SweepSession, specs: Sequence[RunSpec], finished: Finished, *,
            total: int, done: int) -> None: ...


class SweepProgress:
    """Overall progress of a sweep: runs done of total, with an ETA from the mean run time."""

    def __init__(self, total: int, done: int):
        self.total, self.done = total, done
        self.bar = None
        if progress_enabled():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=done, desc="sweep", unit="run", position=0, dynamic_ncols=True)

    def advance(self, run_id: str) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.set_postfix_str(run_id)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class LocalExecutor:
    """Runs one run after another in this process."""

    name = "local"

    def run(self, session, specs, finished, *, total, done) -> None:
        from forgetscope.sweep.runner import execute_run

        bar = SweepProgress(total, done)
        try:
            for spec in specs:
                t0 = time.perf_counter()
                record, rows = execute_run(session, spec)
                record.setdefault("wall_s", time.perf_counter() - t0)
                finished(spec, record, rows)
                bar.advance(spec.run_id)
        finally:
            bar.close()


_EXECUTORS: dict[str, Callable[[], Executor]] = {"local": LocalExecutor}


def register_executor(name: str, factory: Callable[[], Executor]) -> None:
    _EXECUTORS[name] = factory


def get_executor(name: str) -> Executor:
    if name == "ray" and "ray" not in _EXECUTORS:
        try:
            from forgetscope.sweep import ray_executor  # noqa: F401  (registers itself)
        except ImportError as exc:
            raise ConfigError(f"the ray executor needs the extra: pip install 'forgetscope[ray]' ({exc})") from None
    if name not in _EXECUTORS:
        raise ConfigError(f"unknown executor {name!r}; choose from {', '.join(sorted(_EXECUTORS) + ['ray'])}")
    return _EXECUTORS[name]()
