"""Running a comparison: the plain runs, then every strategy from the same base weights and batches,
resumable; results written atomically under ``SWEEP/compare/``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from forgetscope.analysis.plots import write_comparison
from forgetscope.experiments.compare.config import (
    CompareConfig,
    check_known_unchanged,
    headline_kind,
    refuse_pending,
    split_for,
    validate_compare,
)
from forgetscope.experiments.compare.stats import summarize
from forgetscope.experiments.run import Experiment
from forgetscope.experiments.spec import RunSpec
from forgetscope.store.io import write_csv
from forgetscope.store.layout import SweepLayout
from forgetscope.store.lock import holds_output


def _spec(task: str, seed: int, name: str, options: dict[str, Any]) -> RunSpec:
    return RunSpec(task, seed, name, tuple(sorted(options.items())))


class CompareExperiment(Experiment):
    """A sweep run that also records the task's held-out next-token accuracy after fine-tuning."""

    name = "compare"

    def measure_unmerged(self, session, spec: RunSpec, model: Any) -> dict[str, Any]:
        """The task's held-out token accuracy (encoded at ``train.max_length``, as the task trained)."""
        evaluator = session.evaluator  # built when the base model loaded, before this run trained
        encoded = evaluator.encode(session.tasks[spec.task].heldout, max_length=session.config.train.max_length)
        return {"task_accuracy_after": evaluator.token_accuracy(model, encoded)}

    def evaluate(self, session, spec: RunSpec, model: Any, hooks: list) -> pd.DataFrame:
        """Plain runs: every upstream example. Strategy runs with ``compare.measure_pool: false``: the
        held-out part only (the rest stays NaN), measured with the same encoding and settings."""
        measured = session.extras.get("strategy_measured")
        if spec.strategy == "plain" or measured is None:
            return super().evaluate(session, spec, model, hooks)
        from forgetscope.precision import DTYPES, merge_for_evaluation

        model = merge_for_evaluation(model, DTYPES[session.precision().dtype])
        keep = set(measured)
        after = session.evaluate(model, [e for e in session.upstream if e.example_id in keep],
                                 desc=f"held-out upstream after {spec.task}")
        return after.rename(columns={"loss": "loss_after", "em": "em_after"})[
            ["example_id", "loss_after", "em_after"]]


COMPARE = CompareExperiment()


