"""Path-valued strategy options, read into what the strategies take before one is built.

Strategies (:mod:`forgetscope.mitigate`) read no files, so a strategy behaves the same whether its inputs
came from a sweep directory, a file or a notebook. A config still names paths; every place that builds a
strategy from a config (a run, a sweep's checks, a comparison's checks) passes its options through
:func:`resolve_strategy_inputs` first. For ``replay``:

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

from forgetscope.errors import ConfigError, DataError
from forgetscope.store.matrix import ForgettingMatrix


def resolve_strategy_inputs(name: str, options: Mapping[str, Any], *, load: bool = True) -> dict[str, Any]:
    """``options`` of strategy ``name`` with their paths replaced by what they hold (a new dict; see the
    module docstring). ``load=False``: check the paths, read no matrix. Missing or unreadable inputs are a
    one-line DataError."""
    out = dict(options)
    if name == "replay":
        _replay(out, load)
    return out


def placeholder_rows(source: str | os.PathLike[str] | None = None) -> ForgettingMatrix:
    """Empty known rows standing in for rows not read (or not written yet) while options are only checked."""
    return ForgettingMatrix(np.empty((0, 0)), [], [], path=Path(source) if source is not None else None)


def _replay(opts: dict[str, Any], load: bool) -> None:
    from forgetscope.importing import check_any, load_any, read_values_file

    policy, mode = opts.get("policy", "random"), opts.get("mode", "offline")
    predicted = policy == "predicted"
    path = _path(opts.pop("forgetting_file", None), "forgetting_file")
    if path is not None and policy == "oracle" and opts.get("forgetting") is None:
        opts["forgetting"], evaluations = read_values_file(path)
        _set_evaluations(opts, "forgetting_evaluations", evaluations)
    path = _path(opts.pop("probe_file", None), "probe_file")
    if path is not None and predicted and opts.get("probe_values") is None:
        opts["probe_values"], evaluations = read_values_file(path)
        _set_evaluations(opts, "probe_evaluations", evaluations)
    known = opts.get("known")
    if not isinstance(known, (str, os.PathLike)):
        return  # none, or already in memory: the strategy checks it
    del opts["known"]
    if not predicted:
        return
    if _completes(opts.get("predictor", "knn")):
        if load:
            opts["known"] = load_any(known)
        else:
            check_any(known)
            opts["known"] = placeholder_rows(known)
    if mode == "online" and opts.get("probe_base") == "known" and opts.get("known_base_losses") is None:
        opts["known_base_losses"] = _base_losses(known, load)


def _path(value: Any, key: str) -> str | os.PathLike[str] | None:
    if value is None or isinstance(value, (str, os.PathLike)):
        return value
    raise ConfigError(f"invalid options for strategy 'replay': {key}: expected a path, got {value!r}")


def _set_evaluations(opts: dict[str, Any], key: str, evaluations: Any) -> None:
    """What the file says its values cost, unless the options say it themselves."""
    if evaluations is not None and opts.get(key) is None:
        opts[key] = evaluations


def _completes(predictor: Any) -> bool:
    """Whether ``predictor`` is a registered name, i.e. fitted here on the known rows (not ``probe-only``,
    not a fitted object, not a misspelling the strategy reports)."""
    from forgetscope.predict.registry import PREDICTORS

    return isinstance(predictor, str) and predictor in PREDICTORS.names()


def _base_losses(known: str | os.PathLike[str], load: bool) -> dict[str, float]:
    from forgetscope.importing import check_base_losses, load_base_losses

    try:
        if not load:
            check_base_losses(known)
            return {}
        return load_base_losses(known)
    except DataError:
        raise DataError(f"replay online: probe_base 'known' needs a sweep directory with upstream base losses, "
                        f"got {known}") from None

