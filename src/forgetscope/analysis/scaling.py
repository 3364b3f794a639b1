"""Scaling laws for forgetting (after Kalajdzievski 2024, arXiv 2401.05605).

The paper fine-tunes Llama 2 7B chat with LoRA at several ranks (several trainable-parameter counts
``P``) and follows each run over its update steps ``t``. Its abstract states that

* there is a strong **inverse linear** relation between fine-tuning performance and forgetting (the
  lower the fine-tuning loss, the more is forgotten), and
* forgetting **increases as a shifted power law** in the number of parameters fine-tuned and in the
  number of update steps,

with forgetting measured as the next-token cross-entropy whose target is the base model's predicted
distribution and whose scored model is the fine-tuned one (our ``ce_forgetting``, direction included;
:mod:`forgetscope.experiments.scaling` also records ``kl_forgetting`` = that cross-entropy minus the base
model's own entropy, zero before fine-tuning). Forgetscope's own measure is the mean loss increase on the
upstream examples (``forgetting``). Every fit here works on any of the three. The paper's equations
themselves (where its shift sits, how ``P`` and ``t`` are combined, how it fits, its constants) could
not be read, so no law here is a transcription of them: docs/scaling_and_sharpness.md says what was and
was not recovered. With the shift added to the output, both product readings of "a shifted power law in
P and t" are the ``shifted`` family below: ``B + a (P**g * t)**b`` is ``alpha = g*b``, ``beta = b``.

Laws fitted (``P`` trainable parameters, ``t`` update steps; ``P0``/``t0`` are the geometric means of
the fitted points, so ``A`` is the excess at a typical point and stays well scaled), by nonlinear
least squares (``scipy.optimize.curve_fit``):

``shifted`` (the general family: a shift plus a joint power law)::

    F(P, t) = B + A * (P / P0)**alpha * (t / t0)**beta

  ``B`` is the shift: the value the law tends to as ``P**alpha * t**beta -> 0``. The exponents may take
  either sign, so the fit may also describe forgetting that *falls* with ``P`` or ``t``. ``shift=``
  fixes ``B`` (e.g. 0 for the loss increase, or the entropy measured at ``t = 0``).

``increasing`` (the same family held to the shape the paper states: forgetting rises with ``P`` and
  with ``t``): ``A``, ``alpha`` and ``beta`` share one sign, fitted with bounds on two branches —
  unbounded growth (``A, alpha, beta >= 0``) and growth that saturates at ``B`` (``A, alpha, beta <=
  0``); the better one is kept. A parameter that ends on its bound (0) is listed in ``meta['at_bound']``:
  its interval is then one-sided in truth, so read it as "no evidence of growth in that variable".

``power`` (a log-linear form, ordinary least squares on logs; no shift)::

    log F = log A + alpha log P + beta log t

  Exact for an unshifted power law; biased when a shift exists (then ``F - B``, not ``F``, is the power
  law). Points with ``F <= 0`` are dropped (counted).

``linear`` (forgetting against the fine-tuning loss)::

    F = c * L_ft + d            (c < 0: the inverse linear relation)

``task_loss`` (the fine-tuning loss itself, general shifted form, exponents expected negative).

Every fit reports its parameters with standard errors and 95% confidence intervals (Student t with
``n - k`` degrees of freedom on the least-squares covariance), R², RMSE, and, on held-out points
(:func:`holdout_mask`: the last checkpoint of each run, the largest ``P``, or a random share), the
prediction error — the test of a law is whether it extrapolates. :func:`trivial_extrapolations`
predicts the same held-out points without any law (the last value observed before them, and a straight
line in log t or log P through the fitted points of the same run or checkpoint), and
``ScalingReport.heldout_comparison`` scores every law and both rules on the points all of them predict.
The least-squares CIs treat every checkpoint as independent, so they are descriptive: the points of one
run share its noise. :func:`judge_laws` applies fixed criteria to one report per task, deciding on
leave-one-run-out jackknife CIs (:func:`run_jackknife`), and describes whether the tasks' exponents agree
(:func:`exponent_agreement`, Cochran's Q).

Everything here is pure: :func:`forgetscope.experiments.scaling.write_scaling_results` writes the points
and :meth:`ScalingReport.to_dict` through :mod:`forgetscope.store.scaling`, and the figures of
:func:`forgetscope.analysis.plots.scaling_figures` (forgetting vs t per rank with the fitted law and its
extrapolation, forgetting vs task loss, predicted vs observed).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats
from scipy.optimize import OptimizeWarning, curve_fit

from forgetscope.errors import ForgetscopeError

TARGETS = ("ce_forgetting", "kl_forgetting", "forgetting")
HoldoutRule = Literal["none", "largest_t", "largest_p", "random"]
#: laws of (P, t) that :func:`fit_scaling` can fit; ``linear`` (on the task loss) is fitted whenever the
#: points have a task loss
LAWS = ("shifted", "increasing", "power")
#: rules with no law that predict the held-out points (:func:`trivial_extrapolations`)
BASELINES = ("last_observed", "loglinear")
#: fewest points a (P, t) law is fitted to: the shifted law's four parameters plus one
MIN_FIT_POINTS = 5
#: what a fit's ``ci95`` is: descriptive, since checkpoints of one run are not independent
LEAST_SQUARES_CI = "least squares, every point independent (descriptive)"
#: the intervals the criteria decide on (:func:`run_jackknife`)
JACKKNIFE_CI = "leave-one-run-out jackknife, t on runs - 1 degrees of freedom"
#: which interval :func:`judge_report` decides on: the jackknife's, or the least-squares one (for comparison)
DecisionCI = Literal["jackknife", "least_squares"]
CI_LABELS = {"jackknife": JACKKNIFE_CI, "least_squares": LEAST_SQUARES_CI}
#: fewest runs a jackknife interval is built from (each left-out refit keeps two ranks at least)
MIN_JACKKNIFE_RUNS = 3


class ScalingError(ForgetscopeError):
    """Not enough (or unusable) points for a fit."""


# --------------------------------------------------------------------------- helpers
def _ci(values: np.ndarray, se: np.ndarray, dof: int, level: float = 0.95) -> list[tuple[float, float]]:
    """Student-t intervals; undefined (NaN) where the standard error is not positive and finite, since a
    zero-width interval would otherwise read as excluding 0."""
    if dof <= 0:
        return [(math.nan, math.nan) for _ in values]
    q = float(stats.t.ppf(0.5 + level / 2, dof))
    return [(float(v - q * s), float(v + q * s)) if _usable_se(s) else (math.nan, math.nan)
            for v, s in zip(values, se)]


def _usable_se(se: Any) -> bool:
    """A standard error an interval can be built on: a positive finite number."""
    return se is not None and math.isfinite(float(se)) and float(se) > 0


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
    """One fitted law: parameters, standard errors, 95% CIs, goodness of fit, held-out error.

    ``stderr``/``ci95`` are least-squares ones that treat every point as independent: descriptive, too narrow
    when points of one run share its noise. ``jackknife`` (filled by :func:`run_jackknife`) holds the
    leave-one-run-out intervals the criteria decide on."""

    form: str
    formula: str
    params: dict[str, float]
    stderr: dict[str, float]
    ci95: dict[str, tuple[float, float]]
    n: int
    goodness: dict[str, float]
    meta: dict[str, Any] = field(default_factory=dict)
    heldout: dict[str, float] = field(default_factory=dict)
    jackknife: dict[str, Any] = field(default_factory=dict)

    def predict(self, P: Any = None, t: Any = None, x: Any = None) -> np.ndarray:
        p = self.params
        if self.form in ("shifted", "increasing", "task_loss"):
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
        out = {"form": self.form, "formula": self.formula, "params": self.params, "stderr": self.stderr,
               "ci95": {k: list(v) for k, v in self.ci95.items()}, "ci95_method": LEAST_SQUARES_CI,
               "n": self.n, "goodness": self.goodness, "heldout": self.heldout, "meta": self.meta}
        if self.jackknife:
            out["jackknife"] = {k: ({n: list(c) for n, c in v.items()} if k == "ci95" else v)
                                for k, v in self.jackknife.items()}
        return out


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


def _branch_bounds(sign: float, fixed_shift: bool) -> tuple[list[float], list[float]]:
    """Bounds of (A, alpha, beta[, B]) on one branch where the law rises in both P and t: A, alpha and
    beta share ``sign`` (+1: unbounded growth, -1: growth that saturates at B)."""
    inf = np.inf
    lo, hi = ([0.0, 0.0, 0.0], [inf, inf, inf]) if sign > 0 else ([-inf, -inf, -inf], [0.0, 0.0, 0.0])
    return (lo, hi) if fixed_shift else (lo + [-inf], hi + [inf])


def fit_shifted_power_law(P: Sequence[float], t: Sequence[float], y: Sequence[float], *,
                          shift: float | None = None, form: str = "shifted", increasing: bool = False,
                          maxfev: int = 20000) -> Fit:
    """Fit ``y = B + A (P/P0)^alpha (t/t0)^beta`` by nonlinear least squares (see module docstring).

    Several starts are tried: for candidate shifts below the data (growing branch, ``A > 0``) and above
    it (saturating branch, ``A < 0``), a log-linear fit of ``|y - B|`` seeds ``curve_fit``; the start with
    the smallest residual sum of squares wins. ``shift`` fixes ``B`` instead of fitting it.
    ``increasing`` holds the law to rising in both P and t (``A``, ``alpha``, ``beta`` of one sign, each
    branch within its bounds): the ``increasing`` law.
    """
    P, t, y = (np.asarray(v, dtype=float) for v in (P, t, y))
    _check_pt(P, t, y, form)
    if increasing:  # the unconstrained optimum, when it already rises in P and t, is the constrained one
        try:
            free = fit_shifted_power_law(P, t, y, shift=shift, form=form, maxfev=maxfev)
        except ScalingError:
            free = None
        signs = {np.sign(free.params[n]) for n in ("A", "alpha", "beta")} if free is not None else set()
        if len(signs) == 1 and 0 not in signs:
            free.formula += ", with A, alpha, beta of one sign (rising in P and t)"
            free.meta.update(branch="growing" if free.params["A"] > 0 else "saturating", at_bound=[])
            return free
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
    func = _shifted_fixed(float(shift)) if shift is not None else _shifted
    best: tuple[float, np.ndarray, np.ndarray, float] | None = None
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
        kwargs: dict[str, Any] = {"maxfev": maxfev}
        if increasing:  # start inside the branch: exponents of the branch's sign
            p0[1], p0[2] = (sign * max(sign * v, 1e-3) for v in (a0, b0))
            kwargs = {"bounds": _branch_bounds(sign, shift is not None), "max_nfev": maxfev}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", OptimizeWarning)
                warnings.simplefilter("ignore", RuntimeWarning)
                popt, pcov = curve_fit(func, (p, tt), y, p0=p0, **kwargs)
        except (RuntimeError, ValueError, FloatingPointError):
            continue
        yhat = func((p, tt), *popt)
        if not np.all(np.isfinite(yhat)):
            continue
        sse = float(np.sum((y - yhat) ** 2))
        if best is None or sse < best[0] - 1e-15 * max(1.0, best[0]):
            best = (sse, popt, pcov, sign)
    if best is None:
        raise ScalingError(f"{form}: the shifted power law could not be fitted to these points")
    _, popt, pcov, sign = best
    names = ["A", "alpha", "beta"] + ([] if shift is not None else ["B"])
    se = np.sqrt(np.clip(np.diag(pcov), 0, None)) if np.all(np.isfinite(pcov)) else np.full(len(popt), np.nan)
    params = {n: float(v) for n, v in zip(names, popt)}
    stderr = {n: float(s) for n, s in zip(names, se)}
    ci = dict(zip(names, _ci(popt, se, len(y) - len(popt))))
    if shift is not None:
        params["B"], stderr["B"], ci["B"] = float(shift), 0.0, (float(shift), float(shift))
    formula = "F = B + A * (P/P0)**alpha * (t/t0)**beta"
    meta: dict[str, Any] = {"P0": P0, "t0": t0, "shift_fixed": shift is not None}
    if increasing:
        formula += ", with A, alpha, beta of one sign (rising in P and t)"
        meta["branch"] = "growing" if sign > 0 else "saturating"
        meta["at_bound"] = [n for n in ("A", "alpha", "beta") if abs(params[n]) <= 1e-6 * (span if n == "A" else 1.0)]
    fit = Fit(form=form, formula=formula, params=params, stderr=stderr, ci95=ci, n=len(y), goodness={}, meta=meta)
    fit.params["A_raw"] = float(params["A"] * P0 ** -params["alpha"] * t0 ** -params["beta"])
    fit.goodness = _goodness(y, fit.predict(P, t))
    return fit


def fit_increasing_power_law(P: Sequence[float], t: Sequence[float], y: Sequence[float], *,
                             shift: float | None = None) -> Fit:
    """The ``increasing`` law: the shifted form held to rising in both ``P`` and ``t``."""
    return fit_shifted_power_law(P, t, y, shift=shift, form="increasing", increasing=True)


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


def _groups(points: pd.DataFrame, along: str) -> list[str]:
    """Columns that name the curve a point lies on when extrapolating along ``t`` (one run) or ``P`` (one
    checkpoint step of one task and seed)."""
    if along == "t":
        return ["run"] if "run" in points.columns else [c for c in ("task", "seed", "P") if c in points.columns]
    return [c for c in ("task", "seed", "t") if c in points.columns]


def trivial_extrapolations(train: pd.DataFrame, test: pd.DataFrame, target: str,
                           rule: HoldoutRule | str) -> dict[str, np.ndarray]:
    """Predictions of the held-out points with no law, from the fitted points on the same curve (the
    same run for ``largest_t``; the same task, seed and step for ``largest_p``):

    ``last_observed``
        the value at the largest ``t`` (or ``P``) fitted on that curve;
    ``loglinear``
        a straight line in ``log t`` (or ``log P``) through the curve's fitted points (two at least).

    NaN where a curve has too few fitted points; ``{}`` for the ``random`` and ``none`` rules, which
    do not extrapolate.
    """
    if rule not in ("largest_t", "largest_p"):
        return {}
    along = "t" if rule == "largest_t" else "P"
    keys = _groups(train, along)
    tr = train[train[target].notna()]
    fitted = {(k if isinstance(k, tuple) else (k,)): g for k, g in tr.groupby(keys)} if keys else {(): tr}
    out = {name: np.full(len(test), np.nan) for name in BASELINES}
    for i, (_, row) in enumerate(test.iterrows()):
        g = fitted.get(tuple(row[c] for c in keys))
        if g is None or not len(g):
            continue
        x, y = np.log(g[along].to_numpy(float)), g[target].to_numpy(float)
        out["last_observed"][i] = y[np.argmax(x)]
        if len(np.unique(x)) >= 2:
            slope, icept = np.polyfit(x, y, 1)
            out["loglinear"][i] = slope * math.log(float(row[along])) + icept
    return out


def heldout_comparison(y: Sequence[float], predictions: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Errors of every predictor on the held-out points that *all* of them predict (finite values), so
    a law and the trivial rules are scored on the same points."""
    y = np.asarray(y, float)
    preds = {k: np.asarray(v, float) for k, v in predictions.items()}
    common = np.isfinite(y)
    for v in preds.values():
        common &= np.isfinite(v)
    return {k: prediction_errors(y[common], v[common]) for k, v in preds.items()}


