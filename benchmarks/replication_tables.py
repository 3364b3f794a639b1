"""Write the tables of docs/replication.md from the committed raw outputs, so every number there is copied
from a file a command wrote.

    python benchmarks/replication_tables.py     # writes benchmarks/results/replication_tables.md

Reads RESULTS/<name>/ folders written by benchmarks/regime_study.py (summary.json, F.npy, F_null.npy,
runs.csv) under benchmarks/results/pilot and benchmarks/results/replication, and computes the low-rank
analysis of each plain-text (lm) matrix with forgetscope's own functions (pure analysis; no model runs).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent / "results"
SETS = {"pilot": ROOT / "pilot", "replication": ROOT / "replication"}


def _pct(x: float | None) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{100 * x:.0f} %"


def _num(x: float | None, fmt: str = "{:.3f}") -> str:
    return "–" if x is None or not np.isfinite(x) else fmt.format(x)


def regime_rows(folder: Path) -> list[str]:
    """One Markdown row per family of a regime_study folder."""
    s = json.loads((folder / "summary.json").read_text())
    nc = s.get("null_control", {})
    by_rank = {r["k"]: r for r in nc.get("by_rank", [])}
    rows = []
    for fam in s["families"]:
        rows.append(f"| {folder.name} | {fam['family']} | {fam['n_tasks']} | {fam['n_runs']} | "
                    f"{_pct(fam['share_tasks_forgetting'])} | {_pct(fam['share_entries_forgotten'])} | "
                    f"{fam['mean_forgetting']:+.3f} | {_num(fam['seed_corr'], '{:.2f}')} | "
                    f"{_pct(fam['share_runs_learning'])} |")
    crit = s.get("criteria")
    usable = "–" if crit is None else ("yes" if s.get("usable") else "no: " + ", ".join(
        k for k, c in crit.items() if not c["met"]))
    null = (f"| {folder.name} | {_pct(nc.get('explained_share'))} | {_num(nc.get('v1_profile_corr'), '{:+.2f}')} | "
            f"{_num(nc.get('mean_null'), '{:+.4f}')} | "
            + " | ".join(f"{_num(by_rank.get(k, {}).get('r2'))} / {_num(by_rank.get(k, {}).get('r2_null'))} / "
                         f"{_num(by_rank.get(k, {}).get('r2_residual'))}" for k in (1, 2, 3))
            + f" | {usable} |")
    return rows + ["NULL" + null]


def lowrank_row(folder: Path) -> str:
    """R²(k), additive and multiplicative fits and forgetting-vs-learning of a folder's lm matrix."""
    from forgetscope.analysis.lowrank import analyze

    F = np.load(folder / "F.npy")
    up = pd.read_parquet(folder / "upstream.parquet")
    lm = (up["kind"] == "lm").to_numpy() if "kind" in up else np.ones(F.shape[1], bool)
    runs = pd.read_csv(folder / "runs.csv")
    rep = analyze(F[:, lm], max_rank=min(5, F.shape[0]), runs=runs)
    # seeds of a task are not independent: correlate over tasks, each task's runs averaged
    tasks = runs["task"].to_numpy()
    names = list(dict.fromkeys(tasks))
    per_task = np.vstack([np.nanmean(F[tasks == t][:, lm], axis=0) for t in names])
    task_runs = runs.groupby("task", sort=False)[["task_loss_before", "task_loss_after"]].mean().loc[names]
    learn = _learning(per_task, task_runs)
    # the control for a family confound (one family both learns and forgets more): the same within the
    # instruction-format tasks alone
    within = "–"
    if "family" in runs:
        family = runs.groupby("task", sort=False)["family"].first().loc[names].to_numpy()
        inst = family == "instruction"
        if inst.sum() >= 3:
            within = _learning(per_task[inst], task_runs[inst])
    r2 = " / ".join(f"{v:.3f}" for v in rep.r2_by_rank[:5])
    return (f"| {folder.name} | {F.shape[0]} × {int(lm.sum())} | {r2} | {rep.additive.r2:.3f} | "
            f"{rep.multiplicative.r2:.3f} | {learn} | {within} |")


def wall_row(folder: Path) -> str:
    """How long a folder's runs took (training, evaluation and the null row of each, summed)."""
    wall = pd.read_csv(folder / "runs.csv")["wall_s"]
    return (f"| {folder.name} | {len(wall)} | {wall.sum():.0f} s ({wall.sum() / 3600:.2f} h) | "
            f"{wall.min():.0f}–{wall.max():.0f} s |")


def _learning(per_task: np.ndarray, task_runs: pd.DataFrame) -> str:
    from forgetscope.analysis.lowrank import learning_correlation

    lc = learning_correlation(per_task, task_runs.reset_index())
    return "–" if lc is None or not np.isfinite(lc.pearson) else \
        f"{lc.pearson:+.2f} (p = {lc.pearson_p:.2g}, {lc.n} tasks)"


def main() -> None:
    out = ["# Tables of docs/replication.md (written by benchmarks/replication_tables.py)", ""]
    for name, root in SETS.items():
        folders = sorted(p for p in root.glob("*") if (p / "summary.json").is_file()) if root.is_dir() else []
        if not folders:
            continue
        out += [f"## {name}", "", "| sweep | family | tasks | runs | tasks mean F > 0 | entries F > 0 | mean F "
                "| seed r | runs learning |", "|---|---|---|---|---|---|---|---|---|"]
        nulls = []
        for f in folders:
            for row in regime_rows(f):
                (nulls.append(row[4:]) if row.startswith("NULL") else out.append(row))
        out += ["", "| sweep | null explains (within-run) | corr(v₁, null profile) | mean null F | "
                "R²(1) F / null / residual | R²(2) | R²(3) | usable regime |", "|---|---|---|---|---|---|---|---|",
                *nulls, "", "| sweep | matrix (lm) | R²(k), k = 1…5 | additive R² | multiplicative R² | "
                "forgetting vs learning (Pearson) | the same, instruction-format tasks only |",
                "|---|---|---|---|---|---|---|",
                *[lowrank_row(f) for f in folders], "", "| sweep | runs | wall time of the runs (sum of runs.csv "
                "`wall_s`) | per run |", "|---|---|---|---|", *[wall_row(f) for f in folders], ""]
    path = ROOT / "replication_tables.md"
    path.write_text("\n".join(out) + "\n")
    print("\n".join(out))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
