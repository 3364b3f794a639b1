"""What did my existing fine-tunes forget? Measure them against their base model; nothing is trained.

:func:`measure_finetunes` takes a base model, one or more fine-tunes of it (full checkpoints: local
directories, ``.gguf`` files, hub ids; or peft adapter directories applied to the base) and an upstream set
(the demo's, a file, or a ``datasets`` source, as a sweep config names it). It evaluates the base once and
each fine-tune on every upstream example, exactly as a sweep evaluates its runs (the base model's encoding,
``eval.max_length``, chat format and dtype), and writes a sweep directory with one row per fine-tune, which
``forgetscope analyze``, ``predict``, ``forecast``, ``report`` and ``import`` read like any sweep::

    import forgetscope

    result = forgetscope.measure_finetunes(adapters=["path/to/adapter"], output="sweeps/mine")
    result.top(10)          # each fine-tune's most forgotten upstream texts

The runs table has ``task`` = the fine-tune's name, ``method`` = ``measured`` and ``strategy`` =
``external`` (fine-tuned elsewhere; no task loss is known), and a ``finetune`` entry with its kind,
location and content hash. The manifest's ``config`` has a sweep's shape (``model`` is the base;
``train`` holds only the device: nothing was trained), and ``finetunes`` describes every measured one.

Bad input is refused with one line before the base model loads (see
:mod:`forgetscope.experiments.finetunes` for the checks of a fine-tune). A rerun skips the fine-tunes
already measured and adds new ones; a changed base, upstream set or evaluation setting is refused as a
sweep refuses it, and so is a fine-tune whose files changed under a name already measured.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from forgetscope.config import (
    EvalConfig,
    LoadConfig,
    SourceConfig,
    SweepConfig,
    TrainConfig,
    load_config,
    parse_config,
)
from forgetscope.errors import ConfigError, DataError, StoreError
from forgetscope.experiments.finetunes import (
    BaseReference,
    Finetune,
    check_before_loading,
    check_name,
    load_finetune,
    resolve_finetune,
)
from forgetscope.experiments.session import (
    SweepSession,
    config_changes,
    config_fingerprint,
    input_changes,
    input_fingerprints,
    load_upstream,
)
from forgetscope.experiments.sweep import ensure_upstream_measured, software_versions
from forgetscope.experiments.validate import validate_measure
from forgetscope.models import DEFAULT_MODEL, ModelSource, resolve_model
from forgetscope.store import ForgettingMatrix, SweepStore
from forgetscope.store.lock import LOCK_NAME, OutputLock, refuse_multi_process

SOURCE = "measure"
METHOD = "measured"
STRATEGY = "external"


class FinetuneEntry(BaseModel):
    """One fine-tune of a measure config: a full checkpoint (``model``) or a peft adapter directory (``adapter``)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, description="row name (default: the directory or file name)")
    model: str | None = Field(None, description="a fine-tuned checkpoint: local directory, .gguf file or hub id")
    adapter: str | None = Field(None, description="a peft adapter directory trained on the base")

    @model_validator(mode="after")
    def _one_of(self) -> FinetuneEntry:
        if (self.model is None) == (self.adapter is None):
            raise ValueError("give exactly one of model or adapter")
        if self.name is not None:
            try:
                check_name(self.name)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return self


