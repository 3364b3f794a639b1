"""Checks of a sweep config that need more than its shape, made before any model is loaded or file written.

The config's pydantic model checks types and ranges; what it cannot know without importing the layers
above it is checked here, once, by every entry point: the strategy name and its options (built once and
dropped, with the files its options name checked but no matrix read:
:func:`~forgetscope.experiments.strategy_inputs.resolve_strategy_inputs` with ``load=False``) and the
training settings it cannot honour, the packages the ``load`` options need, the executor (resolved, so a
missing optional engine fails now), and the input files.
"""

from __future__ import annotations

from pathlib import Path

from forgetscope.config import SweepConfig
from forgetscope.data.loading import HUB_PREFIX
from forgetscope.errors import DataError


def _check_source(source: str | None, what: str) -> None:
    if source is None or source == "demo" or source.startswith((HUB_PREFIX, "demo:")):
        return
    if not Path(source).expanduser().exists():
        raise DataError(f"{what} not found: {source}")


def validate_sweep(config: SweepConfig) -> None:
    """Raise a one-line user error for anything in ``config`` that would fail later, before any work."""
    from forgetscope.experiments.executors import get_executor
    from forgetscope.experiments.strategy_inputs import resolve_strategy_inputs
    from forgetscope.models import check_loading
    from forgetscope.train import make_strategy

    strategy = make_strategy(config.strategy,
                             **resolve_strategy_inputs(config.strategy, config.strategy_options, load=False))
    strategy.check_config(config.train)  # e.g. a strategy that cannot accumulate micro-batches
    check_loading(**config.load.model_kwargs())  # a loading option whose package is missing
    executor = get_executor(config.executor)
    check = getattr(executor, "check_config", None)
    if check is not None:
        check(config)  # an executor's own options (the slurm block): before any model is loaded
    _check_source(config.upstream.source, "upstream data")
    for task in config.tasks:
        _check_source(task.source, f"data of task {task.name!r}")
