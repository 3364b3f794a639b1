"""What a sweep config would run, checked without loading weights, training or writing (``forgetscope run --check``).

:func:`check_sweep` makes every check :func:`~forgetscope.experiments.sweep.run_sweep` makes before its first
write except those that need the weights (encoding with the tokenizer): the strategy, executor and loading
options (:func:`~forgetscope.experiments.validate.validate_sweep`), the model resolved (its content hash, no
weights), the upstream set and every task loaded. It returns the plan: runs (tasks × seeds with the strategy),
each task's sizes, the upstream examples per kind, and what the output directory holds (nothing yet, a sweep it
would resume with how many runs done, or a different sweep it would refuse).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forgetscope.config import SweepConfig
from forgetscope.data.types import KINDS
from forgetscope.experiments.spec import RunSpec


@dataclass
class SweepPlan:
    """A checked sweep config's plan; :meth:`lines` says it in words."""

    config: SweepConfig
    output: Path
    runs: list[RunSpec]
    tasks: list[dict[str, Any]]  # name, family, n_train, n_heldout, seeds, runs
    upstream: dict[str, int]  # examples per kind
    model: dict[str, Any]
    output_state: str  # new | resume | conflict | not a sweep
    done: list[str] = field(default_factory=list)  # run ids already on disk (resume)
    conflict: str = ""

    @property
    def seeds(self) -> list[int]:
        return sorted({s.seed for s in self.runs})

    def lines(self) -> list[str]:
        n_tasks, seeds = len(self.tasks), self.seeds
        per_task = {len(t["seeds"]) for t in self.tasks}
        shape = f"{n_tasks} task(s) × {len(seeds)} seed(s)" if per_task == {len(seeds)} else \
            f"{n_tasks} task(s), {len(seeds)} seed(s) in all (some tasks set their own)"
        up = " + ".join(f"{n} {k}" for k, n in self.upstream.items())
        where = {"new": "a new sweep directory",
                 "resume": f"resumes the sweep there: {len(self.done)} of {len(self.runs)} run(s) done",
                 "conflict": f"holds a different sweep ({self.conflict}); run would refuse without --overwrite",
                 "not a sweep": "exists and is not a sweep; run would refuse without --overwrite"}[self.output_state]
        model = "/".join(str(x) for x in (self.model.get("location"), self.model.get("gguf_file")) if x)
        t = self.config.train
        return [f"plan: {len(self.runs)} run(s) = {shape} (strategy {self.config.strategy}; seeds "
                f"{', '.join(map(str, seeds))})",
                f"upstream: {up} example(s) (each evaluated once before and once after every run)",
                f"model: {model} ({self.model.get('kind')}); {t.method} fine-tuning, {t.steps} steps, lr {t.lr:g}, "
                f"batch {t.batch_size}",
                f"output: {self.output} — {where}",
                "nothing was loaded onto a device, trained or written"]


def check_sweep(config: SweepConfig, *, output: str | Path | None = None, executor: str | None = None) -> SweepPlan:
    """Validate ``config`` and plan its runs, without loading weights, training or writing anything."""
    from forgetscope.experiments.session import SweepSession
    from forgetscope.experiments.sweep import plan_runs, resume_conflict
    from forgetscope.experiments.validate import validate_sweep
    from forgetscope.store import SweepStore
    from forgetscope.store.lock import has_content

    out = Path(output or config.output)
    config = config.model_copy(update={"output": out, **({"executor": executor} if executor else {})})
    validate_sweep(config)
    session = SweepSession.prepare(config)  # data loaded, model resolved: no weights
    specs = plan_runs(config)
    tasks = []
    for tc in config.tasks:
        task = session.tasks[tc.name]
        mine = [s.seed for s in specs if s.task == tc.name]
        tasks.append({"name": tc.name, "family": task.family, "n_train": len(task.train),
                      "n_heldout": len(task.heldout), "seeds": mine, "runs": len(mine)})
    upstream = {k: n for k in KINDS if (n := sum(e.kind == k for e in session.upstream))}
    store = SweepStore(out)
    state, done, conflict = "new", [], ""
    if store.exists():
        conflict = resume_conflict(store.read_manifest(), config, session) or ""
        state = "conflict" if conflict else "resume"
        finished = set(store.finished_run_ids()) if not conflict else set()
        done = [s.run_id for s in specs if s.run_id in finished]
    elif has_content(out):
        state = "not a sweep"
    return SweepPlan(config=config, output=out, runs=specs, tasks=tasks, upstream=upstream,
                     model=session.source.describe() if session.source is not None else {}, output_state=state,
                     done=done, conflict=conflict)
