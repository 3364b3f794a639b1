"""What every run of an experiment shares, loaded once per process: data, tasks and the base model."""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from forgetscope.config import SweepConfig, TaskConfig
from forgetscope.data.types import Example, Task
from forgetscope.errors import DataError, PrecisionError

if TYPE_CHECKING:
    from forgetscope.measure.evaluator import Evaluator
    from forgetscope.measure.record import EvalRecord
    from forgetscope.precision import Precision

# Config fields that do not change results: where the sweep goes, how it is run and logged, the
# evaluator's batching (memory against speed), and which kind of upstream example a comparison's or a
# sharpness sweep's summary averages (recomputed from the run records; no run depends on it), and a
# comparison's list of placeholder fields (no run starts while it is non-empty).
NOT_RESULTS = {"output": True, "executor": True, "report_to": True, "slurm": True,
               "eval": {"max_batch_tokens": True, "max_batch_size": True},
               "compare": {"kind": True, "pending": True}, "sharpness": {"kind": True},
               "train": {"gradient_checkpointing": True}}  # the same gradients, recomputed


# Config fields added after sweeps were first recorded, with the default that means "as before": at that
# value they are left out of the fingerprint, so a sweep recorded before they existed still resumes.
ADDED_LATER = {"null_control": False, "null_rank": "full", "upstream": {"instruct_targets": "gold"}, "eval": {"dtype": "float32"},
               "null_match": "norm", "null_match_subset": 32, "null_match_tol": 0.05, "null_match_steps": 8}
ADDED_LATER.update({"train": {"grad_accum_steps": 1},
                    "load": {"dtype": "float32", "device_map": None, "attn_implementation": None,
                             "load_in_4bit": False}})
# a comparison's replay budget and primary contrast (a changed primary contrast refuses to resume)
ADDED_LATER.update({"compare": {"budget": None, "primary": None}})
ADDED_LATER_PER_TASK = {"family": None, "instruct_targets": "gold", "seeds": None, "control": None}


def results_config(config: SweepConfig | dict[str, Any]) -> dict[str, Any]:
    """The part of a config (or of its JSON dump) that changes results."""
    data = config.model_dump(mode="json") if not isinstance(config, dict) else copy.deepcopy(config)
    for key, sub in NOT_RESULTS.items():
        if sub is True:
            data.pop(key, None)
        elif isinstance(data.get(key), dict):
            for k in sub:
                data[key].pop(k, None)
    for key, default in ADDED_LATER.items():
        if isinstance(default, dict):
            for k, v in default.items():
                if isinstance(data.get(key), dict) and data[key].get(k, v) == v:
                    data[key].pop(k, None)
            if data.get(key) == {}:  # a section added later, every field at its default
                data.pop(key)
        elif data.get(key, default) == default:
            data.pop(key, None)
    train = data.get("train")
    # LoRA's targets default to all-linear since sweeps recorded null (peft's default of the architecture);
    # full fine-tuning ignores them, so its sweeps keep their fingerprint
    if isinstance(train, dict) and train.get("method") == "full" and train.get("target_modules") == "all-linear":
        train["target_modules"] = None
    for task in data.get("tasks") or []:
        for k, v in ADDED_LATER_PER_TASK.items():
            if isinstance(task, dict) and task.get(k, v) == v:
                task.pop(k, None)
    return data


def config_fingerprint(config: SweepConfig | dict[str, Any]) -> str:
    """Hash of everything in the config that changes results (not the output path, executor or batching)."""
    return hashlib.sha256(json.dumps(results_config(config), sort_keys=True).encode()).hexdigest()[:16]


def config_changes(old: dict[str, Any], new: dict[str, Any], limit: int = 3) -> list[str]:
    """``field: old → new`` for the results-relevant fields that differ between two config dumps."""
    def flat(d: Any, prefix: str = "") -> dict[str, Any]:
        if not isinstance(d, dict):
            return {prefix: d}
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out

    a, b = flat(results_config(old)), flat(results_config(new))
    keys = sorted(k for k in set(a) | set(b) if a.get(k, "(absent)") != b.get(k, "(absent)"))
    shown = [f"{k}: {a.get(k, '(absent)')!r} → {b.get(k, '(absent)')!r}" for k in keys[:limit]]
    return shown + ([f"+{len(keys) - limit} more"] if len(keys) > limit else [])


