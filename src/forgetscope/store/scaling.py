"""The files of a scaling fit: the checkpoint table and ``fit.json``, written atomically, and read back.

Names come from :class:`~forgetscope.store.layout.ScalingLayout`::

    points.parquet, points.csv   tidy rows: run, rank, P, t, forgetting, ce_forgetting, kl_forgetting,
                                 task_loss, train_loss (one row per checkpoint evaluation)
    fit.json                     ScalingReport.to_dict(): every fit, its CIs, R², held-out errors,
                                 the held-out rule and the extrapolation grid

The fits themselves are :mod:`forgetscope.analysis.scaling` (pure); the figures are
:mod:`forgetscope.analysis.plots`; :func:`forgetscope.experiments.scaling.write_scaling_results` writes both.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from forgetscope.store.io import write_csv, write_json, write_parquet
from forgetscope.store.layout import ScalingLayout, SweepLayout


def json_safe(o: Any) -> Any:
    """``o`` with NaN and infinities as ``null`` and numpy scalars as Python ones: ``fit.json`` stays strict
    JSON."""
    if isinstance(o, dict):
        return {str(k): json_safe(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [json_safe(v) for v in o]
    if isinstance(o, (np.floating, float)):
        return None if not math.isfinite(float(o)) else float(o)
    if isinstance(o, np.integer):
        return int(o)
    return o


def write_scaling_tables(points: pd.DataFrame, fit: Mapping[str, Any],
                         out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``points.parquet``/``points.csv`` and ``fit.json`` (``fit``: a ``ScalingReport.to_dict()``)
    into ``out_dir``; returns their paths as ``points``, ``points_csv`` and ``fit``."""
    layout = ScalingLayout(out_dir)
    layout.root.mkdir(parents=True, exist_ok=True)
    paths = {"points": layout.points, "points_csv": layout.points_csv, "fit": layout.fit}
    write_parquet(paths["points"], points)
    write_csv(paths["points_csv"], points)
    write_json(paths["fit"], json_safe(dict(fit)))
    return paths


def read_fit(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``fit.json`` (a sweep directory, a scaling results folder or the file itself), for reports."""
    p = Path(path)
    if p.is_dir():
        in_sweep = SweepLayout(p).scaling_fit
        p = in_sweep if in_sweep.is_file() else ScalingLayout(p).fit
    return json.loads(p.read_text())
