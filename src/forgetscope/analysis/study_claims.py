"""The tests of a replication study's claims that go beyond one matrix's marginals.

Tasks are the unit throughout: a task's seeds are averaged (or paired, for reproducibility), never counted
as independent observations.

- :func:`format_specificity` — do a task's two seeds agree with each other more than with its format-only
  control's runs? (noise-matched pairs, paired over tasks)
- :func:`learning_correlation_loto` — forgetting against learning over tasks, and again with each task left
  out, so a correlation carried by one task is seen as such.
- :func:`effect_null_contrast` — does a run's row agree with its own seed replica better than with a random
  update scaled to forget as much? (paired over tasks)
- :func:`flatness_tests` — sharpness against forgetting over tasks, alone and beyond how much each task
  learned (rank regression with a bootstrap interval over tasks).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from forgetscope.analysis.lowrank import additive_fit_unchecked
from forgetscope.analysis.marginals import _corr
from forgetscope.analysis.stats import holm, paired_run_test
from forgetscope.errors import DataError


def _runs_of(matrix: Any) -> pd.DataFrame:
    if matrix.runs is None or not {"task", "seed"} <= set(matrix.runs.columns):
        raise DataError("this matrix has no runs table with task and seed")
    return matrix.runs.reset_index(drop=True)


def per_task_table(matrix: Any) -> pd.DataFrame:
    """One row per task (control rows excluded): mean F over its runs' rows, learning (drop of held-out task
    loss) and family, each averaged over the task's seeds; ``n_seeds`` counts them."""
    tasks = matrix.without_controls()
    runs = _runs_of(tasks)
    with np.errstate(all="ignore"):
        mean_f = np.nanmean(tasks.values, axis=1)
    frame = pd.DataFrame({"task": runs["task"].astype(str), "mean_f": mean_f,
                          "learning": pd.to_numeric(runs["task_loss_before"], errors="coerce")
                          - pd.to_numeric(runs["task_loss_after"], errors="coerce"),
                          "family": runs["family"] if "family" in runs else None})
    return frame.groupby("task", sort=False).agg(mean_f=("mean_f", "mean"), learning=("learning", "mean"),
                                                 family=("family", "first"), n_seeds=("mean_f", "size"))


def format_specificity(matrix: Any) -> dict[str, Any]:
    """C4: for each task with a format-only control, both with two seeds, do the task's two seeds agree with
    each other more than each agrees with a format-only run? Paired over tasks.

    Rows are compared in interaction space: the task rows double-centred among themselves, each control row
    centred with the task rows' column effects and its own mean (as in
    :func:`forgetscope.analysis.format_control.format_only_share`). ``r_seed`` is the correlation of the task's
    two seed rows; ``r_format`` the mean of the two cross pairs (seed a with control seed a, seed b with
    control seed b), pairs with the same noise structure. If a task's reproducible pattern were only the
    format shift, the two would be equal in expectation; a residual after regressing on a noisy control
    would not be (its leftover format signal is shared by both seeds), which is why this contrast is used.

    Beside the decision (``shown``, as pre-registered), two readings guard against a noisy control:
    ``r_format_disattenuated`` = r_format / sqrt(r_seed · r_format_seeds) per task (near 1 when the task's
    reproducible pattern is the format's) and ``control_noisier_than_tasks`` (the control's seeds agree less
    than the task's: then a low r_format partly reflects the control's noise). Seeds are paired by value;
    ``n_tasks`` counts the tasks the test used.
    """
    runs_all = _runs_of(matrix)
    is_control = matrix.control_mask()
    if not is_control.any():
        raise DataError("this matrix has no format-only rows; add a task with control: shuffled_responses")
    tasks = matrix.select_rows(~is_control)
    runs = tasks.runs.reset_index(drop=True)
    X = np.asarray(tasks.values, dtype=float)
    fit = additive_fit_unchecked(X)  # one centring for both: the task rows' own fit and column effects
    E = X - fit.predict()
    controls = runs_all[is_control].reset_index(drop=True)
    C = np.asarray(matrix.values, dtype=float)[is_control]
    of = controls["control_of"].astype(str) if "control_of" in controls else pd.Series([""] * len(controls))
    out, unpaired = [], []
    for task, idx in runs.groupby("task", sort=False).groups.items():
        mine = {int(runs.loc[i, "seed"]): i for i in idx}
        ctl = {int(controls.loc[i, "seed"]): i for i in controls.index[of == str(task)]}
        common = sorted(set(mine) & set(ctl))  # pairs on equal seeds: the same noise structure
        if len(common) < 2:
            if ctl:
                unpaired.append(str(task))
            continue
        sa, sb = common[:2]
        G = [C[ctl[s]] - np.nanmean(C[ctl[s]]) - fit.b for s in (sa, sb)]
        a, b = mine[sa], mine[sb]
        r_seed, r_fmt_seeds = _corr(E[a], E[b]), _corr(G[0], G[1])
        r_format = 0.5 * (_corr(E[a], G[0]) + _corr(E[b], G[1]))
        with np.errstate(all="ignore"):
            disattenuated = r_format / np.sqrt(r_seed * r_fmt_seeds) if r_seed * r_fmt_seeds > 0 else np.nan
        out.append({"task": str(task), "seeds": [sa, sb], "r_seed": r_seed, "r_format": r_format,
                    "r_format_seeds": r_fmt_seeds, "r_format_disattenuated": float(disattenuated)})
    table = pd.DataFrame(out, columns=["task", "seeds", "r_seed", "r_format", "r_format_seeds",
                                       "r_format_disattenuated"])
    if len(table) < 3:
        raise DataError(f"the format contrast needs at least 3 tasks with two seeds and two control seeds, "
                        f"got {len(table)}")
    test = paired_run_test(table["r_seed"].to_numpy(float), table["r_format"].to_numpy(float))
    both = table[["r_seed", "r_format"]].notna().all(axis=1)
    return {"n_tasks": int(test["n"]), "tasks_without_a_correlation": table.loc[~both, "task"].tolist(),
            "tasks_without_matching_seeds": unpaired,
            "mean_r_seed": float(table["r_seed"].mean()), "mean_r_format": float(table["r_format"].mean()),
            "mean_r_format_seeds": float(table["r_format_seeds"].mean()),
            "mean_r_format_disattenuated": float(table["r_format_disattenuated"].mean()),
            "control_noisier_than_tasks": bool(table["r_format_seeds"].mean() < table["r_seed"].mean()),
            "test": test, "shown": bool(test["ci_low"] > 0), "per_task": table.to_dict("records")}


