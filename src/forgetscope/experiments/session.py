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
from forgetscope.data.sources import DataSource, parse_source, task_source
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
# a scaling sweep's fit settings (applied to the finished runs' points), its placeholder list, and the memory
# its base-model reference may use (recomputed above it, the same numbers)
NOT_RESULTS.update(dict.fromkeys(("holdout", "laws", "criteria", "figures", "pending", "cache_mb"), True))


# Config fields added after sweeps were first recorded, with the default that means "as before": at that
# value they are left out of the fingerprint, so a sweep recorded before they existed still resumes.
ADDED_LATER = {"null_control": False, "null_rank": "full", "upstream": {"instruct_targets": "gold"}, "eval": {"dtype": "float32"},
               "null_match": "norm", "null_match_subset": 32, "null_match_tol": 0.05, "null_match_steps": 8}
ADDED_LATER.update({"train": {"grad_accum_steps": 1},
                    "load": {"dtype": "float32", "device_map": None, "attn_implementation": None,
                             "load_in_4bit": False}})
# a comparison's replay budget, primary contrast and probe seeding (a changed one refuses to resume)
ADDED_LATER.update({"compare": {"budget": None, "primary": None, "probe_seed": "run"}})
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
    if parse_source(src.source).is_demo_suite:
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
        task = load_task(tc.name, task_source(tc).spec, n_train=tc.n_train or tc.n, seed=seed,
                         description=tc.description, family=tc.family or "")
    else:
        task = load_task(tc.name, tc.source, seed=seed, n_train=tc.n_train, limit=tc.n, description=tc.description,
                         family=tc.family or "",
                         text_field=tc.text_field, prompt_field=tc.prompt_field, response_field=tc.response_field,
                         answer_field=tc.answer_field, id_field=tc.id_field, split=tc.split, **held)
    return apply_control(task, tc.control)


def controlled_tasks(config: SweepConfig) -> dict[str, str | None]:
    """For each control task of a sweep, the task it controls: the first task without a control that reads
    the same data source (None when the sweep has none)."""
    real: dict[DataSource, str] = {}
    for tc in config.tasks:
        if tc.control is None:
            real.setdefault(task_source(tc), tc.name)
    return {tc.name: real.get(task_source(tc)) for tc in config.tasks if tc.control is not None}


