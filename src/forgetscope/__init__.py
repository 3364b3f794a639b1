"""forgetscope: measure, analyse, predict and mitigate forgetting when fine-tuning language models.

The verbs a notebook needs are importable from the top; each is loaded on first use, so
``import forgetscope`` stays fast (it imports neither torch nor transformers)::

    import forgetscope as fs

    matrix = fs.run_sweep(fs.load_config("sweep.yaml"))     # measure: the M x N forgetting matrix
    matrix = fs.load_forgetting("sweeps/demo")              # ... or read a finished sweep
    lm = matrix.select_kind("lm")                           # the plain-text columns
    report = fs.analyze(lm)                                 # low rank: R²(k), additive/multiplicative fits
    print(report.r2_table())
    print(fs.family_summary(lm))                            # per task family: forgets? above seed noise?
    print(fs.null_comparison(lm).rank_table())              # R²(k) beside the null control's
    cv = fs.cross_validate(lm, ["additive", "knn", "lowrank"])   # task-grouped prediction protocol
    print(cv.summary())
    result = fs.forecast("sweeps/demo", "path/to/finetuned")     # what did my fine-tuned model forget?
    result = fs.forecast_task("sweeps/demo", "data/task.jsonl")  # fine-tune on a task file, then forecast
    fs.measure_finetunes(adapters=["path/to/adapter"], output="sweeps/mine")  # what did my fine-tunes forget?
    fs.compare(fs.load_compare_config("configs/compare_demo.yaml"))  # strategies against plain fine-tuning
    fs.build_report("sweeps/demo")                          # one self-contained HTML page
    callback = fs.ForgettingCallback("sweeps/demo", tokenizer=tok)  # inside any HF / TRL Trainer
"""

from __future__ import annotations

import importlib
from typing import Any

from forgetscope.errors import ForgetscopeError

__version__ = "0.1.0"

#: Public name -> "module:attribute", imported on first access.
_LAZY = {
    "load_config": "forgetscope.config:load_config",
    "demo_config": "forgetscope.experiments.demo:demo_config",
    "run_sweep": "forgetscope.experiments.sweep:run_sweep",
    "load_forgetting": "forgetscope.store.sweep_store:load_forgetting",
    "ForgettingMatrix": "forgetscope.store.matrix:ForgettingMatrix",
    "analyze": "forgetscope.analysis.lowrank:analyze",
    "null_comparison": "forgetscope.analysis.null_control:null_comparison",
    "family_summary": "forgetscope.analysis.regime:family_summary",
    "cross_validate": "forgetscope.predict.evaluate:cross_validate",
    "get_predictor": "forgetscope.predict.registry:get_predictor",
    "forecast": "forgetscope.experiments.forecast:forecast",
    "forecast_task": "forgetscope.experiments.forecast:forecast_task",
    "measure_finetunes": "forgetscope.experiments.measure:measure_finetunes",  # not "measure": the subpackage
    "load_compare_config": "forgetscope.experiments.compare:load_compare_config",
    "compare": "forgetscope.experiments.compare:run_compare",
    "replay_examples": "forgetscope.experiments.replay_mix:replay_examples",
    "build_report": "forgetscope.report:build_report",  # not "report": that name is the subpackage
    "ForgettingCallback": "forgetscope.integrations.hf_trainer:ForgettingCallback",
    "ReplayCallback": "forgetscope.integrations.replay_trainer:ReplayCallback",
    "load_model": "forgetscope.models:load_model",
    "evaluate_examples": "forgetscope.measure.nll:evaluate_examples",
    "train_on_task": "forgetscope.train.trainer:train_on_task",
}

__all__ = ["ForgetscopeError", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'forgetscope' has no attribute {name!r}")
    module, attr = target.split(":")
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
