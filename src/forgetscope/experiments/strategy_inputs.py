"""Path-valued strategy options, read into what the strategies take before one is built.

Strategies (:mod:`forgetscope.mitigate`) read no files, so a strategy behaves the same whether its inputs
came from a sweep directory, a file or a notebook. A config still names paths; every place that builds a
strategy from a config (a run, a sweep's checks, a comparison's checks) passes its options through
:func:`resolve_strategy_inputs` first, which reads the paths the strategy's options model declares
(:meth:`~forgetscope.train.hooks.StrategyOptions.inputs`, a :class:`~forgetscope.train.hooks.FileInput` each)
and knows no strategy by name. For ``replay``:

* ``known: PATH`` (a sweep directory or a NPY/CSV/Parquet matrix file) becomes the known rows, a
  :class:`~forgetscope.store.ForgettingMatrix` (:func:`forgetscope.importing.load_any`), when a named
  predictor completes from them; with ``mode: online`` and ``probe_base: known`` the sweep's base losses
  become ``known_base_losses`` (:func:`forgetscope.importing.load_base_losses`);
* ``forgetting_file`` (``oracle``) and ``probe_file`` (``predicted``) become ``forgetting`` / ``probe_values``
  and, when the file says what they cost, ``forgetting_evaluations`` / ``probe_evaluations``
  (:func:`forgetscope.importing.read_values_file`).

A path is read only where the strategy uses what it holds (a mapping given beside the file wins, as it always
did) and is dropped otherwise. With ``load=False`` (the checks before any work starts) every path is checked as
its loader checks it, but no matrix or base-loss table is read: the strategy gets empty stand-ins, so a large
sweep is not read once more only to validate the options. The small JSON values files are read in both modes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from forgetscope.data.sources import check_data_source
from forgetscope.errors import ConfigError, DataError
from forgetscope.store.matrix import ForgettingMatrix
from forgetscope.train.hooks import FileInput, declared_inputs


def resolve_strategy_inputs(name: str, options: Mapping[str, Any], *, load: bool = True) -> dict[str, Any]:
    """``options`` of strategy ``name`` with their paths replaced by what they hold (a new dict; see the
    module docstring). The paths and their readers are those the options model declares
    (:meth:`~forgetscope.train.hooks.StrategyOptions.inputs`). ``load=False``: check the paths, read no
    matrix. Missing or unreadable inputs are a one-line DataError."""
    out = dict(options)
    declared = declared_inputs(name, out)
    for option in declared.data_sources:  # training data the strategy reads at the start of each run
        check_data_source(out.get(option), f"strategy {name!r}: {option}")
    files = declared.files
    takes_objects = {f.into for f in files}  # options that also take what a path holds, in memory
    paths: dict[str, str | os.PathLike[str]] = {}
    for f in files:
        value = out.get(f.option)
        if f.option in paths or value is None:
            continue
        if isinstance(value, (str, os.PathLike)):
            paths[f.option] = value
        elif f.option not in takes_objects:  # a path-only option holds something else
            raise ConfigError(f"invalid options for strategy {name!r}: {f.option}: expected a path, got {value!r}")
    for option in {f.option for f in files}:
        if option in paths or option not in takes_objects:
            out.pop(option, None)  # a path is dropped, read or not; what it holds goes into ``into``
    for f in files:
        path = paths.get(f.option)
        if path is None or not f.used or out.get(f.into) is not None:
            continue  # not named, not used by these options, or given in memory beside the path (which wins)
        _read(f, path, out, load)
    return out


def placeholder_rows(source: str | os.PathLike[str] | None = None) -> ForgettingMatrix:
    """Empty known rows standing in for rows not read (or not written yet) while options are only checked."""
    return ForgettingMatrix(np.empty((0, 0)), [], [], path=Path(source) if source is not None else None)


def placeholder(f: FileInput, source: str | os.PathLike[str] | None = None) -> Any:
    """What stands in for the input ``f`` while options are only checked: empty rows or an empty mapping."""
    return placeholder_rows(source) if f.reader == "rows" else {}


def _read(f: FileInput, path: str | os.PathLike[str], out: dict[str, Any], load: bool) -> None:
    from forgetscope.importing import (
        check_any,
        check_base_losses,
        load_any,
        load_base_losses,
        read_values_file,
    )

    if f.reader == "values":  # small JSON files: read in both modes
        out[f.into], evaluations = read_values_file(path)
        if f.cost is not None and evaluations is not None and out.get(f.cost) is None:
            out[f.cost] = evaluations  # what the file says its values cost, unless the options say it
    elif f.reader == "rows":
        if load:
            out[f.into] = load_any(path)
        else:
            check_any(path)
            out[f.into] = placeholder(f, path)
    else:
        try:
            if load:
                out[f.into] = load_base_losses(path)
            else:
                check_base_losses(path)
                out[f.into] = placeholder(f, path)
        except DataError:
            raise DataError(f"{f.what or f.into} needs a sweep directory with upstream base losses, got {path}") from None
