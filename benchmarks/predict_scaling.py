"""Time fit + predict of every matrix-completion predictor on synthetic low-rank matrices.

Matrices: M known tasks x N examples, ``F = μ + a_i + b_j + U V + noise`` (rank 5, float32),
plus 20 new tasks whose rows are predicted from a 5% random probe set. For each (M, N, predictor)
the JSON records fit and predict seconds, peak-free wall time, and the RMSE on the new rows'
unprobed entries next to the noise level (a sanity check that speed did not cost accuracy).

    python benchmarks/predict_scaling.py                       # the full grid, M ∈ {50, 500}, N up to 10^6
    python benchmarks/predict_scaling.py --n 1000 10000 --m 50  # a quick subset

Run with 2 BLAS threads to match the target machine (OMP_NUM_THREADS=2).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from forgetscope.predict import get_predictor

PREDICTORS = {
    "additive": ("additive", {}),
    "knn": ("knn", {"k": 10}),
    "lowrank_svd": ("lowrank", {"rank": 5, "method": "svd"}),
    "lowrank_als": ("lowrank", {"rank": 5, "method": "als", "n_iter": 5}),
    "logistic": ("logistic", {"rank": 5}),
}
RANK, NOISE, NEW_ROWS, PROBE = 5, 0.3, 20, 0.05
OUT = Path(__file__).parent / "results" / "predict_scaling.json"


def synthetic(m: int, n: int, seed: int = 0) -> np.ndarray:
    """(m + NEW_ROWS) x n float32: additive + rank-5 interaction + Gaussian noise, built in place."""
    rng = np.random.default_rng(seed)
    rows = m + NEW_ROWS
    U = rng.standard_normal((rows, RANK), dtype=np.float32)
    V = rng.standard_normal((RANK, n), dtype=np.float32) * 0.3
    F = U @ V
    F += (0.2 * rng.standard_normal((rows, 1))).astype(np.float32)
    F += (0.3 * rng.standard_normal((1, n)) + 0.5).astype(np.float32)
    for i in range(rows):  # row by row: no second M x N temporary
        F[i] += NOISE * rng.standard_normal(n, dtype=np.float32)
    return F


def bench_one(F: np.ndarray, m: int, name: str, seed: int = 0) -> dict:
    kind, params = PREDICTORS[name]
    known, new = F[:m], F[m:]
    n = F.shape[1]
    probe = np.sort(np.random.default_rng(seed).choice(n, max(1, int(PROBE * n)), replace=False))
    predictor = get_predictor(kind, **params)
    t0 = time.perf_counter()
    predictor.fit(known)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    pred = predictor.predict_rows(probe, new[:, probe])
    predict_s = time.perf_counter() - t0
    rest = np.ones(n, bool)
    rest[probe] = False
    if predictor.output == "probability":
        err = {"f1_like_accuracy": float(((pred[:, rest] > 0.5) == (new[:, rest] > 0)).mean())}
    else:
        err = {"rmse": float(np.sqrt(np.mean((pred[:, rest] - new[:, rest]) ** 2, dtype=np.float64)))}
    del predictor, pred
    gc.collect()
    return {"predictor": name, "params": params, "M": m, "N": n, "fit_s": round(fit_s, 3),
            "predict_s": round(predict_s, 3), "total_s": round(fit_s + predict_s, 3), **err}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--m", type=int, nargs="+", default=[50, 500])
    ap.add_argument("--n", type=int, nargs="+", default=[10**3, 10**4, 10**5, 10**6])
    ap.add_argument("--predictors", nargs="+", default=list(PREDICTORS))
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    results = []
    for n in args.n:
        for m in args.m:
            t0 = time.perf_counter()
            F = synthetic(m, n)
            gen_s = time.perf_counter() - t0
            for name in args.predictors:
                r = bench_one(F, m, name)
                r["generate_s"] = round(gen_s, 3)
                results.append(r)
                print(json.dumps(r), flush=True)
            del F
            gc.collect()
    meta = {"machine": platform.machine(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "omp_threads": os.environ.get("OMP_NUM_THREADS"), "numpy": np.__version__,
            "rank": RANK, "noise_sd": NOISE, "new_rows": NEW_ROWS, "probe_fraction": PROBE,
            "dtype": "float32", "load_average_at_end": os.getloadavg()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
