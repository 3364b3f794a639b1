"""Running a sweep: fine-tune the base model on each task, evaluate the upstream set, store each row.

The flow of :func:`run_sweep`:

1. validate everything first (config, model, upstream data, every task, and their encoding with
   ``eval.max_length`` and ``train.max_length``) so that a bad input fails before the sweep directory
   is touched;
2. create the directory (or reopen it: a directory holding the same results-relevant config, model
   and data resumes; a change in any of them is refused, naming what changed);
3. evaluate the base model on the upstream examples once (``upstream.parquet``: ``kind``,
   ``loss_before``, ``em_before``, ``n_truncated``);
4. hand the runs that are not finished yet to an executor; each finished run is written atomically
   (``runs/<run_id>.*``, the record holding its rows file's sha256) and the consolidated tables and
   ``F.npy`` are rebuilt after it.

A killed sweep therefore holds only whole runs and restarts where it stopped. Files damaged later (a
truncated copy, a bad disk) are found on resume before any model loads and named; ``repair`` sets them
aside and runs their runs again.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from forgetscope.config import SweepConfig
from forgetscope.data.types import KINDS
from forgetscope.errors import StoreError
from forgetscope.experiments.run import SWEEP, Experiment
from forgetscope.experiments.run_tracking import base_losses
from forgetscope.experiments.session import (
    SweepSession,
    config_changes,
    config_fingerprint,
    controlled_tasks,
    input_changes,
    upstream_frame,
)
from forgetscope.experiments.spec import RunSpec
from forgetscope.store import ForgettingMatrix, SweepStore
from forgetscope.store.lock import LOCK_NAME, OutputLock, has_content, refuse_multi_process


def plan_runs(config: SweepConfig) -> list[RunSpec]:
    """Every task x seed (a task's own ``seeds`` where given, else the sweep's) with the config's strategy."""
    opts = tuple(sorted(config.strategy_options.items()))
    return [RunSpec(tc.name, seed, config.strategy, opts) for tc in config.tasks
            for seed in (tc.seeds or config.seed_list)]