class MeasureConfig(BaseModel):
    """``forgetscope measure CONFIG``: the base, the fine-tunes and how upstream examples are measured::

        base: smollm2-135m-instruct
        finetunes: [{name: mine, adapter: runs/lora}, {model: runs/full-ft}]
        upstream: {source: demo, n: 200}      # the same fields as a sweep's upstream
        eval: {max_length: auto}
        output: sweeps/mine
    """

    model_config = ConfigDict(extra="forbid")

    base: str = Field(DEFAULT_MODEL, description="the base model: offline alias, .gguf file, local directory or "
                                                 "hub id")
    finetunes: list[FinetuneEntry] = Field(default_factory=list, description="the fine-tunes to measure")
    upstream: SourceConfig = Field(default_factory=SourceConfig, description="the upstream examples, as in a sweep")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="how upstream examples are measured")
    output: Path = Field(Path("sweeps/measured"), description="the sweep directory to write (or resume)")
    seed: int = Field(0, description="seed of the upstream subset drawn (demo set, or n of a file)")
    device: str = Field("auto", description="where to evaluate: auto, cpu, cuda, cuda:1, ...")
    load: LoadConfig = Field(default_factory=LoadConfig, description="how the base and every fine-tune are "
                                                                     "loaded (dtype, device_map, attention, 4-bit)")

    @model_validator(mode="after")
    def _check(self) -> MeasureConfig:
        if self.load.device_map is not None and self.device != "auto":
            raise ValueError(f"device: {self.device!r} conflicts with load.device_map, which places the models "
                             "itself; leave device auto")
        self.upstream.check_demo_targets()
        return self


def load_measure_config(path: str | Path, **overrides: Any) -> MeasureConfig:
    """Read and validate a measure YAML config (errors name the field)."""
    return load_config(path, MeasureConfig, **overrides)


@dataclass
class MeasureResult:
    """The sweep written, its matrix (every fine-tune measured there so far), and what this call did."""

    path: Path
    matrix: ForgettingMatrix
    names: list[str]  # the fine-tunes of this call, in order
    measured: list[str] = field(default_factory=list)  # measured now
    resumed: list[str] = field(default_factory=list)  # already in the sweep, skipped
    notes: list[str] = field(default_factory=list)

    def top(self, k: int = 10, kind: str | None = None, names: Sequence[str] | None = None) -> pd.DataFrame:
        """Each fine-tune's ``k`` most forgotten upstream examples (highest F), with their text.

        ``kind`` keeps one kind of example (``lm`` or ``instruction``; default all); ``names`` the rows
        shown (default this call's fine-tunes)."""
        if int(k) < 1:
            raise ConfigError(f"top must be >= 1, got {k}")
        matrix = self.matrix.select_kind(kind) if kind is not None else self.matrix
        up = matrix.upstream.reset_index(drop=True)
        text = up["text"] if "text" in up else pd.Series([None] * len(up))
        pair = up.get("prompt", pd.Series([""] * len(up))).fillna("") + \
            up.get("response", pd.Series([""] * len(up))).fillna("")
        text = text.where(text.notna(), pair)
        parts = []
        for name in names if names is not None else self.names:
            i = matrix.row_names.index(name)
            row = matrix.values[i]
            order = [j for j in np.argsort(-np.nan_to_num(row, nan=-np.inf), kind="stable") if np.isfinite(row[j])]
            pick = order[: int(k)]
            before = up["loss_before"].to_numpy(np.float64)[pick]
            parts.append(pd.DataFrame({
                "finetune": name, "rank": np.arange(1, len(pick) + 1), "example_id": up["example_id"].iloc[pick].values,
                "kind": up["kind"].iloc[pick].values if "kind" in up else "all",
                "forgetting": row[pick], "loss_before": before, "loss_after": before + row[pick],
                "text": text.iloc[pick].values}))
        columns = ["finetune", "rank", "example_id", "kind", "forgetting", "loss_before", "loss_after", "text"]
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)


# ---- configuration -----------------------------------------------------------------------------------

def _source_config(upstream: SourceConfig | dict[str, Any] | str | Path | None) -> SourceConfig | None:
    if upstream is None or isinstance(upstream, SourceConfig):
        return upstream
    raw = upstream if isinstance(upstream, dict) else {"source": str(upstream)}
    return parse_config(raw, "(upstream)", model=SourceConfig, what="upstream")


