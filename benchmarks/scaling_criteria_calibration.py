"""How often the scaling study's jackknife criteria fire when their effect is absent, on the study's own noise.

    python benchmarks/scaling_criteria_calibration.py [--jobs 2]
    # reads  benchmarks/results/scaling_study/sweep/scaling/points.parquet
    # writes benchmarks/results/scaling_study/criteria_calibration.json

Fixed before the study's fit existed; it calibrates the criteria, it does not change them (the verdict in
fit.json stands as pre-registered, and this file is reported beside it).

`grows` needs both exponents' leave-one-run-out jackknife 95% CIs to exclude 0 and `inverse_linear` needs
the slope's CI below 0. With 5 runs per task the jackknife has 4 degrees of freedom and a fit that is not
linear in its parameters, so its nominal one-sided 2.5% rate need not hold. Per task, on the `increasing`
law fitted to that task's points as the study fits them (held-out rule `largest_t`, target `ce_forgetting`):

* residuals: observed minus the fitted law, at every checkpoint with t > 0 (held-out ones included), kept
  as one block per run;
* a draw: the law's prediction under a scenario plus the run blocks permuted across runs, each block's sign
  flipped with probability 1/2 (a wild cluster bootstrap: within-run correlation kept, runs exchangeable);
* scenarios: `null_alpha` (the fitted law with alpha = 0: no growth in P), `null_beta` (beta = 0: no growth
  in t), `fitted_law` (the law as fitted: the power of `grows` where the law is true); `null_slope`
  (ce_forgetting = its mean plus the linear fit's run blocks, the task loss kept: no relation) and
  `fitted_slope` (the linear fit plus its run blocks: the power of `inverse_linear`);
* per draw the study's own code refits and judges it (`fit_scaling`, `judge_report`, jackknife CIs); recorded:
  whether alpha's and beta's CIs exclude 0 on the side of growth, whether `grows` holds, and whether the
  slope's CI lies below 0.

Reported: the counts per task, and each rate pooled over tasks with its Wilson 95% interval, against the
nominal 2.5% for a one-sided exclusion under a null. DRAWS draws per task and scenario, seed SEED: 240 draws
per scenario over four tasks, so a rate near 2.5% is known to about +-2 points (2.5% and 5% are hard to tell
apart). The residuals are used as they are, not inflated for the leverage of the fit they come from, so the
simulated noise is somewhat smaller than the true noise: the power scenarios are optimistic, and the null
rates approximate. A task whose own fit fails, or whose runs do not share one grid of checkpoints, is not
calibrated (named in the output); a draw whose fit fails counts as meeting no criterion, as in the study.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from forgetscope.analysis.scaling import ScalingError, fit_linear, fit_scaling, judge_report, run_jackknife

ROOT = Path(__file__).resolve().parent
POINTS = ROOT / "results" / "scaling_study" / "sweep" / "scaling" / "points.parquet"
OUT = ROOT / "results" / "scaling_study" / "criteria_calibration.json"
TARGET, LAW, HOLDOUT = "ce_forgetting", "increasing", "largest_t"
DRAWS, SEED, NOMINAL = 60, 0, 0.025
SCENARIOS = ("null_alpha", "null_beta", "fitted_law", "null_slope", "fitted_slope")


def wilson(k: int, n: int, z: float = 1.959964) -> list[float]:
    """Wilson score interval of a rate k / n."""
    if n == 0:
        return [math.nan, math.nan]
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(centre - half, 4), round(centre + half, 4)]


def run_blocks(pts: pd.DataFrame, resid: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Row indices and residuals of each run, ordered by t (every run of a task shares the t grid)."""
    idx, res = [], []
    for _, g in pts.groupby("run", sort=True):
        order = g.sort_values("t").index.to_numpy()
        idx.append(order)
        res.append(resid[order])
    return idx, res


def wild_blocks(idx: list[np.ndarray], res: list[np.ndarray], rng: np.random.Generator, n: int) -> np.ndarray:
    """The run blocks permuted across runs, each with a random sign."""
    noise = np.zeros(n)
    for target_rows, source in zip(idx, rng.permutation(len(res))):
        noise[target_rows] = rng.choice([-1.0, 1.0]) * res[source]
    return noise


def judge(pts: pd.DataFrame, y: np.ndarray, slope: bool) -> dict[str, bool] | None:
    """The study's fit and criteria on one simulated task (None: the fit failed, meeting no criterion).

    A slope scenario fits only the linear relation and reads its jackknife CI, as `judge_report` does."""
    sim = pts.copy() if slope else pts.drop(columns="task_loss")  # the law's verdict does not use the task loss
    sim[TARGET] = y
    report = fit_scaling(sim, targets=[TARGET], holdout=HOLDOUT, laws=[] if slope else [LAW])
    if slope:
        ci = run_jackknife(report, TARGET, "linear")["ci95"].get("c", (math.nan, math.nan))
        return {"slope": bool(math.isfinite(ci[1]) and ci[1] < 0)}
    fit = report.fits.get(TARGET, {}).get(LAW)
    if fit is None:
        return None
    verdict = judge_report(report, target=TARGET, law=LAW, baselines=(), negative_slope=False)
    sign = math.copysign(1.0, fit.params["A"])
    ci = verdict["intervals"]
    side = {p: ci.get(p) is not None and (ci[p][0] > 0 if sign > 0 else ci[p][1] < 0) for p in ("alpha", "beta")}
    return {"alpha": side["alpha"], "beta": side["beta"], "grows": bool(verdict["grows"])}


