"""Forecast what a fine-tuned model forgot: load and measure it on a probe, complete its row.

:func:`forecast` takes a fine-tuned model (a path, a hub id, a loaded module or a LoRA adapter on the
sweep's base model), refuses one the sweep's base losses do not apply to, measures the probe examples
exactly as the sweep measured them and completes the row with
:func:`forgetscope.predict.forecast.forecast_from_losses`.

:func:`forecast_task` is ``forgetscope forecast SWEEP --task data.jsonl``: the task is trained with the
sweep's own config (model, train settings, strategy, seed) through :func:`execute_run`, like one more
row of the sweep, except that the run's evaluation is :class:`ProbeExperiment`'s: the fine-tuned model is
evaluated on the probe examples only (and, with ``verify``, on every example of the kind, to score the
forecast). The row is then completed by :func:`forgetscope.predict.forecast.forecast_from_losses`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from forgetscope.config import LoadConfig, SweepConfig, TaskConfig, parse_config
from forgetscope.errors import ConfigError, ModelError
from forgetscope.experiments.run import Experiment, execute_run
from forgetscope.experiments.session import SweepSession, load_task_from_config
from forgetscope.experiments.spec import RunSpec
from forgetscope.experiments.validate import validate_sweep
from forgetscope.predict.conformal import DEFAULT_INTERVAL
from forgetscope.predict.forecast import (
    ForecastResult,
    SweepData,
    check_interval_request,
    check_predictor,
    default_name,
    forecast_from_losses,
    forecast_probe,
    load_sweep,
    write_forecast,
)
from forgetscope.train.hooks import Hook

if TYPE_CHECKING:
    from forgetscope.measure.evaluator import Evaluator
    from forgetscope.measure.record import EvalRecord


class ProbeExperiment(Experiment):
    """A run whose upstream evaluation is the probe examples only (plus, to verify, every other example).

    Its rows carry ``part`` = ``probe`` or ``verify``, one row per example (a probe example is not
    evaluated again to verify); losses are mean token NLL measured as the sweep measured its
    ``loss_before`` (its :class:`~forgetscope.measure.record.EvalRecord`), without exact match (a forecast
    completes loss forgetting). The null control, when the run asks for it, is measured on the same rows.
    """

    name = "forecast"

    def __init__(self, probe_ids: list[str], verify_ids: list[str] | None = None, *, record: EvalRecord) -> None:
        self.probe_ids = list(probe_ids)
        self.verify_ids = None if verify_ids is None else list(verify_ids)
        self.record = record  # small and picklable: the experiment travels to remote workers

    def parts(self) -> list[tuple[str, list[str]]]:
        """(part, example ids) to evaluate: the probe, then (verify) every example not in it, each once."""
        if self.verify_ids is None:
            return [("probe", self.probe_ids)]
        probed = set(self.probe_ids)
        return [("probe", self.probe_ids), ("verify", [i for i in self.verify_ids if i not in probed])]

    def _measure(self, session: SweepSession, model: Any, what: str) -> pd.DataFrame:
        from forgetscope.measure.evaluator import Evaluator
        from forgetscope.precision import DTYPES, merge_for_evaluation

        model = merge_for_evaluation(model, DTYPES[self.record.dtype])
        by_id = {e.example_id: e for e in session.upstream}
        evaluator = Evaluator(session.base()[1], self.record)
        tables = [evaluator.evaluate(model, [by_id[i] for i in ids], desc=f"upstream {what} {part}").assign(part=part)
                  for part, ids in self.parts() if ids]
        return pd.concat(tables, ignore_index=True)

    def evaluate(self, session: SweepSession, spec: RunSpec, model: Any, hooks: list[Hook]) -> pd.DataFrame:
        rows = self._measure(session, model, "after").rename(columns={"loss": "loss_after", "em": "em_after"})
        return rows[["example_id", "part", "n_tokens", "loss_after", "em_after"]]

    def evaluate_null(self, session: SweepSession, spec: RunSpec, model: Any) -> pd.DataFrame:
        rows = self._measure(session, model, "null").rename(columns={"loss": "loss_null"})
        return rows[["example_id", "loss_null"]]


def validate_forecast(*, top: int, predictor: str, task_text: str | None,
                      load: LoadConfig | dict[str, Any] | None = None) -> LoadConfig | None:
    """A forecast's own arguments, checked before the sweep is read or any model loaded: ``top``, the predictor
    (and the task text it may need) and the loading options given, with their packages. Returns those options
    parsed (None: the sweep's recorded ones apply, checked once it is read)."""
    from forgetscope.models import check_loading

    if int(top) < 1:
        raise ConfigError(f"top must be >= 1, got {top}")
    check_predictor(predictor, task_text)
    if load is None:
        return None
    settings = load if isinstance(load, LoadConfig) else parse_config(dict(load), "(load)", model=LoadConfig,
                                                                      what="load")
    check_loading(**settings.model_kwargs())
    return settings


def sweep_config(data: SweepData) -> SweepConfig:
    """The sweep's own config, validated again (fields of other experiments' configs dropped)."""
    raw = {k: v for k, v in data.config.items() if k in SweepConfig.model_fields}
    return parse_config(raw, f"in {data.layout.manifest}")


def forecast_task(sweep: str | Path, task: str | Path, *, probe: int = 30, predictor: str = "auto",
                  kind: str = "lm", top: int = 20, verify: bool = False, probe_method: str = "random",
                  seed: int = 0, out: str | Path | None = None, name: str | None = None,
                  task_options: dict[str, Any] | None = None, coverage: float | None = None,
                  null_control: bool = False, interval: str = DEFAULT_INTERVAL) -> ForecastResult:
    """Fine-tune the sweep's base model on ``task`` (a data file), then forecast its forgetting row.

    ``task_options`` are extra task fields (``text_field``, ``heldout``, ``description``, ...), as in a
    sweep config's task entry. Writes ``forecast.parquet`` and ``forecast.json`` to ``out`` (default
    ``SWEEP/forecast/<task file stem>``). The sweep's ``null_control`` is not inherited (it would add an
    evaluation of the evaluated examples under a random perturbation); ``null_control=True`` asks for it,
    measured on the same examples as the run (the probe, or every example with ``verify``) and written
    as the table's ``null_forgetting`` column (NaN where not evaluated).
    """
    from forgetscope.models import resolve_model

    t0 = time.perf_counter()
    validate_forecast(top=top, predictor=predictor, task_text="task text")  # the task's text is known here
    data = load_sweep(sweep, kind)
    check_interval_request(data, coverage, interval)
    idx = forecast_probe(data, probe, method=probe_method, seed=seed)
    task_name = name or default_name(task=task)
    out_dir = Path(out) if out is not None else data.layout.forecast_dir(task_name)
    config = sweep_config(data)
    tc = parse_config({"name": task_name, "source": str(task), **(task_options or {})}, f"for task {task}",
                      model=TaskConfig, what="task")
    config = config.model_copy(update={"tasks": [tc], "output": out_dir, "report_to": "none", "executor": "local",
                                       "null_control": bool(null_control)})
    validate_sweep(config)  # the sweep's strategy and loading options, the task's file: before any model loads
    source = resolve_model(config.model)
    recorded = (data.manifest.get("model") or {}).get("sha256")
    if recorded and source.sha256 and source.sha256 != recorded:
        raise ModelError(f"the sweep's base model {config.model!r} has changed since the sweep (its hash differs): "
                         "the sweep's base losses do not apply to it")
    session = SweepSession(config=config, upstream=list(data.examples),
                           tasks={tc.name: load_task_from_config(tc, config.seed)}, source=source)
    ids = [e.example_id for e in data.examples]
    experiment = ProbeExperiment([ids[i] for i in idx], ids if verify else None, record=data.record)
    spec = RunSpec(tc.name, config.seed_list[0], config.strategy, tuple(sorted(config.strategy_options.items())))
    record, rows = execute_run(session, spec, experiment)
    probe_rows = rows[rows["part"] == "probe"].set_index("example_id").loc[[ids[i] for i in idx]]
    sweep_evaluator(data, session.base()[1]).check_counts(probe_rows["n_tokens"].to_numpy(np.float64),
                                                          data.tokens_of(idx), f"the sweep {data.path}")
    verify_loss = None
    if verify:  # the probe rows and the rest: every example once
        verify_loss = rows.set_index("example_id").loc[ids, "loss_after"].to_numpy(np.float64)
    task_obj = session.tasks[tc.name]
    settings = {"task": str(task), "task_name": tc.name, "model": config.model, "adapter": None,
                "probe_method": probe_method, "seed": seed, "strategy": config.strategy,
                "null_control": bool(null_control),
                "train": config.train.model_dump(mode="json"),
                "task_loss_before": record.get("task_loss_before"), "task_loss_after": record.get("task_loss_after")}
    cost = {"train_wall_s": record.get("train_wall_s"), "eval_wall_s": record.get("eval_wall_s")}
    if verify:
        cost["verify_evaluations"] = data.n - int(idx.size)  # the examples the probe left out
    result = forecast_from_losses(data, idx, probe_rows["loss_after"].to_numpy(np.float64), verify_loss=verify_loss,
                                  predictor=predictor, seed=seed, top=top, task_text=task_obj.text_summary(),
                                  settings=settings, cost=cost, coverage=coverage, interval=interval)
    if null_control:
        null_loss = rows.set_index("example_id")["loss_null"].reindex(ids).to_numpy(np.float64)
        result.table["null_forgetting"] = null_loss - data.loss_before
    result.cost["wall_s"] = time.perf_counter() - t0
    result.paths = write_forecast(result, out_dir)
    return result


# ---- a fine-tuned model's forecast ----------------------------------------------------------------

def same_base(base: str, manifest: dict[str, Any]) -> bool:
    """Whether a model reference (an adapter's ``base_model_name_or_path``, a path, a hub id) is the sweep's model.

    It is when it names the sweep's model string, its location or GGUF file, the de-quantized cache of
    that GGUF (whose directory name ends in the GGUF's hash prefix), or a directory that resolves to the
    same hash.
    """
    recorded = manifest.get("model") or {}
    config_model = (manifest.get("config") or {}).get("model")
    location, gguf, sha = recorded.get("location"), recorded.get("gguf_file"), recorded.get("sha256")
    names = {str(x).rstrip("/") for x in (config_model, location) if x}
    if location and gguf:
        names.add(str(Path(location) / gguf))
    if str(base).rstrip("/") in names:
        return True
    path = Path(str(base)).expanduser()
    if not path.exists():
        return False
    for name in names:
        other = Path(name).expanduser()
        if other.exists() and other.resolve() == path.resolve():
            return True
    if sha and path.name.endswith(sha[:16]):
        return True
    if sha:
        from forgetscope.models import resolve_model

        try:
            return resolve_model(str(path)).sha256 == sha
        except ModelError:
            return False
    return False


def adapter_base(adapter: str | Path) -> str:
    """The base model a peft adapter directory was trained on (``adapter_config.json``)."""
    path = Path(adapter).expanduser()
    cfg = path / "adapter_config.json"
    if not cfg.is_file():
        raise ModelError(f"{path} is not a peft adapter directory (no adapter_config.json)")
    try:
        base = json.loads(cfg.read_text()).get("base_model_name_or_path")
    except json.JSONDecodeError as exc:
        raise ModelError(f"{cfg} is not valid JSON: {exc.msg}") from None
    if not base:
        raise ModelError(f"{cfg} names no base model (base_model_name_or_path)")
    return str(base)


def _describe(manifest: dict[str, Any]) -> str:
    recorded = manifest.get("model") or {}
    return str((manifest.get("config") or {}).get("model") or recorded.get("location") or "?")


def load_forecast_model(data: SweepData, model: Any = None, *, tokenizer: Any = None,
                        adapter: str | Path | None = None, device: str | None = None,
                        load: LoadConfig | dict[str, Any] | None = None) -> tuple[Any, Any, dict[str, Any]]:
    """(model, tokenizer, description) of the model to forecast: a loaded module, a path/hub id, or the
    sweep's base model with a LoRA ``adapter`` merged in (refused when it was trained on another base).

    A path or id is loaded as the sweep loaded its base (its recorded ``load`` section: dtype, device_map,
    attention, 4-bit), so the probe's losses compare with the sweep's ``loss_before``; ``load`` overrides it."""
    config = data.config
    train = config.get("train") or {}
    settings = load if isinstance(load, LoadConfig) else parse_config(
        dict(load if load is not None else config.get("load") or {}), "(load)", model=LoadConfig, what="load")
    desc: dict[str, Any] = {"model": None if model is None or not isinstance(model, (str, Path)) else str(model),
                            "adapter": None if adapter is None else str(adapter)}
    if model is not None and not isinstance(model, (str, Path)):
        if adapter is not None:
            raise ConfigError("pass an adapter with a model path or id, not with a loaded model")
        if tokenizer is None:
            raise ConfigError("a loaded model needs its tokenizer (tokenizer=...)")
        desc["model"] = type(model).__name__
        return model, tokenizer, desc
    from forgetscope.models import check_loading, load_model, resolve_model

    check_loading(**settings.model_kwargs())  # before any model loads
    if adapter is not None:
        base = adapter_base(adapter)
        if not same_base(base, data.manifest):
            raise ModelError(f"the adapter {adapter} was trained on {base!r}, not on the sweep's model "
                             f"{_describe(data.manifest)!r}: the sweep's base losses do not apply to it")
        if model is not None and not same_base(str(model), data.manifest):
            raise ModelError(f"--model {model!r} is not the sweep's model {_describe(data.manifest)!r}, the base "
                             f"the adapter was trained on")
        model = model if model is not None else config.get("model")
    if model is None:
        raise ConfigError("name the model to forecast (a fine-tuned model's path or id) or an adapter")
    source = resolve_model(str(model))
    # the weights as the sweep's base had them (float32 by default); each evaluation runs in the sweep's dtype
    loaded, tok = load_model(source, device=device or train.get("device"), **settings.model_kwargs())
    desc["resolved"] = source.describe()
    if adapter is not None:
        loaded = apply_adapter(loaded, adapter, data.eval_dtype)
    return loaded, tok, desc


def apply_adapter(model: Any, adapter: str | Path, eval_dtype: str) -> Any:
    """``model`` with the peft adapter directory ``adapter`` applied, in eval mode: merged for a float32
    evaluation (``eval_dtype``), kept unmerged otherwise (merged into bf16 weights a small update rounds away)."""
    import warnings

    from peft import PeftModel

    from forgetscope.precision import DTYPES, merge_for_evaluation

    try:
        with warnings.catch_warnings():  # peft's own use of a deprecated transformers property, as in models.py
            warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated",
                                    category=FutureWarning)
            peft_model = PeftModel.from_pretrained(model, str(adapter))
        loaded = merge_for_evaluation(peft_model, DTYPES[eval_dtype])
    except (ValueError, OSError, KeyError, RuntimeError) as exc:  # RuntimeError: a weight of another shape
        raise ModelError(f"cannot apply the adapter {adapter}: {' '.join(str(exc).split())}") from exc
    loaded.eval()
    return loaded


