"""Run the small real-model scaling sweep (configs/scaling_demo.yaml) and record the fitted laws.

    FORGETSCOPE_NO_PROGRESS=1 python benchmarks/scaling_demo.py [--output DIR] [--config PATH]

Writes DIR/scaling/{points.parquet,points.csv,fit.json,*.png} (default benchmarks/results/scaling_demo)
and prints the fitted exponents with their 95% CIs and held-out errors.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("FORGETSCOPE_NO_PROGRESS", "1")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/scaling_demo.yaml")
    ap.add_argument("--output", default="benchmarks/results/scaling_demo")
    args = ap.parse_args()
    from forgetscope.experiments import scaling as ss

    cfg = ss.load_scaling_config(args.config)
    t0 = time.perf_counter()
    points = ss.run_scaling_sweep(cfg, output=args.output, overwrite=True,
                                  on_run=lambda rid, rows: print(f"{rid}: {time.perf_counter() - t0:.0f}s", flush=True))
    report, paths = ss.fit_and_write(points, cfg, args.output)
    print(points.to_string())
    print(report.summary_rows().to_string())
    for n in report.notes:
        print("note:", n)
    print(f"total {time.perf_counter() - t0:.0f}s; wrote {paths['fit'].parent}")


if __name__ == "__main__":
    main()
