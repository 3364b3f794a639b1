"""What per-example side information adds to completing a new task's forgetting row.

Runs the task-grouped protocol (:func:`forgetscope.predict.evaluate`: 5 folds over tasks, 30 random
probes, 10 seeded draws) on three committed matrices — the SmolLM2-135M-Instruct and Gemma-3-270m
replication studies (400 human-written texts from five sources) and the earlier demo sweep (SmolLM2, 160
greedy base-model continuations of texts from six sources) — with ``additive``, the completion methods
``knn`` and ``lowrank``, and the side-information predictors ``additive-features`` and
``lowrank-features`` (:mod:`forgetscope.predict.side_information`; features: base loss, log length in
tokens, the text's source category one-hot, joined from the shipped data's metadata by id). The demo has
no committed upstream table: its lengths are counted here with the default model's tokenizer and it has no
base loss. On the replication studies (which store each task's text) two text-based rows join: the frozen
MiniLM text prior ``semantic`` (task–example cosine calibrated on the probe; no known rows) and
``lowrank-features+text``, the first 16 principal components of each upstream text's MiniLM embedding
added to the features.

Per study: pooled RMSE (dominated by the noisiest tasks), the per-task RMSE ratio to additive, paired
Wilcoxon tests over tasks against ``additive`` and against the better of ``knn`` / ``lowrank`` (lower mean
per-task RMSE), and where tasks have two seeds the noise floor of each task and the share of the gap
additive → floor each predictor closes, median over tasks above noise (additive RMSE > 1.2 × floor;
:mod:`forgetscope.predict.noise`), against the seed-difference floor and the level-removed floor.

Leave-one-source-out: for each source category, the known rows lose that source's columns (no known task
measured them), the test rows are probed on the other sources' columns only, and the held-out columns are
predicted — by the feature predictors from the features alone, against the new row's probe mean (all a
feature-blind model can say about an example no row measured) and against ``lowrank`` fitted with the
columns known (what measuring them would have bought).

    OMP_NUM_THREADS=1 python benchmarks/side_information.py          # 115 s on 2 shared CPU cores

A diagnostic reference (``ceiling.csv``): each seeded task's row predicted with the features' coefficients
taken from its other seed's full row — how far these features could go with their coefficients known.

Writes ``benchmarks/results/side_information/``: ``summary.csv``, ``tasks.csv``, ``tests.csv``,
``loso.csv`` (with ``loso_tasks.csv``), ``ceiling.csv`` and ``side_information.json`` (settings, headline
numbers, whether the target — median gap closed ≥ 0.3 on tasks above noise — is met).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # small matrices: threads only add overhead on shared cores

import numpy as np
import pandas as pd

from forgetscope.importing import load_any
from forgetscope.predict import evaluate, get_predictor
from forgetscope.predict.evaluate import make_splits, row_groups
from forgetscope.predict.features import DEFAULT_FEATURES, encode_features, with_example_meta
from forgetscope.predict.noise import ABOVE_NOISE, gap_closed, gap_summary
from forgetscope.store import ForgettingMatrix
from forgetscope.store.io import write_csv, write_json

ROOT = Path(__file__).parent / "results"
OUT = ROOT / "side_information"
STUDIES = {"smollm2": ROOT / "replication" / "replication_smollm2" / "sweep",
           "gemma3": ROOT / "replication" / "replication_gemma3" / "sweep",
           "demo": ROOT / "demo" / "F.csv"}
COMPLETION = ("knn", "lowrank")
FEATURE = ("additive-features", "lowrank-features")
TEXT = "lowrank-features+text"
TEXT_COMPONENTS = 16
TARGET = 0.3
#: fewer tasks above noise than this and the target is not assessed
MIN_TASKS_FOR_TARGET = 5


def demo_matrix(path: Path) -> ForgettingMatrix:
    """The demo's lm columns with an upstream table: ids, lengths counted with the default tokenizer."""
    from forgetscope.data.demo import demo_upstream
    from forgetscope.models import load_tokenizer, resolve_model

    m = load_any(path)
    texts = {e.example_id: e.text for e in demo_upstream(targets="base_continuations")}
    keep = [j for j, c in enumerate(m.col_names) if c in texts]
    tok = load_tokenizer(resolve_model(None))
    ids = [m.col_names[j] for j in keep]
    upstream = pd.DataFrame({"example_id": ids, "kind": "lm", "text": [texts[i] for i in ids],
                             "n_tokens": [len(tok(texts[i]).input_ids) for i in ids]})
    runs = pd.DataFrame({"run_id": m.row_names, "task": [r.split("__")[0] for r in m.row_names]})
    return ForgettingMatrix(m.values[:, keep], list(m.row_names), ids, runs=runs, upstream=upstream)


