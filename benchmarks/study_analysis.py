"""The pre-registered analyses C1-C8 of a replication study (configs/studies/<model>.yaml), from its sweeps.

    FORGETSCOPE_NO_PROGRESS=1 python benchmarks/study_analysis.py configs/studies/smollm2.yaml

Reads OUTPUT/sweep and OUTPUT/null_sweep (whatever runs they hold; ``complete`` in the output says whether
every planned run is in) and writes OUTPUT/analysis/claims.json with, on the human-written (lm) columns and
the task rows only (format-only rows excluded from every claim about tasks):

* C1-C3: R²(k) in both metrics against 100 within-row shuffles, the interaction's seed-pair reproducibility
  and its R²(k) (forgetscope.analysis.marginals); the variance split and the source-category share beside;
* C4: the format-only share (forgetscope.analysis.format_control) and the noise-matched format contrast;
* C5: the effect-matched null contrast (and the determinism check of the repeated runs);
* C6: forgetting against learning over tasks, Holm over all tasks / instruction tasks, left one task out;
* C7: task-grouped completion (5 folds, 30 probes x 10 draws) against additive, Holm over the three
  completion predictors, with pooled and per-task coverage of the 90 % normalized intervals;
* C8: sharpness against mean F over tasks (Holm over the two measures) and beyond learning; on the
  controlled tasks also beyond the format-only row's mean F (secondary);
* damage: the pilot's criteria applied to the study's runs (forgetscope.analysis.regime.regime_verdict);
* earlier_study_r2: R²(k), k = 1..5, of the earlier study's matrix (same model) in both metrics.
A part whose inputs are missing records why instead of a result. Figures beside it: r2_vs_shuffles.png (C1-C2)
and learning.png (C6).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from forgetscope.store.layout import StudyLayout

os.environ.setdefault("FORGETSCOPE_NO_PROGRESS", "1")

MEASURES = ["sharpness_random_mean", "sharpness_sam_rise"]
COMPLETION = ["lowrank", "knn", "knn-baseline"]
EARLIER = Path("benchmarks/results/replication")  # the earlier studies' sweeps, replication_<study>/sweep


def _part(out: dict, name: str, fn, skip: list[str] = ()) -> None:
    """Run one analysis; a missing input (a ForgetscopeError) is recorded as the reason instead."""
    from forgetscope.errors import ForgetscopeError

    if name in skip:
        out[name] = {"not_computed": "left out (--skip)"}
        return
    t0 = time.perf_counter()
    try:
        out[name] = fn()
    except ForgetscopeError as exc:
        out[name] = {"not_computed": str(exc)}
    print(f"{name}: {time.perf_counter() - t0:.0f}s", flush=True)


def completion(tasks) -> dict:
    from forgetscope.predict import evaluate
    from forgetscope.predict.conformal import task_coverage

    result = evaluate(tasks, ["additive", *COMPLETION], probe=[30], draws=10, coverage=0.9,
                      interval="normalized")
    tests = result.task_tests(against="additive", predictors=COMPLETION)  # Holm over these three only
    summary = result.summary()
    cover = {}
    for name, rows in result.tasks.groupby("predictor", sort=False):
        cover[str(name)] = task_coverage(rows.set_index("task")["coverage"].to_dict(), 0.9)
    return {"protocol": "5 task-grouped folds, 30 random probes, 10 draws, seed 0",
            "summary": json.loads(summary.to_json(orient="records")),
            "tests_against_additive": json.loads(tests.to_json(orient="records")), "coverage_per_task": cover}


def flatness(sweep: Path, per_task, fmt_means) -> dict:
    from forgetscope.analysis.study_claims import flatness_tests
    from forgetscope.experiments.sharpness import sharpness_table

    table, _ = sharpness_table(sweep, "lm")
    table = table[table["task"].isin(per_task.index)]  # the task runs; format-only runs are no task
    by_task = table.groupby("task")[MEASURES].mean().join(per_task[["mean_f", "learning"]], how="inner")
    out = {"primary": flatness_tests(by_task, MEASURES, covariates=["learning"])}
    controlled = by_task.join(fmt_means.rename("format_mean_f"), how="inner")
    if len(controlled) >= 5:
        out["with_format_covariate"] = flatness_tests(controlled, MEASURES, covariates=["learning", "format_mean_f"])
    return out


def figures(layout: StudyLayout, marginals, per_task) -> None:
    """r2_vs_shuffles.png (C1-C2: F's R²(k) against its within-row shuffles) and learning.png (C6: each task's
    mean F against how much it learned), beside claims.json."""
    from forgetscope.analysis import plots

    if marginals is not None and marginals.permutation is not None:
        plots.write_r2_against_shuffles(marginals.permutation, marginals.interaction, layout.r2_vs_shuffles)
    if len(per_task):
        fig = plots.learning_scatter(per_task["learning"].to_numpy(float), per_task["mean_f"].to_numpy(float),
                                     [str(t) for t in per_task.index])
        plots.save_figure(fig, layout.learning)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study", type=Path)
    ap.add_argument("--shuffles", type=int, default=100)
    ap.add_argument("--skip", nargs="*", default=[], help="parts left out (e.g. completion), recorded as such")
    args = ap.parse_args()
    import numpy as np
    import pandas as pd

    from forgetscope.analysis.format_control import format_only_share
    from forgetscope.analysis.marginals import marginal_analysis
    from forgetscope.analysis.regime import regime_verdict
    from forgetscope.analysis.study_claims import (
        effect_null_contrast,
        format_specificity,
        learning_claim,
        per_task_table,
    )
    from forgetscope.errors import DataError
    from forgetscope.experiments.study import chosen_regime, load_study, study_configs
    from forgetscope.models import load_tokenizer, resolve_model
    from forgetscope.predict.binary import binary_forgetting
    from forgetscope.store import SweepStore

    study, pilot = load_study(args.study)
    name, train = chosen_regime(pilot)
    configs = study_configs(study, pilot, train)
    full = SweepStore(configs["sweep"].output).load_matrix()
    lm = full.select_kind("lm")
    tasks = lm.without_controls()
    planned = sum(len(t.seeds or configs["sweep"].seed_list) for t in configs["sweep"].tasks)
    out: dict = {"study": str(args.study), "regime": name, "n_runs": int(full.shape[0]), "n_planned": planned,
                 "complete": int(full.shape[0]) == planned, "n_task_runs": int(tasks.shape[0]),
                 "n_examples_lm": int(lm.shape[1])}
    kept: dict = {}  # the objects the figures are drawn from

    def marginals() -> dict:
        kept["marginals"] = marginal_analysis(tasks, max_rank=5, runs=tasks.runs, n_shuffles=args.shuffles)
        return kept["marginals"].to_dict()

    _part(out, "marginals", marginals)
    per_task = per_task_table(lm)
    out["per_task"] = json.loads(per_task.reset_index().to_json(orient="records"))

    def fmt() -> dict:
        share = format_only_share(lm)
        return {"share": {"interaction_share": share.interaction_share,
                          "interaction_share_all": share.interaction_share_all,
                          "per_task": json.loads(share.table().to_json(orient="records"))},
                "specificity": format_specificity(lm)}

    _part(out, "format_control", fmt)
    null_dir = configs.get("null_sweep")
    if null_dir is not None and SweepStore(null_dir.output).exists():
        null_lm = SweepStore(null_dir.output).load_matrix().select_kind("lm")
        _part(out, "effect_null", lambda: effect_null_contrast(null_lm, lm))
    else:
        out["effect_null"] = {"not_computed": "the null sweep has not run yet"}
    _part(out, "learning", lambda: learning_claim(per_task))
    _part(out, "completion", lambda: completion(tasks), args.skip)
    controls = lm.select_rows(lm.control_mask())  # mean F of each controlled task's format-only runs
    fmt_by_task = pd.Series(np.nanmean(controls.values, axis=1) if controls.shape[0] else [], dtype=float,
                            index=controls.runs["control_of"].astype(str) if controls.shape[0] else None)
    fmt_by_task = fmt_by_task.groupby(level=0).mean()
    _part(out, "flatness", lambda: flatness(configs["sweep"].output, per_task, fmt_by_task))

    def damage() -> dict:
        try:
            binary = binary_forgetting(full.without_controls())
        except DataError:
            binary = None
        uniform = math.log(len(load_tokenizer(resolve_model(pilot.model))))
        v = regime_verdict(tasks, pilot.criteria, uniform_loss=uniform, binary=binary)
        v.pop("per_run")
        return v

    _part(out, "damage", damage)

    def earlier() -> dict:
        from forgetscope.analysis.lowrank import rank_r2_metrics

        path = EARLIER / f"replication_{args.study.stem}" / "sweep"
        if not SweepStore(path).exists():
            raise DataError(f"no earlier study at {path}")
        before = SweepStore(path).load_matrix().select_kind("lm").without_controls()
        r2 = rank_r2_metrics(np.asarray(before.values, dtype=float), 5)
        return {"sweep": str(path), "shape": list(before.shape), **{m: v.tolist() for m, v in r2.items()}}

    _part(out, "earlier_study_r2", earlier)
    layout = study.layout
    layout.analysis.mkdir(parents=True, exist_ok=True)
    layout.claims.write_text(json.dumps(out, indent=1, default=float) + "\n")
    figures(layout, kept.get("marginals"), per_task)
    print(f"wrote {layout.claims} and its figures")


if __name__ == "__main__":
    main()