def calibrate_task(pts: pd.DataFrame, draws: int, seed: int) -> dict[str, Any]:
    pts = pts[(pts["t"] > 0) & (pts["P"] > 0)].reset_index(drop=True)
    try:
        report = fit_scaling(pts, targets=[TARGET], holdout=HOLDOUT, laws=[LAW])
        lin = fit_linear(pts["task_loss"], pts[TARGET])
    except ScalingError as exc:
        return {"not_calibrated": str(exc)}
    law = report.fits.get(TARGET, {}).get(LAW)
    if law is None:
        return {"not_calibrated": f"no {LAW} fit: " + "; ".join(report.notes)}
    if pts.groupby("run")["t"].apply(lambda t: tuple(sorted(t))).nunique() != 1:
        return {"not_calibrated": "its runs do not share one grid of checkpoints"}
    y = pts[TARGET].to_numpy(float)
    idx, res = run_blocks(pts, y - law.predict(pts["P"], pts["t"]))
    lidx, lres = run_blocks(pts, y - lin.predict(x=pts["task_loss"]))
    P0, t0 = law.meta["P0"], law.meta["t0"]
    B, A, al, be = (law.params[k] for k in ("B", "A", "alpha", "beta"))
    P, t = pts["P"].to_numpy(float), pts["t"].to_numpy(float)
    means = {"null_alpha": B + A * (t / t0) ** be, "null_beta": B + A * (P / P0) ** al,
             "fitted_law": B + A * (P / P0) ** al * (t / t0) ** be, "null_slope": np.full(len(pts), y.mean()),
             "fitted_slope": lin.predict(x=pts["task_loss"])}
    counts: dict[str, Any] = {}
    for s, scenario in enumerate(SCENARIOS):
        rng = np.random.default_rng([seed, s])
        got = {"draws": 0, "failed": 0, "alpha": 0, "beta": 0, "grows": 0, "slope": 0}
        for _ in range(draws):
            slope = scenario.endswith("_slope")
            ysim = means[scenario] + wild_blocks(*((lidx, lres) if slope else (idx, res)), rng, len(pts))
            try:
                flags = judge(pts, ysim, slope=slope)
            except ScalingError:
                flags = None
            if flags is None:  # a failed fit meets no criterion, as in the study
                got["failed"] += 1
                flags = {}
            got["draws"] += 1
            for k in ("alpha", "beta", "grows", "slope"):
                got[k] += int(flags.get(k, False))
        counts[scenario] = got
    counts["fit"] = {"params": {k: float(v) for k, v in law.params.items()}, "P0": P0, "t0": t0}
    return counts


#: which count each scenario calibrates: the false-positive rate under a null, the power under the law
READ = {"null_alpha": ("alpha", "grows"), "null_beta": ("beta", "grows"), "fitted_law": ("alpha", "beta", "grows"),
        "null_slope": ("slope",), "fitted_slope": ("slope",)}


def summarise(per_task: dict[str, dict]) -> dict[str, dict]:
    pooled: dict[str, dict] = {}
    done = [c for c in per_task.values() if "not_calibrated" not in c]
    for scenario, keys in READ.items():
        n = sum(c[scenario]["draws"] for c in done)
        pooled[scenario] = {k: {"count": (k_ := sum(c[scenario][k] for c in done)), "n": n,
                                "rate": round(k_ / n, 4) if n else math.nan, "wilson95": wilson(k_, n)}
                            for k in keys}
        pooled[scenario]["failed_fits"] = sum(c[scenario]["failed"] for c in done)
    return pooled


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=Path, default=POINTS)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--draws", type=int, default=DRAWS)
    ap.add_argument("--jobs", type=int, default=1, help="tasks calibrated at once, one process each (the draws of "
                    "a task are seeded by the task, so the result does not depend on it)")
    args = ap.parse_args(argv)
    if not args.points.is_file():
        print(f"error: {args.points} does not exist; run the scaling study first", file=sys.stderr)
        return 2
    points = pd.read_parquet(args.points)
    if "task" not in points.columns:
        points = points.assign(task="task")
    t0 = time.perf_counter()
    groups = [(str(task), g.reset_index(drop=True)) for task, g in points.groupby("task", sort=True)]
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = [pool.submit(calibrate_task, g, args.draws, SEED + i) for i, (_, g) in enumerate(groups)]
        per_task = {task: f.result() for (task, _), f in zip(groups, futures)}
    out = {"points": str(args.points.relative_to(ROOT.parent)) if args.points.is_relative_to(ROOT.parent)
           else str(args.points), "target": TARGET, "law": LAW, "holdout": HOLDOUT, "draws_per_task": args.draws,
           "seed": SEED, "nominal_one_sided": NOMINAL, "resampling": "wild cluster bootstrap: run blocks of residuals "
           "permuted across runs, Rademacher sign per block", "per_task": per_task, "pooled": summarise(per_task),
           "wall_s": round(time.perf_counter() - t0, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out["pooled"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