def build_config(config: MeasureConfig | str | Path | None = None, *, models: Sequence[str | Path] = (),
                 adapters: Sequence[str | Path] = (), base: str | None = None,
                 upstream: SourceConfig | dict[str, Any] | str | Path | None = None,
                 eval: EvalConfig | dict[str, Any] | None = None, output: str | Path | None = None,
                 device: str | None = None, more: int = 0,
                 load: LoadConfig | dict[str, Any] | None = None) -> MeasureConfig:
    """A measure config from a file or object, with the fine-tunes and settings given as arguments added;
    refuses one that names no fine-tune (``more``: fine-tunes given otherwise, as resolved sources)."""
    if isinstance(config, (str, Path)):
        config = load_measure_config(config)
    raw = config.model_dump() if config is not None else {}
    raw["finetunes"] = list(raw.get("finetunes") or []) + [{"model": str(m)} for m in models] + \
        [{"adapter": str(a)} for a in adapters]
    for key, value in (("base", base), ("output", output), ("device", device)):
        if value is not None:
            raw[key] = str(value)
    if upstream is not None:
        raw["upstream"] = _source_config(upstream)
    if eval is not None:
        raw["eval"] = eval
    if load is not None:
        raw["load"] = load
    cfg = parse_config(raw, "for measure", model=MeasureConfig)
    if not cfg.finetunes and not more:
        raise ConfigError("name at least one fine-tune to measure: --model (a fine-tuned checkpoint) or --adapter "
                          "(a LoRA adapter directory on the base), or finetunes: in a config")
    return cfg


def manifest_config(cfg: MeasureConfig) -> dict[str, Any]:
    """The manifest's ``config``: a sweep's shape, so readers of sweeps find the base (``model``), the upstream
    source, the evaluation settings and the device; its fingerprint is what a resume must match."""
    return {"model": cfg.base, "output": str(cfg.output), "seed": cfg.seed,
            "upstream": cfg.upstream.model_dump(mode="json"), "eval": cfg.eval.model_dump(mode="json"),
            "train": {"device": cfg.device}, "load": cfg.load.model_dump(mode="json")}


def session_config(cfg: MeasureConfig) -> SweepConfig:
    """The sweep config a :class:`SweepSession` measures with: no tasks (so not validated as a sweep's)."""
    return SweepConfig.model_construct(model=cfg.base, output=cfg.output, seed=cfg.seed, upstream=cfg.upstream,
                                       tasks=[], train=TrainConfig(device=cfg.device), eval=cfg.eval, load=cfg.load)


# ---- the sweep directory ------------------------------------------------------------------------------

def _manifest(cfg: MeasureConfig, session: SweepSession) -> dict[str, Any]:
    from forgetscope.data.types import KINDS

    return {"source": SOURCE, "status": "running", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "fingerprint": config_fingerprint(manifest_config(cfg)), "config": manifest_config(cfg),
            "model": session.source.describe(), "inputs": session.inputs, "eval": session.eval_summary(),
            "n_upstream": len(session.upstream),
            "upstream_kinds": {k: n for k in KINDS if (n := sum(e.kind == k for e in session.upstream))},
            "finetunes": {}, "versions": software_versions()}


def resume_conflict(store: SweepStore, cfg: MeasureConfig, session: SweepSession,
                    finetunes: list[Finetune]) -> str | None:
    """Why ``store`` cannot take these measurements (None: it can): another kind of sweep, another base,
    upstream set or evaluation setting, or a fine-tune whose files changed under a name already measured."""
    manifest = store.read_manifest()
    if manifest.get("source") != SOURCE:
        return f"it holds a sweep made by `forgetscope {manifest.get('source', 'run')}`, not by measure"
    new = manifest_config(cfg)
    if manifest.get("fingerprint") != config_fingerprint(new):
        changed = config_changes(manifest.get("config") or {}, new)
        return "the settings changed since it was measured" + (f" ({'; '.join(changed)})" if changed else "")
    old = dict(manifest.get("inputs") or {})
    old.setdefault("model", manifest.get("model") or {})
    changes = input_changes(old, session.inputs)
    if changes:
        return "; ".join(changes)
    for ft in finetunes:
        if not store.has_run(ft.name):
            continue
        before = (store.read_run_record(ft.name).get("finetune") or {}).get("sha256")
        if ft.sha256 and before and ft.sha256 != before:
            return (f"the fine-tune {ft.name!r} ({ft.location}) changed since it was measured (sha256 "
                    f"{before[:12]} → {ft.sha256[:12]}): give it another name")
    return None