@dataclass
class ScalingReport:
    """All fits of one scaling sweep, per forgetting measure, with the held-out evaluation."""

    fits: dict[str, dict[str, Fit]]
    holdout_rule: str
    n_points: int
    n_heldout: int
    extrapolation: list[dict[str, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: per target: every (P, t) law and every trivial rule scored on the same held-out points
    heldout_comparison: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    #: one report per task when the points hold several tasks (this report pools them)
    by_task: dict[str, ScalingReport] = field(default_factory=dict)
    #: the verdict of fixed criteria (:func:`judge_laws`), when a config names them
    criteria: dict[str, Any] = field(default_factory=dict)
    #: ``primary`` (the config's own hold-out) or ``secondary`` (another rule), when a config is behind it
    holdout_role: str = ""
    #: what the fits were made from (points, hold-out mask, shifts, held-out predictions), kept so that
    #: :func:`run_jackknife` and :func:`judge_report` can refit and rescore; not written
    fit_data: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "paper": "Kalajdzievski 2024, Scaling Laws for Forgetting When Fine-Tuning LLMs, arXiv 2401.05605",
            "holdout_rule": self.holdout_rule, "n_points": self.n_points, "n_heldout": self.n_heldout,
            **({"holdout_role": self.holdout_role} if self.holdout_role else {}),
            "fits": {target: {name: f.to_dict() for name, f in fits.items()} for target, fits in self.fits.items()},
            "heldout_comparison": self.heldout_comparison,
            "extrapolation": self.extrapolation, "notes": self.notes,
        }
        if self.by_task:
            out["by_task"] = {task: r.to_dict() for task, r in self.by_task.items()}
        if self.criteria:
            out["criteria"] = self.criteria
        return out

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


def _fit_one(name: str, pts: pd.DataFrame, target: str, shift: float | None) -> Fit:
    """Fit one law (or ``linear``, on ``task_loss``) to ``pts``: the same call for the fit and its refits."""
    if name == "linear":
        return fit_linear(pts["task_loss"], pts[target])
    if name == "power":
        return fit_power_law_loglinear(pts["P"], pts["t"], pts[target])
    fitter = {"shifted": fit_shifted_power_law, "increasing": fit_increasing_power_law}.get(name)
    if fitter is None:
        raise ScalingError(f"unknown law {name!r}; choose from {', '.join(LAWS)} or linear")
    return fitter(pts["P"], pts["t"], pts[target], shift=shift)


def _fit_points(report: ScalingReport, target: str, name: str) -> pd.DataFrame | None:
    """The points a fit of ``report`` was made from: the points not held out for a (P, t) law; every point
    with ``t > 0`` and a task loss for ``linear`` (it is not an extrapolation, so nothing is held out)."""
    data = report.fit_data
    if "points" not in data:
        return None
    pts: pd.DataFrame = data["points"]
    if name == "linear":
        return pts[pts[target].notna() & pts["task_loss"].notna()]
    tr = pts[~data["mask"]]
    return tr[tr[target].notna()]


def check_laws(laws: Sequence[str]) -> list[str]:
    """The laws named, each one of :data:`LAWS` (a one-line error otherwise)."""
    unknown = [x for x in laws if x not in LAWS]
    if unknown:
        raise ScalingError(f"unknown law {unknown[0]!r}; choose from {', '.join(LAWS)}")
    return list(dict.fromkeys(laws))


def fit_scaling(points: pd.DataFrame, *, targets: Sequence[str] | None = None,
                holdout: HoldoutRule | str = "largest_t", holdout_fraction: float = 0.2, seed: int = 0,
                shifts: dict[str, float] | None = None, laws: Sequence[str] = LAWS,
                extrapolate_t: Sequence[float] | None = None, extrapolate_P: Sequence[float] | None = None
                ) -> ScalingReport:
    """Fit every law to the tidy points (columns ``P``, ``t``, the targets, optionally ``task_loss``).

    Points with ``t <= 0`` are not fitted (a power law in t is undefined there). The (P, t) laws use the
    points not held out; each one's ``heldout`` holds its prediction error on the held-out points, and
    ``heldout_comparison`` scores the (P, t) laws beside :func:`trivial_extrapolations` on the points
    every one of them predicts (a description; :func:`judge_report` rescores the judged law with its
    baselines only). ``linear`` (fitted whenever there is a task loss) relates forgetting to the task loss
    at the same checkpoint, which extrapolates nothing, so it uses every point with ``t > 0``. ``shifts``
    fixes the shift ``B`` of the shifted laws per target (default: fitted); ``laws`` chooses among
    :data:`LAWS`.
    """
    if not {"P", "t"} <= set(points.columns):
        raise ScalingError("points need columns 'P' and 't'")
    laws = check_laws(laws)
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
    comparison: dict[str, dict[str, dict[str, float]]] = {}
    heldout: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]] = {}
    for target in targets:
        tr = train[train[target].notna()]
        te = test[test[target].notna()]
        shift = (shifts or {}).get(target)
        got: dict[str, Fit | None] = {}
        for law in laws:
            got[law] = _try(_fit_one, notes, f"{target}/{law}", law, tr, target, shift)
        every = pts[pts[target].notna() & pts["task_loss"].notna()] if "task_loss" in pts.columns else pts[:0]
        if len(every) >= 3:
            got["linear"] = _try(_fit_one, notes, f"{target}/linear", "linear", every, target, None)
            if got["linear"] is not None:
                got["linear"].meta["points"] = "every point with t > 0 (none held out)"
        law_preds: dict[str, np.ndarray] = {}
        for name, f in got.items():
            if f is None:
                continue
            if len(te) and name != "linear":
                pred = f.predict(te["P"], te["t"])
                f.heldout = prediction_errors(te[target].to_numpy(), pred)
                law_preds[name] = np.asarray(pred, float)
            fits.setdefault(target, {})[name] = f
        if len(te) and law_preds:
            base = trivial_extrapolations(tr, te, target, holdout)
            comparison[target] = heldout_comparison(te[target].to_numpy(), {**law_preds, **base})
            heldout[target] = (te[target].to_numpy(float), {**law_preds, **base})
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
                           notes=notes, heldout_comparison=comparison,
                           fit_data={"points": pts, "mask": mask, "shifts": dict(shifts or {}), "heldout": heldout})
    report.extrapolation = extrapolation_grid(report, pts, extrapolate_t, extrapolate_P)
    return report


