"""Fine-tune the sweep's base model on a new task, then forecast what it forgot from a probe.

:func:`forecast_task` is ``forgetscope forecast SWEEP --task data.jsonl``: the task is trained with the
sweep's own config (model, train settings, strategy, seed) through :func:`execute_run`, like one more
row of the sweep, except that the run's evaluation is :class:`ProbeExperiment`'s: the fine-tuned model is
evaluated on the probe examples only (and, with ``verify``, on every example of the kind, to score the
forecast). The row is then completed by :func:`forgetscope.predict.forecast.forecast_from_losses`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from forgetscope.config import SweepConfig, TaskConfig, parse_config
from forgetscope.errors import ConfigError, ModelError
from forgetscope.experiments.run import Experiment, execute_run
from forgetscope.experiments.session import SweepSession, load_task_from_config
from forgetscope.experiments.spec import RunSpec
from forgetscope.predict.forecast import (
    ForecastResult,
    SweepData,
    check_interval_request,
    check_predictor,
    check_token_counts,
    default_name,
    forecast_from_losses,
    forecast_probe,
    load_sweep,
    write_forecast,
)
from forgetscope.train.hooks import Hook


class ProbeExperiment(Experiment):
    """A run whose upstream evaluation is the probe examples only (plus, to verify, every example).

    Its rows carry ``part`` = ``probe`` or ``verify``; losses are mean token NLL with the sweep's
    encoding and evaluation dtype (``dtype``, as its manifest records), without exact match (a forecast
    completes loss forgetting).
    """

    name = "forecast"

    def __init__(self, probe_ids: list[str], verify_ids: list[str] | None = None, *, max_length: int,
                 max_batch_tokens: int = 4096, max_batch_size: int = 64, dtype: str = "float32") -> None:
        self.probe_ids = list(probe_ids)
        self.verify_ids = None if verify_ids is None else list(verify_ids)
        self.max_length, self.max_batch_tokens, self.max_batch_size = max_length, max_batch_tokens, max_batch_size
        self.dtype = dtype  # a name, so that the experiment stays small and picklable

    def _losses(self, session: SweepSession, model: Any, ids: list[str], part: str) -> pd.DataFrame:
        from forgetscope.measure import evaluate_examples
        from forgetscope.precision import DTYPES

        by_id = {e.example_id: e for e in session.upstream}
        _, tok = session.base()
        table = evaluate_examples(model, tok, [by_id[i] for i in ids], max_length=self.max_length,
                                  max_batch_tokens=self.max_batch_tokens, max_batch_size=self.max_batch_size,
                                  exact=False, chat=session.chat, desc=f"upstream {part}", dtype=DTYPES[self.dtype])
        return table.assign(part=part)

    def evaluate(self, session: SweepSession, spec: RunSpec, model: Any, hooks: list[Hook]) -> pd.DataFrame:
        from forgetscope.precision import DTYPES, merge_for_evaluation

        model = merge_for_evaluation(model, DTYPES[self.dtype])
        parts = [self._losses(session, model, self.probe_ids, "probe")]
        if self.verify_ids is not None:
            parts.append(self._losses(session, model, self.verify_ids, "verify"))
        rows = pd.concat(parts, ignore_index=True).rename(columns={"loss": "loss_after", "em": "em_after"})
        return rows[["example_id", "part", "n_tokens", "loss_after", "em_after"]]


def sweep_config(data: SweepData) -> SweepConfig:
    """The sweep's own config, validated again (fields of other experiments' configs dropped)."""
    raw = {k: v for k, v in data.config.items() if k in SweepConfig.model_fields}
    return parse_config(raw, f"in {data.layout.manifest}")


def forecast_task(sweep: str | Path, task: str | Path, *, probe: int = 30, predictor: str = "auto",
                  kind: str = "lm", top: int = 20, verify: bool = False, probe_method: str = "random",
                  seed: int = 0, out: str | Path | None = None, name: str | None = None,
                  task_options: dict[str, Any] | None = None, coverage: float | None = None) -> ForecastResult:
    """Fine-tune the sweep's base model on ``task`` (a data file), then forecast its forgetting row.

    ``task_options`` are extra task fields (``text_field``, ``heldout``, ``description``, ...), as in a
    sweep config's task entry. Writes ``forecast.parquet`` and ``forecast.json`` to ``out`` (default
    ``SWEEP/forecast/<task file stem>``).
    """
    from forgetscope.models import resolve_model

    t0 = time.perf_counter()
    if int(top) < 1:
        raise ConfigError(f"top must be >= 1, got {top}")
    check_predictor(predictor, "task text")  # the task's text is known here
    data = load_sweep(sweep, kind)
    check_interval_request(data, coverage)
    idx = forecast_probe(data, probe, method=probe_method, seed=seed)
    task_name = name or default_name(task=task)
    out_dir = Path(out) if out is not None else data.layout.forecast_dir(task_name)
    config = sweep_config(data)
    tc = parse_config({"name": task_name, "source": str(task), **(task_options or {})}, f"for task {task}",
                      model=TaskConfig, what="task")
    config = config.model_copy(update={"tasks": [tc], "output": out_dir, "report_to": "none", "executor": "local"})
    source = resolve_model(config.model)
    recorded = (data.manifest.get("model") or {}).get("sha256")
    if recorded and source.sha256 and source.sha256 != recorded:
        raise ModelError(f"the sweep's base model {config.model!r} has changed since the sweep (its hash differs): "
                         "the sweep's base losses do not apply to it")
    session = SweepSession(config=config, upstream=list(data.examples),
                           tasks={tc.name: load_task_from_config(tc, config.seed)}, source=source)
    ids = [e.example_id for e in data.examples]
    experiment = ProbeExperiment([ids[i] for i in idx], ids if verify else None, max_length=data.max_length,
                                 max_batch_tokens=data.max_batch_tokens, max_batch_size=data.max_batch_size,
                                 dtype=data.eval_dtype)
    spec = RunSpec(tc.name, config.seed_list[0], config.strategy, tuple(sorted(config.strategy_options.items())))
    record, rows = execute_run(session, spec, experiment)
    probe_rows = rows[rows["part"] == "probe"].set_index("example_id").loc[[ids[i] for i in idx]]
    check_token_counts(data, idx, probe_rows["n_tokens"].to_numpy(np.float64))
    verify_loss = None
    if verify:
        verify_rows = rows[rows["part"] == "verify"].set_index("example_id").loc[ids]
        verify_loss = verify_rows["loss_after"].to_numpy(np.float64)
    task_obj = session.tasks[tc.name]
    settings = {"task": str(task), "task_name": tc.name, "model": config.model, "adapter": None,
                "probe_method": probe_method, "seed": seed, "strategy": config.strategy,
                "train": config.train.model_dump(mode="json"),
                "task_loss_before": record.get("task_loss_before"), "task_loss_after": record.get("task_loss_after")}
    cost = {"train_wall_s": record.get("train_wall_s"), "eval_wall_s": record.get("eval_wall_s")}
    if verify:
        cost["verify_evaluations"] = data.n
    result = forecast_from_losses(data, idx, probe_rows["loss_after"].to_numpy(np.float64), verify_loss=verify_loss,
                                  predictor=predictor, seed=seed, top=top, task_text=task_obj.text_summary(),
                                  settings=settings, cost=cost, coverage=coverage)
    result.cost["wall_s"] = time.perf_counter() - t0
    result.paths = write_forecast(result, out_dir)
    return result