def software_versions() -> dict[str, str]:
    """The versions a manifest records beside its results."""
    import torch
    import transformers

    import forgetscope

    return {"forgetscope": forgetscope.__version__, "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version()}


def _manifest(config: SweepConfig, session: SweepSession, source: str = "run") -> dict[str, Any]:
    return {
        "source": source,
        "status": "running",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "fingerprint": config_fingerprint(config),
        "config": config.model_dump(mode="json"),
        "model": session.source.describe(),
        "inputs": session.inputs,
        "eval": session.eval_summary(),
        "seeds": sorted({s.seed for s in plan_runs(config)}),
        "n_upstream": len(session.upstream),
        "upstream_kinds": {k: n for k in KINDS if (n := sum(e.kind == k for e in session.upstream))},
        "tasks": {name: {"n_train": len(t.train), "n_heldout": len(t.heldout), "description": t.description,
                         **({"control": t.control, "control_of": controlled_tasks(config).get(name)}
                            if t.control is not None else {})}
                  for name, t in session.tasks.items()},
        "versions": software_versions(),
    }


def resume_conflict(manifest: dict[str, Any], config: SweepConfig, session: SweepSession) -> str | None:
    """Why an existing sweep directory cannot be resumed with this config and these inputs (None: it can).

    The results-relevant config is compared first (its changed fields are named), then the content
    hashes of the model, the upstream data and each task's data.
    """
    if manifest.get("fingerprint") != config_fingerprint(config):
        changed = config_changes(manifest.get("config") or {}, config.model_dump(mode="json"))
        return "the config changed since this sweep started" + (f" ({'; '.join(changed)})" if changed else "")
    old = dict(manifest.get("inputs") or {})
    old.setdefault("model", manifest.get("model") or {})
    changes = input_changes(old, session.inputs)
    return "; ".join(changes) if changes else None


def check_stored_files(store: SweepStore, *, repair: bool = False) -> None:
    """Before a resume loads any model: every finished run's files (and the upstream table) must read back
    whole. A damaged one is refused by name, or with ``repair`` moved to ``runs/damaged/`` so that its run
    (or the base model's measurement) is made again."""
    damaged = store.damaged_files()
    if not damaged:
        return
    if not repair:
        first = damaged[0]
        what = f"run {first.run_id}'s files" if first.run_id is not None else "it"
        again = "runs it again" if first.run_id is not None else "measures the base model again"
        more = f" ({len(damaged) - 1} more damaged file(s))" if len(damaged) > 1 else ""
        raise StoreError(f"{first}{more}; `forgetscope run --repair` moves {what} to "
                         f"{store.layout.damaged_dir.relative_to(store.path).as_posix()}/ and {again}")
    for d in damaged:
        store.set_aside(d)


def open_store(config: SweepConfig, session: SweepSession, output: Path, overwrite: bool = False, *,
               repair: bool = False, source: str = "run") -> SweepStore:
    """Create the sweep directory, or reopen it when it holds the same sweep (resume).

    Every example is encoded first (:meth:`SweepSession.preflight`), so bad input fails before the
    directory is touched. A directory holding a sweep with another config, model or data is refused with
    one line naming what changed, unless ``overwrite``. On resume, the stored runs are read back before the
    model loads (:func:`check_stored_files`; ``repair`` sets damaged ones aside to run again). ``source``:
    the experiment the manifest names (``run``, ``scaling``).
    """
    import shutil

    store = SweepStore(output)
    replace = False
    if store.exists():
        conflict = resume_conflict(store.read_manifest(), config, session)
        if conflict is None:
            check_stored_files(store, repair=repair)
            session.preflight()
            return store
        if not overwrite:
            raise StoreError(f"{output} holds a different sweep: {conflict}; pass --overwrite to start it "
                             "fresh, or choose another output")
        replace = True
    elif has_content(output):
        if not overwrite:
            raise StoreError(f"{output} exists and is not a forgetscope sweep; choose another output")
        replace = True
    session.preflight()
    if replace:  # everything but the lock this process holds
        for p in output.iterdir():
            if p.name != LOCK_NAME:
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    output.mkdir(parents=True, exist_ok=True)
    store.write_manifest(_manifest(config, session, source))
    return store


def ensure_upstream_measured(session: SweepSession, store: SweepStore) -> None:
    """Evaluate the base model on the upstream set once per sweep (``loss_before``, ``em_before``).

    The device type and dtype of that measurement go into the manifest's ``eval`` entry (``device``,
    ``dtype``) and travel to every run (``session.extras``), which refuses to measure ``loss_after``
    any other way; a resumed sweep is held to the precision it started with.
    """
    from forgetscope.precision import Precision

    if store.has_upstream():
        recorded = Precision.from_manifest(store.read_manifest())
        session.check_precision(recorded)
        session.extras["eval_precision"] = recorded
        session.extras["loss_before"] = base_losses(store.read_upstream())  # what a run's tracker subtracts
        return
    if store.finished_run_ids():  # the table was set aside as damaged: measured again as the runs were
        session.check_precision(Precision.from_manifest(store.read_manifest()))
    precision = session.precision()
    session.extras["eval_precision"] = precision
    store.update_manifest(eval={**(store.read_manifest().get("eval") or {}), **precision.eval_fields()})
    base, _ = session.base()
    before = session.evaluate(base, session.upstream, desc="upstream before")
    up = upstream_frame(session.upstream)
    up["n_tokens"] = before["n_tokens"].to_numpy()
    up["n_truncated"] = [e.n_truncated for e in session.upstream_encoded]
    up["loss_before"] = before["loss"].to_numpy()
    up["em_before"] = before["em"].to_numpy()
    store.write_upstream(up)
    session.extras["loss_before"] = base_losses(up)


RunCallback = Callable[[RunSpec, dict[str, Any]], None]


def run_specs(session: SweepSession, store: SweepStore, specs: Sequence[RunSpec], *, order: list[str],
              executor: str = "local", experiment: Experiment = SWEEP,
              on_run: RunCallback | None = None,
              annotate: Callable[[dict[str, Any], pd.DataFrame], dict[str, Any]] | None = None) -> None:
    """Run the unfinished ``specs`` on an executor; store each run as soon as it finishes.

    ``order`` is the row order of the consolidated matrix (finished runs of earlier phases included);
    ``annotate(record, rows)`` may add fields to a record on the driver before it is stored.
    """
    from forgetscope.experiments.executors import get_executor

    todo = [s for s in specs if not store.has_run(s.run_id)]

    def finished(spec: RunSpec, record: dict[str, Any], rows: pd.DataFrame) -> None:
        if annotate is not None:
            record = annotate(record, rows)
        store.write_run(record, rows)
        store.consolidate(order)
        if on_run is not None:
            on_run(spec, record)

    get_executor(executor).run(session, todo, finished, total=len(specs), done=len(specs) - len(todo),
                               experiment=experiment)


def run_sweep(config: SweepConfig, *, output: str | Path | None = None, executor: str | None = None,
              overwrite: bool = False, on_run: RunCallback | None = None,
              session: SweepSession | None = None, repair: bool = False) -> ForgettingMatrix:
    """Run (or resume) a sweep and return its forgetting matrix; see the module docstring. ``repair``: on
    resume, move the files of runs that cannot be read back to ``runs/damaged/`` and run those runs again."""

    from forgetscope.experiments.validate import validate_sweep

    output = Path(output or config.output)
    config = config.model_copy(update={"output": output, **({"executor": executor} if executor else {})})
    validate_sweep(config)  # strategy, executor, input files: before any model is loaded
    refuse_multi_process("forgetscope run")
    with OutputLock(output):  # one writer per sweep directory, held until the matrix is written
        session = session or SweepSession.prepare(config)  # validates data before anything is written
        session.config = config
        executor = config.executor
        store = open_store(config, session, output, overwrite, repair=repair)
        ensure_upstream_measured(session, store)
        specs = plan_runs(config)
        order = [s.run_id for s in specs]
        run_specs(session, store, specs, order=order, executor=executor, on_run=on_run)
        matrix = store.consolidate(order)
        store.update_manifest(status="complete", completed=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    return matrix