def fit_scaling_by_task(points: pd.DataFrame, **kwargs: Any) -> ScalingReport:
    """:func:`fit_scaling` on all points (the pooled report) and, when the points hold several tasks, on
    each task's own points (``report.by_task``): the laws are laws of one fine-tuning task, so a pooled fit
    over tasks that forget by different amounts is a description, the per-task fits the test."""
    report = fit_scaling(points, **kwargs)
    if "task" in points.columns and points["task"].nunique() > 1:
        for task, g in points.groupby("task", sort=True):
            try:
                report.by_task[str(task)] = fit_scaling(g.reset_index(drop=True), **kwargs)
            except ScalingError as exc:
                report.notes.append(f"task {task}: {exc}")
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
                for name in ("shifted", "increasing"):
                    if name in fits:
                        row[f"{target}_{name}"] = float(fits[name].predict(P, t))
            out.append(row)
    return out


# --------------------------------------------------------------------------- run-level intervals
def _run_labels(pts: pd.DataFrame) -> pd.Series:
    """One label per point naming its run (the curve along ``t``): the unit the jackknife leaves out."""
    keys = _groups(pts, "t")
    return pts[keys].astype(str).agg("/".join, axis=1)


def run_jackknife(report: ScalingReport, target: str, name: str, level: float = 0.95) -> dict[str, Any]:
    """Leave-one-run-out jackknife of one fit's parameters, kept in ``fit.jackknife`` (computed once).

    The checkpoints of one run share that run's noise, so least-squares intervals that treat them as
    independent are too narrow; here the run (all its checkpoints) is the unit. Each run is left out in
    turn and the fit redone on the rest (same points otherwise, same shift); with ``n`` runs and refit
    estimates ``theta_i``, ``SE = sqrt((n - 1) / n * sum (theta_i - mean)^2)`` and the CI is
    ``theta +- t(0.975, n - 1) * SE`` around the full fit's ``theta``. A refit that fails, fewer than
    :data:`MIN_JACKKNIFE_RUNS` runs, or an SE that is not positive and finite leaves the CI undefined (NaN),
    with ``reason``.
    """
    fit = report.fits.get(target, {}).get(name)
    if fit is None:
        return {"method": JACKKNIFE_CI, "n_runs": 0, "stderr": {}, "ci95": {}, "reason": f"no {name} fit of {target}"}
    if fit.jackknife:
        return fit.jackknife
    names = [k for k in fit.stderr if k in fit.params and not (k == "B" and fit.meta.get("shift_fixed"))]
    out: dict[str, Any] = {"method": JACKKNIFE_CI, "n_runs": 0, "dof": 0, "stderr": {k: math.nan for k in names},
                           "ci95": {k: (math.nan, math.nan) for k in names}, "estimates": {}, "reason": None}
    pts = _fit_points(report, target, name)
    labels = _run_labels(pts) if pts is not None and len(pts) else None
    units = sorted(set(labels)) if labels is not None else []
    n = len(units)
    out["n_runs"], out["dof"] = n, max(n - 1, 0)
    if pts is None:
        out["reason"] = "the points of the fit are not at hand"
    elif n < MIN_JACKKNIFE_RUNS:
        out["reason"] = f"{n} runs; the jackknife needs {MIN_JACKKNIFE_RUNS}"
    else:
        shift = report.fit_data.get("shifts", {}).get(target)
        for unit in units:
            try:
                refit = _fit_one(name, pts[(labels != unit).to_numpy()], target, shift)
            except ScalingError as exc:
                out["reason"] = f"the refit without run {unit} failed: {exc}"
                break
            values = {k: float(refit.params[k]) for k in names}
            if not all(math.isfinite(v) for v in values.values()):
                out["reason"] = f"the refit without run {unit} gave non-finite parameters"
                break
            out["estimates"][unit] = values
        if out["reason"] is None:
            q = float(stats.t.ppf(0.5 + level / 2, n - 1))
            for k in names:
                theta = np.array([out["estimates"][u][k] for u in units])
                se = math.sqrt((n - 1) / n * float(np.sum((theta - theta.mean()) ** 2)))
                out["stderr"][k] = se
                if _usable_se(se):
                    out["ci95"][k] = (fit.params[k] - q * se, fit.params[k] + q * se)
            flat = [k for k in names if not _usable_se(out["stderr"][k])]
            if flat:
                out["reason"] = f"jackknife standard error of {', '.join(flat)} is not positive"
    fit.jackknife = out
    return out


