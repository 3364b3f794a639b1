"""How closely a study's null sweep repeats the main sweep: its task rows are the main sweep's seed-0 runs
again (same config and seed), so any difference is the machine's arithmetic, not the design.

    python benchmarks/study_determinism.py configs/studies/smollm2.yaml   # writes OUTPUT/analysis/determinism.json

Records, for the runs both sweeps hold, how many rows are bit-identical and the largest |ΔF|, and the largest
difference of the base losses (loss_before) the two sweeps measured.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study", type=Path)
    args = ap.parse_args()
    import numpy as np

    from forgetscope.experiments.study import load_study
    from forgetscope.store import SweepStore

    study, _ = load_study(args.study)
    main_sweep, null_sweep = SweepStore(study.layout.sweep), SweepStore(study.layout.null_sweep)
    a, b = main_sweep.load_matrix(), null_sweep.load_matrix()
    shared = [r for r in b.row_names if r in a.row_names]
    rows = [(a.values[a.row_names.index(r)], b.values[b.row_names.index(r)]) for r in shared]
    before_a, _ = main_sweep.base_losses()
    before_b, _ = null_sweep.base_losses()
    out = {"study": str(args.study), "shared_runs": len(shared),
           "bit_identical_rows": int(sum(np.array_equal(x, y, equal_nan=True) for x, y in rows)),
           "max_abs_diff_F": float(max(np.nanmax(np.abs(x - y)) for x, y in rows)) if rows else None,
           "max_abs_diff_loss_before": float(np.nanmax(np.abs(before_a - before_b))),
           "main_sweep_created": main_sweep.read_manifest().get("created"),
           "null_sweep_created": null_sweep.read_manifest().get("created")}
    dest = study.layout.determinism
    dest.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
