"""Scaling laws for forgetting (after Kalajdzievski 2024, arXiv 2401.05605).

The paper fine-tunes with LoRA at several ranks (several trainable-parameter counts ``P``), follows
each run over its update steps ``t``, and finds that

* forgetting rises as a **shifted power law** in ``P`` and ``t`` jointly, and
* forgetting falls **linearly** with the fine-tuning loss (the better the task is learned, the more is
  forgotten), so early stopping or fewer parameters only trade one for the other.

Its forgetting metric is a cross-entropy between the base model's and the fine-tuned model's
next-token predictions on pretraining-like text (our ``ce_forgetting``; see
:mod:`forgetscope.experiments.scaling`, which also records ``kl_forgetting`` = that cross-entropy
minus the base model's own entropy, zero before fine-tuning). Forgetscope's own measure is the mean
loss increase on the upstream examples (``forgetting``). Every fit here works on any of the three.

Forms fitted (``P`` trainable parameters, ``t`` update steps; ``P0``/``t0`` are the geometric means of
the fitted points, so ``A`` is the excess at a typical point and stays well scaled):

``shifted`` (the paper's joint form, nonlinear least squares with ``scipy.optimize.curve_fit``)::

    F(P, t) = B + A * (P / P0)**alpha * (t / t0)**beta

  ``B`` is the shift: the value the law tends to as ``P**alpha * t**beta -> 0`` (for the cross-entropy
  metric, about the base model's entropy). The exponents may take either sign: ``A > 0, alpha, beta > 0``
  is unbounded growth, ``A < 0, alpha, beta < 0`` growth that saturates at ``B``. Both branches are tried.
  ``shift=`` fixes ``B`` (e.g. 0 for the loss increase, or the entropy measured at ``t = 0``).

``power`` (a log-linear form, ordinary least squares on logs; no shift)::

    log F = log A + alpha log P + beta log t

  Exact for an unshifted power law; biased when a shift exists (then ``F - B``, not ``F``, is the power
  law), which is why the shifted fit is the primary one. Points with ``F <= 0`` are dropped (counted).

``linear`` (forgetting against the fine-tuning loss)::

    F = c * L_ft + d            (c < 0 in the paper)

``task_loss`` (the fine-tuning loss itself, same shifted form, exponents expected negative).

Every fit reports its parameters with standard errors and 95% confidence intervals (Student t with
``n - k`` degrees of freedom on the least-squares covariance), R², RMSE, and, on held-out points
(:func:`holdout_mask`: the last checkpoint of each run, the largest ``P``, or a random share), the
prediction error — the test of a law is whether it extrapolates.

Everything here is pure: :func:`forgetscope.experiments.scaling.write_scaling_results` writes the points
and :meth:`ScalingReport.to_dict` through :mod:`forgetscope.store.scaling`, and the figures of
:func:`forgetscope.analysis.plots.scaling_figures` (forgetting vs t per rank with the fitted law and its
extrapolation, forgetting vs task loss, predicted vs observed).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats
from scipy.optimize import OptimizeWarning, curve_fit

from forgetscope.errors import ForgetscopeError

TARGETS = ("ce_forgetting", "kl_forgetting", "forgetting")
HoldoutRule = Literal["none", "largest_t", "largest_p", "random"]


class ScalingError(ForgetscopeError):
    """Not enough (or unusable) points for a fit."""


# --------------------------------------------------------------------------- helpers
def _ci(values: np.ndarray, se: np.ndarray, dof: int, level: float = 0.95) -> list[tuple[float, float]]:
    if dof <= 0:
        return [(math.nan, math.nan) for _ in values]
    q = float(stats.t.ppf(0.5 + level / 2, dof))
    return [(float(v - q * s), float(v + q * s)) for v, s in zip(values, se)]


def _goodness(y: np.ndarray, yhat: np.ndarray) -> dict[str, float]:
    resid = y - yhat
    ss_res = float(np.sum(resid ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return {
        "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else (1.0 if ss_res == 0 else math.nan),
        "rmse": float(np.sqrt(np.mean(resid ** 2))) if len(y) else math.nan,
        "mae": float(np.mean(np.abs(resid))) if len(y) else math.nan,
    }


def prediction_errors(y: np.ndarray, yhat: np.ndarray) -> dict[str, float]:
    """RMSE, MAE and mean absolute percentage error of predictions (NaN when there are none)."""
    y, yhat = np.asarray(y, float), np.asarray(yhat, float)
    if len(y) == 0:
        return {"n": 0, "rmse": math.nan, "mae": math.nan, "mape": math.nan}
    nz = np.abs(y) > 1e-12
    return {
        "n": len(y),
        "rmse": float(np.sqrt(np.mean((y - yhat) ** 2))),
        "mae": float(np.mean(np.abs(y - yhat))),
        "mape": float(np.mean(np.abs((y[nz] - yhat[nz]) / y[nz]))) if nz.any() else math.nan,
    }


def _geomean(x: np.ndarray) -> float:
    return float(np.exp(np.mean(np.log(x))))


def _check_pt(P: np.ndarray, t: np.ndarray, y: np.ndarray, what: str) -> None:
    if not (len(P) == len(t) == len(y)):
        raise ScalingError(f"{what}: P, t and values differ in length ({len(P)}, {len(t)}, {len(y)})")
    if np.any(~np.isfinite(P)) or np.any(P <= 0) or np.any(~np.isfinite(t)) or np.any(t <= 0):
        raise ScalingError(f"{what}: P and t must be positive and finite (t = 0 points cannot be fitted)")
    if np.any(~np.isfinite(y)):
        raise ScalingError(f"{what}: values must be finite")


# --------------------------------------------------------------------------- fits
@dataclass
class Fit:
    """One fitted law: parameters, standard errors, 95% CIs, goodness of fit, held-out error."""

    form: str
    formula: str
    params: dict[str, float]
    stderr: dict[str, float]
    ci95: dict[str, tuple[float, float]]
    n: int
    goodness: dict[str, float]
    meta: dict[str, Any] = field(default_factory=dict)
    heldout: dict[str, float] = field(default_factory=dict)

    def predict(self, P: Any = None, t: Any = None, x: Any = None) -> np.ndarray:
        p = self.params
        if self.form in ("shifted", "task_loss"):
            P0, t0 = self.meta["P0"], self.meta["t0"]
            P, t = np.asarray(P, float), np.asarray(t, float)
            return p["B"] + p["A"] * (P / P0) ** p["alpha"] * (t / t0) ** p["beta"]
        if self.form == "power":
            P, t = np.asarray(P, float), np.asarray(t, float)
            return p["A"] * P ** p["alpha"] * t ** p["beta"]
        if self.form == "linear":
            return p["c"] * np.asarray(x, float) + p["d"]
        raise ScalingError(f"unknown form {self.form!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"form": self.form, "formula": self.formula, "params": self.params, "stderr": self.stderr,
                "ci95": {k: list(v) for k, v in self.ci95.items()}, "n": self.n, "goodness": self.goodness,
                "heldout": self.heldout, "meta": self.meta}


def _shifted(X, A, alpha, beta, B):
    P, t = X
    return B + A * P ** alpha * t ** beta


def _shifted_fixed(B):
    def f(X, A, alpha, beta):
        P, t = X
        return B + A * P ** alpha * t ** beta
    return f


def _loglinear_start(p: np.ndarray, t: np.ndarray, z: np.ndarray) -> tuple[float, float, float] | None:
    """Start values (log A, alpha, beta) for A * p^alpha * t^beta = z, z > 0, by least squares on logs."""
    if np.any(z <= 0):
        return None
    X = np.column_stack([np.ones_like(p), np.log(p), np.log(t)])
    coef, *_ = np.linalg.lstsq(X, np.log(z), rcond=None)
    return float(coef[0]), float(coef[1]), float(coef[2])


def fit_shifted_power_law(P: Sequence[float], t: Sequence[float], y: Sequence[float], *,
                          shift: float | None = None, form: str = "shifted", maxfev: int = 20000) -> Fit:
    """Fit ``y = B + A (P/P0)^alpha (t/t0)^beta`` by nonlinear least squares (see module docstring).

    Several starts are tried: for candidate shifts below the data (growing branch, ``A > 0``) and above
    it (saturating branch, ``A < 0``), a log-linear fit of ``|y - B|`` seeds ``curve_fit``; the start with
    the smallest residual sum of squares wins. ``shift`` fixes ``B`` instead of fitting it.
    """
    P, t, y = (np.asarray(v, dtype=float) for v in (P, t, y))
    _check_pt(P, t, y, form)
    k = 3 if shift is not None else 4
    if len(y) < k + 1:
        raise ScalingError(f"{form}: need at least {k + 1} points to fit {k} parameters, got {len(y)}")
    P0, t0 = _geomean(P), _geomean(t)
    p, tt = P / P0, t / t0
    span = float(np.ptp(y)) or max(abs(float(np.mean(y))), 1.0) * 1e-3
    if shift is not None:
        candidates = [float(shift)]
    else:
        lo, hi = float(y.min()), float(y.max())
        fr = [1e-3, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0]
        candidates = [lo - f * span for f in fr] + [hi + f * span for f in fr]
        if lo > 0:
            candidates.append(0.0)
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    for B0 in candidates:
        z = y - B0
        sign = 1.0 if np.all(z > 0) else (-1.0 if np.all(z < 0) else 0.0)
        if sign == 0.0:
            continue
        start = _loglinear_start(p, tt, sign * z)
        if start is None:
            continue
        logA, a0, b0 = start
        p0 = [sign * math.exp(logA), a0, b0] + ([] if shift is not None else [B0])
        func = _shifted_fixed(float(shift)) if shift is not None else _shifted
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", OptimizeWarning)
                warnings.simplefilter("ignore", RuntimeWarning)
                popt, pcov = curve_fit(func, (p, tt), y, p0=p0, maxfev=maxfev)
        except (RuntimeError, ValueError, FloatingPointError):
            continue
        yhat = func((p, tt), *popt)
        if not np.all(np.isfinite(yhat)):
            continue
        sse = float(np.sum((y - yhat) ** 2))
        if best is None or sse < best[0] - 1e-15 * max(1.0, best[0]):
            best = (sse, popt, pcov)
    if best is None:
        raise ScalingError(f"{form}: the shifted power law could not be fitted to these points")
    _, popt, pcov = best
    names = ["A", "alpha", "beta"] + ([] if shift is not None else ["B"])
    se = np.sqrt(np.clip(np.diag(pcov), 0, None)) if np.all(np.isfinite(pcov)) else np.full(len(popt), np.nan)
    params = {n: float(v) for n, v in zip(names, popt)}
    stderr = {n: float(s) for n, s in zip(names, se)}
    ci = dict(zip(names, _ci(popt, se, len(y) - len(popt))))
    if shift is not None:
        params["B"], stderr["B"], ci["B"] = float(shift), 0.0, (float(shift), float(shift))
    fit = Fit(form=form, formula="F = B + A * (P/P0)**alpha * (t/t0)**beta", params=params, stderr=stderr,
              ci95=ci, n=len(y), goodness={}, meta={"P0": P0, "t0": t0, "shift_fixed": shift is not None})
    fit.params["A_raw"] = float(params["A"] * P0 ** -params["alpha"] * t0 ** -params["beta"])
    fit.goodness = _goodness(y, fit.predict(P, t))
    return fit


def fit_power_law_loglinear(P: Sequence[float], t: Sequence[float], y: Sequence[float]) -> Fit:
    """Fit ``log y = log A + alpha log P + beta log t`` by OLS; points with ``y <= 0`` are dropped."""
    P, t, y = (np.asarray(v, dtype=float) for v in (P, t, y))
    _check_pt(P, t, y, "power")
    keep = y > 0
    dropped = int((~keep).sum())
    P, t, y = P[keep], t[keep], y[keep]
    if len(y) < 4:
        raise ScalingError(f"power: need at least 4 positive points for the log-linear fit, got {len(y)}")
    X = np.column_stack([np.ones_like(P), np.log(P), np.log(t)])
    ly = np.log(y)
    coef, *_ = np.linalg.lstsq(X, ly, rcond=None)
    resid = ly - X @ coef
    dof = len(y) - 3
    s2 = float(resid @ resid) / dof if dof > 0 else math.nan
    try:
        cov = s2 * np.linalg.inv(X.T @ X)
        se = np.sqrt(np.clip(np.diag(cov), 0, None))
    except np.linalg.LinAlgError:
        se = np.full(3, np.nan)
    names = ["logA", "alpha", "beta"]
    ci = dict(zip(names, _ci(coef, se, dof)))
    params = {"A": float(math.exp(coef[0])), "logA": float(coef[0]), "alpha": float(coef[1]),
              "beta": float(coef[2])}
    fit = Fit(form="power", formula="log F = log A + alpha*log P + beta*log t", params=params,
              stderr={n: float(s) for n, s in zip(names, se)}, ci95=ci, n=len(y), goodness={},
              meta={"dropped_nonpositive": dropped})
    fit.goodness = _goodness(y, fit.predict(P, t))
    fit.goodness["r2_log"] = _goodness(ly, X @ coef)["r2"]
    return fit


def fit_linear(x: Sequence[float], y: Sequence[float]) -> Fit:
    """``y = c x + d`` by OLS, with CIs and the Pearson correlation (the forgetting/task-loss relation)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 3:
        raise ScalingError(f"linear: need at least 3 points, got {len(x)}")
    if np.ptp(x) == 0:
        raise ScalingError("linear: the fine-tuning loss does not vary across points")
    X = np.column_stack([x, np.ones_like(x)])
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ coef
    dof = len(x) - 2
    s2 = float(resid @ resid) / dof if dof > 0 else math.nan
    se = np.sqrt(np.clip(np.diag(s2 * np.linalg.inv(X.T @ X)), 0, None))
    names = ["c", "d"]
    fit = Fit(form="linear", formula="F = c * task_loss + d", params=dict(zip(names, map(float, coef))),
              stderr=dict(zip(names, map(float, se))), ci95=dict(zip(names, _ci(coef, se, dof))), n=len(x),
              goodness=_goodness(y, X @ coef))
    if np.ptp(y) > 0:
        r, pval = stats.pearsonr(x, y)
        fit.goodness.update({"pearson": float(r), "pearson_p": float(pval)})
    return fit