def cochran_q(estimates: Sequence[float], stderr: Sequence[float]) -> dict[str, float]:
    """Cochran's Q test that estimates with standard errors ``stderr`` share one value: ``Q = sum w_i
    (theta_i - pooled)^2`` with ``w_i = 1/se_i^2`` and the inverse-variance ``pooled`` estimate, its p-value
    on chi-squared with ``k - 1`` degrees of freedom, and ``I2 = max(0, (Q - (k - 1)) / Q)`` (the share of
    the spread beyond chance). NaN with fewer than two estimates."""
    theta, se = np.asarray(estimates, float), np.asarray(stderr, float)
    k = len(theta)
    if k < 2:
        return {"k": k, "pooled": math.nan, "pooled_se": math.nan, "Q": math.nan, "df": max(k - 1, 0),
                "p": math.nan, "I2": math.nan}
    w = 1.0 / se ** 2
    pooled = float(np.sum(w * theta) / np.sum(w))
    q = float(np.sum(w * (theta - pooled) ** 2))
    df = k - 1
    return {"k": k, "pooled": pooled, "pooled_se": float(math.sqrt(1.0 / np.sum(w))), "Q": q, "df": df,
            "p": float(stats.chi2.sf(q, df)), "I2": max(0.0, (q - df) / q) if q > 0 else 0.0}


