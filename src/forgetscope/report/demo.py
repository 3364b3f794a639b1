"""A synthetic sweep directory with data for every report section, in under a second.

Used by the report tests and to make the screenshot in ``docs/report.md``::

    python -m forgetscope.report.demo sweeps/report-demo && forgetscope report sweeps/report-demo
    python -m forgetscope.report.demo sweeps/report-demo --screenshot docs/report_screenshot.png  # + report + PNG

The matrix is ``μ + a_i + b_j + u_i v_j + noise`` (so the additive model explains much but not all of it),
mitigation strategies scale a run's forgetting down, ``sharpness.parquet`` holds ``sharpness_*`` measures
correlated with mean forgetting, ``scaling/fit.json`` holds a shifted power law and ``scaling/points.parquet``
its points. Every file goes where :class:`~forgetscope.store.SweepLayout` names it. Nothing here is measured.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from forgetscope.store import (
    ForgettingMatrix,
    SweepLayout,
    SweepStore,
    write_json,
    write_matrix_sweep,
    write_parquet,
)

TASKS = ("code", "bible", "definitions", "jargon", "elements", "quotes")
STRATEGY_SCALE = {"plain": 1.0, "replay": 0.55, "sam": 0.8, "ewc": 0.9}


def write_demo_sweep(path: str | os.PathLike[str], *, n_examples: int = 300, tasks: tuple[str, ...] = TASKS,
                     seeds: tuple[int, ...] = (0, 1), strategies: tuple[str, ...] = tuple(STRATEGY_SCALE),
                     seed: int = 0, extras: bool = True, overwrite: bool = True) -> SweepStore:
    """Write a synthetic sweep (``len(tasks) × len(seeds) × len(strategies)`` runs) to ``path``."""
    rng = np.random.default_rng(seed)
    n = n_examples
    task_a = dict(zip(tasks, rng.normal(0.06, 0.06, len(tasks))))
    task_u = dict(zip(tasks, rng.normal(0, 1, len(tasks))))
    b = rng.gamma(2.0, 0.05, n) - 0.1
    v = rng.normal(0, 0.06, n)
    rows, records = [], []
    for s in strategies:
        for t in tasks:
            for sd in seeds:
                scale = STRATEGY_SCALE.get(s, 1.0)
                f = scale * (task_a[t] + b + task_u[t] * v) + rng.normal(0, 0.02, n)
                rows.append(f)
                learned = 0.6 + 2.0 * task_a[t] + rng.normal(0, 0.05)
                records.append({
                    "run_id": f"{t}__{s}__s{sd}", "task": t, "strategy": s, "seed": sd, "method": "lora",
                    "steps": 30, "trainable_params": 460_800, "task_loss_before": 3.2,
                    "task_loss_after": 3.2 - learned * (1.0 - 0.15 * (1 - scale)),
                    "wall_s": float(rng.uniform(40, 60)),
                })
    F = np.stack(rows)
    runs = pd.DataFrame(records)
    upstream = pd.DataFrame({"example_id": [f"u{j:04d}" for j in range(n)],
                             "text": [f"synthetic upstream example {j}" for j in range(n)],
                             "loss_before": rng.normal(3.0, 0.4, n)})
    matrix = ForgettingMatrix(F, runs["run_id"].tolist(), upstream["example_id"].tolist(), runs=runs,
                              upstream=upstream)
    manifest = {
        "source": "synthetic", "status": "complete", "created": "2025-01-01T00:00:00+0000",
        "completed": "2025-01-01T01:00:00+0000", "fingerprint": "demo0000synthetic",
        "model": {"kind": "synthetic", "name": "no model (synthetic demo matrix)"},
        "seeds": list(seeds),
        "config": {"model": "synthetic", "seeds": list(seeds), "tasks": list(tasks), "strategies": list(strategies),
                   "train": {"method": "lora", "steps": 30, "lr": 5e-4, "batch_size": 8, "max_length": 64}},
        "tasks": {t: {"n_train": 120, "n_heldout": 30, "description": f"synthetic task {t}"} for t in tasks},
        "versions": {"forgetscope": _version()},
    }
    store = write_matrix_sweep(matrix, path, manifest=manifest, overwrite=overwrite)
    if extras:
        layout: SweepLayout = store.layout
        mean_f = F.mean(1)
        write_parquet(layout.sharpness_table, pd.DataFrame({
            **{c: runs[c] for c in ("run_id", "task", "seed", "strategy", "task_loss_after")},
            "mean_forgetting": mean_f,
            "sharpness_random_mean": 0.02 + 0.3 * mean_f + rng.normal(0, 0.01, len(mean_f)),
            "sharpness_sam_rise": 0.05 + 0.5 * mean_f + rng.normal(0, 0.03, len(mean_f)),
        }))
        pts = []
        A, alpha, beta, t0, c = 0.02, 0.3, 0.5, 5.0, 0.01
        for P in (1e5, 1e6, 1e7):
            for t in (10, 20, 50, 100, 200):
                fitted = A * (P / 1e5) ** alpha * ((t + t0) / 10) ** beta + c
                pts.append({"trainable_params": P, "steps": t, "fitted": fitted,
                            "forgetting": fitted * (1 + rng.normal(0, 0.05)), "heldout": t == 200})
        write_parquet(layout.scaling_points, pd.DataFrame(pts))
        write_json(layout.scaling_fit, {
            "form": "F(P, t) = A (P/1e5)^alpha ((t + t0)/10)^beta + c",
            "params": {"A": A, "alpha": alpha, "beta": beta, "t0": t0, "c": c},
            "ci95": {"alpha": [0.27, 0.33], "beta": [0.45, 0.55]},
            "heldout_rmse": 0.004, "n_points": len(pts),
        })
    return store


def _version() -> str:
    import forgetscope

    return forgetscope.__version__


CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
                  "--disable-extensions", "--hide-scrollbars")


def screenshot(html: str | os.PathLike[str], png: str | os.PathLike[str], *, width: int = 1280,
               height: int = 16000, out_width: int | None = 800) -> Path:
    """Full-page PNG of a report with headless Chromium (trimmed to the page, scaled to ``out_width``)."""
    import shutil
    import subprocess
    import tempfile

    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        raise RuntimeError("chromium not found (apt-get install -y chromium)")
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.png"
        subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={tmp}/profile", f"--screenshot={raw}",
                        f"--window-size={width},{height}", Path(html).resolve().as_uri()],
                       check=True, capture_output=True, timeout=180)
        from PIL import Image

        im = Image.open(raw).convert("RGB")
        a = np.asarray(im).astype(int)
        bg = a[-1, 5]  # page background below the footer
        content = np.flatnonzero(np.abs(a - bg).sum(2).max(1) > 10)
        im = im.crop((0, 0, im.width, min(im.height, int(content.max()) + 40)))
        if out_width and out_width < im.width:
            im = im.resize((out_width, round(im.height * out_width / im.width)), Image.LANCZOS)
        im.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(png, optimize=True)
    return png


if __name__ == "__main__":  # pragma: no cover
    import argparse

    ap = argparse.ArgumentParser(description="write a synthetic sweep with data for every report section")
    ap.add_argument("output", nargs="?", default="sweeps/report-demo")
    ap.add_argument("--screenshot", help="also build the report and save a full-page PNG of it here")
    args = ap.parse_args()
    target = Path(args.output)
    write_demo_sweep(target)
    result = {"written": str(target)}
    if args.screenshot:
        from forgetscope.report import build_report

        html = build_report(target)
        result.update(report=str(html), screenshot=str(screenshot(html, args.screenshot)))
    print(json.dumps(result))
