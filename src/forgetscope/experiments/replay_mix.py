"""Replay for someone else's training loop: the upstream examples to mix into a fine-tuning data set.

The paper's practical loop is: fine-tune once, evaluate a probe of ~30 upstream examples, complete the
forgetting row from the known rows, then fine-tune again with the examples *predicted* to be forgotten
interleaved into the task stream. forgetscope's own ``replay`` strategy does this inside its loop; this
module writes the same selection as a data set for a user's ``transformers.Trainer``, TRL's dataset
mixtures or LLaMA-Factory's ``mix_strategy`` / ``interleave_probs``:

* the values come from a forecast (:func:`forgetscope.experiments.forecast.forecast` of the first
  fine-tune, ``probe_from``), a finished forecast folder, or a row the caller gives;
* the budget is ``n`` examples, or ``int(task_examples · ratio) + 1`` as in the reference protocol
  (``ratio`` 1/32: one replay example per 32 task examples);
* the draw is :func:`forgetscope.mitigate.replay_sampling.draw_replay`, the one the ``replay`` strategy
  uses: softmax(F̂ / T) without replacement, seeded the same way, so the same values and seeds give the
  same ids in the same order.

:func:`replay_examples` returns a :class:`ReplayMix`; :meth:`ReplayMix.write` saves ``replay.jsonl``
(``text`` rows for plain text, ``prompt``/``completion`` rows for pairs: TRL's two dataset formats),
``replay.json`` (settings, ids, and the ``interleave_datasets`` probabilities for that ratio), and
:meth:`ReplayMix.dataset` gives a ``datasets.Dataset``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from forgetscope.errors import ConfigError, DataError
from forgetscope.mitigate.replay_sampling import WEIGHTINGS, draw_replay, replay_count
from forgetscope.store.io import atomic_path, write_json
from forgetscope.store.layout import SweepLayout


@dataclass
class ReplayMix:
    """The upstream examples to replay, in draw order, with the values that chose them."""

    table: pd.DataFrame  # example_id, kind, text | prompt + completion, predicted_forgetting, draw
    settings: dict[str, Any]
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def ids(self) -> list[str]:
        return self.table["example_id"].astype(str).tolist()

    def records(self) -> list[dict[str, Any]]:
        """One training record per example: ``{"text"}`` or ``{"prompt", "completion"}`` (TRL's formats)."""
        cols = ["text"] if self.settings["kind"] == "lm" else ["prompt", "completion"]
        return [{c: r[c] for c in cols} | {"example_id": r["example_id"]} for r in self.table.to_dict("records")]

    def dataset(self) -> Any:
        """The replay examples as a ``datasets.Dataset`` (for ``interleave_datasets`` or concatenation)."""
        from datasets import Dataset

        return Dataset.from_list(self.records())

    def write(self, out: str | Path) -> dict[str, Path]:
        """Write ``replay.jsonl`` and ``replay.json`` to ``out`` (atomic; an existing file as ``out`` refused)."""
        out = Path(out)
        if out.exists() and not out.is_dir():
            raise ConfigError(f"output {out} is a file, not a folder")
        out.mkdir(parents=True, exist_ok=True)
        jsonl, summary = SweepLayout.replay_files(out)
        with atomic_path(jsonl) as tmp:
            tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.records()),
                           encoding="utf-8")
        write_json(summary, {**self.settings, "ids": self.ids})
        self.paths = {"jsonl": jsonl, "json": summary}
        return self.paths


def replay_budget(n: int | None, task_examples: int | None, ratio: float) -> int:
    """How many examples to replay: ``n``, else ``int(task_examples · ratio) + 1`` (the reference's rule)."""
    if not 0 < ratio <= 8:
        raise ConfigError(f"ratio must be in (0, 8], got {ratio}")
    if n is not None:
        if int(n) < 1:
            raise ConfigError(f"n must be >= 1, got {n}")
        return int(n)
    if task_examples is None or int(task_examples) < 1:
        raise ConfigError("give the number of examples to replay (n) or the task examples the fine-tune "
                          "trains on (task_examples = steps x batch size), from which ratio sets it")
    return replay_count(int(task_examples), 1, ratio)


def _pool_table(upstream: pd.DataFrame, ids: list[str], kind: str) -> pd.DataFrame:
    table = upstream.set_index(upstream["example_id"].astype(str))
    missing = [i for i in ids if i not in table.index]
    if missing:
        raise DataError(f"{len(missing)} example id(s) of the row are not in the sweep's upstream table, "
                        f"e.g. {missing[:3]}")
    rows = table.loc[ids]
    if kind == "lm":
        if "text" not in rows or rows["text"].isna().any():
            raise DataError("the sweep stores no text for some plain-text examples: nothing to replay")
        return pd.DataFrame({"example_id": ids, "kind": kind, "text": rows["text"].astype(str).to_numpy()})
    if not {"prompt", "response"} <= set(rows.columns) or rows["response"].isna().any():
        raise DataError("the sweep stores no prompt/response for some instruction examples: nothing to replay")
    return pd.DataFrame({"example_id": ids, "kind": kind, "prompt": rows["prompt"].fillna("").astype(str).to_numpy(),
                         "completion": rows["response"].astype(str).to_numpy()})