def exponent_agreement(reports: Mapping[str, ScalingReport | None], *, target: str, law: str) -> dict[str, Any]:
    """Whether the per-task exponents of ``law`` agree (a description, not a criterion): per task, alpha and
    beta with their jackknife SEs and CIs (:func:`run_jackknife`; the least-squares ones beside them), and
    per exponent :func:`cochran_q` over the tasks whose jackknife SE is positive and finite and whose
    estimate is not held on a bound of the ``increasing`` law (``meta['at_bound']``: a constrained value
    has no sampling error to weigh); the others are listed in ``excluded``."""
    per_task: dict[str, Any] = {}
    for task, r in reports.items():
        fit = None if r is None else r.fits.get(target, {}).get(law)
        if fit is None:
            per_task[task] = None
            continue
        jk = run_jackknife(r, target, law)
        at_bound = fit.meta.get("at_bound", [])
        per_task[task] = {p: {"estimate": fit.params[p], "se": jk["stderr"].get(p, math.nan), "at_bound": p in at_bound,
                              "ci95": list(jk["ci95"].get(p, (math.nan, math.nan))),
                              "se_least_squares": fit.stderr.get(p, math.nan),
                              "ci95_least_squares": list(fit.ci95.get(p, (math.nan, math.nan)))}
                          for p in ("alpha", "beta")}
    out: dict[str, Any] = {"descriptive": True, "target": target, "law": law, "se": JACKKNIFE_CI,
                           "per_task": per_task}
    for p in ("alpha", "beta"):
        used = {t: v[p] for t, v in per_task.items()
                if v is not None and not v[p]["at_bound"] and _usable_se(v[p]["se"])
                and math.isfinite(v[p]["estimate"])}
        out[p] = {**cochran_q([v["estimate"] for v in used.values()], [v["se"] for v in used.values()]),
                  "tasks": list(used), "excluded": [t for t in per_task if t not in used]}
    return out