def load_upstream(config: SweepConfig) -> list[Example]:
    src = config.upstream
    if src.source == "demo":
        from forgetscope.data.demo import demo_upstream, demo_upstream_instruct

        pairs = demo_upstream_instruct(n=src.n_instruct, seed=config.seed, targets=src.instruct_targets) \
            if src.n_instruct else []
        texts = demo_upstream(n=src.n, seed=config.seed, targets=src.lm_targets) if src.n != 0 else []
        return texts + pairs
    from forgetscope.data.loading import load_examples

    return load_examples(src.source, name="upstream", limit=src.n, seed=config.seed, text_field=src.text_field,
                         prompt_field=src.prompt_field, response_field=src.response_field,
                         answer_field=src.answer_field, id_field=src.id_field, split=src.split)


def load_task_from_config(tc: TaskConfig, seed: int) -> Task:
    """The task a config entry names, with its ``control`` applied (:mod:`forgetscope.data.controls`)."""
    from forgetscope.data.controls import apply_control
    from forgetscope.data.loading import load_task

    held = {"heldout_size": int(tc.heldout)} if (isinstance(tc.heldout, int) or tc.heldout >= 1) else \
        {"heldout_fraction": float(tc.heldout)}
    if tc.source is None:
        task = load_task(tc.name, f"demo:{tc.name}", n_train=tc.n_train or tc.n, seed=seed,
                         description=tc.description, family=tc.family or "")
    else:
        task = load_task(tc.name, tc.source, seed=seed, n_train=tc.n_train, limit=tc.n, description=tc.description,
                         family=tc.family or "",
                         text_field=tc.text_field, prompt_field=tc.prompt_field, response_field=tc.response_field,
                         answer_field=tc.answer_field, id_field=tc.id_field, split=tc.split, **held)
    return apply_control(task, tc.control)


def task_data_source(tc: TaskConfig) -> str:
    """What data a task entry reads: its ``source``, or ``demo:<name>`` for a demo task named alone."""
    return tc.source if tc.source is not None else f"demo:{tc.name}"


def controlled_tasks(config: SweepConfig) -> dict[str, str | None]:
    """For each control task of a sweep, the task it controls: the first task without a control that reads
    the same data source (None when the sweep has none)."""
    real: dict[str, str] = {}
    for tc in config.tasks:
        if tc.control is None:
            real.setdefault(task_data_source(tc), tc.name)
    return {tc.name: real.get(task_data_source(tc)) for tc in config.tasks if tc.control is not None}


def _source_input(source: str, what: str, examples: list[Example] | None = None) -> dict[str, Any]:
    """How to recognise a data source again: a label for messages and a content hash."""
    from forgetscope.data.records import HUB_PREFIX, examples_sha256, source_sha256

    if source.startswith(HUB_PREFIX):
        return {"source": source, "what": f"{what} (hub dataset {source})",
                "sha256": examples_sha256(examples or [])}
    path = Path(source).expanduser()
    kind = "directory" if path.is_dir() else "file"
    return {"source": source, "what": f"{what} {kind} {source}", "sha256": source_sha256(path)}


