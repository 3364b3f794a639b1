"""The reference row-completion protocol: forgetscope's closed forms against scikit-surprise.

Protocol (the reference's released evaluation, reproduced): a fixed split of rows into known and test
tasks; for each seed, ``probe`` upstream examples are drawn at random (one draw per seed, shared by every
test task, as the reference seeds the same generator for each task) and revealed for each test task; the
rest of its row is predicted; the score is the RMSE pooled over every test task's unrevealed entries.
Seeds 0..S-1; mean ± sd over seeds.

* scikit-surprise is run as the reference runs it: for each test task, a training set of all known rows
  plus that task's revealed entries (``Reader(rating_scale=(-100, 100))``, so clipping never binds),
  ``fit``, then ``predict`` of every column of that task. Methods: ``BaselineOnly`` and user-based MSD
  ``KNNBaseline`` (``k = 40``, ``min_k = 1``) with surprise's default baselines (ALS, ``reg_u = 15``,
  ``reg_i = 10``, 10 epochs), and biased ``SVD`` with ``n_factors = 5`` (other options surprise's
  defaults). The reference's released run overrode some of these options (SGD baselines with 1000
  epochs; SVD with 1000 epochs, ``reg_all = 0``, ``init_std_dev = 0.001``): those variants run too,
  labelled ``ref-opts``, on the first ``--ref-seeds`` seeds only because they take seconds per task.
* forgetscope fits each predictor once per seed on the known rows and completes all test rows with one
  ``predict_rows`` call: ``additive`` and ``knn-baseline`` at their defaults (unregularised baselines,
  the closed-form counterpart of the reference's SGD fit), ``additive-als`` and ``knn-baseline-als``
  (surprise's default ALS baselines), ``knn``, ``lowrank`` (rank 5).
* Each surprise method is paired with the forgetscope predictor that computes the same thing with the
  same options (``pairs`` in the JSON): both RMSEs, the largest entry difference and the speed ratio
  of that pair, with the target (10⁴×) met or missed.

Times are wall seconds per seed (all test tasks): surprise's ``fit`` + ``predict`` summed over tasks
(building each task's ``Trainset`` is timed apart), forgetscope's ``fit`` + ``predict_rows`` (the median of
``--repeats`` calls, since one call takes milliseconds).

Matrix: by default synthetic, ``known + test`` rows x ``N`` columns, ``μ + a_i + b_j + U V + noise``
(rank 5 with decaying factor scales), the reference's in-domain split sizes (46 known, 20 test FLAN
tasks). ``--sweep DIR`` runs on a forgetscope sweep's matrix instead, its tasks split into known/test by
a fixed seeded permutation (all runs of a task on the same side); missing entries are left out of every
training set and every score.

    python benchmarks/reference_completion.py                    # synthetic, N = 1000
    python benchmarks/reference_completion.py --ref-seeds 0      # without the slow ref-opts variants
    python benchmarks/reference_completion.py --sweep sweeps/demo --out /tmp/demo_ref.json
    python benchmarks/reference_completion.py --no-surprise      # forgetscope only

N = 1000 is set by surprise's cost: 200 fits per method (10 seeds x 20 test tasks). On 2 CPU cores shared
with other jobs the default run took 12 minutes, 10 of them in the three ``ref-opts`` variants on one seed
(1000 SGD epochs each); with ``--ref-seeds 0`` it takes about 2 minutes. forgetscope's predictors take
milliseconds per seed at this size.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from forgetscope.predict import get_predictor

OUT = Path(__file__).parent / "results" / "reference_completion.json"
RANK, FACTOR_SCALES, NOISE = 5, (0.5, 0.35, 0.25, 0.15, 0.1), 0.3

#: forgetscope predictors: label -> (registry name, parameters)
FORGETSCOPE: dict[str, tuple[str, dict[str, Any]]] = {
    "additive": ("additive", {}),  # the reference's setting: unregularised (closed form)
    "additive-als": ("additive-als", {}),  # surprise BaselineOnly's ALS defaults
    "knn-baseline": ("knn-baseline", {}),  # the reference's setting: unregularised baselines
    "knn-baseline-als": ("knn-baseline-als", {}),  # surprise KNNBaseline's ALS defaults
    "knn": ("knn", {}),
    "lowrank": ("lowrank", {"rank": 5}),
}
SPEED_TARGET = 1e4

#: surprise methods with surprise's defaults: label -> (class name, options, forgetscope counterpart)
SURPRISE: dict[str, tuple[str, dict[str, Any], str]] = {
    "surprise BaselineOnly": ("BaselineOnly", {"verbose": False}, "additive-als"),
    "surprise KNNBaseline": ("KNNBaseline", {"k": 40, "min_k": 1, "verbose": False,
                                             "sim_options": {"name": "msd", "user_based": True}},
                             "knn-baseline-als"),
    "surprise SVD": ("SVD", {"n_factors": 5, "biased": True, "random_state": 0}, "lowrank"),
}

#: the options the reference's released evaluation passed (run on fewer seeds)
SURPRISE_REF: dict[str, tuple[str, dict[str, Any], str]] = {
    "surprise BaselineOnly ref-opts": ("BaselineOnly", {"verbose": False,
                                                        "bsl_options": {"method": "sgd", "n_epochs": 1000}},
                                       "additive"),
    "surprise KNNBaseline ref-opts": ("KNNBaseline", {"k": 40, "min_k": 1, "verbose": False,
                                                      "sim_options": {"name": "msd", "user_based": True},
                                                      "bsl_options": {"method": "sgd", "n_epochs": 1000}},
                                      "knn-baseline"),
    "surprise SVD ref-opts": ("SVD", {"n_factors": 5, "n_epochs": 1000, "lr_all": 0.005, "reg_all": 0.0,
                                      "init_std_dev": 0.001, "random_state": 0}, "lowrank"),
}


def synthetic(rows: int, n: int, seed: int = 0) -> np.ndarray:
    """``μ + a_i + b_j + U V + noise``: additive effects, a rank-5 interaction with decaying scales."""
    rng = np.random.default_rng(seed)
    U = rng.standard_normal((rows, RANK)) * np.asarray(FACTOR_SCALES)
    V = rng.standard_normal((RANK, n))
    F = 0.5 + 0.3 * rng.standard_normal((rows, 1)) + 0.4 * rng.standard_normal((1, n)) + U @ V
    return F + NOISE * rng.standard_normal((rows, n))


def split_sweep(path: str, test_frac: float, seed: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Known and test rows of a sweep, split by task with a seeded permutation."""
    from forgetscope.store import load_forgetting

    matrix = load_forgetting(path)
    F = matrix.values
    runs = matrix.runs
    tasks = (runs["task"].astype(str).to_numpy() if runs is not None and "task" in runs
             else np.asarray(matrix.row_names))
    names = np.unique(tasks)
    if names.size < 2:
        raise SystemExit(f"{path}: need at least 2 tasks to split, found {names.size}")
    n_test = min(names.size - 1, max(1, round(test_frac * names.size)))
    test_tasks = set(np.random.default_rng(seed).permutation(names)[:n_test])
    is_test = np.array([t in test_tasks for t in tasks])
    info = {"source": str(path), "tasks": int(names.size), "test_tasks": sorted(test_tasks),
            "split_seed": seed, "test_frac": test_frac}
    return F[~is_test], F[is_test], info