# --------------------------------------------------------------------------- fixed criteria
def _excludes_zero(ci: tuple[float, float] | None) -> bool:
    return ci is not None and all(math.isfinite(v) for v in ci) and (ci[0] > 0 or ci[1] < 0)


def _decision_ci(report: ScalingReport, target: str, name: str, fit: Fit, param: str,
                 decision_ci: DecisionCI) -> tuple[tuple[float, float] | None, str | None]:
    """The interval a criterion decides on, or ``None`` and why it is undefined (a failed refit, a standard
    error that is not positive and finite): an undefined interval never counts as excluding 0."""
    if decision_ci == "least_squares":
        se, ci, what, why = fit.stderr.get(param), fit.ci95.get(param), "least-squares", None
    else:
        jk = run_jackknife(report, target, name)
        se, ci, what, why = jk["stderr"].get(param), jk["ci95"].get(param), "jackknife", jk.get("reason")
    if ci is None or not _usable_se(se) or not all(math.isfinite(v) for v in ci):
        return None, f"{name} {param}: {what} CI undefined ({why or f'standard error {se}'})"
    return (float(ci[0]), float(ci[1])), None


def _fmt(ci: tuple[float, float]) -> str:
    return f"[{ci[0]:.3g}, {ci[1]:.3g}]"


