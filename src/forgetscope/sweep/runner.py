"""Running a sweep: fine-tune the base model on each task, evaluate the upstream set, store each row.

The flow of :func:`run_sweep`:

1. validate everything first (config, model, upstream data, every task) so that a bad input fails
   before the sweep directory is touched;
2. create the directory (or reopen it: a directory holding the same config resumes);
3. evaluate the base model on the upstream examples once (``upstream.parquet``, ``loss_before``);
4. hand the runs that are not finished yet to an executor; each finished run is written atomically
   (``runs/<run_id>.*``) and the consolidated tables and ``F.npy`` are rebuilt after it.

A killed sweep therefore holds only whole runs and restarts where it stopped.
"""

from __future__ import annotations

import copy
import hashlib
import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from forgetscope.config import SweepConfig, TaskConfig
from forgetscope.data.types import Example, Task
from forgetscope.errors import ConfigError, DataError, StoreError
from forgetscope.store import ForgettingMatrix, SweepStore


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep: a task, a seed, a strategy (with options) and optional train overrides."""

    task: str
    seed: int
    strategy: str = "plain"
    strategy_options: tuple[tuple[str, Any], ...] = ()
    train_overrides: tuple[tuple[str, Any], ...] = ()

    @property
    def run_id(self) -> str:
        extra = ""
        if self.strategy_options or self.train_overrides:
            blob = json.dumps([self.strategy_options, self.train_overrides], sort_keys=True, default=str)
            extra = "__" + hashlib.sha1(blob.encode()).hexdigest()[:8]
        return f"{self.task}__{self.strategy}__s{self.seed}{extra}"


def config_fingerprint(config: SweepConfig) -> str:
    """Hash of everything that changes results (not the output path or executor)."""
    data = config.model_dump(mode="json", exclude={"output", "executor", "report_to"})
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def load_upstream(config: SweepConfig) -> list[Example]:
    src = config.upstream
    if src.source == "demo":
        from forgetscope.data.demo import demo_upstream, demo_upstream_instruct

        pairs = demo_upstream_instruct(n=src.n_instruct, seed=config.seed) if src.n_instruct else []
        return demo_upstream(n=src.n, seed=config.seed) + pairs
    from forgetscope.data.loading import load_examples

    return load_examples(src.source, name="upstream", limit=src.n, seed=config.seed, text_field=src.text_field,
                         prompt_field=src.prompt_field, response_field=src.response_field,
                         answer_field=src.answer_field, id_field=src.id_field)


def load_task_from_config(tc: TaskConfig, seed: int) -> Task:
    from forgetscope.data.loading import load_task

    held = {"heldout_size": int(tc.heldout)} if (isinstance(tc.heldout, int) or tc.heldout >= 1) else \
        {"heldout_fraction": float(tc.heldout)}
    if tc.source is None:
        return load_task(tc.name, f"demo:{tc.name}", n_train=tc.n_train or tc.n, seed=seed,
                         description=tc.description)
    return load_task(tc.name, tc.source, seed=seed, n_train=tc.n_train, limit=tc.n, description=tc.description,
                     text_field=tc.text_field, prompt_field=tc.prompt_field, response_field=tc.response_field,
                     answer_field=tc.answer_field, id_field=tc.id_field, **held)


def upstream_frame(examples: list[Example]) -> pd.DataFrame:
    return pd.DataFrame({
        "example_id": [e.example_id for e in examples],
        "text": [e.text for e in examples],
        "prompt": [e.prompt for e in examples],
        "response": [e.response for e in examples],
        "answer": [e.answer for e in examples],
    })


@dataclass
class SweepSession:
    """What every run of a sweep shares, loaded once per process (a Ray worker builds its own)."""

    config: SweepConfig
    upstream: list[Example]
    tasks: dict[str, Task]
    source: Any = None
    _base: Any = None
    _tokenizer: Any = None
    chat: bool = False
    extras: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def prepare(cls, config: SweepConfig) -> SweepSession:
        """Load and validate data and resolve the model, without loading weights yet."""
        from forgetscope.models import resolve_model

        source = resolve_model(config.model)
        upstream = load_upstream(config)
        if not upstream:
            raise DataError("the upstream set is empty")
        tasks = {tc.name: load_task_from_config(tc, config.seed) for tc in config.tasks}
        return cls(config=config, upstream=upstream, tasks=tasks, source=source)

    def base(self):
        """(base model, tokenizer), loaded once; runs get deep copies so every run starts from it."""
        if self._base is None:
            from forgetscope.models import load_model

            self._base, self._tokenizer = load_model(self.source, device=self.config.train.device,
                                                     dtype=self.config.train.dtype)
            chat = self.config.eval.chat
            self.chat = bool(getattr(self._tokenizer, "chat_template", None)) if chat == "auto" else bool(chat)
        return self._base, self._tokenizer

    def fresh_model(self):
        base, tok = self.base()
        return copy.deepcopy(base), tok

    def evaluate(self, model, examples: list[Example], desc: str) -> pd.DataFrame:
        from forgetscope.measure import evaluate_examples

        _, tok = self.base()
        ev = self.config.eval
        return evaluate_examples(model, tok, examples, max_length=self.config.train.max_length,
                                 max_batch_tokens=ev.max_batch_tokens, max_batch_size=ev.max_batch_size,
                                 exact=ev.exact_match, progress=True, desc=desc, chat=self.chat)


def plan_runs(config: SweepConfig) -> list[RunSpec]:
    opts = tuple(sorted(config.strategy_options.items()))
    return [RunSpec(tc.name, seed, config.strategy, opts) for tc in config.tasks for seed in config.seed_list]


BeforeMerge = Callable[[Any, Any], dict[str, Any]]


def execute_run(session: SweepSession, spec: RunSpec, *,
                before_merge: BeforeMerge | None = None) -> tuple[dict[str, Any], pd.DataFrame]:
    """Fine-tune a fresh copy of the base model for one run and evaluate the upstream set after it.

    ``before_merge(model, train_result)`` sees the fine-tuned model before LoRA is folded in (e.g. to
    measure sharpness on the adapter); the dict it returns is added to the run record.
    """
    from forgetscope.logging_backends import logging_callback, make_logger
    from forgetscope.train import make_strategy, train_on_task

    t0 = time.perf_counter()
    model, tok = session.fresh_model()
    train_cfg = session.config.train.model_copy(update={"seed": spec.seed, **dict(spec.train_overrides)})
    strategy = make_strategy(spec.strategy, **dict(spec.strategy_options))
    strategy_upstream = session.extras.get("strategy_upstream", session.upstream)
    logger = make_logger(session.config.report_to, Path(session.config.output) / "logs" / spec.run_id,
                         run_name=spec.run_id)
    try:
        result = train_on_task(model, tok, session.tasks[spec.task], train_cfg, strategy=strategy,
                               upstream=strategy_upstream, chat=session.chat, callbacks=[logging_callback(logger)])
    finally:
        logger.close()
    extra = before_merge(result.model, result) if before_merge is not None else {}
    t1 = time.perf_counter()
    tuned = result.model
    if hasattr(tuned, "merge_and_unload"):  # fold LoRA into the weights: evaluation at base-model speed
        tuned = tuned.merge_and_unload()
    after = session.evaluate(tuned, session.upstream, desc=f"upstream after {spec.task}")
    if result.excluded_upstream_ids:
        gone = after["example_id"].isin(result.excluded_upstream_ids)
        after.loc[gone, ["loss", "em"]] = np.nan
    rows = after.rename(columns={"loss": "loss_after", "em": "em_after"})[["example_id", "loss_after", "em_after"]]
    record = {"run_id": spec.run_id, **result.record, "strategy_options": dict(spec.strategy_options), **extra,
              "eval_wall_s": time.perf_counter() - t1, "wall_s": time.perf_counter() - t0}
    return record, rows


def _manifest(config: SweepConfig, session: SweepSession) -> dict[str, Any]:
    import torch
    import transformers

    import forgetscope

    return {
        "source": "run",
        "status": "running",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "fingerprint": config_fingerprint(config),
        "config": config.model_dump(mode="json"),
        "model": session.source.describe(),
        "seeds": config.seed_list,
        "n_upstream": len(session.upstream),
        "tasks": {name: {"n_train": len(t.train), "n_heldout": len(t.heldout), "description": t.description}
                  for name, t in session.tasks.items()},
        "versions": {"forgetscope": forgetscope.__version__, "torch": torch.__version__,
                     "transformers": transformers.__version__, "python": platform.python_version()},
    }


def open_store(config: SweepConfig, session: SweepSession, output: Path, overwrite: bool = False) -> SweepStore:
    """Create the sweep directory, or reopen it when it holds the same sweep (resume)."""
    import shutil

    store = SweepStore(output)
    if store.exists():
        manifest = store.read_manifest()
        if manifest.get("fingerprint") != config_fingerprint(config):
            if not overwrite:
                raise StoreError(f"{output} holds a different sweep (config changed); "
                                 "choose another output or pass --overwrite")
            shutil.rmtree(output)
        else:
            return store
    elif output.exists() and any(output.iterdir()):
        if not overwrite:
            raise StoreError(f"{output} exists and is not a forgetscope sweep; choose another output")
        shutil.rmtree(output)
    output.mkdir(parents=True, exist_ok=True)
    store.write_manifest(_manifest(config, session))
    return store


def ensure_upstream_measured(session: SweepSession, store: SweepStore) -> None:
    """Evaluate the base model on the upstream set once per sweep (``loss_before``, ``em_before``)."""
    if store.has_upstream():
        return
    base, _ = session.base()
    before = session.evaluate(base, session.upstream, desc="upstream before")
    up = upstream_frame(session.upstream)
    up["n_tokens"] = before["n_tokens"].to_numpy()
    up["loss_before"] = before["loss"].to_numpy()
    up["em_before"] = before["em"].to_numpy()
    store.write_upstream(up)


RunCallback = Callable[[RunSpec, dict[str, Any]], None]


def run_sweep(config: SweepConfig, *, output: str | Path | None = None, executor: str | None = None,
              overwrite: bool = False, on_run: RunCallback | None = None,
              session: SweepSession | None = None) -> ForgettingMatrix:
    """Run (or resume) a sweep and return its forgetting matrix; see the module docstring."""
    from forgetscope.sweep.executors import get_executor

    output = Path(output or config.output)
    session = session or SweepSession.prepare(config)  # validates data before anything is written
    runner = get_executor(executor or config.executor)
    store = open_store(config, session, output, overwrite)
    ensure_upstream_measured(session, store)
    specs = plan_runs(config)
    todo = [s for s in specs if not store.has_run(s.run_id)]
    order = [s.run_id for s in specs]

    def finished(spec: RunSpec, record: dict[str, Any], rows: pd.DataFrame) -> None:
        store.write_run(record, rows)
        store.consolidate(order)
        if on_run is not None:
            on_run(spec, record)

    runner.run(session, todo, finished, total=len(specs), done=len(specs) - len(todo))
    matrix = store.consolidate(order)
    store.update_manifest(status="complete", completed=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    return matrix


def validate_config_file(path: str | Path) -> SweepConfig:
    """Load and validate a sweep YAML (for ``forgetscope run --check``)."""
    from forgetscope.config import load_config

    cfg = load_config(path)
    if cfg.executor not in ("local", "ray"):
        raise ConfigError(f"executor: unknown executor {cfg.executor!r}")
    return cfg
