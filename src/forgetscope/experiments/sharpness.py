"""The sharpness sweep: an ordinary sweep that also measures each fine-tuned minimum's flatness.

``forgetscope sharpness CONFIG.yaml`` takes a sweep config (as ``forgetscope run``) plus an optional
``sharpness:`` block (:class:`~forgetscope.measure.sharpness.SharpnessOptions`). Every run is measured on
its own task data before its LoRA adapter is merged, and the ``sharpness_*`` numbers go into the run
record (hence columns of ``runs.parquet``). It runs on the config's executor like any experiment. Files
it adds to the sweep directory (names owned by :class:`~forgetscope.store.layout.SweepLayout`)::

    sharpness.parquet              one row per run: run_id, task, seed, strategy, mean_forgetting,
                                   mean_forgetting_kind, task_loss_after and every sharpness_* measure
                                   (+ mean_forgetting_lm, mean_forgetting_instruction: see below)
    sharpness/correlation.json     Spearman/Pearson of each measure with mean forgetting (+ kind, options)
    sharpness/correlation.csv      the same table
    sharpness/landscape.parquet    1-D loss profiles: run_id, direction, alpha, loss
    sharpness/landscape.png        those profiles, one line per run
    sharpness/sharpness_vs_forgetting.png   scatter of each measure against mean forgetting

``forgetscope sharpness SWEEP_DIR`` recomputes the table, correlation and figures from the records.

A run's ``mean_forgetting`` averages the upstream examples of one kind (``sharpness.kind``: ``lm``,
``instruction`` or ``all``; by default the sweep's default kind, ``lm`` when it has plain-text
examples), since the two kinds are separate experiments; ``mean_forgetting_kind`` names it. When the
upstream set has both kinds, ``mean_forgetting_<kind>`` per kind is recorded beside it as a description;
the correlation uses ``mean_forgetting`` only.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field

from forgetscope.analysis.plots import write_landscape, write_sharpness_vs_forgetting
from forgetscope.analysis.sharpness import correlate_with_forgetting
from forgetscope.config import SweepConfig
from forgetscope.errors import ForgetscopeError
from forgetscope.experiments.run import Experiment
from forgetscope.experiments.session import SweepSession
from forgetscope.experiments.spec import RunSpec
from forgetscope.experiments.validate import validate_sweep
from forgetscope.measure import forgetting
from forgetscope.measure.sharpness import SharpnessOptions, measure_sharpness, task_batches
from forgetscope.store import ForgettingMatrix, SweepStore
from forgetscope.store.io import write_csv
from forgetscope.store.lock import holds_output


class SharpnessSweepConfig(SweepConfig):
    """A sweep config (as for ``forgetscope run``) plus the ``sharpness:`` options."""

    sharpness: SharpnessOptions = Field(SharpnessOptions(), description="what is measured on each fine-tuned "
                                        "model")


@dataclass
class SharpnessExperiment(Experiment):
    """Measures the unmerged fine-tuned model on a fixed, seeded sample of its own task data."""

    options: SharpnessOptions
    name = "sharpness"

    def measure_unmerged(self, session: SweepSession, spec: RunSpec, model: Any) -> dict[str, Any]:
        from forgetscope.models import context_length

        _, tok = session.base()
        o = self.options
        batches = task_batches(tok, session.tasks[spec.task].train, max_length=session.config.train.max_length,
                               batch_size=o.batch_size, max_examples=o.max_examples,
                               device=next(model.parameters()).device, chat=session.chat, seed=o.seed,
                               model_max_length=context_length(model))
        sharp = measure_sharpness(model, batches, o)
        extra = sharp.to_record()
        if sharp.landscape is not None:
            extra["sharpness_landscape"] = {"alpha": sharp.landscape["alpha"].tolist(),
                                            "loss": sharp.landscape["loss"].tolist()}
        return extra


@holds_output("forgetscope sharpness", validate_sweep)  # before the output directory exists
def sharpness_sweep(config: SweepConfig, options: SharpnessOptions | None = None, *,
                    output: str | Path | None = None, overwrite: bool = False, session=None,
                    figures: bool = True, on_run: Callable[[Any, dict], None] | None = None) -> pd.DataFrame:
    """Run (or resume) a sweep that also measures each fine-tuned model's sharpness on its task data.

    Returns the per-run sharpness table; :func:`write_sharpness_results` writes it with the correlation
    and figures.
    """
    from forgetscope.data.types import require_kind
    from forgetscope.experiments.sweep import ensure_upstream_measured, open_store, plan_runs, run_specs

    data = config.model_dump()
    if options is not None:
        data["sharpness"] = options.model_dump()
    cfg = SharpnessSweepConfig.model_validate(data)
    output = Path(output or cfg.output)
    cfg = cfg.model_copy(update={"output": output})
    session = session or SweepSession.prepare(cfg)
    session.config = cfg
    if cfg.sharpness.kind is not None:  # a kind the upstream set lacks fails before anything runs
        require_kind(session.upstream, cfg.sharpness.kind)
    store = open_store(cfg, session, output, overwrite)
    ensure_upstream_measured(session, store)
    specs = plan_runs(cfg)
    order = [s.run_id for s in specs]
    target = ForgettingTarget.of(store.read_upstream(), cfg.sharpness.kind)

    def with_mean_forgetting(record: dict[str, Any], rows: pd.DataFrame) -> dict[str, Any]:
        return {**record, **target.measure(rows)}

    run_specs(session, store, specs, order=order, executor=cfg.executor,
              experiment=SharpnessExperiment(cfg.sharpness), on_run=on_run, annotate=with_mean_forgetting)
    store.consolidate(order)
    store.update_manifest(status="complete", completed=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    table, _ = write_sharpness_results(output, figures=figures, kind=cfg.sharpness.kind)
    return table


@dataclass(frozen=True)
class ForgettingTarget:
    """What a run's ``mean_forgetting`` averages: its forgetting on the upstream examples of ``kind``.

    ``present`` lists the kinds of the upstream set; with more than one, :meth:`measure` also gives the
    mean on each kind (``mean_forgetting_<kind>``), as a description beside the headline.
    """

    kind: str
    loss_before: pd.Series  # by example id
    kind_of: pd.Series | None  # kind of each upstream example, by example id; None when unknown
    present: tuple[str, ...]

    @classmethod
    def of(cls, upstream: pd.DataFrame, kind: str | None = None) -> ForgettingTarget:
        """The target for a sweep's upstream table; ``kind`` None is the sweep's default kind."""
        ids = upstream["example_id"].astype(str)
        columns = ForgettingMatrix(np.empty((0, len(ids))), [], ids.tolist(), upstream=upstream)
        kind = kind or columns.default_kind()
        columns.select_kind(kind)  # a kind the sweep lacks: a one-line DataError
        kind_of = None if columns.kinds is None else pd.Series(columns.kinds, index=ids.to_numpy())
        return cls(kind, pd.Series(upstream["loss_before"].to_numpy(), index=ids.to_numpy()), kind_of,
                   tuple(columns.kind_counts()))

    def measure(self, rows: pd.DataFrame) -> dict[str, Any]:
        """``mean_forgetting`` and ``mean_forgetting_kind`` of one run's rows (+ per kind, see above)."""
        ids = rows["example_id"].astype(str).to_numpy()
        f = forgetting(rows["loss_after"].to_numpy(), self.loss_before.loc[ids].to_numpy())
        kinds = None if self.kind_of is None else self.kind_of.loc[ids].to_numpy()
        out: dict[str, Any] = {"mean_forgetting": _mean(f, kinds, self.kind), "mean_forgetting_kind": self.kind}
        if len(self.present) > 1:
            out.update({f"mean_forgetting_{k}": _mean(f, kinds, k) for k in self.present})
        return out