def open_measure_store(output: Path, cfg: MeasureConfig, session: SweepSession, finetunes: list[Finetune],
                       overwrite: bool) -> tuple[SweepStore, bool]:
    """(store, fresh): check that ``output`` can take these measurements, before anything loads or is written;
    ``fresh`` means the directory is (re)created once the base has loaded."""
    store = SweepStore(output)
    if store.exists():
        conflict = resume_conflict(store, cfg, session, finetunes)
        if conflict is None:
            return store, False
        if not overwrite:
            raise StoreError(f"{output} cannot be resumed: {conflict}; pass --overwrite to start it fresh, or "
                             "choose another output")
    elif output.exists() and any(p.name != LOCK_NAME for p in output.iterdir()) and not overwrite:
        raise StoreError(f"{output} exists and is not a forgetscope sweep; choose another output")
    return store, True


def _clear(output: Path) -> None:
    """Everything in ``output`` but the lock this process holds."""
    import shutil

    for p in output.iterdir():
        if p.name != LOCK_NAME:
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


# ---- measuring ------------------------------------------------------------------------------------

def measure_one(session: SweepSession, finetune: Finetune, base: BaseReference,
                loss_before: pd.Series) -> tuple[dict[str, Any], pd.DataFrame]:
    """One fine-tune's record and rows: ``loss_after`` and ``em_after`` of every upstream example, measured
    as the base's ``loss_before`` was (:meth:`SweepSession.evaluate`)."""
    from forgetscope.measure.forgetting import forgetting

    session.check_precision(session.extras.get("eval_precision"))
    t0 = time.perf_counter()
    base_model, _ = session.base()
    fresh = copy.deepcopy(base_model) if finetune.kind == "adapter" else None
    model = load_finetune(finetune, base, fresh_base=fresh, device=session.config.train.device,
                          eval_dtype=session.precision().dtype, load=session.config.load.model_kwargs())
    t1 = time.perf_counter()
    after = session.evaluate(model, session.upstream, desc=f"upstream after {finetune.name}")
    rows = after.rename(columns={"loss": "loss_after", "em": "em_after"})[["example_id", "loss_after", "em_after"]]
    before = loss_before.loc[rows["example_id"].astype(str)].to_numpy(np.float64)
    F = forgetting(rows["loss_after"].to_numpy(np.float64), before)
    record = {"run_id": finetune.name, "task": finetune.name, "method": METHOD, "strategy": STRATEGY,
              "finetune": finetune.describe(), **session.precision().run_fields(),
              "mean_forgetting": float(np.nanmean(F)), "load_wall_s": t1 - t0,
              "eval_wall_s": time.perf_counter() - t1, "wall_s": time.perf_counter() - t0}
    del model, fresh
    return record, rows


def _resolve_all(cfg: MeasureConfig, sources: Sequence[ModelSource]) -> list[Finetune]:
    finetunes = [resolve_finetune(model=e.model, adapter=e.adapter, name=e.name) for e in cfg.finetunes]
    finetunes += [resolve_finetune(model=s) for s in sources]
    names = [f.name for f in finetunes]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"two fine-tunes are named {dupes[0]!r}: name them (finetunes: [{{name: ..., "
                          "model: ...}}] in a config)")
    return finetunes