def replay_examples(sweep: str | Path, *, values: pd.Series | dict[str, float] | None = None,
                    forecast_dir: str | Path | None = None, probe_from: str | None = None,
                    adapter: str | Path | None = None, kind: str = "lm", n: int | None = None,
                    task_examples: int | None = None, ratio: float = 1 / 32, weighting: str = "softmax",
                    temperature: float = 0.1, seed: int = 0, train_seed: int = 0, predictor: str = "auto",
                    probe: int = 30, out: str | Path | None = None) -> ReplayMix:
    """Choose the upstream examples of ``sweep`` to replay in a user's own fine-tune (module docstring).

    Exactly one source of values: ``values`` ({example_id: predicted forgetting}), ``forecast_dir`` (a
    folder ``forgetscope forecast`` wrote), or ``probe_from`` / ``adapter`` (a first fine-tune, forecast
    here from ``probe`` examples with ``predictor``). Every check runs before any model loads.
    """
    from forgetscope.store import SweepStore

    given = [x is not None for x in (values, forecast_dir, probe_from or adapter)]
    if sum(given) != 1:
        raise ConfigError("give exactly one source of forgetting values: values, a forecast folder, or a first "
                          "fine-tune to probe (a model or an adapter)")
    if weighting not in WEIGHTINGS:
        raise ConfigError(f"unknown weighting {weighting!r}; choose from {', '.join(WEIGHTINGS)}")
    if not temperature > 0:
        raise ConfigError(f"temperature must be positive, got {temperature}")
    k = replay_budget(n, task_examples, ratio)
    store = SweepStore(sweep)
    upstream = store.read_upstream()
    source: dict[str, Any]
    if forecast_dir is not None:
        row, source = _forecast_row(Path(forecast_dir))
    elif values is not None:
        row, source = pd.Series(values, dtype=float), {"values": "given"}
    else:
        from forgetscope.experiments.forecast import forecast

        result = forecast(sweep, probe_from, adapter=adapter, probe=probe, predictor=predictor, kind=kind,
                          seed=seed, out=None if out is None else Path(out) / "forecast")
        row = result.row
        source = {"probe_from": probe_from, "adapter": None if adapter is None else str(adapter),
                  "predictor": result.predictor, "probe": int(result.settings["probe"]),
                  "probe_ids": result.settings["probe_ids"]}
    row.index = row.index.astype(str)
    ids = row.index.tolist()
    if k > len(ids):
        raise ConfigError(f"n={k} is more than the {len(ids)} examples the row covers: draws are without "
                          "replacement, so at most that many")
    pool = _pool_table(upstream, ids, kind)
    picked = draw_replay(row.to_numpy(dtype=float), k, weighting=weighting, temperature=temperature,
                         train_seed=train_seed, seed=seed)
    table = pool.iloc[picked].reset_index(drop=True)
    table["predicted_forgetting"] = row.to_numpy(dtype=float)[picked]
    table["draw"] = np.arange(len(picked))
    settings = {"sweep": str(store.path), "kind": kind, "n": k, "ratio": ratio,
                "task_examples": task_examples, "weighting": weighting, "temperature": temperature,
                "seed": seed, "train_seed": train_seed, "pool": len(ids), **source,
                # interleave_datasets([task, replay], probabilities=...) gives one replay per 1/ratio task rows
                "interleave_probabilities": [1 / (1 + ratio), ratio / (1 + ratio)]}
    mix = ReplayMix(table, settings)
    if out is not None:
        mix.write(out)
    return mix


def _forecast_row(folder: Path) -> tuple[pd.Series, dict[str, Any]]:
    """The forecast row a ``forgetscope forecast`` folder holds, by example id."""
    table, meta = SweepLayout.forecast_files(folder)
    if not table.is_file():
        raise DataError(f"no forecast in {folder}: {table.name} is missing")
    df = pd.read_parquet(table)
    settings = json.loads(meta.read_text()) if meta.is_file() else {}
    row = pd.Series(df["forgetting"].to_numpy(dtype=float), index=df["example_id"].astype(str))
    return row, {"forecast": str(folder), "predictor": settings.get("predictor")}


__all__ = ["ReplayMix", "replay_budget", "replay_examples"]