def input_fingerprints(config: SweepConfig, source: Any, upstream: list[Example],
                       tasks: dict[str, Task]) -> dict[str, Any]:
    """Content hashes of what a sweep measures: the model, the upstream data and each task's data.

    Files are hashed byte for byte (a ``save_to_disk`` directory file by file); the demo suite by the
    shipped files used; a hub dataset by the examples loaded from it.
    """
    from forgetscope.data.demo import INSTRUCT_TARGETS, demo_files_sha256, demo_task_file, upstream_file

    src = config.upstream
    if src.source == "demo":
        files = (([upstream_file(src.lm_targets)] if src.n != 0 else [])
                 + ([INSTRUCT_TARGETS[src.instruct_targets]] if src.n_instruct else []))
        up = {"source": "demo", "what": f"the shipped demo upstream file(s) {', '.join(files)}",
              "sha256": demo_files_sha256(files)}
    else:
        up = _source_input(src.source, "upstream data", upstream)
    task_inputs = {}
    for tc in config.tasks:
        demo_name = tc.name if tc.source is None else (tc.source[5:] if tc.source.startswith("demo:") else None)
        if demo_name is not None:
            f = demo_task_file(demo_name)
            task_inputs[tc.name] = {"source": f"demo:{demo_name}", "sha256": demo_files_sha256([f]),
                                    "what": f"the shipped demo file {f} of task {tc.name!r}"}
        else:
            task = tasks.get(tc.name)
            task_inputs[tc.name] = _source_input(
                tc.source, f"data of task {tc.name!r}:", task.train + task.heldout if task else None)
    model = source.describe() if source is not None else {}
    recorded = {"location": model.get("location"), "gguf_file": model.get("gguf_file"),
                "sha256": model.get("sha256")}
    recorded.update({k: model[k] for k in ("kind", "files", "revision") if model.get(k) is not None})
    return {"model": recorded, "upstream": up, "tasks": task_inputs}


def model_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """How the model differs from the one a sweep recorded, comparing only what both records hold: each
    file's content hash (local directories), the commit (hub ids), else the recorded ``sha256`` (a GGUF
    file's content; for a directory recorded before content hashes, its weights' names, sizes and mtimes)."""
    name = "/".join(x for x in (new.get("location"), new.get("gguf_file")) if x)
    of, nf = old.get("files"), new.get("files")
    if isinstance(of, dict) and isinstance(nf, dict):
        out = []
        for f in sorted(set(of) | set(nf)):
            if f not in nf:
                out.append(f"model file {Path(name) / f} is gone since this sweep started")
            elif f not in of:
                out.append(f"model file {Path(name) / f} was added since this sweep started")
            elif of[f] != nf[f]:
                out.append(f"model file {Path(name) / f} changed since this sweep started (sha256 "
                           f"{str(of[f])[:12]} → {str(nf[f])[:12]})")
        return out
    if old.get("revision") and new.get("revision"):
        if old["revision"] != new["revision"]:
            return [f"hub model {name} resolves to commit {new['revision'][:12]}, not the sweep's "
                    f"{old['revision'][:12]}"]
        return []
    old_sha, new_sha = old.get("sha256"), new.get("sha256")
    if old_sha is None and new.get("kind") in (None, "hub"):
        return []  # a hub id recorded without its commit: nothing both sides record
    if old_sha is not None and old.get("files") is None and new.get("kind") == "local" and new.get("location"):
        from forgetscope.models import legacy_directory_digest

        new_sha = legacy_directory_digest(Path(new["location"]))  # the digest such a sweep recorded
    if old_sha != new_sha:
        return [f"model {name} changed since this sweep started (sha256 {str(old_sha)[:12]} → "
                f"{str(new_sha)[:12]})"]
    return []