def measure_finetunes(config: MeasureConfig | str | Path | None = None, *,
                      models: Sequence[str | Path | ModelSource] = (), adapters: Sequence[str | Path] = (),
                      base: str | None = None, upstream: SourceConfig | dict[str, Any] | str | Path | None = None,
                      eval: EvalConfig | dict[str, Any] | None = None, output: str | Path | None = None,
                      device: str | None = None, overwrite: bool = False,
                      load: LoadConfig | dict[str, Any] | None = None) -> MeasureResult:
    """Measure existing fine-tunes of ``base`` on an upstream set and write a sweep directory (module doc).

    ``config`` is a :class:`MeasureConfig` or its YAML file; ``models`` (checkpoints: paths, hub ids or
    resolved :class:`~forgetscope.models.ModelSource` s) and ``adapters`` (peft adapter directories) add
    fine-tunes; ``upstream`` is a source (``demo``, a file, ``hf:NAME``) or a :class:`SourceConfig`; ``load``
    (a :class:`~forgetscope.config.LoadConfig`) loads the base and every checkpoint alike.
    A rerun into the same ``output`` measures only the fine-tunes not measured yet."""
    sources = [m for m in models if isinstance(m, ModelSource)]
    cfg = build_config(config, models=[m for m in models if not isinstance(m, ModelSource)], adapters=adapters,
                       base=base, upstream=upstream, eval=eval, output=output, device=device,
                       more=len(sources), load=load)
    validate_measure(cfg)  # loading options' packages, the upstream file: before any file is read or written
    refuse_multi_process("forgetscope measure")
    finetunes = _resolve_all(cfg, sources)  # files found, headers read, hashes taken
    scfg = session_config(cfg)
    source = resolve_model(cfg.base)
    examples = load_upstream(scfg)
    if not examples:
        raise DataError("the upstream set is empty")
    reference = BaseReference.read(cfg.base, source)
    for ft in finetunes:
        check_before_loading(ft, reference)
    out = Path(cfg.output)
    session = SweepSession(config=scfg, upstream=examples, tasks={}, source=source,
                           inputs=input_fingerprints(scfg, source, examples, {}))
    with OutputLock(out):
        store, fresh = open_measure_store(out, cfg, session, finetunes, overwrite)
        todo = [ft for ft in finetunes if fresh or not store.has_run(ft.name)]
        if todo or fresh:
            session.preflight()  # loads the base, encodes every upstream example
            if not reference.ready:  # a hub base whose config was out of reach: check against the loaded one
                reference = BaseReference.from_loaded(cfg.base, source, *session.base())
                for ft in finetunes:
                    check_before_loading(ft, reference)
        if fresh:
            _clear(out)
            store.write_manifest(_manifest(cfg, session))
        ensure_upstream_measured(session, store)
        recorded = list(store.read_manifest().get("finetunes") or {})
        order = recorded + [ft.name for ft in finetunes if ft.name not in recorded]
        upstream_table = store.read_upstream()
        loss_before = upstream_table.set_index(upstream_table["example_id"].astype(str))["loss_before"]
        for ft in todo:
            record, rows = measure_one(session, ft, reference, loss_before)
            store.write_run(record, rows)
            described = dict(store.read_manifest().get("finetunes") or {})
            described[ft.name] = ft.describe()
            store.update_manifest(finetunes={n: described[n] for n in order if n in described})
            store.consolidate(order)
        matrix = store.consolidate(order)
        store.update_manifest(status="complete", completed=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    notes = [n for ft in finetunes for n in ft.notes]
    done = {ft.name for ft in todo}
    return MeasureResult(out, matrix, [ft.name for ft in finetunes], measured=[f.name for f in finetunes if f.name in done],
                         resumed=[f.name for f in finetunes if f.name not in done], notes=notes)


__all__ = ["FinetuneEntry", "MeasureConfig", "MeasureResult", "build_config", "load_measure_config",
           "measure_finetunes"]
