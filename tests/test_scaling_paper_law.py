"""The paper's law on the registered study's grid: points planted from a shifted power law in (P, t), and from
forgetting linear in the fine-tuning loss, are recovered by the fits the study runs, each true parameter inside
its 95% CI. The grid is the study's: LoRA ranks 1..16 (P exactly proportional to the rank), two seeds, five
checkpoints at S x [1/4, 1/2, 1, 2, 4] (a 16x span in t), the base model's t = 0 rows, and the last checkpoint of
every run held out (largest_t)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from forgetscope.analysis.scaling import fit_scaling

#: trainable LoRA parameters per unit of rank with every linear layer adapted in a 135M Llama-style model
#: (hidden 576, intermediate 1536, key/value 192, 30 layers); only proportionality to the rank matters here
P_PER_RANK = 305_280
S = 40
RANKS = (1, 2, 4, 8, 16)
STEPS = (S // 4, S // 2, S, 2 * S, 4 * S)
DRAWS = 30


def study_points() -> pd.DataFrame:
    """One task's rows as the scaling sweep writes them: run, seed, rank, P, t (t = 0: the base model)."""
    rows = [{"run": f"task__lora_r{r}__s{s}", "task": "task", "seed": s, "rank": r, "P": P_PER_RANK * r, "t": t}
            for s in (0, 1) for r in RANKS for t in (0, *STEPS)]
    return pd.DataFrame(rows)


def fitted_centre(points: pd.DataFrame) -> tuple[float, float]:
    """The geometric means of P and t over the points the largest_t rule leaves to fit: where the fitted
    ``A`` is the excess (see :func:`forgetscope.analysis.scaling.fit_shifted_power_law`)."""
    fitted = points[(points["t"] > 0) & (points["t"] < max(STEPS))]
    return float(np.exp(np.log(fitted["P"]).mean())), float(np.exp(np.log(fitted["t"]).mean()))


def planted(points: pd.DataFrame, reading: str, a: float, alpha: float, beta: float, B: float) -> tuple:
    """Forgetting from a shifted power law, and the (A, alpha, beta, B) of forgetscope's parameterisation
    that describe it. ``separate``: ``B + a P^alpha t^beta``; ``nested``: ``B + a (P^alpha t)^beta``, the same
    family with exponents ``alpha*beta`` on P and ``beta`` on t."""
    P, t = points["P"].to_numpy(float), points["t"].to_numpy(float)
    t = np.where(t > 0, t, 1.0)  # placeholder on the base model's rows, replaced by B below
    if reading == "separate":
        clean, e_p, e_t = B + a * P ** alpha * t ** beta, alpha, beta
    else:
        clean, e_p, e_t = B + a * (P ** alpha * t) ** beta, alpha * beta, beta
    clean = np.where(points["t"] > 0, clean, B)  # the base model's rows hold the shift (never fitted)
    P0, t0 = fitted_centre(points)
    return clean, {"A": a * P0 ** e_p * t0 ** e_t, "alpha": e_p, "beta": e_t, "B": B}


@pytest.mark.parametrize("reading, a, alpha, beta, B", [
    ("separate", 1e-3, 0.2, 0.5, 2.5),     # unbounded growth from the base model's entropy
    ("separate", -5.0, -0.3, -0.4, 3.0),   # growth that saturates at B
    ("nested", 1e-3, 0.5, 0.4, 2.5),       # (P^alpha t)^beta: alpha 0.2, beta 0.4 in forgetscope's terms
])
def test_shifted_law_recovered_on_the_study_grid(reading, a, alpha, beta, B):
    """Noise of 1% of the range: in the first draw every true parameter of both (P, t) laws lies in its 95%
    CI and the law predicts the held-out last checkpoints better than both trivial rules; over 30 draws each
    CI holds the truth in at least 25."""
    points = study_points()
    clean, truth = planted(points, reading, a, alpha, beta, B)
    covered = {(law, name): 0 for law in ("shifted", "increasing") for name in truth}
    for draw in range(DRAWS):
        noise = 0.01 * np.ptp(clean) * np.random.default_rng(draw).standard_normal(len(clean))
        y = np.where(points["t"] > 0, clean + noise, clean)
        rep = fit_scaling(points.assign(ce_forgetting=y), targets=["ce_forgetting"], holdout="largest_t",
                          laws=["shifted", "increasing"])
        assert rep.n_points == 50 and rep.n_heldout == 10
        for law in ("shifted", "increasing"):
            fit = rep.fits["ce_forgetting"][law]
            assert fit.n == 40
            inside = {name: fit.ci95[name][0] < value < fit.ci95[name][1] for name, value in truth.items()}
            if draw == 0:
                assert all(inside.values()), (law, fit.params, fit.ci95, truth)
            for name, ok in inside.items():
                covered[(law, name)] += ok
        if draw == 0:
            rmse = {k: v["rmse"] for k, v in rep.heldout_comparison["ce_forgetting"].items()}
            for law in ("shifted", "increasing"):
                assert rmse[law] < min(rmse["last_observed"], rmse["loglinear"]), rmse
    assert min(covered.values()) >= 25, covered


def test_linear_relation_recovered_on_the_study_grid():
    """Forgetting linear in the fine-tuning loss (slope -0.6), the loss itself falling as a power law in P and
    t: the fitted slope's 95% CI holds -0.6 in the first draw and in at least 25 of 30, lies below 0 in every
    draw, and the estimates centre on the truth."""
    points = study_points()
    P, t = points["P"].to_numpy(float), points["t"].to_numpy(float)
    P0, t0 = fitted_centre(points)
    slope, intercept = -0.6, 4.0
    clean_loss = np.where(t > 0, 1.0 + 1.5 * (P / P0) ** -0.1 * (np.where(t > 0, t, 1.0) / t0) ** -0.4, 3.0)
    covered, estimates = 0, []
    for draw in range(DRAWS):
        rng = np.random.default_rng(draw)
        loss = clean_loss + 0.01 * rng.standard_normal(len(t))
        forgetting = intercept + slope * loss + 0.01 * rng.standard_normal(len(t))
        rep = fit_scaling(points.assign(ce_forgetting=forgetting, task_loss=loss), targets=["ce_forgetting"],
                          holdout="largest_t", laws=["shifted"])
        lin = rep.fits["ce_forgetting"]["linear"]
        lo, hi = lin.ci95["c"]
        assert hi < 0 and lin.n == 50
        if draw == 0:
            assert lo < slope < hi, lin.ci95
        covered += lo < slope < hi
        estimates.append(lin.params["c"])
    assert covered >= 25
    assert np.median(estimates) == pytest.approx(slope, rel=0.05)