def judge_report(report: ScalingReport | None, *, target: str, law: str, baselines: Sequence[str] = BASELINES,
                 exponent_ci: bool = True, negative_slope: bool = True,
                 decision_ci: DecisionCI = "jackknife") -> dict[str, Any]:
    """The criteria on one report (one task): ``extrapolates`` — the law's held-out RMSE is below every
    listed trivial rule's, on the held-out points that the law and those rules all predict (other laws
    play no part); ``grows`` — the fitted law rises in P and in t (``A*alpha > 0`` and ``A*beta > 0``;
    with ``exponent_ci``, both exponents' 95% CIs exclude 0); ``inverse_linear`` — the slope of forgetting
    on the task loss has a 95% CI below 0 (checked when ``negative_slope``). The CIs decided on are
    ``decision_ci``'s: by default the leave-one-run-out jackknife's (:func:`run_jackknife`), since a run's
    checkpoints are not independent. A task whose law fit failed (``report`` None, or no fit of ``law``)
    meets no criterion; a criterion that cannot be evaluated (no held-out point, an undefined CI) is
    False, with a reason. ``heldout_rmse`` records the RMSEs ``extrapolates`` was decided on."""
    names = ["extrapolates", "grows"] + (["inverse_linear"] if negative_slope else [])
    out: dict[str, Any] = {"reasons": [], **{n: False for n in names}}
    fit = None if report is None else report.fits.get(target, {}).get(law)
    if fit is None:
        out["reasons"].append("no fit of this task" if report is None else f"no {law} fit of {target}")
        return out
    held = report.fit_data.get("heldout", {}).get(target)
    if held is not None:
        y, preds = held
        comp = heldout_comparison(y, {k: preds[k] for k in dict.fromkeys([law, *baselines]) if k in preds})
    else:
        comp = {k: v for k, v in report.heldout_comparison.get(target, {}).items() if k in (law, *baselines)}
    rmse = {k: v.get("rmse", math.nan) for k, v in comp.items()}
    ok = law in rmse and math.isfinite(rmse[law]) and all(
        b in rmse and math.isfinite(rmse[b]) and rmse[law] < rmse[b] for b in baselines)
    if not ok:
        out["reasons"].append("held-out RMSE " + ", ".join(f"{k} {rmse.get(k, math.nan):.4g}"
                                                           for k in [law, *baselines]))
    out["extrapolates"] = bool(ok)
    out["heldout_rmse"] = rmse
    out["heldout_n"] = int(next(iter(comp.values()))["n"]) if comp else 0
    intervals: dict[str, Any] = {}
    a, al, be = fit.params["A"], fit.params["alpha"], fit.params["beta"]
    grows = a * al > 0 and a * be > 0
    if not grows:
        out["reasons"].append(f"A={a:.3g}, alpha={al:.3g}, beta={be:.3g}: not rising in both P and t")
    if exponent_ci:
        for param in ("alpha", "beta"):
            ci, why = _decision_ci(report, target, law, fit, param, decision_ci)
            intervals[param] = ci
            if why is not None:
                out["reasons"].append(why)
            elif not _excludes_zero(ci):
                out["reasons"].append(f"{param} 95% CI {_fmt(ci)} includes 0")
            grows = grows and _excludes_zero(ci)
    out["grows"] = bool(grows)
    if negative_slope:
        lin = report.fits.get(target, {}).get("linear")
        neg = False
        if lin is None:
            out["reasons"].append("no linear fit")
        else:
            ci, why = _decision_ci(report, target, "linear", lin, "c", decision_ci)
            intervals["c"] = ci
            neg = ci is not None and ci[1] < 0
            if why is not None:
                out["reasons"].append(why)
            elif not neg:
                out["reasons"].append(f"slope c 95% CI {_fmt(ci)} not below 0")
        out["inverse_linear"] = bool(neg)
    out["ci_used"] = CI_LABELS[decision_ci]
    out["intervals"] = intervals
    return out


