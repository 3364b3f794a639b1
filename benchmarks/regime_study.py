"""Run (or resume) sweeps of the measurement design and write what decides whether their regime is usable.

    FORGETSCOPE_NO_PROGRESS=1 python benchmarks/regime_study.py configs/pilot/*.yaml \
        [--results benchmarks/results/pilot]

Each config is an ordinary sweep config (run with :func:`forgetscope.run_sweep`, so a killed study resumes
where it stopped: finished runs are kept in the sweep's own directory). After each sweep, and after every
finished run, RESULTS/<config stem>/ is rewritten with the raw outputs a reader needs to check every
number (manifest.json, runs.csv, upstream.parquet, F.npy, F_null.npy, forgetting.parquet) and the derived
tables of the plain-text (lm) columns:
family_summary.csv (per task family: share of tasks with mean F > 0, share of entries F > 0, mean seed
correlation, share of runs whose held-out task loss fell), seed_reliability.csv, null_per_run.csv and
null_r2_by_rank.csv (the null control); with instruction columns also family_summary_instruction.csv and
binary_forgetting.csv (answers the base model got right and each run lost); plus summary.json with the
criteria of a usable regime:

* the instruction family forgets: mean F > 0 on >= 80 % of its tasks and on >= 60 % of its entries;
* it is measured above its noise: mean correlation of two seeds' rows >= 0.7;
* the fine-tunes are sane: every run's held-out task loss falls.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

os.environ.setdefault("FORGETSCOPE_NO_PROGRESS", "1")

CRITERIA = {"share_tasks_forgetting": 0.8, "share_entries_forgotten": 0.6, "seed_corr": 0.7,
            "share_runs_learning": 1.0}


def write_results(sweep: Path, out: Path) -> dict:
    """Copy a sweep's raw outputs to ``out`` and write its regime tables; returns summary.json's content."""
    import numpy as np
    import pandas as pd

    from forgetscope.analysis.null_control import null_comparison
    from forgetscope.analysis.regime import family_summary, seed_reliability
    from forgetscope.store import SweepLayout, SweepStore

    out.mkdir(parents=True, exist_ok=True)
    layout = SweepLayout(sweep)
    for src in (layout.manifest, layout.upstream, layout.matrix, layout.null_matrix, layout.forgetting):
        if src.is_file():
            shutil.copy2(src, out / src.name)
    store = SweepStore(sweep)
    full = store.load_matrix()
    matrix = full.select_kind("lm")
    matrix.runs.drop(columns=["task_text"], errors="ignore").to_csv(out / "runs.csv", index=False)
    extra: dict = {}
    if "instruction" in full.kind_counts():
        from forgetscope.predict.binary import binary_forgetting

        inst = full.select_kind("instruction")
        family_summary(inst).to_csv(out / "family_summary_instruction.csv", index=False)
        binary = binary_forgetting(full)
        lost = np.nansum(binary.values, axis=1)
        known = np.isfinite(binary.values).sum(axis=1)
        pd.DataFrame({"run_id": binary.row_names, "answers_known_before": known, "answers_lost": lost,
                      "mean_loss_forgetting": np.nanmean(inst.values, axis=1)}).to_csv(
            out / "binary_forgetting.csv", index=False)
        extra["instruction"] = {"n_examples": int(inst.shape[1]), "answers_known_before": int(known.max(initial=0)),
                                "share_answers_lost": float(lost.sum() / known.sum()) if known.sum() else None}
    fam = family_summary(matrix)
    fam.to_csv(out / "family_summary.csv", index=False)
    seed_reliability(matrix).to_csv(out / "seed_reliability.csv", index=False)
    summary: dict = {"sweep": str(sweep), "n_runs": int(matrix.shape[0]), "n_examples": int(matrix.shape[1]),
                     "families": fam.to_dict(orient="records"), **extra}
    if matrix.null is not None and matrix.shape[0] >= 2:
        nc = null_comparison(matrix, max_rank=min(5, *matrix.shape))
        nc.table().to_csv(out / "null_per_run.csv", index=False)
        nc.rank_table().to_csv(out / "null_r2_by_rank.csv", index=False)
        summary["null_control"] = {k: v for k, v in nc.to_dict().items() if k != "per_run"}
    inst = fam[fam["family"] == "instruction"]
    if len(inst):
        row = inst.iloc[0]
        summary["criteria"] = {k: {"value": None if not np.isfinite(row[k]) else float(row[k]), "target": t,
                                   "met": bool(np.isfinite(row[k]) and row[k] >= t)}
                               for k, t in CRITERIA.items()}
        summary["usable"] = all(c["met"] for c in summary["criteria"].values())
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("configs", nargs="+", type=Path)
    ap.add_argument("--results", type=Path, default=Path("benchmarks/results/pilot"))
    args = ap.parse_args()
    from forgetscope.config import load_config
    from forgetscope.experiments import run_sweep

    configs = [(p, load_config(p)) for p in args.configs]  # every config validated before any work
    for path, cfg in configs:
        out = args.results / path.stem
        t0 = time.perf_counter()

        def progress(spec, record, cfg=cfg, out=out, t0=t0) -> None:
            print(f"{path.stem}: {spec.run_id} done at {time.perf_counter() - t0:.0f}s "
                  f"(task loss {record['task_loss_before']:.3f}->{record['task_loss_after']:.3f})", flush=True)
            write_results(Path(cfg.output), out)

        run_sweep(cfg, on_run=progress)
        summary = write_results(Path(cfg.output), out)
        print(json.dumps({"config": str(path), "usable": summary.get("usable"),
                          "families": summary["families"]}, indent=1, default=float), flush=True)


if __name__ == "__main__":
    main()