def _mean(f: np.ndarray, kinds: np.ndarray | None, kind: str) -> float:
    """Mean of the finite entries of ``f`` whose example is of ``kind`` (NaN, silently, when none is)."""
    x = f if kind == "all" or kinds is None else f[kinds == kind]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanmean(x)) if x.size else math.nan


def sharpness_table(sweep_dir: str | Path, kind: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-run sharpness table, landscape long table) from the run records of a sweep directory;
    ``mean_forgetting`` averages the upstream examples of ``kind`` (None: the sweep's default kind)."""
    store = SweepStore(sweep_dir)
    store.read_manifest()
    target = ForgettingTarget.of(store.read_upstream(), kind)
    rows, land = [], []
    for rid in store.finished_run_ids():
        rec = store.read_run_record(rid)
        if not any(k.startswith("sharpness_") for k in rec):
            continue
        row: dict[str, Any] = {"run_id": rid}
        for k in ("task", "seed", "strategy", "method", "lora_rank", "steps", "task_loss_after"):
            row[k] = rec.get(k)
        row.update(target.measure(store.read_run_rows(rid)))
        for k, v in rec.items():
            if k.startswith("sharpness_") and k != "sharpness_landscape":
                row[k] = v
        rows.append(row)
        ls = rec.get("sharpness_landscape")
        if ls:
            land.append(pd.DataFrame({"run_id": rid, "direction": "random", "alpha": ls["alpha"], "loss": ls["loss"]}))
    if not rows:
        raise ForgetscopeError(f"no run in {sweep_dir} has sharpness measures; run `forgetscope sharpness CONFIG.yaml`")
    table = pd.DataFrame(rows)
    for c in table.columns:
        if c.startswith("sharpness_") or (c.startswith("mean_forgetting") and c != "mean_forgetting_kind"):
            table[c] = pd.to_numeric(table[c], errors="coerce")
    landscape = pd.concat(land, ignore_index=True) if land else pd.DataFrame(columns=["run_id", "direction",
                                                                                      "alpha", "loss"])
    return table, landscape


def write_sharpness_results(sweep_dir: str | Path, *, figures: bool = True,
                            kind: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write ``sharpness.parquet`` and ``sharpness/{correlation.json,.csv,landscape.parquet,*.png}``.

    ``kind``: the upstream examples ``mean_forgetting`` averages; None takes the sweep config's
    ``sharpness.kind``, else the sweep's default kind.
    """
    from forgetscope.store.io import write_json, write_parquet

    store = SweepStore(sweep_dir)
    layout = store.layout
    options = (store.read_manifest().get("config") or {}).get("sharpness")
    table, landscape = sharpness_table(sweep_dir, kind or (options or {}).get("kind"))
    corr = correlate_with_forgetting(table)
    layout.sharpness_dir.mkdir(parents=True, exist_ok=True)
    write_parquet(layout.sharpness_table, table)
    write_parquet(layout.sharpness_landscape, landscape)
    write_csv(layout.sharpness_correlation_csv, corr)
    write_json(layout.sharpness_correlation, {
        "paper": "Li et al. 2024, Revisiting Catastrophic Forgetting in Large Language Model Tuning",
        "target": "mean_forgetting", "kind": str(table["mean_forgetting_kind"].iloc[0]), "n_runs": len(table),
        "options": options,
        "correlations": [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()}
                         for r in corr.to_dict("records")],
    })
    if figures:
        if len(landscape):
            write_landscape(landscape, layout.sharpness_landscape_figure)
        if len(corr):
            write_sharpness_vs_forgetting(table, corr, layout.sharpness_scatter)
    return table, corr
