"""Scaling laws: ``layout.scaling_fit`` (``scaling/fit.json``), drawn over ``layout.scaling_points`` if present.

The points table may name its columns as :mod:`forgetscope.analysis.scaling` does (``P``, ``t``,
``forgetting``) or descriptively (``trainable_params``, ``steps``, ``forgetting``, ``fitted``, ``heldout``).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from forgetscope.analysis import plots
from forgetscope.report.sections.base import ReportContext, Section, col, fmt


def _flatten(d: Any, prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    if isinstance(d, dict):
        for k, v in d.items():
            out += _flatten(v, f"{prefix}{k}.")
    elif isinstance(d, list) and len(d) <= 4 and all(not isinstance(x, (dict, list)) for x in d):
        out.append((prefix[:-1], ", ".join(fmt(x) for x in d)))
    elif not isinstance(d, list):
        out.append((prefix[:-1], d))
    return out


def _figures(sec: Section, fit: Any, points: pd.DataFrame) -> None:
    x = col(points, "steps", "t", "update_steps")
    g = col(points, "trainable_params", "P", "params", "n_params")
    y = col(points, "forgetting", "observed", "cross_entropy", "mean_forgetting", "loss_increase", "y")
    f = col(points, "fitted", "predicted", "pred", "fit", "y_fit")
    if x is None and g is not None:
        x, g = g, None
    if x is None or y is None:
        return
    held = col(points, "heldout", "held_out", "test")
    desc = ", ".join(f"{k} = {v}" for k, v in _flatten(fit) if "exponent" in k.lower() or
                     k.split(".")[-1].lower() in ("alpha", "beta"))[:160]
    sec.figure(plots.scaling_plot(points, x, y, f, g if g is not None and points[g].nunique() > 1 else None,
                                 held=held),
               "forgetting against the scaling variable",
               f"Points: observed {y}; lines: the fitted law" + (f" ({desc})." if desc else ".")
               + (" Crosses: points held out of the fit." if held else ""))
    if f is not None:
        o, fv = points[y].to_numpy(float), points[f].to_numpy(float)
        ok = np.isfinite(o) & np.isfinite(fv)
        rmse = float(np.sqrt(np.mean((o[ok] - fv[ok]) ** 2))) if ok.any() else float("nan")
        sec.figure(plots.observed_vs_fitted(o, fv, y), "observed vs fitted scaling law",
                   f"Points on the diagonal are fitted exactly; RMSE {rmse:.3g} over {int(ok.sum())} runs.")


def build(ctx: ReportContext) -> Section:
    fit = json.loads(ctx.need_file(ctx.layout.scaling_fit).read_text())
    sec = Section("scaling", "Scaling laws",
                  lead="Forgetting as a shifted power law in fine-tuned parameters P and update steps t "
                       "(Kalajdzievski 2024), fitted by nonlinear least squares.")
    if ctx.layout.scaling_points.is_file():
        points = pd.read_parquet(ctx.layout.scaling_points)
        if len(points):
            _figures(sec, fit, points)
    sec.pairs(_flatten(fit)[:60])
    return sec