def learning_correlation_loto(table: pd.DataFrame) -> dict[str, Any]:
    """Pearson and Spearman of ``mean_f`` against ``learning`` over the rows (tasks) of ``table``, and both
    again with each task left out (their ranges, largest p, and the most influential task). Tasks whose mean
    F or learning is not finite are left out and named (``dropped``), so ``n_tasks`` is the count used."""
    finite = np.isfinite(table["learning"].to_numpy(float)) & np.isfinite(table["mean_f"].to_numpy(float))
    dropped = [str(t) for t in table.index[~finite]]
    table = table[finite]
    if len(table) < 4:
        raise DataError(f"a leave-one-task-out correlation needs at least 4 tasks, got {len(table)}")
    r, p = stats.pearsonr(table["learning"], table["mean_f"])
    rho, p_rho = stats.spearmanr(table["learning"], table["mean_f"])
    loo = {}
    for task in table.index:
        rest = table.drop(index=task)
        r1, p1 = stats.pearsonr(rest["learning"], rest["mean_f"])
        s1, ps1 = stats.spearmanr(rest["learning"], rest["mean_f"])
        loo[str(task)] = {"pearson": float(r1), "p": float(p1), "spearman": float(s1), "spearman_p": float(ps1)}
    same_sign = all(np.sign(v["pearson"]) == np.sign(r) for v in loo.values())
    return {"n_tasks": len(table), "dropped": dropped, "pearson": float(r), "p": float(p), "spearman": float(rho),
            "spearman_p": float(p_rho), "loo_min": min(v["pearson"] for v in loo.values()),
            "loo_max": max(v["pearson"] for v in loo.values()), "loo_max_p": max(v["p"] for v in loo.values()),
            "loo_same_sign": bool(same_sign),
            "loo_spearman_min": min(v["spearman"] for v in loo.values()),
            "loo_spearman_max": max(v["spearman"] for v in loo.values()),
            "loo_spearman_max_p": max(v["spearman_p"] for v in loo.values()),
            "most_influential": max(loo, key=lambda t: abs(loo[t]["pearson"] - r)), "leave_one_out": loo}


def learning_claim(per_task: pd.DataFrame, *, alpha: float = 0.05) -> dict[str, Any]:
    """C6, "forgetting grows with learning": the correlation over every task and over the instruction family;
    Holm over the two sets on Pearson's p (a set whose p is not finite counts as p = 1, so the family stays
    two). The claim holds in a set when Pearson is positive, its Holm-adjusted p < alpha, and every
    leave-one-task-out Pearson stays positive with p < alpha. Spearman, and Spearman left one task out,
    are reported beside it (not adjusted)."""
    sets = {"all_tasks": per_task, "instruction": per_task[per_task["family"] == "instruction"]}
    out = {name: learning_correlation_loto(t) for name, t in sets.items()}
    raw = [out[k]["p"] if np.isfinite(out[k]["p"]) else 1.0 for k in out]
    for (name, res), p_adj in zip(out.items(), holm(raw), strict=True):
        res["p_holm"] = float(p_adj)
        res["p_holm_of"] = "pearson, over the two sets"
        res["holds"] = bool(res["pearson"] > 0 and p_adj < alpha and res["loo_same_sign"]
                            and res["loo_max_p"] < alpha)
    return out