def pooled_rmse(truth: np.ndarray, pred: np.ndarray, probe: np.ndarray) -> float:
    """RMSE over every finite unrevealed entry of the test rows."""
    keep = np.ones(truth.shape[1], bool)
    keep[probe] = False
    t, p = truth[:, keep], pred[:, keep]
    ok = np.isfinite(t)
    return float(np.sqrt(np.mean((t[ok] - p[ok]) ** 2)))


def run_forgetscope(label: str, known: np.ndarray, test: np.ndarray, probe: np.ndarray, repeats: int = 1
                    ) -> tuple[np.ndarray, float]:
    """Predictions and the median wall time of ``repeats`` fit + predict_rows calls (ms-scale: noisy)."""
    name, params = FORGETSCOPE[label]
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        pred = get_predictor(name, **params).fit(known).predict_rows(probe, test[:, probe])
        times.append(time.perf_counter() - t0)
    return pred, float(np.median(times))


def surprise_runner(known: np.ndarray) -> Callable[[str, dict[str, Any], np.ndarray, np.ndarray],
                                                    tuple[np.ndarray, float, float]]:
    """A function running one surprise method over every test row (one training set per row)."""
    import pandas as pd
    import surprise

    m, n = known.shape
    uu, ii = np.nonzero(np.isfinite(known))
    known_df = pd.DataFrame({"u": uu, "i": ii, "r": known[uu, ii]})
    reader = surprise.Reader(rating_scale=(-100.0, 100.0))

    def run(cls_name: str, options: dict[str, Any], test: np.ndarray, probe: np.ndarray
            ) -> tuple[np.ndarray, float, float]:
        pred = np.empty(test.shape)
        fit_s = build_s = 0.0
        for r in range(test.shape[0]):
            cols = probe[np.isfinite(test[r, probe])]
            row_df = pd.DataFrame({"u": m, "i": cols, "r": test[r, cols]})
            t0 = time.perf_counter()
            trainset = surprise.Dataset.load_from_df(pd.concat([known_df, row_df], ignore_index=True),
                                                     reader).build_full_trainset()
            t1 = time.perf_counter()
            algo = getattr(surprise, cls_name)(**{k: (dict(v) if isinstance(v, dict) else v)
                                                 for k, v in options.items()})
            algo.fit(trainset)
            pred[r] = [algo.predict(m, j).est for j in range(n)]
            t2 = time.perf_counter()
            build_s += t1 - t0
            fit_s += t2 - t1
        return pred, fit_s, build_s

    return run