def load_study(name: str) -> ForgettingMatrix:
    m = demo_matrix(STUDIES[name]) if name == "demo" else load_any(STUDIES[name]).select_kind("lm")
    return with_example_meta(m, "demo")


_EMBEDDINGS: dict[str, np.ndarray] = {}


def embed(texts: list[str]) -> np.ndarray:
    """Frozen MiniLM embeddings, each distinct text embedded once per run (every fold reuses them)."""
    from forgetscope.predict.semantic import minilm_embed

    missing = [t for t in dict.fromkeys(texts) if t not in _EMBEDDINGS]
    if missing:
        _EMBEDDINGS.update(zip(missing, minilm_embed(missing)))
    return np.stack([_EMBEDDINGS[t] for t in texts])


def text_components(texts: list[str], k: int = TEXT_COMPONENTS) -> np.ndarray:
    """The first ``k`` principal components of each text's frozen MiniLM embedding (N x k)."""
    E = embed(texts)
    U, _, _ = np.linalg.svd(E - E.mean(0), full_matrices=False)
    return U[:, :k]


def predictors(with_text: bool) -> dict:
    """The compared predictors; with texts also the frozen text prior and the text components as features."""
    out = {name: get_predictor(name) for name in ("additive", *COMPLETION, *FEATURE)}
    if with_text:
        out["semantic"] = get_predictor("semantic", embedder=embed)
        feats = [*DEFAULT_FEATURES, *(f"text_pc{k}" for k in range(TEXT_COMPONENTS))]
        out[TEXT] = get_predictor("lowrank-features", features=feats)
    return out


def study_tables(name: str, m: ForgettingMatrix, result) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict]:
    """(summary, per-task, tests, headline) of one study's evaluation."""
    tasks = result.tasks
    per = tasks.pivot(index="task", columns="predictor", values="rmse")
    best = min(COMPLETION, key=lambda p: per[p].mean())
    gaps = gap_closed(tasks, result.noise)
    centred = gap_closed(tasks, result.noise, floor="floor_centred")
    summary = result.summary().set_index("predictor")
    rows, headline = [], {"best_completion": best, "n_tasks": int(len(per)), "n_seeded_tasks": int(len(result.noise))}
    g1 = gap_summary(gaps).set_index("predictor") if len(gaps) else pd.DataFrame()
    g2 = gap_summary(centred).set_index("predictor") if len(centred) else pd.DataFrame()
    for p in per.columns:
        ratio = per[p] / per["additive"]
        row = {"study": name, "predictor": p, "rmse_pooled": float(summary.loc[p, "rmse"]),
               "rmse_pooled_sd": float(summary.loc[p, "rmse_sd"]),
               "rmse_ratio_pooled": float(summary.loc[p, "rmse_ratio_vs_additive"]),
               "rmse_ratio_task_median": float(ratio.median()), "tasks_better_than_additive": int((ratio < 1).sum()),
               "tasks_better_than_best_completion": int((per[p] < per[best]).sum()), "n_tasks": int(len(per))}
        for label, g in (("", g1), ("_centred", g2)):
            has = len(g) and p in g.index
            row[f"n_above_noise{label}"] = int(g.loc[p, "n_above_noise"]) if has else 0
            row[f"gap_closed_median{label}"] = float(g.loc[p, "gap_closed_median"]) if has else np.nan
        rows.append(row)
    table = pd.DataFrame(rows)
    per_task = tasks[["predictor", "task", "rmse"]].assign(study=name)
    if len(gaps):
        extra = gaps[["predictor", "task", "rmse_additive", "floor", "above_noise", "gap_closed"]].merge(
            centred[["predictor", "task", "floor", "above_noise", "gap_closed"]].rename(
                columns={"floor": "floor_centred", "above_noise": "above_noise_centred",
                         "gap_closed": "gap_closed_centred"}), on=["predictor", "task"])
        per_task = per_task.merge(extra, on=["predictor", "task"], how="left")
    tests = []
    for against in ("additive", best):
        t = result.task_tests(against=against)
        tests.append(t[[c for c in ("predictor", "baseline", "n_tasks", "rmse", "rmse_baseline", "mean_diff", "ci_low",
                                    "ci_high", "tasks_better", "p_wilcoxon", "p_wilcoxon_holm") if c in t]])
    tests_table = pd.concat(tests, ignore_index=True).assign(study=name)
    for p in (*FEATURE, TEXT):
        if p in set(table["predictor"]):
            r = table.set_index("predictor").loc[p]
            headline[p] = {"gap_closed_median": r["gap_closed_median"], "n_above_noise": r["n_above_noise"],
                           "gap_closed_median_centred": r["gap_closed_median_centred"],
                           "rmse_ratio_task_median": r["rmse_ratio_task_median"],
                           "tasks_better_than_additive": r["tasks_better_than_additive"],
                           "target_met": bool(r["gap_closed_median"] >= TARGET)
                           if r["n_above_noise"] >= MIN_TASKS_FOR_TARGET else None}
    return table, per_task, tests_table, headline


