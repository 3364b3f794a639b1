"""Do 90 % split-conformal intervals hold per task, or only pooled? Absolute against normalized intervals.

Runs the task-grouped prediction protocol of ``forgetscope predict`` (:func:`forgetscope.predict.evaluate`:
5 folds over tasks, 30 random probes, 10 draws) once per interval kind (``absolute``: one half-width;
``normalized``: scaled by each row's probe-residual RMS, :mod:`forgetscope.predict.conformal`) and reports
for every predictor:

* the pooled coverage of the unprobed entries — marginal, over tasks and examples together;
* per-task coverage: each test task's entries (its seeds' rows) over the 10 draws, summarised by the
  minimum, the 10th percentile and the share of tasks below 80 % (coverage − 0.1), and the same summary
  computed within each draw and averaged over draws (what ``predict`` prints);
* the mean full width of the intervals (nats).

    python benchmarks/conformal_per_task.py benchmarks/results/replication/replication_smollm2/sweep

Writes ``benchmarks/results/conformal_per_task.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from forgetscope.importing import load_any
from forgetscope.predict import evaluate
from forgetscope.predict.conformal import INTERVALS, UNDER_MARGIN, task_coverage

OUT = Path(__file__).parent / "results" / "conformal_per_task.json"
PREDICTORS = ("additive", "knn", "knn-baseline", "lowrank")


def measure(matrix, interval: str, *, probe: int, draws: int, coverage: float) -> dict:
    """Per predictor: pooled and per-task coverage and width of ``interval`` under the protocol."""
    t0 = time.perf_counter()
    result = evaluate(matrix, list(PREDICTORS), probe=[probe], draws=draws, coverage=coverage, interval=interval)
    summary = result.summary().set_index("predictor")
    out = {}
    for name, tasks in result.tasks.groupby("predictor", sort=False):
        per_task = tasks.set_index("task")["coverage"].sort_values()
        row = summary.loc[name]
        pooled_tasks = task_coverage(per_task.to_dict(), coverage)
        out[name] = {
            "coverage_marginal": float(row["coverage"]), "coverage_marginal_sd": float(row["coverage_sd"]),
            "task_min": pooled_tasks["task_min"], "task_p10": pooled_tasks["task_p10"],
            "tasks_below": pooled_tasks["tasks_below"], "n_tasks": pooled_tasks["n_tasks"],
            "tasks_below_names": [str(t) for t, c in per_task.items() if c < coverage - UNDER_MARGIN],
            "per_draw_task_min": float(row["coverage_task_min"]), "per_draw_task_p10": float(row["coverage_task_p10"]),
            "per_draw_tasks_below": float(row["coverage_tasks_below"]),
            "interval_width": float(row["interval_width"]), "rmse": float(row["rmse"]),
            "per_task": {str(t): round(float(c), 4) for t, c in per_task.items()},
        }
    return {"predictors": out, "wall_s": round(time.perf_counter() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep", type=Path, help="a sweep directory (or a copy of one under benchmarks/results)")
    ap.add_argument("--kind", default="lm")
    ap.add_argument("--probe", type=int, default=30)
    ap.add_argument("--draws", type=int, default=10)
    ap.add_argument("--coverage", type=float, default=0.9)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    t0 = time.perf_counter()
    sweep = load_any(args.sweep)
    matrix = sweep.select_kind(args.kind)
    results = {kind: measure(matrix, kind, probe=args.probe, draws=args.draws, coverage=args.coverage)
               for kind in INTERVALS}
    manifest = json.loads((args.sweep / "manifest.json").read_text()) if (args.sweep / "manifest.json").exists() \
        else {}
    tasks = int(np.unique(matrix.runs["task"]).size) if matrix.runs is not None else matrix.shape[0]
    out = {"sweep": str(args.sweep), "kind": args.kind, "shape": list(matrix.shape), "tasks": tasks,
           "model": (manifest.get("model") or {}).get("gguf_file") or (manifest.get("model") or {}).get("location"),
           "protocol": f"{args.probe} random probes, {args.draws} draws, 5-fold task-grouped CV, seed 0",
           "nominal_coverage": args.coverage,
           "per_task_definition": "each test task's unprobed entries (all its rows) inside the interval over every "
                                  "draw; task_p10 = 10th percentile (linear interpolation); tasks_below = share of "
                                  f"tasks below coverage - {UNDER_MARGIN:g}; per_draw_* = the same within each draw, "
                                  "averaged over draws",
           "intervals": results,
           "versions": {"python": platform.python_version(), "numpy": np.__version__},
           "machine": {"cpus": os.cpu_count(), "machine": platform.machine()},
           "wall_s": round(time.perf_counter() - t0, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    for kind, res in results.items():
        for name, r in res["predictors"].items():
            print(f"{kind:10s} {name:12s} marginal {r['coverage_marginal']:.3f}  per task min {r['task_min']:.3f} "
                  f"p10 {r['task_p10']:.3f} below {r['tasks_below']:.2f}  width {r['interval_width']:.3f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