class WallClock:
    """``command.txt`` and ``wall_time.json``: what produced the directory and how long each invocation took."""

    def __init__(self, layout: SweepLayout, command: str | None):
        self.layout = layout
        self.t0 = time.perf_counter()
        self.runs = 0
        layout.compare_dir.mkdir(parents=True, exist_ok=True)
        if command:
            _write_text(layout.compare_command, command.rstrip() + "\n")
        data = _read_json(layout.compare_wall_time) or {"invocations": []}
        data["invocations"].append({"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "wall_s": 0.0, "runs": 0,
                                    "finished": None})
        self.data = data
        self.save()

    def save(self, finished: bool = False) -> None:
        inv = self.data["invocations"][-1]
        inv["wall_s"] = round(time.perf_counter() - self.t0, 1)
        inv["runs"] = self.runs
        if finished:
            inv["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.data["total_wall_s"] = round(sum(i["wall_s"] for i in self.data["invocations"]), 1)
        self.data["complete"] = finished
        _write_json(self.layout.compare_wall_time, self.data)

    def run_done(self) -> None:
        self.runs += 1
        self.save()


@holds_output("forgetscope compare", refuse_pending, validate_compare)  # before the output directory exists
def run_compare(cfg: CompareConfig, *, output: str | Path | None = None, overwrite: bool = False,
                log=print, command: str | None = None) -> dict[str, Any]:
    """Run (or resume) a comparison; returns {"summary", "tests", "per_run" (DataFrames), "paths"}.

    Runs go through the config's executor (``local`` or ``ray``) in two phases: the plain runs, then
    every strategy (whose replay options are derived from the plain rows). ``command`` is written to
    ``compare/command.txt``.
    """
    from forgetscope.experiments.session import SweepSession
    from forgetscope.experiments.sweep import ensure_upstream_measured, open_store, run_specs

    output = Path(output or cfg.output)
    cfg = cfg.model_copy(update={"output": output})  # the fingerprint covers strategies, known tasks, options
    session = SweepSession.prepare(cfg.model_copy(update={"tasks": list(cfg.tasks) + list(cfg.known_tasks)}))
    session.config = cfg.model_copy(update={"tasks": list(cfg.tasks) + list(cfg.known_tasks)})
    layout = SweepLayout(output)
    ids = [e.example_id for e in session.upstream]
    pool_ids, held_ids = split_for(cfg, session.upstream)
    headline_kind(cfg, session.upstream, held_ids)  # a kind with no held-out example fails before any run
    pool_set = set(pool_ids)
    session.extras["strategy_upstream"] = [e for e in session.upstream if e.example_id in pool_set]
    if not cfg.compare.measure_pool:
        session.extras["strategy_measured"] = list(held_ids)
    store = open_store(cfg, session, output, overwrite)
    recorded = store.read_manifest().get("known_rows")
    known = check_known_unchanged(recorded, cfg)
    if known and recorded is None:
        store.update_manifest(known_rows=known)
    clock = WallClock(layout, command)
    _write_json(layout.compare_split, {"pool": pool_ids, "heldout": held_ids})
    ensure_upstream_measured(session, store)
    order: list[str] = []

    def on_run(spec: RunSpec, record: dict[str, Any]) -> None:
        clock.run_done()
        log(f"  {spec.run_id}: task loss {record['task_loss_after']:.3f}, train {record['train_wall_s']:.0f}s")

    def run(specs: list[RunSpec]) -> None:
        order.extend(s.run_id for s in specs)
        run_specs(session, store, specs, order=order, executor=cfg.executor, experiment=COMPARE, on_run=on_run)

    seeds = cfg.seed_list
    tasks = [t.name for t in cfg.tasks]
    log(f"plain runs: {len(tasks)} tasks x {len(seeds)} seeds + {len(cfg.known_tasks)} known-only tasks")
    plain = {(t, s): _spec(t, s, "plain", {}) for t in tasks for s in seeds}
    run(list(plain.values()) + [_spec(t.name, seeds[0], "plain", {}) for t in cfg.known_tasks])
    matrix = store.consolidate(order)
    col = {c: j for j, c in enumerate(matrix.col_names)}
    row_of = {r: i for i, r in enumerate(matrix.row_names)}

    def plain_row(t: str, s: int) -> np.ndarray:
        return matrix.values[row_of[plain[(t, s)].run_id]]

    specs: dict[tuple[str, str, int], Any] = {}
    for s in seeds:
        for t in tasks:
            for st in cfg.strategies:
                opts = cfg.options_of(st)
                inputs = cfg.inputs_of(st)  # what the arm's options say the comparison must provide
                if inputs.own_row is not None:  # the task's own forgetting row over the pool (an oracle)
                    f = layout.compare_oracle(t, s)
                    row = plain_row(t, s)
                    _write_json(f, {"values": {i: _num(row[col[i]]) for i in pool_ids},
                                    "evaluations": len(ids), "source": plain[(t, s)].run_id})
                    opts[inputs.own_row] = str(f)
                probe_seed = cfg.probe_seed_for(t, s)
                if inputs.known_rows is not None:  # known rows; the probe seeded by the run (or run and task)
                    opts.setdefault(inputs.known_rows, cfg.compare.known_path or str(output))
                    opts.setdefault("predictor_options", dict(cfg.compare.predictor_options))
                    opts.setdefault("seed", probe_seed)
                if inputs.measures_probe:
                    opts.setdefault("probe", cfg.compare.probe)
                    # the probe's base losses are measured once by the run itself (|S| evaluations), with
                    # the same encoding as its evaluation after the warm-up
                    opts.setdefault("probe_base", "measure")
                if inputs.probe_row is not None:  # the plain run's forgetting on the probe
                    from forgetscope.predict import choose_probe

                    f = layout.compare_probe(t, s)
                    pick = choose_probe(len(pool_ids), cfg.compare.probe, seed=probe_seed)
                    probe_ids = [pool_ids[k] for k in pick]
                    row = plain_row(t, s)
                    _write_json(f, {"values": {i: _num(row[col[i]]) for i in probe_ids},
                                    "evaluations": len(probe_ids),
                                    "source": f"{plain[(t, s)].run_id} evaluated on the probe set only"})
                    opts[inputs.probe_row] = str(f)
                specs[(st.display, t, s)] = _spec(t, s, st.name, opts)
    log(f"strategies: {len(specs)} runs ({', '.join(s.display for s in cfg.strategies)})")
    run(list(specs.values()))
    matrix = store.consolidate(order)
    result = summarize(matrix, cfg, plain, specs, held_ids)
    paths = save_results(result, layout)
    if getattr(cfg, "primary", None) is not None:  # a SAM radius grid: its pre-registered contrast
        from forgetscope.experiments.compare.sam_grid import write_primary

        result["primary"] = write_primary(result["per_run"], cfg, layout)
        paths["primary"] = layout.compare_primary
    store.update_manifest(status="complete", completed=time.strftime("%Y-%m-%dT%H:%M:%S%z"), kind="compare")
    clock.save(finished=True)
    result["paths"] = paths
    return result


def _num(x: float) -> float | None:
    return None if not np.isfinite(x) else float(x)


def _write_json(path: Path, obj: Any) -> None:
    from forgetscope.store.io import write_json

    write_json(path, obj)


def _write_text(path: Path, text: str) -> None:
    import os
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def save_results(result: dict[str, Any], layout: SweepLayout) -> dict[str, Path]:
    layout.compare_dir.mkdir(parents=True, exist_ok=True)
    paths = {"summary": layout.compare_summary, "tests": layout.compare_tests, "per_run": layout.compare_per_run,
             "chart": layout.compare_chart}
    for name in ("summary", "tests", "per_run"):
        write_csv(paths[name], result[name])
    write_comparison(result["summary"], paths["chart"])
    return paths