def _source_input(source: str, what: str, examples: list[Example] | None = None) -> dict[str, Any]:
    """How to recognise a data source again: a label for messages and a content hash."""
    from forgetscope.data.records import examples_sha256, source_sha256

    if parse_source(source).kind == "hub":
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
    if parse_source(src.source).is_demo_suite:
        files = (([upstream_file(src.lm_targets)] if src.n != 0 else [])
                 + ([INSTRUCT_TARGETS[src.instruct_targets]] if src.n_instruct else []))
        up = {"source": "demo", "what": f"the shipped demo upstream file(s) {', '.join(files)}",
              "sha256": demo_files_sha256(files)}
    else:
        up = _source_input(src.source, "upstream data", upstream)
    task_inputs = {}
    for tc in config.tasks:
        data = task_source(tc)
        if data.is_demo_task:
            f = demo_task_file(str(data.name))
            task_inputs[tc.name] = {"source": data.spec, "sha256": demo_files_sha256([f]),
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
    # how upstream examples are measured and the evaluator measuring them: resolved once, when the base model
    # and its tokenizer load (:meth:`base`; the preflight on the driver, the first run on a remote worker)
    record: EvalRecord | None = None
    evaluator: Evaluator | None = None
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
        """(base model, tokenizer), loaded once; runs get deep copies so every run starts from it. Loading
        resolves :attr:`record` (``eval.max_length`` against the model's context, ``chat`` for its tokenizer,
        ``eval.dtype`` on its device) and builds :attr:`evaluator`, once."""
        if self._base is None:
            from forgetscope.measure.evaluator import Evaluator
            from forgetscope.measure.record import EvalRecord
            from forgetscope.models import context_length, load_model

            # float32 weights by default (load.dtype): the optimiser's master copy; bf16 is applied per
            # forward pass
            self._base, self._tokenizer = load_model(self.source, device=self.config.train.device,
                                                     **self.config.load.model_kwargs())
            context = context_length(self._base)
            self.record = EvalRecord.resolve(self.config.eval, self._tokenizer, context, device=self._eval_device())
            self.evaluator = Evaluator(self._tokenizer, self.record, model_max_length=context)
        return self._base, self._tokenizer

    @property
    def chat(self) -> bool:
        """Whether prompt/response pairs are chat-formatted (the resolved ``eval.chat``; tasks train with it)."""
        return self._measuring().chat

    def _measuring(self) -> Evaluator:
        """The evaluator, which exists once the base model has loaded (every caller holds a model from it)."""
        if self.evaluator is None:
            raise RuntimeError("the base model is not loaded yet: call base() or preflight() first")
        return self.evaluator

    def _eval_device(self) -> Any:
        """The device losses are measured on: the base model's inputs' under a device_map, else train.device."""
        from forgetscope.models import input_device, pick_device

        # a device_map places the model itself: its inputs go where the embedding went
        return input_device(self.base()[0]) if self.config.load.device_map is not None else \
            pick_device(self.config.train.device)

    def precision(self) -> Precision:
        """Where and in which dtype this process measures losses (device of the base model, ``eval.dtype``):
        known before the weights load, unless a device_map places them."""
        from forgetscope.precision import Precision, dtype_name, resolve_eval_dtype

        device = self._eval_device()
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
    def upstream_encoded(self) -> list:
        """The upstream examples encoded for evaluation (``eval.max_length``), once per process."""
        if "upstream_encoded" not in self.cache:
            self.cache["upstream_encoded"] = self._measuring().encode(self.upstream)
        return self.cache["upstream_encoded"]

    def eval_summary(self) -> dict[str, Any]:
        """The manifest's ``eval`` entry: the :attr:`record` (:meth:`EvalRecord.manifest_fields`), with the
        upstream count, what truncation cut and the device type losses are measured on (:meth:`precision`)."""
        from forgetscope.data.encoding import truncation_stats

        return self._measuring().record.manifest_fields(n_upstream=len(self.upstream),
                                                        **truncation_stats(self.upstream_encoded),
                                                        device=self.precision().device)

    def preflight(self) -> None:
        """Load the base model and encode every example the experiment uses, so that bad input (an
        ``eval.max_length`` above the context, a text that tokenises to nothing, a prompt filling
        ``train.max_length``) fails before anything is written."""
        base, _ = self.base()
        _ = self.upstream_encoded
        if self.config.null_control:
            from forgetscope.experiments.null_control import check_trainable

            t = self.config.train
            check_trainable(base, t.method, lora_rank=t.lora_rank, lora_alpha=t.lora_alpha,
                            lora_dropout=t.lora_dropout, target_modules=t.target_modules)
        for task in self.tasks.values():
            self._measuring().encode(task.train + task.heldout, max_length=self.config.train.max_length)

    def upstream_losses(self, model, example_ids: list[str]) -> np.ndarray:
        """Mean token NLL of these upstream examples under ``model``, measured exactly as the sweep measures
        ``loss_before`` and ``loss_after`` (its encoding, ``eval.max_length``, chat format, dtype and
        batching): what a strategy's probe must use so its values are comparable with the known rows."""
        if "upstream_by_id" not in self.cache:
            self.cache["upstream_by_id"] = {e.example_id: e for e in self.upstream_encoded}
        by_id = self.cache["upstream_by_id"]
        missing = [i for i in example_ids if i not in by_id]
        if missing:
            raise DataError(f"not upstream examples of this sweep: {missing[:3]}")
        return self._measuring().losses(model, [by_id[i] for i in example_ids])

    def evaluate(self, model, examples: list[Example], desc: str) -> pd.DataFrame:
        """Loss (and exact match) of ``examples`` with ``model``, encoded with ``eval.max_length``."""
        encoded = self.upstream_encoded if examples is self.upstream else None
        return self._measuring().evaluate(model, examples, encoded=encoded, exact=self.config.eval.exact_match,
                                          progress=True, desc=desc)
