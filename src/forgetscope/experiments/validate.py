"""Checks of an experiment's config that need more than its shape, made before any model is loaded or file written.

The config's pydantic model checks types and ranges; what it cannot know without importing the layers
above it is checked here, once per config type, by every entry function as its first act:

* :func:`validate_sweep` — ``run_sweep``, ``sharpness_sweep`` (and, through the others, every config that
  extends a sweep's): the strategy name and its options (built once and dropped, with the files its
  options name checked but no matrix read: :func:`~forgetscope.experiments.strategy_inputs.resolve_strategy_inputs`
  with ``load=False``) and the training settings it cannot honour, the packages the ``load`` options and the
  ``report_to`` backends need, the executor (resolved, so a missing optional engine fails now), and the
  input files;
* :func:`validate_scaling` — ``run_scaling_sweep``: the config's own rules again (a config changed in Python
  with ``model_copy(update=...)`` skips them), its placeholders, then :func:`validate_sweep`;
* :func:`validate_measure` — ``measure_finetunes``: the loading options' packages and the upstream file;
* ``validate_compare`` (beside its config, :mod:`forgetscope.experiments.compare.config`) — ``run_compare``:
  :func:`validate_sweep` for every task, every arm's strategy and options, the split of the upstream set;
* ``validate_forecast`` (beside the function, :mod:`forgetscope.experiments.forecast`) — ``forecast`` and
  ``forecast_task``: the call's own arguments, before the sweep is read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from forgetscope.config import SweepConfig, parse_config
from forgetscope.data.sources import check_data_source
from forgetscope.errors import ConfigError

if TYPE_CHECKING:
    from forgetscope.experiments.measure import MeasureConfig
    from forgetscope.experiments.scaling import ScalingConfig


def validate_sweep(config: SweepConfig) -> None:
    """Raise a one-line user error for anything in ``config`` that would fail later, before any work."""
    from forgetscope.experiments.executors import get_executor
    from forgetscope.experiments.strategy_inputs import resolve_strategy_inputs
    from forgetscope.models import check_loading
    from forgetscope.train import make_strategy
    from forgetscope.train.tracking import check_backends

    strategy = make_strategy(config.strategy,
                             **resolve_strategy_inputs(config.strategy, config.strategy_options, load=False))
    strategy.check_config(config.train)  # e.g. a strategy that cannot accumulate micro-batches
    check_loading(**config.load.model_kwargs())  # a loading option whose package is missing
    check_backends(config.report_to)  # a training-curve backend whose package is missing
    executor = get_executor(config.executor)
    check = getattr(executor, "check_config", None)
    if check is not None:
        check(config)  # an executor's own options (the slurm block): before any model is loaded
    check_data_source(config.upstream.source, "upstream data")
    for task in config.tasks:
        check_data_source(task.source, f"data of task {task.name!r}")


def validate_scaling(config: ScalingConfig) -> None:
    """A scaling sweep's config checked whole before anything is written: its model's rules (grids of three
    or more ranks and steps, a hold-out rule that leaves points to fit, LoRA without a mitigation strategy)
    run again on the config as given, a config whose ``pending`` still lists placeholders is refused, then
    :func:`validate_sweep`."""
    parse_config(config.model_dump(), "(as given)", model=type(config), what="scaling config")
    if config.pending:
        raise ConfigError(f"pending: {', '.join(config.pending)} still hold placeholders; fill them in as the "
                          "config's comments say and empty pending before running")
    validate_sweep(config)


def validate_measure(config: MeasureConfig) -> None:
    """A measure config's checks that need no model: the loading options' packages and the upstream file
    (each fine-tune is checked when it is resolved, also before any model loads)."""
    from forgetscope.models import check_loading

    check_loading(**config.load.model_kwargs())  # a loading option whose package is missing
    check_data_source(config.upstream.source, "upstream data")