def judge_laws(reports: Mapping[str, ScalingReport | None], *, target: str, law: str,
               baselines: Sequence[str] = BASELINES, exponent_ci: bool = True, negative_slope: bool = True,
               min_tasks: int = 1, decision_ci: DecisionCI = "jackknife") -> dict[str, Any]:
    """:func:`judge_report` on each task's report (``None``: a task whose fit failed, meeting nothing); a
    criterion holds when it holds on at least ``min_tasks`` tasks, and ``supported`` when every criterion
    holds. ``exponent_agreement`` (:func:`exponent_agreement`) describes whether the tasks' exponents
    agree; it is not a criterion."""
    per = {task: judge_report(r, target=target, law=law, baselines=baselines, exponent_ci=exponent_ci,
                              negative_slope=negative_slope, decision_ci=decision_ci) for task, r in reports.items()}
    names = ["extrapolates", "grows"] + (["inverse_linear"] if negative_slope else [])
    counts = {n: sum(bool(v[n]) for v in per.values()) for n in names}
    holds = {n: counts[n] >= min_tasks for n in names}
    return {"target": target, "law": law, "baselines": list(baselines), "min_tasks": min_tasks,
            "n_tasks": len(per), "tasks_meeting": counts, "holds": holds,
            "supported": bool(per) and all(holds.values()), "ci_used": CI_LABELS[decision_ci], "per_task": per,
            "exponent_agreement": exponent_agreement(reports, target=target, law=law)}
