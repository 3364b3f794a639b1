"""Does the automatic rank of ``lowrank`` do as well as the best fixed rank on tasks it has not seen?

The task-grouped prediction protocol (:func:`forgetscope.predict.evaluate`: 5 folds over tasks, 30
random probes, 10 draws) scores ``lowrank`` with its rank chosen by task-grouped cross-validation on each
fold's known rows (``rank=None``, the default) beside every fixed rank 1..R and ``additive`` (rank 0).
The fixed rank that is best *on the test folds* is an oracle choice no user has; the automatic rank
passes when its RMSE is within one standard deviation over draws of that oracle's, or below it.

    python benchmarks/rank_choice.py benchmarks/results/demo_human_upstream
    python benchmarks/rank_choice.py benchmarks/results/replication/replication_smollm2/sweep --out ...

Writes ``benchmarks/results/rank_choice/<name>.json`` (or ``--out``): the settings, per predictor the RMSE
(mean ± sd over draws) and its ratio to additive, and the verdict.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from forgetscope.importing import load_any
from forgetscope.predict import evaluate, get_predictor

OUT = Path(__file__).parent / "results" / "rank_choice"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep", type=Path, help="a sweep directory (or a copy of one under benchmarks/results)")
    ap.add_argument("--kind", default="lm")
    ap.add_argument("--max-rank", type=int, default=5)
    ap.add_argument("--probe", type=int, default=30)
    ap.add_argument("--draws", type=int, default=10)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    t0 = time.perf_counter()
    matrix = load_any(args.sweep).select_kind(args.kind)
    m = matrix.shape[0]
    top = max(1, min(args.max_rank, m - 2))
    predictors = {"additive": get_predictor("additive"), "lowrank auto": get_predictor("lowrank")}
    predictors.update({f"lowrank r={r}": get_predictor("lowrank", rank=r) for r in range(1, top + 1)})
    result = evaluate(matrix, predictors, probe=[args.probe], draws=args.draws, baselines=False, coverage=None)
    summary = result.summary().set_index("predictor")
    rows = {name: {"rmse": float(summary.loc[name, "rmse"]), "rmse_sd": float(summary.loc[name, "rmse_sd"]),
                   "rmse_ratio_vs_additive": float(summary.loc[name, "rmse_ratio_vs_additive"])}
            for name in predictors}
    fixed = {k: v for k, v in rows.items() if k.startswith("lowrank r=")}
    best = min(fixed, key=lambda k: fixed[k]["rmse"])
    auto = rows["lowrank auto"]
    verdict = "passes" if auto["rmse"] <= fixed[best]["rmse"] + fixed[best]["rmse_sd"] else "misses"
    out = {"sweep": str(args.sweep), "kind": args.kind, "shape": list(matrix.shape), "protocol": result.protocol,
           "predictors": rows, "best_fixed_rank": best, "auto_minus_best_fixed_rmse": auto["rmse"] - fixed[best]["rmse"],
           "verdict": f"the automatic rank {verdict} (within one sd over draws of the best fixed rank on the test folds)",
           "python": platform.python_version(), "wall_s": round(time.perf_counter() - t0, 1)}
    path = args.out or OUT / f"{args.sweep.name if args.sweep.name != 'sweep' else args.sweep.parent.name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, default=float))
    for name, r in rows.items():
        print(f"{name:16s} RMSE {r['rmse']:.4f} ± {r['rmse_sd']:.4f}  ({r['rmse_ratio_vs_additive']:.3f} x additive)")
    print(out["verdict"], f"(best fixed: {best}); wrote {path}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