def effect_null_contrast(null_sweep: Any, main: Any) -> dict[str, Any]:
    """C5 on an effect-matched null sweep: for each of its runs, the correlation of the run's row with its own
    task's other-seed row in ``main`` against its correlation with its null row; paired over tasks.

    Also reports how closely the null matched the run's effect (mean null F / mean run F on every column,
    and on the subset the match was made on, with the count of runs not matched within tolerance) and the
    largest difference between the null sweep's task rows and ``main``'s rows of the same run (the
    two sweeps train the same runs: a determinism check)."""
    if null_sweep.null is None:
        raise DataError("the null sweep has no null-control rows")
    nruns, mruns = _runs_of(null_sweep), _runs_of(main.without_controls())
    mvals = main.without_controls().values
    key = {(str(t), int(s)): i for i, (t, s) in enumerate(zip(mruns["task"], mruns["seed"], strict=True))}
    if list(null_sweep.col_names) != list(main.col_names):
        raise DataError("the null sweep and the main sweep measure different upstream examples")
    rows, same = [], []
    for i, (task, seed) in enumerate(zip(nruns["task"], nruns["seed"], strict=True)):
        x, n = null_sweep.values[i], null_sweep.null[i]
        if (str(task), int(seed)) in key:
            same.append(float(np.nanmax(np.abs(x - mvals[key[(str(task), int(seed))]]))))
        other = [j for (t, s), j in key.items() if t == str(task) and s != int(seed)]
        if not other:
            continue
        with np.errstate(all="ignore"):
            ratio = float(np.nanmean(n) / np.nanmean(x))
            subset = (float(nruns.loc[i, "null_match_value"]) / float(nruns.loc[i, "null_match_target"])
                      if {"null_match_value", "null_match_target"} <= set(nruns) else float("nan"))
        rows.append({"task": str(task), "seed": int(seed), "r_seed_replica": _corr(x, mvals[other[0]]),
                     "r_effect_null": _corr(x, n), "effect_ratio": ratio, "effect_ratio_subset": subset,
                     "null_match_status": nruns.loc[i, "null_match_status"] if "null_match_status" in nruns
                     else None})
    table = pd.DataFrame(rows)
    if len(table) < 3:
        raise DataError(f"the effect-null contrast needs at least 3 tasks with a seed replica, got {len(table)}")
    test = paired_run_test(table["r_seed_replica"].to_numpy(float), table["r_effect_null"].to_numpy(float))
    status = table["null_match_status"]
    return {"n_tasks": int(test["n"]), "mean_r_seed_replica": float(table["r_seed_replica"].mean()),
            "mean_r_effect_null": float(table["r_effect_null"].mean()), "test": test,
            "shown": bool(test["p_wilcoxon"] < 0.05 and test["mean_diff"] > 0),
            "decision": "two-sided Wilcoxon p < 0.05 with the seed replica agreeing better on average",
            "effect_ratio_median": float(table["effect_ratio"].median()),
            "effect_ratio_subset_median": float(table["effect_ratio_subset"].median()),
            "n_not_matched": int((status.notna() & (status != "matched")).sum()),
            "determinism_max_abs_diff": max(same) if same else None, "per_task": table.to_dict("records")}


def _rank_ols_coef(y: np.ndarray, X: np.ndarray) -> float:
    """The first regressor's coefficient of an OLS of rank(y) on the ranks of the columns of X (+ intercept)."""
    ry = stats.rankdata(y)
    RX = np.column_stack([np.ones(len(y))] + [stats.rankdata(c) for c in X.T])
    coef, *_ = np.linalg.lstsq(RX, ry, rcond=None)
    return float(coef[1])


def flatness_tests(table: pd.DataFrame, measures: list[str], *, covariates: list[str] = ("learning",),
                   n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """C8 on a per-task table (``mean_f``, each measure, each covariate): Spearman of each measure with mean F
    (Holm over the measures) and the measure's rank-regression coefficient beyond the covariates, with a
    95 % bootstrap interval over tasks (resampling tasks)."""
    covariates = list(covariates)
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {"n_tasks": len(table), "covariates": covariates, "measures": {}}
    ps = []
    for m in measures:
        ok = table[[m, "mean_f", *covariates]].dropna()
        if len(ok) < 5:
            raise DataError(f"flatness: {m} is known for {len(ok)} tasks; at least 5 are needed")
        rho, p = stats.spearmanr(ok[m], ok["mean_f"])
        y, X = ok["mean_f"].to_numpy(float), ok[[m, *covariates]].to_numpy(float)
        coef = _rank_ols_coef(y, X)
        boots = []
        for _ in range(n_boot):
            idx = rng.integers(0, len(ok), len(ok))
            if np.ptp(X[idx, 0]) == 0:
                continue
            boots.append(_rank_ols_coef(y[idx], X[idx]))
        lo, hi = np.quantile(boots, [0.025, 0.975])
        out["measures"][m] = {"n_tasks": len(ok), "spearman": float(rho), "p": float(p),
                              "partial_coef": coef, "partial_ci": [float(lo), float(hi)],
                              "beyond_covariates": bool(lo > 0 or hi < 0)}
        ps.append(float(p))
    for m, p_adj in zip(measures, holm(ps), strict=True):
        out["measures"][m]["p_holm"] = float(p_adj)
    return out


__all__ = ["effect_null_contrast", "flatness_tests", "learning_claim", "learning_correlation_loto",
           "format_specificity", "per_task_table"]