def input_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What changed between the recorded inputs of a sweep and the current ones, one phrase each."""
    out = model_changes(old.get("model") or {}, new.get("model") or {})
    ou, nu = old.get("upstream") or {}, new.get("upstream") or {}
    if ou and ou.get("sha256") != nu.get("sha256"):
        out.append(f"{nu.get('what', 'upstream data')} changed since this sweep started")
    ot, nt = old.get("tasks") or {}, new.get("tasks") or {}
    for name in nt:
        if name in ot and ot[name].get("sha256") != nt[name].get("sha256"):
            out.append(f"{nt[name].get('what', f'data of task {name!r}')} changed since this sweep started")
    return out


def upstream_frame(examples: list[Example]) -> pd.DataFrame:
    """The upstream table's description of each example; ``kind`` is ``lm`` or ``instruction``. Metadata
    fields of the upstream records (e.g. the demo texts' ``source`` and ``category``) are kept as columns,
    so analyses and predictors can use what is known about the examples."""
    frame = pd.DataFrame({
        "example_id": [e.example_id for e in examples],
        "kind": [e.kind for e in examples],
        "text": [e.text for e in examples],
        "prompt": [e.prompt for e in examples],
        "response": [e.response for e in examples],
        "answer": [e.answer for e in examples],
    })
    if any(e.prompt_messages for e in examples):  # a conversation's prompt turns, read back by examples_from_records
        frame["prompt_messages"] = [json.dumps(e.prompt_messages) if e.prompt_messages else None for e in examples]
    keys = dict.fromkeys(k for e in examples for k in e.meta if k not in RESERVED_UPSTREAM_COLUMNS)
    for key in keys:
        values = [e.meta.get(key) for e in examples]
        numeric = all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in values)
        frame[key] = values if numeric else [None if v is None else str(v) for v in values]  # one parquet type
    return frame


#: Columns a sweep's upstream table computes itself; a metadata field of the same name is not copied.
RESERVED_UPSTREAM_COLUMNS = frozenset({"example_id", "kind", "text", "prompt", "response", "answer",
                                       "prompt_messages", "row",
                                       "n_tokens", "n_truncated", "loss_before", "em_before"})


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
    extras: dict[str, Any] = field(default_factory=dict)  # shipped to remote workers with every run
    cache: dict[str, Any] = field(default_factory=dict, repr=False)  # process-local (e.g. base distributions)
    inputs: dict[str, Any] = field(default_factory=dict)  # content hashes of model and data (resume checks)

    @classmethod
    def prepare(cls, config: SweepConfig) -> SweepSession:
        """Load and validate data and resolve the model, without loading weights yet."""
        from forgetscope.models import config_context_length, resolve_model

        source = resolve_model(config.model)
        config.eval.effective_max_length(config_context_length(source))  # a too long max_length: before weights
        upstream = load_upstream(config)
        if not upstream:
            raise DataError("the upstream set is empty")
        tasks = {tc.name: load_task_from_config(tc, config.seed) for tc in config.tasks}
        return cls(config=config, upstream=upstream, tasks=tasks, source=source,
                   inputs=input_fingerprints(config, source, upstream, tasks))

    def base(self):
        """(base model, tokenizer), loaded once; runs get deep copies so every run starts from it."""
        if self._base is None:
            from forgetscope.models import load_model

            # float32 weights by default (load.dtype): the optimiser's master copy; bf16 is applied per
            # forward pass
            self._base, self._tokenizer = load_model(self.source, device=self.config.train.device,
                                                     **self.config.load.model_kwargs())
            chat = self.config.eval.chat
            self.chat = bool(getattr(self._tokenizer, "chat_template", None)) if chat == "auto" else bool(chat)
        return self._base, self._tokenizer

    def precision(self) -> Precision:
        """Where and in which dtype this process measures losses (device of the base model, ``eval.dtype``)."""
        from forgetscope.models import input_device, pick_device
        from forgetscope.precision import Precision, dtype_name, resolve_eval_dtype

        # a device_map places the model itself: its inputs go where the embedding went
        device = input_device(self.base()[0]) if self.config.load.device_map is not None else \
            pick_device(self.config.train.device)
        return Precision(device.type, dtype_name(resolve_eval_dtype(self.config.eval.dtype, device)))

    def check_precision(self, expected: Precision | None) -> None:
        """Refuse to measure ``loss_after`` with another device type or dtype than ``loss_before``."""
        if expected is None:
            return
        here = self.precision()
        if here != expected:
            raise PrecisionError(
                f"loss_before was measured on {expected.describe()} but this process evaluates on "
                f"{here.describe()}; set train.device and eval.dtype explicitly so the base and the runs "
                "match, or start a fresh sweep with --overwrite")

    def fresh_model(self):
        base, tok = self.base()
        return copy.deepcopy(base), tok

    @property
    def eval_max_length(self) -> int:
        """``eval.max_length`` against the base model's context (a ConfigError when it does not fit)."""
        from forgetscope.models import context_length

        base, _ = self.base()
        return self.config.eval.effective_max_length(context_length(base))

    @property
    def record(self) -> EvalRecord:
        """How this sweep measures upstream examples (written to the manifest's ``eval`` entry)."""
        from forgetscope.measure.record import EvalRecord

        self.base()
        ev = self.config.eval
        return EvalRecord(max_length=self.eval_max_length, chat=self.chat, dtype=self.precision().dtype,
                          max_batch_tokens=ev.max_batch_tokens, max_batch_size=ev.max_batch_size)

    @property
    def evaluator(self) -> Evaluator:
        """The one evaluator of this process's measurements (the base model's tokenizer and context)."""
        from forgetscope.measure.evaluator import Evaluator
        from forgetscope.models import context_length

        base, tok = self.base()
        record = self.record
        key = ("evaluator", record)
        if key not in self.cache:
            self.cache[key] = Evaluator(tok, record, model_max_length=context_length(base))
        return self.cache[key]

    @property
    def upstream_encoded(self) -> list:
        """The upstream examples encoded for evaluation (``eval.max_length``), once per process."""
        evaluator = self.evaluator
        key = ("upstream_encoded", evaluator.record.max_length, evaluator.chat)
        if key not in self.cache:
            self.cache[key] = evaluator.encode(self.upstream)
        return self.cache[key]

    def eval_summary(self) -> dict[str, Any]:
        """The evaluation settings a sweep records: max_length, chat, what truncation cut, and the device
        type and dtype losses are measured in (:meth:`precision`)."""
        from forgetscope.data.encoding import truncation_stats

        return {"max_length": self.eval_max_length, "chat": self.chat, "n_upstream": len(self.upstream),
                **truncation_stats(self.upstream_encoded), **self.precision().eval_fields()}

    def preflight(self) -> None:
        """Load the base model and encode every example the experiment uses, so that bad input (an
        ``eval.max_length`` above the context, a text that tokenises to nothing, a prompt filling
        ``train.max_length``) fails before anything is written."""
        from forgetscope.data.encoding import encode_examples
        from forgetscope.models import context_length

        base, tok = self.base()
        _ = self.upstream_encoded
        if self.config.null_control:
            from forgetscope.experiments.null_control import check_trainable

            t = self.config.train
            check_trainable(base, t.method, lora_rank=t.lora_rank, lora_alpha=t.lora_alpha,
                            lora_dropout=t.lora_dropout, target_modules=t.target_modules)
        for task in self.tasks.values():
            encode_examples(tok, task.train + task.heldout, self.config.train.max_length,
                            model_max_length=context_length(base), chat=self.chat)

    def upstream_losses(self, model, example_ids: list[str]) -> np.ndarray:
        """Mean token NLL of these upstream examples under ``model``, measured exactly as the sweep measures
        ``loss_before`` and ``loss_after`` (its encoding, ``eval.max_length``, chat format, dtype and
        batching): what a strategy's probe must use so its values are comparable with the known rows."""
        key = ("upstream_by_id", self.eval_max_length, self.chat)
        if key not in self.cache:
            self.cache[key] = {e.example_id: e for e in self.upstream_encoded}
        by_id = self.cache[key]
        missing = [i for i in example_ids if i not in by_id]
        if missing:
            raise DataError(f"not upstream examples of this sweep: {missing[:3]}")
        return self.evaluator.losses(model, [by_id[i] for i in example_ids])

    def evaluate(self, model, examples: list[Example], desc: str) -> pd.DataFrame:
        """Loss (and exact match) of ``examples`` with ``model``, encoded with ``eval.max_length``."""
        encoded = self.upstream_encoded if examples is self.upstream else None
        return self.evaluator.evaluate(model, examples, encoded=encoded, exact=self.config.eval.exact_match,
                                       progress=True, desc=desc)
