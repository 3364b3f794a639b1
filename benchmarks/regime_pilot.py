"""Run (or resume) a pre-registered regime pilot and write each candidate's verdict and the selection.

    FORGETSCOPE_NO_PROGRESS=1 python benchmarks/regime_pilot.py configs/regimes/smollm2.yaml [--report-only]

The pilot file fixes candidates, criteria and the selection rule (forgetscope.experiments.regime_pilot).
Its SHA-256 is sealed under the pilot's output before the first run; a changed file is refused (exit 2).
Candidates run one after another in the order listed, each as an ordinary resumable sweep under
OUTPUT/<candidate>/sweep. After every finished run OUTPUT/<candidate>/ gets verdict.json (each criterion's
value, target and verdict) and per_run.csv, and OUTPUT/selection.json the rule applied to the candidates
finished so far (``complete: false`` until every candidate is).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("FORGETSCOPE_NO_PROGRESS", "1")


def uniform_loss(model: str) -> float:
    """log(vocabulary size): the mean loss of a uniform guess over the model's tokens."""
    from forgetscope.models import load_tokenizer, resolve_model

    return math.log(len(load_tokenizer(resolve_model(model))))


def write_verdicts(pilot, configs: dict, uniform: float) -> dict:
    """Rewrite every started candidate's verdict and the selection over the finished ones."""
    from forgetscope.analysis.regime import regime_verdict, select_regime
    from forgetscope.errors import DataError
    from forgetscope.predict.binary import binary_forgetting
    from forgetscope.store import SweepStore

    verdicts, finished = {}, []
    for name, cfg in configs.items():
        store = SweepStore(cfg.output)
        if not store.exists() or not store.finished_run_ids():
            continue
        full = store.consolidate()
        try:
            binary = binary_forgetting(full)
        except DataError:
            binary = None
        v = regime_verdict(full.select_kind("lm"), pilot.criteria, uniform_loss=uniform, binary=binary)
        n_planned = len(cfg.tasks) * len(cfg.seed_list)
        v["complete"] = v["n_runs"] == n_planned
        v.pop("per_run").to_csv(pilot.layout.per_run(name), index=False)
        v["train"] = cfg.train.model_dump(include={"method", "steps", "lr", "lora_rank", "target_modules"})
        pilot.layout.verdict(name).write_text(json.dumps(v, indent=1, default=float) + "\n")
        verdicts[name] = v
        if v["complete"]:
            finished.append(name)
    done = {k: verdicts[k] for k in finished}
    sizes = {k: configs[k].train.lr * configs[k].train.steps for k in configs}
    chosen = (select_regime(done, update_size=sizes, tie_nats=pilot.tie_nats) if done
              else {"chosen": None, "reason": "no candidate has finished yet"})
    selection = {"complete": len(finished) == len(configs), "candidates_finished": finished,
                 "candidates_listed": list(configs), "uniform_loss": uniform, **chosen,
                 "summary": {k: {"usable": v["usable"], "complete": v["complete"],
                                 "mean_task_loss_after": v["mean_task_loss_after"],
                                 **{c: d["met"] for c, d in v["criteria"].items()}} for k, v in verdicts.items()}}
    pilot.layout.selection.write_text(json.dumps(selection, indent=1, default=float) + "\n")
    return selection


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pilot", type=Path)
    ap.add_argument("--report-only", action="store_true", help="rewrite the verdicts; train nothing")
    args = ap.parse_args()
    from forgetscope.errors import ForgetscopeError
    from forgetscope.experiments import run_sweep
    from forgetscope.experiments.regime_pilot import candidate_configs, load_pilot, seal_pilot

    try:
        pilot = load_pilot(args.pilot)
        configs = candidate_configs(pilot)
        seal_pilot(args.pilot, pilot)
    except ForgetscopeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    uniform = uniform_loss(pilot.model)
    if not args.report_only:
        for name, cfg in configs.items():
            t0 = time.perf_counter()

            def progress(spec, record, name=name, t0=t0) -> None:
                print(f"{name}: {spec.run_id} done at {time.perf_counter() - t0:.0f}s "
                      f"(task loss {record['task_loss_before']:.3f}->{record['task_loss_after']:.3f})", flush=True)
                write_verdicts(pilot, configs, uniform)

            run_sweep(cfg, on_run=progress)
    print(json.dumps(write_verdicts(pilot, configs, uniform), indent=1, default=float))


if __name__ == "__main__":
    main()