def summarise(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {"mean": float(a.mean()), "sd": float(a.std(ddof=1)) if a.size > 1 else 0.0}


def machine_note() -> dict[str, Any]:
    model = ""
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": model or platform.processor(), "cpus": os.cpu_count(), "machine": platform.machine(),
            "omp_threads": os.environ.get("OMP_NUM_THREADS"), "load_average_at_end": os.getloadavg(),
            "note": "shared CPU; wall-clock timings include whatever else ran"}


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version(), "numpy": np.__version__}
    for mod in ("scipy", "pandas", "surprise"):
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:
            out[mod] = None
    try:
        out["forgetscope_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True,
                                                   text=True, cwd=Path(__file__).parent,
                                                   check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        out["forgetscope_commit"] = None
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sweep", type=str, default=None,
                    help="a forgetscope sweep directory instead of the synthetic matrix")
    ap.add_argument("--n", type=int, default=1000, help="synthetic: upstream examples (columns)")
    ap.add_argument("--known", type=int, default=46, help="synthetic: known rows")
    ap.add_argument("--test", type=int, default=20, help="synthetic: test rows")
    ap.add_argument("--test-frac", type=float, default=20 / 66, help="sweep: share of tasks held out")
    ap.add_argument("--split-seed", type=int, default=0, help="sweep: seed of the task split")
    ap.add_argument("--probe", type=int, default=30, help="revealed entries per test task")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--ref-seeds", type=int, default=1,
                    help="seeds for the ref-opts surprise variants (0: skip them)")
    ap.add_argument("--repeats", type=int, default=5, help="forgetscope timing: median of this many calls")
    ap.add_argument("--no-surprise", action="store_true")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    start = time.perf_counter()

    if args.sweep:
        known, test, data = split_sweep(args.sweep, args.test_frac, args.split_seed)
    else:
        F = synthetic(args.known + args.test, args.n)
        known, test = F[: args.known], F[args.known :]
        data = {"source": "synthetic", "model": "0.5 + a_i + b_j + U V + noise", "rank": RANK,
                "factor_scales": FACTOR_SCALES, "row_effect_sd": 0.3, "col_effect_sd": 0.4, "noise_sd": NOISE,
                "split": f"rows 0..{args.known - 1} known, {args.known}..{args.known + args.test - 1} test"}
    n = known.shape[1]
    probe_n = min(args.probe, n - 1)

    use_surprise = not args.no_surprise
    if use_surprise:
        try:
            run_surprise = surprise_runner(known)
        except ImportError:
            print("scikit-surprise is not importable: forgetscope predictors only", file=sys.stderr)
            use_surprise = False
    # untimed warm-up: first calls pay for imports and BLAS initialisation
    warm = np.sort(np.random.default_rng(12345).choice(n, probe_n, replace=False))
    for label in FORGETSCOPE:
        run_forgetscope(label, known, test, warm)

    rmse: dict[str, list[float]] = {}
    secs: dict[str, list[float]] = {}
    build: dict[str, list[float]] = {}
    max_diff: dict[str, float] = {}
    for seed in range(args.seeds):
        probe = np.sort(np.random.default_rng(seed).choice(n, probe_n, replace=False))
        preds: dict[str, np.ndarray] = {}
        for label in FORGETSCOPE:
            pred, s = run_forgetscope(label, known, test, probe, repeats=args.repeats)
            preds[label] = pred
            rmse.setdefault(label, []).append(pooled_rmse(test, pred, probe))
            secs.setdefault(label, []).append(s)
        methods = dict(SURPRISE) if use_surprise else {}
        if use_surprise and seed < args.ref_seeds:
            methods.update(SURPRISE_REF)
        for label, (cls_name, options, counterpart) in methods.items():
            pred, s, b = run_surprise(cls_name, options, test, probe)
            rmse.setdefault(label, []).append(pooled_rmse(test, pred, probe))
            secs.setdefault(label, []).append(s)
            build.setdefault(label, []).append(b)
            if cls_name != "SVD":  # the baseline methods are reproduced entry by entry
                keep = np.setdiff1d(np.arange(n), probe)
                diff = float(np.nanmax(np.abs(pred[:, keep] - preds[counterpart][:, keep])))
                max_diff[label] = max(max_diff.get(label, 0.0), diff)
        print(f"seed {seed}: " + ", ".join(f"{k} {v[-1]:.4f}" for k, v in rmse.items() if len(v) == seed + 1),
              flush=True)

    table = {}
    for label, scores in rmse.items():
        entry: dict[str, Any] = {"rmse": summarise(scores), "rmse_per_seed": scores,
                                 "seconds_per_seed": summarise(secs[label]), "seeds": len(scores)}
        if label in FORGETSCOPE:
            entry.update(library="forgetscope", predictor=FORGETSCOPE[label][0], params=FORGETSCOPE[label][1])
        else:
            cls_name, options, counterpart = {**SURPRISE, **SURPRISE_REF}[label]
            entry.update(library="scikit-surprise", algorithm=cls_name,
                         options={k: v for k, v in options.items() if k != "verbose"},
                         build_trainset_seconds_per_seed=summarise(build[label]),
                         forgetscope_counterpart=counterpart)
            if label in max_diff:
                entry["max_abs_prediction_diff_vs_counterpart"] = max_diff[label]
        table[label] = entry

    checks: dict[str, Any] = {}
    if use_surprise:
        def sec(lab: str) -> float:
            return table[lab]["seconds_per_seed"]["mean"]

        pairs = []
        for lab in {**SURPRISE, **SURPRISE_REF}:
            if lab not in table:
                continue
            ours = table[lab]["forgetscope_counterpart"]
            ratio = sec(lab) / sec(ours)
            pairs.append({"surprise": lab, "forgetscope": ours, "seeds": table[lab]["seeds"],
                          "rmse_surprise": table[lab]["rmse"]["mean"],
                          "rmse_forgetscope": float(np.mean(table[ours]["rmse_per_seed"][: table[lab]["seeds"]])),
                          "max_abs_prediction_diff": table[lab].get("max_abs_prediction_diff_vs_counterpart"),
                          "speedup": ratio, "speed_target": SPEED_TARGET, "target_met": bool(ratio >= SPEED_TARGET)})
        checks["pairs"] = pairs

    result = {
        "settings": {"probe_per_test_task": probe_n, "probe_shared_by_test_tasks": True,
                     "probe_draw": "numpy default_rng(seed).choice(N, probe, replace=False)",
                     "seeds": args.seeds, "forgetscope_timing_repeats": args.repeats,
                     "ref_opts_seeds": min(args.ref_seeds, args.seeds) if use_surprise else 0,
                     "score": "RMSE pooled over the test tasks' unrevealed entries",
                     "surprise_reader_rating_scale": [-100.0, 100.0]},
        "data": data,
        "shape": {"known": list(known.shape), "test": list(test.shape), "N": n},
        "methods": table, "checks": checks, "versions": versions(), "machine": machine_note(),
        "runtime_s": round(time.perf_counter() - start, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=float))
    print(markdown(table))
    if "pairs" in checks:
        print(pairs_markdown(checks["pairs"]))
    print(json.dumps(checks, indent=2))
    print(f"wrote {args.out} ({result['runtime_s']} s)")