def feature_ceiling(name: str, m: ForgettingMatrix) -> pd.DataFrame:
    """Per task with two seeds, what the default features could give with their coefficients known: each
    seed's row predicted by additive (the other tasks' column effects) plus the feature fit of the *other*
    seed's full row, both shifted to the scored row's own mean (the level a probe pins). A diagnostic upper
    reference for ``additive-features``, not a predictor: it reads a whole row of the same task."""
    from forgetscope.analysis.lowrank import additive_fit_unchecked
    from forgetscope.predict.noise import task_noise

    X, tasks = m.values, m.runs["task"].astype(str).to_numpy()
    Z, _ = encode_features(m.upstream, None)
    D = np.column_stack([np.ones(len(Z)), Z])
    rows = []
    for t in task_noise(m).itertuples():
        i, j = np.flatnonzero(tasks == t.task)[:2]
        fit = additive_fit_unchecked(X[tasks != t.task])
        col = fit.mu + fit.b
        add, feat = [], []
        for a, b in ((i, j), (j, i)):
            target = X[b] - col
            w = np.linalg.lstsq(D, X[a] - col, rcond=None)[0]
            pred = D @ w
            add.append(np.mean((target - target.mean()) ** 2))
            feat.append(np.mean((target - pred - (target - pred).mean()) ** 2))
        add_rmse, feat_rmse = float(np.sqrt(np.mean(add))), float(np.sqrt(np.mean(feat)))
        above = add_rmse > ABOVE_NOISE * t.floor
        rows.append({"study": name, "task": t.task, "rmse_additive_level_known": add_rmse,
                     "rmse_features_known": feat_rmse, "floor": t.floor, "above_noise": bool(above),
                     "gap_closed": (add_rmse - feat_rmse) / (add_rmse - t.floor) if above else np.nan})
    return pd.DataFrame(rows)


def leave_one_source_out(name: str, m: ForgettingMatrix, probe: int, draws: int, seed: int) -> pd.DataFrame:
    """Per held-out source and test task: RMSE on that source's columns of each way to predict them."""
    X, up = m.values, m.upstream
    groups = row_groups(m, X.shape[0])
    splits, _ = make_splits(m, X.shape[0], seed=seed)
    sources = up["category"].astype(str).to_numpy()
    rows = []
    for split in splits:
        reference = get_predictor("lowrank", seed=seed).fit(X[split.train], groups=groups[split.train])
        for source in np.unique(sources):
            held = sources == source
            known = X[split.train].copy()
            known[:, held] = np.nan
            fitted = {p: get_predictor(p, seed=seed).fit(known, groups=groups[split.train], upstream=up)
                      for p in FEATURE}
            test = X[split.test].astype(np.float64)
            for d in range(draws):
                rng = np.random.default_rng([seed, d])
                idx = np.sort(rng.choice(np.flatnonzero(~held), probe, replace=False))
                preds = {p: f.predict_rows(idx, test[:, idx]) for p, f in fitted.items()}
                preds["probe-mean"] = np.repeat(test[:, idx].mean(1, keepdims=True), X.shape[1], axis=1)
                preds["lowrank (source known)"] = reference.predict_rows(idx, test[:, idx])
                for p, pred in preds.items():
                    sq = ((pred - test)[:, held]) ** 2
                    for task, err in zip(groups[split.test], np.nanmean(sq, axis=1)):
                        rows.append({"study": name, "source": source, "n_columns": int(held.sum()),
                                     "predictor": p, "task": task, "draw": d, "mse": float(err)})
    long = pd.DataFrame(rows)
    per_task = long.groupby(["study", "source", "n_columns", "predictor", "task"], as_index=False)["mse"].mean()
    per_task["rmse"] = np.sqrt(per_task.pop("mse"))
    return per_task