def encode_checked(data: SweepData, tokenizer: Any, idx: np.ndarray, model: Any = None, *,
                   evaluator: Evaluator | None = None) -> list[Any]:
    """Encode examples ``idx`` as the sweep did; refuse a tokenizer that gives other lengths than it recorded."""
    evaluator = evaluator or sweep_evaluator(data, tokenizer, model)
    encoded = evaluator.encode([data.examples[i] for i in idx])
    evaluator.check_counts([e.n_scored for e in encoded], data.tokens_of(idx), f"the sweep {data.path}")
    return encoded


def sweep_evaluator(data: SweepData, tokenizer: Any, model: Any = None) -> Evaluator:
    """The evaluator that measures as the sweep measured its ``loss_before`` (its recorded settings)."""
    from forgetscope.measure.evaluator import Evaluator
    from forgetscope.models import context_length

    return Evaluator(tokenizer, data.record, model_max_length=None if model is None else context_length(model))


def measure_losses(data: SweepData, model: Any, tokenizer: Any, idx: np.ndarray,
                   encoded: list[Any] | None = None, *, evaluator: Evaluator | None = None) -> np.ndarray:
    """Mean token NLL of examples ``idx`` under ``model`` (the sweep's encoding and evaluation dtype; no exact
    match)."""
    evaluator = evaluator or sweep_evaluator(data, tokenizer, model)
    if encoded is None:
        encoded = encode_checked(data, tokenizer, idx, model, evaluator=evaluator)
    table = evaluator.evaluate(model, [data.examples[i] for i in idx], encoded=encoded)
    return table["loss"].to_numpy(np.float64)


