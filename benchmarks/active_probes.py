"""Active against random probe selection, under the task-grouped prediction protocol.

For each probe size (default 10, 30 and 60 examples; sizes not below N are skipped) and each
predictor, :func:`forgetscope.predict.evaluate` runs task-grouped cross-validation twice: once with
``random`` probes (``draws`` seeded draws, one probe set shared by every test row of a draw) and once
with ``active`` probes (the highest-leverage columns of each fold's known rows; the draws differ only
in how ties are broken, so their sd is ~0). The score is the RMSE pooled over the held-out rows'
unprobed entries, with Pearson, F1 (``F > τ``, τ the sweep's seed-noise margin) and precision@10, as
mean ± sd over draws; ``active − random`` is reported per predictor and size.

    python benchmarks/active_probes.py --sweep sweeps/demo                  # the demo sweep
    python benchmarks/active_probes.py --sweep sweeps/demo --kind instruction
    python benchmarks/active_probes.py --synthetic --out /tmp/active.json   # a synthetic matrix

Writes ``benchmarks/results/active_probes.json`` by default (``--out`` elsewhere).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from forgetscope.predict import evaluate
from forgetscope.store import ForgettingMatrix

OUT = Path(__file__).parent / "results" / "active_probes.json"
PREDICTORS = ("additive", "knn", "knn-baseline", "lowrank")
METRICS = ("rmse", "pearson", "f1", "precision@10", "rmse_ratio_vs_additive")


def synthetic(tasks: int = 20, seeds: int = 2, n: int = 400, rank: int = 3, noise: float = 0.2,
              seed: int = 0) -> ForgettingMatrix:
    """Tasks x seeds rows of ``0.3 + a_i + b_j + U V`` plus seed noise; a runs table with task and seed."""
    rng = np.random.default_rng(seed)
    b = 0.4 * rng.standard_normal(n)
    V = rng.standard_normal((rank, n)) * np.linspace(1.0, 0.4, rank)[:, None]
    rows, runs = [], []
    for t in range(tasks):
        a, u = 0.3 * rng.standard_normal(), rng.standard_normal(rank)
        for s in range(seeds):
            rows.append(0.3 + a + b + u @ V + noise * rng.standard_normal(n))
            runs.append({"run_id": f"task{t}__plain__s{s}", "task": f"task{t}", "strategy": "plain", "seed": s})
    table = pd.DataFrame(runs)
    return ForgettingMatrix(np.array(rows), table["run_id"].tolist(), [f"ex{j}" for j in range(n)], runs=table)


def load(sweep: str, kind: str | None) -> ForgettingMatrix:
    from forgetscope.predict.evaluate import prediction_matrix
    from forgetscope.store import load_forgetting

    return prediction_matrix(load_forgetting(sweep), kind=kind)


def compare(matrix: ForgettingMatrix, *, probes: Sequence[int] = (10, 30, 60), predictors: Sequence[str] = PREDICTORS,
            draws: int = 10, folds: int = 5, seed: int = 0) -> dict[str, Any]:
    """Both probe methods on ``matrix``: per-method summaries, the protocol, and active − random."""
    n = matrix.shape[1]
    sizes = [int(p) for p in probes if 0 < int(p) < n]
    if not sizes:
        raise SystemExit(f"no probe size below N = {n}: {list(probes)}")
    summaries, protocol = {}, None
    for method in ("random", "active"):
        t0 = time.perf_counter()
        # the trivial baselines ignore (column-mean) or only average (probe-mean) the probe: not compared here
        result = evaluate(matrix, list(predictors), probe=sizes, draws=draws, n_folds=folds, seed=seed,
                          probe_method=method, baselines=False)
        summary = result.summary()
        summary["wall_s"] = time.perf_counter() - t0
        summaries[method] = summary
        protocol = result.protocol
    cols = [c for m in METRICS for c in (m, f"{m}_sd")]
    records = []
    for method, summary in summaries.items():
        for row in summary.to_dict("records"):
            records.append({"probe_method": method, "predictor": row["predictor"], "probe_size": int(row["probe_size"]),
                            **{c: _num(row.get(c)) for c in cols}, "draws": int(row["draws"])})
    rand = summaries["random"].set_index(["predictor", "probe_size"])
    act = summaries["active"].set_index(["predictor", "probe_size"])
    diff = [{"predictor": p, "probe_size": int(s),
             **{f"{m}_active_minus_random": _num(act.loc[(p, s), m] - rand.loc[(p, s), m]) for m in METRICS[:4]}}
            for p, s in rand.index]
    assert protocol is not None
    return {"protocol": {k: protocol[k] for k in ("splits", "draws", "tau", "tau_source", "n_rows", "n_examples")},
            "probe_sizes": sizes, "results": records, "active_minus_random": diff,
            "wall_s": {m: float(s["wall_s"].iloc[0]) for m, s in summaries.items()}}


def _num(x: Any) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def markdown(out: dict[str, Any]) -> str:
    lines = ["| predictor | probe | RMSE random | RMSE active | F1 random | F1 active |", "|---|---|---|---|---|---|"]
    res = {(r["probe_method"], r["predictor"], r["probe_size"]): r for r in out["results"]}

    def pm(r: dict[str, Any], m: str) -> str:
        v, sd = r[m], r[f"{m}_sd"]
        return "–" if v is None else f"{v:.4f}" + ("" if sd is None else f" ± {sd:.4f}")

    for (method, pred, size), r in res.items():
        if method != "random":
            continue
        a = res[("active", pred, size)]
        lines.append(f"| {pred} | {size} | {pm(r, 'rmse')} | {pm(a, 'rmse')} | {pm(r, 'f1')} | {pm(a, 'f1')} |")
    return "\n".join(lines)


def _commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--sweep", help="a forgetscope sweep directory")
    src.add_argument("--synthetic", action="store_true", help="a synthetic tasks x seeds matrix instead")
    ap.add_argument("--kind", default=None, help="sweep: examples of one kind (lm or instruction; default all)")
    ap.add_argument("--probes", type=int, nargs="+", default=[10, 30, 60])
    ap.add_argument("--predictors", nargs="+", default=list(PREDICTORS))
    ap.add_argument("--draws", type=int, default=10)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tasks", type=int, default=20, help="synthetic: tasks")
    ap.add_argument("--n", type=int, default=400, help="synthetic: upstream examples")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    start = time.perf_counter()
    if args.synthetic:
        matrix = synthetic(tasks=args.tasks, n=args.n, seed=args.seed)
        data = {"source": "synthetic", "model": "0.3 + a_i + b_j + U V (rank 3) + seed noise 0.2",
                "tasks": args.tasks, "seeds_per_task": 2}
    else:
        matrix = load(args.sweep, args.kind)
        data = {"source": str(args.sweep), "kind": args.kind or "all"}
    out = {"data": {**data, "shape": list(matrix.shape)},
           **compare(matrix, probes=args.probes, predictors=args.predictors, draws=args.draws, folds=args.folds,
                     seed=args.seed),
           "versions": {"python": platform.python_version(), "numpy": np.__version__, "forgetscope_commit": _commit()},
           "machine": {"cpus": os.cpu_count(), "machine": platform.machine()},
           "runtime_s": round(time.perf_counter() - start, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(markdown(out))
    print(f"wrote {args.out} ({out['runtime_s']} s)")
    return out


if __name__ == "__main__":
    main()
