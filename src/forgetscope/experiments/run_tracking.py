"""A run's tracker (``report_to``): what it is called, which hyperparameters it carries, and the forgetting it logs.

The tracker of a run opens before training and closes after the upstream evaluation, so the run's page in
TensorBoard or W&B shows, beside the training curves, what the run forgot (:func:`log_forgetting`):

- ``forgetting/mean``, ``forgetting/share`` (measured entries with F > 0), ``forgetting/max`` and
  ``forgetting/n`` over every upstream example the run measured (each kind again under
  ``forgetting/<kind>/...`` when the upstream set has two), and ``forgetting/null_mean`` where the sweep
  measures a null control;
- ``forgetting/most_forgotten``: the :data:`TOP_TEXTS` examples with the largest F, with their text.

Runs carry their config as hyperparameters (:func:`run_hparams`: task, strategy, method, lr, seed, steps, …)
and a group per sweep (:func:`sweep_group`: the output folder's name and the config fingerprint), and the
W&B run name ``<group>/<run_id>`` is unique across sweeps. The base losses come from the sweep's upstream table
(:func:`base_losses`, put in ``session.extras`` by the sweep, so remote executors receive them too).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from forgetscope.experiments.session import SweepSession, config_fingerprint
from forgetscope.experiments.spec import RunSpec
from forgetscope.measure.forgetting import forgetting, forgotten_share
from forgetscope.store.layout import SweepLayout
from forgetscope.train.tracking import TrackingHook, make_trackers

TOP_TEXTS = 10
TEXT_CHARS = 200
PREFIX = "forgetting/"
METRICS = tuple(PREFIX + m for m in ("mean", "share", "max", "null_mean"))
HPARAMS = ("method", "lr", "steps", "batch_size", "max_length", "lora_rank", "lora_alpha", "grad_accum_steps")


def sweep_group(config: Any) -> str:
    """The runs of one sweep share this group: ``<output folder>-<first 8 of the config fingerprint>``."""
    return f"{Path(config.output).name}-{config_fingerprint(config)[:8]}"


def run_hparams(spec: RunSpec, train_cfg: Any) -> dict[str, Any]:
    """What a run was: task, strategy (and its options), seed and the training settings of :data:`HPARAMS`."""
    out: dict[str, Any] = {"task": spec.task, "strategy": spec.strategy, "seed": spec.seed, "run_id": spec.run_id}
    out.update({k: getattr(train_cfg, k) for k in HPARAMS if hasattr(train_cfg, k)})
    out.update({f"strategy.{k}": v for k, v in spec.strategy_options})
    return out


def open_tracking(session: SweepSession, spec: RunSpec, train_cfg: Any) -> TrackingHook:
    """The run's tracking hook: trackers named and grouped as above (none when ``report_to`` is off)."""
    cfg = session.config
    logs = SweepLayout(cfg.output).logs(spec.run_id)
    group = sweep_group(cfg)
    return TrackingHook(make_trackers(cfg.report_to, logs.parent, run_name=spec.run_id,
                                      config=run_hparams(spec, train_cfg), group=group,
                                      display_name=f"{group}/{spec.run_id}", metrics=METRICS))


def base_losses(upstream: pd.DataFrame) -> pd.Series:
    """Each upstream example's ``loss_before``, by example id (what :func:`log_forgetting` subtracts)."""
    return pd.Series(upstream["loss_before"].to_numpy(float), index=upstream["example_id"].astype(str))


def _summary(F: np.ndarray, prefix: str) -> dict[str, float]:
    ok = F[np.isfinite(F)]
    if not ok.size:
        return {}
    return {prefix + "mean": float(ok.mean()), prefix + "share": forgotten_share(ok), prefix + "max": float(ok.max()),
            prefix + "n": float(ok.size)}


def forgetting_metrics(rows: pd.DataFrame, loss_before: pd.Series, kinds: pd.Series) -> dict[str, float]:
    """Mean, share, max and count of F over the measured examples, per kind when there are two, and the null
    control's mean where ``rows`` has ``loss_null``."""
    ids = rows["example_id"].astype(str)
    before = loss_before.reindex(ids).to_numpy(float)
    F = forgetting(rows["loss_after"].to_numpy(float), before)
    out = _summary(F, PREFIX)
    null = forgetting(rows["loss_null"].to_numpy(float), before) if "loss_null" in rows else None
    if null is not None and np.isfinite(null).any():
        out[PREFIX + "null_mean"] = float(np.nanmean(null))
    k = kinds.reindex(ids).to_numpy(object)
    present = [x for x in dict.fromkeys(k) if isinstance(x, str)]
    if len(present) > 1:
        for kind in present:
            mask = k == kind
            out.update(_summary(F[mask], f"{PREFIX}{kind}/"))
            if null is not None and np.isfinite(null[mask]).any():
                out[f"{PREFIX}{kind}/null_mean"] = float(np.nanmean(null[mask]))
    return out


def most_forgotten(rows: pd.DataFrame, loss_before: pd.Series, examples: dict[str, Any], k: int = TOP_TEXTS
                   ) -> tuple[list[str], list[list[Any]]]:
    """(columns, rows) of the ``k`` examples with the largest F (> 0), with their kind and text."""
    ids = rows["example_id"].astype(str).to_numpy()
    F = forgetting(rows["loss_after"].to_numpy(float), loss_before.reindex(ids).to_numpy(float))
    order = [i for i in np.argsort(-np.nan_to_num(F, nan=-np.inf), kind="stable")[:k] if F[i] > 0]
    out = []
    for rank, i in enumerate(order, 1):
        ex = examples.get(ids[i])
        shown = "" if ex is None else ex.text if ex.text is not None else f"{ex.prompt} → {ex.response}"
        text = " ".join(shown.split())
        text = text if len(text) <= TEXT_CHARS else text[: TEXT_CHARS - 1].rstrip() + "…"
        out.append([rank, ids[i], ex.kind if ex is not None else "", round(float(F[i]), 4), text])
    return ["rank", "example", "kind", "F", "text"], out


def log_forgetting(hook: TrackingHook, session: SweepSession, rows: pd.DataFrame, step: int) -> None:
    """Log the run's forgetting (see the module docstring) to its trackers; nothing without a tracker, without
    ``loss_after`` rows or without the sweep's base losses."""
    loss_before = session.extras.get("loss_before")
    if not hook.trackers or loss_before is None or "loss_after" not in rows:
        return
    examples = {e.example_id: e for e in session.upstream}
    kinds = pd.Series({i: e.kind for i, e in examples.items()}, dtype=object)
    hook.log(forgetting_metrics(rows, loss_before, kinds), step)
    columns, top = most_forgotten(rows, loss_before, examples)
    hook.log_table(PREFIX + "most_forgotten", columns, top, step)  # no row: the run forgot nothing