# --------------------------------------------------------------------------- hold-out and report
def holdout_mask(points: pd.DataFrame, rule: HoldoutRule | str = "largest_t", *, fraction: float = 0.2,
                 seed: int = 0) -> np.ndarray:
    """Which points to hold out: ``largest_t`` (the last checkpoint of every run: extrapolation in time),
    ``largest_p`` (every checkpoint of the largest P: extrapolation in size), ``random`` (a share) or
    ``none``."""
    n = len(points)
    if rule == "none":
        return np.zeros(n, dtype=bool)
    if rule == "largest_t":
        key = "run" if "run" in points.columns else "P"
        return (points["t"] == points.groupby(key)["t"].transform("max")).to_numpy()
    if rule == "largest_p":
        return (points["P"] == points["P"].max()).to_numpy()
    if rule == "random":
        rng = np.random.default_rng(seed)
        m = np.zeros(n, dtype=bool)
        m[rng.choice(n, size=max(1, round(fraction * n)), replace=False)] = True
        return m
    raise ScalingError(f"unknown hold-out rule {rule!r}; use none, largest_t, largest_p or random")


@dataclass
class ScalingReport:
    """All fits of one scaling sweep, per forgetting measure, with the held-out evaluation."""

    fits: dict[str, dict[str, Fit]]
    holdout_rule: str
    n_points: int
    n_heldout: int
    extrapolation: list[dict[str, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "paper": "Kalajdzievski 2024, Scaling Laws for Forgetting When Fine-Tuning LLMs, arXiv 2401.05605",
            "holdout_rule": self.holdout_rule, "n_points": self.n_points, "n_heldout": self.n_heldout,
            "fits": {target: {name: f.to_dict() for name, f in fits.items()} for target, fits in self.fits.items()},
            "extrapolation": self.extrapolation, "notes": self.notes,
        }

    def summary_rows(self) -> pd.DataFrame:
        rows = []
        for target, fits in self.fits.items():
            for name, f in fits.items():
                rows.append({"target": target, "fit": name, "n": f.n, "r2": f.goodness.get("r2"),
                             "rmse": f.goodness.get("rmse"), "heldout_rmse": f.heldout.get("rmse"),
                             "alpha": f.params.get("alpha"), "alpha_ci": f.ci95.get("alpha"),
                             "beta": f.params.get("beta"), "beta_ci": f.ci95.get("beta"),
                             "B": f.params.get("B"), "c": f.params.get("c")})
        return pd.DataFrame(rows)


def _try(fn, notes: list[str], label: str, *args, **kwargs) -> Fit | None:
    try:
        return fn(*args, **kwargs)
    except ScalingError as exc:
        notes.append(f"{label}: {exc}")
        return None


def fit_scaling(points: pd.DataFrame, *, targets: Sequence[str] | None = None,
                holdout: HoldoutRule | str = "largest_t", holdout_fraction: float = 0.2, seed: int = 0,
                shifts: dict[str, float] | None = None,
                extrapolate_t: Sequence[float] | None = None, extrapolate_P: Sequence[float] | None = None
                ) -> ScalingReport:
    """Fit every law to the tidy points (columns ``P``, ``t``, the targets, optionally ``task_loss``).

    Points with ``t <= 0`` are not fitted (a power law in t is undefined there). Fits use the points not
    held out; each fit's ``heldout`` holds its prediction error on the held-out points.
    ``shifts`` fixes the shift ``B`` of the shifted law per target (default: fitted).
    """
    if not {"P", "t"} <= set(points.columns):
        raise ScalingError("points need columns 'P' and 't'")
    pts = points[(points["t"] > 0) & (points["P"] > 0)].reset_index(drop=True)
    targets = [c for c in (targets or TARGETS) if c in pts.columns and pts[c].notna().any()]
    if not targets:
        raise ScalingError("points hold none of the forgetting columns " + ", ".join(TARGETS))
    mask = holdout_mask(pts, holdout, fraction=holdout_fraction, seed=seed)
    if mask.all():
        raise ScalingError(f"hold-out rule {holdout!r} leaves no points to fit")
    train, test = pts[~mask], pts[mask]
    notes: list[str] = []
    fits: dict[str, dict[str, Fit]] = {}
    for target in targets:
        tr = train[train[target].notna()]
        te = test[test[target].notna()]
        got: dict[str, Fit | None] = {
            "shifted": _try(fit_shifted_power_law, notes, f"{target}/shifted", tr["P"], tr["t"], tr[target],
                            shift=(shifts or {}).get(target)),
            "power": _try(fit_power_law_loglinear, notes, f"{target}/power", tr["P"], tr["t"], tr[target]),
        }
        if "task_loss" in pts.columns and tr["task_loss"].notna().sum() >= 3:
            got["linear"] = _try(fit_linear, notes, f"{target}/linear", tr["task_loss"], tr[target])
        for name, f in got.items():
            if f is None:
                continue
            if len(te):
                pred = f.predict(x=te["task_loss"]) if name == "linear" else f.predict(te["P"], te["t"])
                f.heldout = prediction_errors(te[target].to_numpy(), pred)
            fits.setdefault(target, {})[name] = f
    if "task_loss" in pts.columns and train["task_loss"].notna().sum() >= 5:
        tr = train[train["task_loss"].notna()]
        f = _try(fit_shifted_power_law, notes, "task_loss/shifted", tr["P"], tr["t"], tr["task_loss"],
                 form="task_loss")
        if f is not None:
            te = test[test["task_loss"].notna()]
            if len(te):
                f.heldout = prediction_errors(te["task_loss"].to_numpy(), f.predict(te["P"], te["t"]))
            fits.setdefault("task_loss", {})["shifted"] = f
    report = ScalingReport(fits=fits, holdout_rule=str(holdout), n_points=len(pts), n_heldout=int(mask.sum()),
                           notes=notes)
    report.extrapolation = extrapolation_grid(report, pts, extrapolate_t, extrapolate_P)
    return report


def extrapolation_grid(report: ScalingReport, points: pd.DataFrame, ts: Sequence[float] | None = None,
                       Ps: Sequence[float] | None = None) -> list[dict[str, float]]:
    """Predictions of every shifted law beyond the data: up to 4x the largest t and P by default."""
    if not len(points):
        return []
    tmax, Pmax = float(points["t"].max()), float(points["P"].max())
    ts = list(ts) if ts is not None else [tmax, 2 * tmax, 4 * tmax]
    Ps = list(Ps) if Ps is not None else sorted(set(points["P"].astype(float))) + [2 * Pmax, 4 * Pmax]
    out = []
    for P in Ps:
        for t in ts:
            row = {"P": float(P), "t": float(t)}
            for target, fits in report.fits.items():
                if "shifted" in fits:
                    row[f"{target}_shifted"] = float(fits["shifted"].predict(P, t))
            out.append(row)
    return out
