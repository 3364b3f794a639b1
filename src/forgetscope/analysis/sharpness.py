"""Sharpness against forgetting across runs (after Li et al. 2024): which flatness measures rise with a
run's mean forgetting. Pure: the measures themselves are :mod:`forgetscope.measure.sharpness`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

MEASURES = ("sharpness_random_mean", "sharpness_sam_rise", "sharpness_hessian_trace", "sharpness_random_max")


def correlate_with_forgetting(table: pd.DataFrame, measures: Sequence[str] | None = None,
                              target: str = "mean_forgetting") -> pd.DataFrame:
    """Spearman (with p-value) and Pearson correlation of each measure with forgetting across runs.

    NaN-safe: rows missing either value are dropped per measure; fewer than 3 rows or a constant column
    gives NaN correlations with a ``note`` instead of a warning.
    """
    from scipy import stats

    measures = [m for m in (measures or MEASURES) if m in table.columns]
    rows = []
    for m in measures:
        x = pd.to_numeric(table[m], errors="coerce").to_numpy(dtype=float)
        y = pd.to_numeric(table[target], errors="coerce").to_numpy(dtype=float)
        ok = np.isfinite(x) & np.isfinite(y)
        x, y = x[ok], y[ok]
        row = {"measure": m, "n": len(x), "spearman": math.nan, "spearman_p": math.nan,
               "pearson": math.nan, "pearson_p": math.nan, "note": ""}
        if len(x) < 3:
            row["note"] = "fewer than 3 runs"
        elif np.ptp(x) == 0 or np.ptp(y) == 0:
            row["note"] = "constant " + ("measure" if np.ptp(x) == 0 else "forgetting")
        else:
            s = stats.spearmanr(x, y)
            p = stats.pearsonr(x, y)
            row.update(spearman=float(s.statistic), spearman_p=float(s.pvalue), pearson=float(p.statistic),
                       pearson_p=float(p.pvalue))
        rows.append(row)
    return pd.DataFrame(rows, columns=["measure", "n", "spearman", "spearman_p", "pearson", "pearson_p", "note"])