def pairs_markdown(pairs: list[dict[str, Any]]) -> str:
    """Each surprise method beside the forgetscope predictor with the same options, row by row."""
    lines = ["| surprise (options) | forgetscope | seeds | RMSE surprise | RMSE forgetscope | max entry diff | "
             "speed-up | 10⁴× target |", "|---|---|---|---|---|---|---|---|"]
    for p in pairs:
        diff = "–" if p["max_abs_prediction_diff"] is None else f"{p['max_abs_prediction_diff']:.1e}"
        lines.append(f"| {p['surprise']} | {p['forgetscope']} | {p['seeds']} | {p['rmse_surprise']:.4f} | "
                     f"{p['rmse_forgetscope']:.4f} | {diff} | {p['speedup']:,.0f}× | "
                     f"{'met' if p['target_met'] else 'missed'} |")
    return "\n".join(lines)


def markdown(table: dict[str, dict[str, Any]]) -> str:
    lines = ["| method | seeds | RMSE mean ± sd | seconds per seed (mean ± sd) |", "|---|---|---|---|"]
    for label, e in table.items():
        r, s = e["rmse"], e["seconds_per_seed"]
        lines.append(f"| {label} | {e['seeds']} | {r['mean']:.4f} ± {r['sd']:.4f} "
                     f"| {s['mean']:.4g} ± {s['sd']:.2g} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
