"""The committed studies judged by the pre-registered regime criteria, and every correlation left one task out.

    FORGETSCOPE_NO_PROGRESS=1 python benchmarks/replication_controls.py \
        [--out benchmarks/results/replication/controls.json]

For each study sweep under benchmarks/results/replication/: the damage criteria of configs/regimes/*.yaml
(forgetscope.analysis.regime.regime_verdict: learning, seed r, mean F against the base loss, the
uniform-guess loss log(vocabulary), instruction answers kept), and the correlation of forgetting with
learning over tasks (each task's seeds averaged; learning = drop of held-out task loss; mean F over the
human-written texts), overall and within the instruction family, with its leave-one-task-out range and the
task whose removal moves it most. Reads the sweeps only; writes one JSON file.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

os.environ.setdefault("FORGETSCOPE_NO_PROGRESS", "1")

STUDIES = {"smollm2": ("benchmarks/results/replication/replication_smollm2/sweep", "smollm2-135m-instruct"),
           "gemma3": ("benchmarks/results/replication/replication_gemma3/sweep", "gemma3-270m")}


def correlation_loto(table) -> dict:
    """Pearson r of mean F against learning over tasks, and the same with each task left out."""
    from scipy import stats

    r, p = stats.pearsonr(table["learning"], table["mean_f"])
    out = {"n_tasks": len(table), "pearson": float(r), "p": float(p), "leave_one_out": {}}
    for task in table.index:
        rest = table.drop(index=task)
        r1, p1 = stats.pearsonr(rest["learning"], rest["mean_f"])
        out["leave_one_out"][task] = {"pearson": float(r1), "p": float(p1)}
    loo = out["leave_one_out"]
    out["loo_min"] = min(v["pearson"] for v in loo.values())
    out["loo_max"] = max(v["pearson"] for v in loo.values())
    out["loo_max_p"] = max(v["p"] for v in loo.values())
    out["most_influential"] = min(loo, key=lambda t: loo[t]["pearson"]) if r > 0 else max(
        loo, key=lambda t: loo[t]["pearson"])
    return out


def study(sweep: str, model: str) -> dict:
    import numpy as np
    import pandas as pd

    from forgetscope.analysis.regime import regime_verdict
    from forgetscope.errors import DataError
    from forgetscope.experiments.regime_pilot import RegimeCriteria
    from forgetscope.models import load_tokenizer, resolve_model
    from forgetscope.predict.binary import binary_forgetting
    from forgetscope.store import SweepStore

    full = SweepStore(sweep).load_matrix()
    lm = full.select_kind("lm")
    try:
        binary = binary_forgetting(full)
    except DataError:
        binary = None
    uniform = math.log(len(load_tokenizer(resolve_model(model))))
    verdict = regime_verdict(lm, RegimeCriteria(), uniform_loss=uniform, binary=binary)
    per_run = verdict.pop("per_run")
    runs = lm.runs.reset_index(drop=True)
    per_task = pd.DataFrame({"task": runs["task"], "family": runs.get("family"),
                             "learning": runs["task_loss_before"] - runs["task_loss_after"],
                             "mean_f": np.nanmean(lm.values, axis=1)}).groupby("task").agg(
        family=("family", "first"), learning=("learning", "mean"), mean_f=("mean_f", "mean"))
    worst = per_run.sort_values("mean_loss_after").iloc[-1]
    return {"sweep": sweep, "model": model, "uniform_loss": uniform, "criteria": verdict["criteria"],
            "usable_by_preregistered_criteria": verdict["usable"],
            "worst_run": {"run_id": worst["run_id"], "mean_loss_after": float(worst["mean_loss_after"])},
            "forgetting_vs_learning": {
                "all_tasks": correlation_loto(per_task),
                "instruction": correlation_loto(per_task[per_task["family"] == "instruction"])}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/replication/controls.json"))
    args = ap.parse_args()
    out = {name: study(*where) for name, where in STUDIES.items()}
    args.out.write_text(json.dumps(out, indent=1, default=float) + "\n")
    for name, s in out.items():
        fl = s["forgetting_vs_learning"]
        print(f"{name}: usable {s['usable_by_preregistered_criteria']}; worst run {s['worst_run']}; "
              f"uniform {s['uniform_loss']:.2f}; r(all) {fl['all_tasks']['pearson']:+.2f} "
              f"[LOTO {fl['all_tasks']['loo_min']:+.2f}..{fl['all_tasks']['loo_max']:+.2f}]; r(instr) "
              f"{fl['instruction']['pearson']:+.2f} [LOTO {fl['instruction']['loo_min']:+.2f}.."
              f"{fl['instruction']['loo_max']:+.2f}, max p {fl['instruction']['loo_max_p']:.3f}, most "
              f"influential {fl['instruction']['most_influential']}]")


if __name__ == "__main__":
    main()
