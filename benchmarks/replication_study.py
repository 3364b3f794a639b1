"""Run (or resume) a pre-registered replication study in the regime its model's pilot selected.

    FORGETSCOPE_NO_PROGRESS=1 python benchmarks/replication_study.py configs/studies/smollm2.yaml

The study file fixes tasks, controls and analyses (forgetscope.experiments.study); ``train`` is the one the
pilot's selection names. Refused (exit 2, nothing run) while the pilot is unfinished or when it found no
usable regime. The file's SHA-256 is sealed under OUTPUT before the first run. Writes OUTPUT/regime.json
(the chosen candidate and its train block), then runs OUTPUT/sweep (every task, the format-only rows,
sharpness on every run) and OUTPUT/null_sweep (the effect-matched null), each an ordinary resumable sweep.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("FORGETSCOPE_NO_PROGRESS", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study", type=Path)
    args = ap.parse_args()
    from forgetscope.errors import ForgetscopeError
    from forgetscope.experiments import run_sweep
    from forgetscope.experiments.sharpness import SharpnessSweepConfig, sharpness_sweep
    from forgetscope.experiments.study import chosen_regime, load_study, seal_study, study_configs

    try:
        study, pilot = load_study(args.study)
        name, train = chosen_regime(pilot)
        configs = study_configs(study, pilot, train)
        seal_study(args.study, study)
    except ForgetscopeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    regime = {"pilot": str(study.pilot), "chosen": name, "train": train.model_dump(mode="json", exclude_unset=True)}
    study.layout.regime.write_text(json.dumps(regime, indent=1) + "\n")
    for part, cfg in configs.items():
        t0 = time.perf_counter()

        def progress(spec, record, part=part, t0=t0) -> None:
            print(f"{part}: {spec.run_id} done at {time.perf_counter() - t0:.0f}s "
                  f"(task loss {record['task_loss_before']:.3f}->{record['task_loss_after']:.3f})", flush=True)

        if isinstance(cfg, SharpnessSweepConfig):
            sharpness_sweep(cfg, on_run=progress, figures=False)
        else:
            run_sweep(cfg, on_run=progress)
        print(f"{part}: complete", flush=True)


if __name__ == "__main__":
    main()