def loso_summary(per_task: pd.DataFrame) -> pd.DataFrame:
    """Per study, source and predictor: mean per-task RMSE, ratio to the probe mean, tasks better, Wilcoxon p."""
    from scipy.stats import wilcoxon

    out = []
    for (study, source), g in per_task.groupby(["study", "source"], sort=False):
        piv = g.pivot(index="task", columns="predictor", values="rmse")
        for p in piv.columns:
            diff = piv[p] - piv["probe-mean"]
            p_value = float(wilcoxon(diff).pvalue) if p != "probe-mean" and (diff != 0).any() else np.nan
            out.append({"study": study, "source": source, "n_columns": int(g["n_columns"].iloc[0]), "predictor": p,
                        "rmse_task_mean": float(piv[p].mean()),
                        "ratio_to_probe_mean_median": float((piv[p] / piv["probe-mean"]).median()),
                        "tasks_better_than_probe_mean": int((diff < 0).sum()), "n_tasks": int(len(piv)),
                        "p_wilcoxon_vs_probe_mean": p_value})
    return pd.DataFrame(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", nargs="+", default=list(STUDIES), choices=list(STUDIES))
    ap.add_argument("--probe", type=int, default=30)
    ap.add_argument("--draws", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-text", action="store_true", help="skip the MiniLM text components")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    t_all = time.perf_counter()
    summaries, tasks, tests, losos, ceilings, headline, timing = [], [], [], [], [], {}, {}
    components: dict[tuple, np.ndarray] = {}
    for name in args.studies:
        t0 = time.perf_counter()
        m = load_study(name)
        with_text = not args.no_text and name != "demo"
        up = m.upstream
        if with_text:
            key = tuple(up["example_id"])
            if key not in components:
                components[key] = text_components(up["text"].astype(str).tolist())
            up = up.assign(**{f"text_pc{k}": components[key][:, k] for k in range(TEXT_COMPONENTS)})
        result = evaluate(m, predictors(with_text), probe=[args.probe], draws=args.draws, seed=args.seed,
                          coverage=None, baselines=False, upstream=up)
        table, per_task, test_table, head = study_tables(name, m, result)
        head.update({"shape": list(m.shape), "features": encode_features(m.upstream, None)[1],
                     "protocol": result.protocol})
        if len(result.noise):
            ceiling = feature_ceiling(name, m)
            ceilings.append(ceiling)
            head["feature_ceiling"] = {"gap_closed_median": float(ceiling["gap_closed"].median()),
                                       "n_above_noise": int(ceiling["above_noise"].sum())}
        summaries.append(table)
        tasks.append(per_task)
        tests.append(test_table)
        t1 = time.perf_counter()
        losos.append(leave_one_source_out(name, m, args.probe, args.draws, args.seed))
        timing[name] = {"evaluate_s": round(t1 - t0, 1), "loso_s": round(time.perf_counter() - t1, 1)}
        headline[name] = head
        print(f"{name}: {m.shape}, evaluate {timing[name]['evaluate_s']} s, leave-one-source-out "
              f"{timing[name]['loso_s']} s", flush=True)
        print(table[["predictor", "rmse_pooled", "rmse_ratio_task_median", "tasks_better_than_additive",
                     "n_above_noise", "gap_closed_median", "gap_closed_median_centred"]].to_string(index=False),
              flush=True)
    loso = pd.concat(losos, ignore_index=True)
    loso_table = loso_summary(loso)
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / "summary.csv", pd.concat(summaries, ignore_index=True))
    write_csv(args.out / "tasks.csv", pd.concat(tasks, ignore_index=True))
    write_csv(args.out / "tests.csv", pd.concat(tests, ignore_index=True))
    write_csv(args.out / "loso.csv", loso_table)
    write_csv(args.out / "loso_tasks.csv", loso)
    if ceilings:
        write_csv(args.out / "ceiling.csv", pd.concat(ceilings, ignore_index=True))
    write_json(args.out / "side_information.json", _plain({
        "studies": headline, "target": f"median share of the gap additive → floor closed >= {TARGET} over tasks "
                                       f"above noise (additive RMSE > {ABOVE_NOISE} × floor); not assessed "
                                       f"(null) with fewer than {MIN_TASKS_FOR_TARGET} tasks above noise",
        "settings": {"probe": args.probe, "draws": args.draws, "seed": args.seed, "folds": 5,
                     "text_components": 0 if args.no_text else TEXT_COMPONENTS, "threads": os.environ["OMP_NUM_THREADS"]},
        "timing_s": timing, "wall_s": round(time.perf_counter() - t_all, 1), "python": platform.python_version(),
        "machine": platform.processor() or platform.machine()}))
    print(loso_table.to_string(index=False))
    print(f"wrote {args.out} in {time.perf_counter() - t_all:.0f} s")


def _plain(x):
    """JSON-ready: numpy scalars as Python ones, NaN as null."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, (np.integer, np.bool_)):
        return x.item()
    if isinstance(x, (float, np.floating)):
        return None if not np.isfinite(x) else float(x)
    return x


if __name__ == "__main__":
    main()
