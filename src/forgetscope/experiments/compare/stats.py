"""A comparison's statistics: per-run metrics, run- and task-level paired tests with Holm, one summary row
per strategy (the protocol: :mod:`forgetscope.experiments.compare`).

**The primary contrast** (``compare.primary: {a, b}``, fixed in the config before the runs) is one row of
``tests.csv``: held-out forgetting of ``a`` minus ``b`` at the task level (each task's seeds averaged
first, then a paired test over tasks: mean difference with its bootstrap CI, d_z with its CI, t and
Wilcoxon p), with ``role`` = ``primary`` and no multiplicity adjustment (its ``_holm`` columns repeat the
raw p). Every other row is ``secondary``; Holm's adjustment runs over the secondary rows of one level (the
family), as it does over every row when no primary contrast is configured.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from forgetscope.analysis.stats import holm, mean_ci, paired_test, paired_tests
from forgetscope.experiments.compare.config import CompareConfig, StrategySpec
from forgetscope.measure.forgetting import forgotten_share

METRICS = ("forgetting_heldout", "task_loss_after", "task_accuracy_after")


def kind_columns(matrix, kind: str, ids: list[str] | None = None) -> np.ndarray:
    """Indices of the columns of ``matrix`` among ``ids`` (their order; every column by default) whose
    upstream example is of ``kind`` (``all``: every one)."""
    keep = set(matrix.select_kind(kind).col_names)
    col = {c: j for j, c in enumerate(matrix.col_names)}
    return np.array([col[i] for i in (matrix.col_names if ids is None else ids) if i in keep], dtype=np.intp)


def forgetting_metrics(row: np.ndarray, held: np.ndarray, untrained: np.ndarray, threshold: float,
                       suffix: str = "") -> dict[str, float]:
    """A run's forgetting metrics over the columns ``held`` (held-out) and ``untrained`` (every column;
    replayed examples are NaN in the row), named with ``suffix``."""
    import warnings

    h = row[held]
    with warnings.catch_warnings():  # no finite entry (e.g. a kind without held-out examples): NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        return {f"forgetting_heldout{suffix}": float(np.nanmean(h)),
                f"forgotten_share_heldout{suffix}": forgotten_share(h, threshold),
                f"forgetting_all_untrained{suffix}": float(np.nanmean(row[untrained]))}


def _setting(spec: StrategySpec) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(spec.options.items()) if not isinstance(v, (dict, list)))


def summarize(matrix, cfg: CompareConfig, plain: dict, specs: dict, held_ids: list[str]) -> dict[str, Any]:
    """Per-run metrics, run-level paired tests (Holm-adjusted) and one summary row per strategy.

    The forgetting metrics average the columns of ``compare.kind`` (default: the matrix's default kind);
    with several kinds, per-kind copies of them are added to the per-run table as a description.
    """
    runs = matrix.runs.set_index("run_id")
    row_of = {r: i for i, r in enumerate(matrix.row_names)}
    kind = cfg.compare.kind or matrix.default_kind()
    held, untrained = kind_columns(matrix, kind, held_ids), kind_columns(matrix, kind)
    present = list(matrix.kind_counts())
    extras = {k: (kind_columns(matrix, k, held_ids), kind_columns(matrix, k)) for k in present} \
        if len(present) > 1 else {}
    thr = cfg.compare.threshold
    by_label = {s.display: s for s in cfg.strategies}
    labels = ["plain"] + list(by_label)
    keyed: dict[tuple[str, str, int], Any] = {("plain", t, s): sp for (t, s), sp in plain.items()}
    keyed.update(specs)
    per_run = []
    for (label, t, s), spec in keyed.items():
        r = matrix.values[row_of[spec.run_id]]
        rec = runs.loc[spec.run_id]
        raw = rec.get("strategy_info")
        info = json.loads(raw) if isinstance(raw, str) else (raw if isinstance(raw, dict) else {})
        acc = rec.get("task_accuracy_after", np.nan)
        per_kind = {name: v for k, (hk, uk) in extras.items()
                    for name, v in forgetting_metrics(r, hk, uk, thr, f"_{k}").items()}
        headline = forgetting_metrics(r, held, untrained, thr)
        if label != "plain" and not cfg.compare.measure_pool:  # the pool was not measured: no such mean
            for d in (headline, per_kind):
                for name in [n for n in d if n.startswith("forgetting_all_untrained")]:
                    d[name] = float("nan")
        per_run.append({"strategy": label, "task": t, "seed": s, "run_id": spec.run_id,
                        **headline, **per_kind,
                        "task_loss_before": float(rec["task_loss_before"]),
                        "task_loss_after": float(rec["task_loss_after"]),
                        "task_accuracy_after": float(acc) if acc is not None else float("nan"),
                        "train_wall_s": float(rec["train_wall_s"]),
                        "upstream_evaluations": float(info.get("upstream_evaluations", 0) or 0),
                        "strategy_info": json.dumps(info, sort_keys=True, default=str)})
    per_run_df = pd.DataFrame(per_run)
    tests = run_level_tests(per_run_df, matrix, keyed, held, cfg)

    rows = []
    for i, label in enumerate(labels):
        sub = per_run_df[per_run_df["strategy"] == label]
        lo, hi = mean_ci(sub["forgetting_heldout"], n_resamples=cfg.compare.bootstrap, seed=i)
        spec = by_label.get(label)
        infos = [json.loads(x) for x in sub["strategy_info"]]
        rhos = {x["rho"] for x in infos if "rho" in x}
        predictors = {x["predictor"] for x in infos if "predictor" in x}
        probe_steps = {x["probe_step"] for x in infos if x.get("probe_step") is not None}
        row = {"strategy": label, "kind": "baseline" if spec is None else spec.kind,
               "setting": "" if spec is None else _setting(spec), "runs": len(sub),
               "predictor": predictors.pop() if len(predictors) == 1 else "",
               "rho": rhos.pop() if len(rhos) == 1 else float("nan"),
               # the online arm's probe: after this many of the run's steps
               "probe_step": probe_steps.pop() if len(probe_steps) == 1 else float("nan"), "upstream_kind": kind,
               "forgetting_heldout": float(sub["forgetting_heldout"].mean()),
               "forgetting_ci_low": lo, "forgetting_ci_high": hi,
               "forgotten_share_heldout": float(sub["forgotten_share_heldout"].mean()),
               "forgetting_all_untrained": float(sub["forgetting_all_untrained"].mean()),
               "task_loss_after": float(sub["task_loss_after"].mean()),
               "task_loss_sd": float(sub["task_loss_after"].std(ddof=1)) if len(sub) > 1 else float("nan"),
               "task_accuracy_after": float(sub["task_accuracy_after"].mean()),
               "train_wall_s": float(sub["train_wall_s"].mean()),
               "upstream_evaluations": float(sub["upstream_evaluations"].mean())}
        if label != "plain":
            for metric, prefix in (("forgetting_heldout", ""), ("task_loss_after", "task_loss_"),
                                   ("task_accuracy_after", "task_accuracy_")):
                at = contrast_rows(tests, label, "plain", metric)
                t = tests[at & (tests["level"] == "run")]
                if t.empty:
                    continue
                t = t.iloc[0]
                tt = tests[at & (tests["level"] == "task")].iloc[0]
                row[f"{prefix}n_tasks"] = tt["n_pairs"]
                for p in ("p_wilcoxon_holm", "p_t_holm"):
                    row[f"{prefix}task_{p}"] = tt[p]
                name = "forgetting" if metric == "forgetting_heldout" else metric.removesuffix("_after")
                row[f"diff_{name}"] = t["mean_diff"]
                row[f"{prefix}diff_ci_low"], row[f"{prefix}diff_ci_high"] = t["ci_low"], t["ci_high"]
                row[f"{prefix}dz"] = t["dz"]
                for p in ("p_wilcoxon", "p_t", "p_wilcoxon_holm", "p_t_holm"):
                    row[f"{prefix}{p}"] = t[p]
                if metric == "forgetting_heldout":
                    row["n_pairs"] = t["n_pairs"]
                    row["note"] = t["note"]
                    row["p_examples_descriptive"] = t["p_examples_descriptive"]
                    row["n_example_pairs"] = t["n_example_pairs"]
        rows.append(row)
    return {"summary": pd.DataFrame(rows), "tests": tests, "per_run": per_run_df, "primary_contrast": primary_row(tests)}


def run_level_tests(per_run: pd.DataFrame, matrix, keyed: dict, held: np.ndarray, cfg: CompareConfig) -> pd.DataFrame:
    """Every strategy vs plain and every direct pair, on every metric, paired over task x seed runs
    (``level`` run) and over tasks with their seeds averaged (``level`` task: the independent units);
    Holm's adjustment across all rows of one level (:func:`forgetscope.analysis.stats.paired_tests`).
    Run-level forgetting rows also carry the example-level Wilcoxon p, a description only."""
    row_of = {r: i for i, r in enumerate(matrix.row_names)}
    comparisons = [(s.display, "plain") for s in cfg.strategies] + cfg.direct_pairs()
    primary = cfg.compare.primary
    if primary is not None and (primary.a, primary.b) not in comparisons:
        comparisons.append((primary.a, primary.b))
    tests = paired_tests(per_run, comparisons, list(METRICS), n_resamples=cfg.compare.bootstrap)
    tests = assign_roles(tests, None if primary is None else (primary.a, primary.b))
    tests["p_examples_descriptive"] = float("nan")
    tests["n_example_pairs"] = 0
    indexed = per_run.set_index(["strategy", "task", "seed"])
    for k, (arm, base) in enumerate(comparisons):
        at = contrast_rows(tests, arm, base, "forgetting_heldout", "run")
        a_runs = per_run[per_run["strategy"] == arm][["task", "seed"]]
        pairs = [(t, s) for t, s in zip(a_runs["task"], a_runs["seed"]) if (base, t, s) in indexed.index]
        if pairs:
            ea = [matrix.values[row_of[keyed[(arm, t, s)].run_id]][held] for t, s in pairs]
            eb = [matrix.values[row_of[keyed[(base, t, s)].run_id]][held] for t, s in pairs]
            ex = paired_test(np.concatenate(ea), np.concatenate(eb), n_boot=200, seed=k)
            tests.loc[at, "p_examples_descriptive"] = ex["p_wilcoxon"]
            tests.loc[at, "n_example_pairs"] = ex["n"]
    return tests


def contrast_rows(tests: pd.DataFrame, a: str, b: str, metric: str, level: str | None = None) -> pd.Series:
    """Which rows of ``tests`` (a comparison's tests table) test arm ``a`` against ``b`` on ``metric`` (at
    ``level``, ``run`` or ``task``; default: both)."""
    at = (tests["strategy"] == a) & (tests["baseline"] == b) & (tests["metric"] == metric)
    return at if level is None else at & (tests["level"] == level)


def assign_roles(tests: pd.DataFrame, primary: tuple[str, str] | None) -> pd.DataFrame:
    """``role`` per row of ``tests``: the primary contrast (``primary`` = (a, b): held-out forgetting, task
    level) or secondary; Holm's adjustment recomputed over the secondary rows of each level, the primary
    row left unadjusted (see the module docstring)."""
    tests = tests.copy()
    tests["role"] = "secondary"
    if primary is None or tests.empty:
        return tests
    a, b = primary
    at = contrast_rows(tests, a, b, "forgetting_heldout", "task").to_numpy()
    tests.loc[at, "role"] = "primary"
    for col in ("p_wilcoxon", "p_t"):
        tests.loc[at, f"{col}_holm"] = tests.loc[at, col]
        for level in tests["level"].unique():
            family = ((tests["level"] == level).to_numpy()) & ~at
            if family.any():
                tests.loc[family, f"{col}_holm"] = holm(tests.loc[family, col].to_numpy())
    return tests


def primary_row(tests: pd.DataFrame) -> dict[str, Any] | None:
    """The primary contrast's row of ``tests`` as a mapping (None when none is configured)."""
    row = tests[tests["role"] == "primary"] if "role" in tests else tests.iloc[0:0]
    return None if row.empty else row.iloc[0].to_dict()


def summary_kind(summary: pd.DataFrame) -> str:
    """The upstream kind a summary's forgetting averages (``all`` for summaries written before kinds)."""
    return str(summary["upstream_kind"].iloc[0]) if "upstream_kind" in summary else "all"