def forecast(sweep: str | Path, model: Any = None, *, tokenizer: Any = None, adapter: str | Path | None = None,
             probe: int = 30, predictor: str = "auto", kind: str = "lm", top: int = 20, verify: bool = False,
             probe_method: str = "random", seed: int = 0, out: str | Path | None = None, name: str | None = None,
             task_text: str | None = None, device: str | None = None,
             coverage: float | None = None, interval: str = DEFAULT_INTERVAL,
             load: LoadConfig | dict[str, Any] | None = None) -> ForecastResult:
    """Forecast a fine-tuned model's forgetting row from ``probe`` evaluated upstream examples (module doc).

    ``model`` is a path/hub id or a loaded model (with ``tokenizer``); ``adapter`` a LoRA directory
    merged into ``model`` (default: the sweep's base model), loaded as the sweep loaded its base unless
    ``load`` says otherwise (:func:`load_forecast_model`). Writes ``forecast.parquet`` and
    ``forecast.json`` to ``out`` (default ``SWEEP/forecast/<name>``).
    """
    t0 = time.perf_counter()
    load = validate_forecast(top=top, predictor=predictor, task_text=task_text, load=load)
    data = load_sweep(sweep, kind)
    check_interval_request(data, coverage, interval)
    idx = forecast_probe(data, probe, method=probe_method, seed=seed)
    loaded, tok, desc = load_forecast_model(data, model, tokenizer=tokenizer, adapter=adapter, device=device,
                                            load=load)
    evaluator = sweep_evaluator(data, tok, loaded)  # one evaluator for the probe and the verification
    encoded = encode_checked(data, tok, idx, loaded, evaluator=evaluator)
    t1 = time.perf_counter()
    probe_loss = measure_losses(data, loaded, tok, idx, encoded, evaluator=evaluator)
    cost: dict[str, Any] = {"probe_eval_s": time.perf_counter() - t1}
    verify_loss = None
    if verify:  # the rest of the row; the probe examples are not evaluated twice
        t2 = time.perf_counter()
        rest = np.setdiff1d(np.arange(data.n), idx)
        verify_loss = np.empty(data.n, dtype=np.float64)
        verify_loss[idx] = probe_loss
        if rest.size:
            verify_loss[rest] = measure_losses(data, loaded, tok, rest, evaluator=evaluator)
        cost.update(verify_evaluations=int(rest.size), verify_eval_s=time.perf_counter() - t2)
    out_dir = Path(out) if out is not None else data.layout.forecast_dir(name or default_name(model, adapter))
    settings = {**desc, "probe_method": probe_method, "seed": seed}
    result = forecast_from_losses(data, idx, probe_loss, verify_loss=verify_loss, predictor=predictor, seed=seed,
                                  top=top, task_text=task_text, settings=settings, cost=cost, coverage=coverage,
                                  interval=interval)
    result.cost["wall_s"] = time.perf_counter() - t0
    result.paths = write_forecast(result, out_dir)
    return result
