"""Complete a fine-tuned model's forgetting row from a probe of a few upstream examples.

This module completes rows and reads sweeps; loading and measuring the fine-tuned model is
:mod:`forgetscope.experiments.forecast` (``forgetscope.forecast`` at the top). A sweep holds the base model's loss on every upstream example (``loss_before``) and the forgetting
rows of known tasks. A model fine-tuned on a new task is evaluated on a probe of ``probe`` upstream
examples only; its forgetting there (``loss_after − loss_before``) completes the rest of its row with
a predictor fitted on the sweep's known rows of the same example kind::

    import forgetscope

    result = forgetscope.forecast("sweeps/demo", "path/to/finetuned-model", probe=30)   # or adapter="lora_dir"
    result.top(20)          # the examples predicted most forgotten
    result.table            # every example: forgetting, observed or predicted, uncertainty, rank

What is reused from the sweep, so the forecast measures the same quantity as the sweep did: the
upstream examples (rebuilt from ``upstream.parquet``), the base losses, and the encoding
(``eval.max_length`` when the config has it, else ``train.max_length``; the chat setting) and the
evaluation dtype the manifest's ``eval`` entry records (float32 for a sweep that recorded none), read
back as one record (``SweepStore.eval_record``). A model whose tokenizer encodes the probe examples to
other lengths than the sweep recorded (``n_tokens``) is refused by the evaluator that measures it, as is
a LoRA adapter trained on another base model.

**Predictor.** ``auto`` evaluates ``additive``, ``knn``, ``knn-baseline`` and ``lowrank`` on the
known rows under the task-grouped protocol of :mod:`forgetscope.predict.evaluate` (the forecast's
probe size, 3 draws) and keeps the lowest RMSE.

**Uncertainty** (the ``uncertainty`` column, 0 on observed examples): for ``knn``, the weighted sd of
the k neighbour rows at that example, scaled as the prediction is (how much the rows it averages
disagree); for every other predictor, the sd of the prediction over 20 refits on bootstrap samples of
the known rows (tasks resampled with replacement). Both are spreads, not calibrated intervals.

**Interval** (``lower``/``upper``): split-conformal at ``coverage`` (:mod:`forgetscope.predict.conformal`),
``normalized`` by default (the half-width scales with the RMS of the row's own probe residuals) or
``absolute`` (one half-width). The settings also give the interval's coverage on the known tasks, each
held out in turn: pooled (marginal) and per task (min, 10th percentile, share below ``coverage − 0.1``).

**Verify.** ``verify=True`` also evaluates every example and scores the forecast on the unprobed
ones (RMSE, Pearson, precision@k of ``F > τ``, τ the sweep's noise margin), next to ``additive``.

A forecast after fine-tuning on a task file is :func:`forgetscope.experiments.forecast.forecast_task`
(training lives in ``experiments``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from forgetscope.data.types import Example
from forgetscope.errors import ConfigError, DataError, StoreError
from forgetscope.measure.record import EvalRecord
from forgetscope.predict.completion import complete_from_probe
from forgetscope.predict.conformal import DEFAULT_INTERVAL, Band, HeldOut
from forgetscope.predict.evaluate import evaluate, noise_margin
from forgetscope.predict.kinds import check_kind, select_kind, subset_rows
from forgetscope.predict.metrics import score_rows
from forgetscope.predict.probe import choose_probe, probe_size
from forgetscope.predict.registry import PREDICTORS, get_predictor
from forgetscope.store import ForgettingMatrix, SweepLayout, SweepStore
from forgetscope.store.io import write_json, write_parquet

#: predictors ``auto`` chooses among
AUTO_CANDIDATES = ("additive", "knn", "knn-baseline", "lowrank")
AUTO_DRAWS = 3
N_BOOTSTRAP = 20
SNIPPET = 160


@dataclass
class SweepData:
    """What a forecast reuses from a sweep, for the upstream examples of one kind."""

    path: Path
    manifest: dict[str, Any]
    kind: str
    matrix: ForgettingMatrix  # the known rows x the kind's examples
    examples: list[Example]  # the kind's upstream examples, in column order
    loss_before: np.ndarray
    n_tokens: np.ndarray | None
    record: EvalRecord  # how loss_before was measured (encoding length, chat, dtype, batching)
    tau: float
    tau_source: str

    @property
    def max_length(self) -> int:
        return self.record.max_length

    @property
    def chat(self) -> bool | str:
        return self.record.chat

    @property
    def eval_dtype(self) -> str:
        return self.record.dtype

    @property
    def n(self) -> int:
        return len(self.examples)

    @property
    def layout(self) -> SweepLayout:
        return SweepLayout(self.path)

    @property
    def config(self) -> dict[str, Any]:
        return self.manifest.get("config") or {}

    @property
    def groups(self) -> np.ndarray:
        """The task of every known row (rows of one task leave together in cross-validation)."""
        runs = self.matrix.runs
        if runs is not None and "task" in runs.columns:
            return runs["task"].astype(str).to_numpy()
        return np.asarray(self.matrix.row_names)

    def tokens_of(self, idx: np.ndarray) -> np.ndarray | None:
        """The scored-token counts the sweep recorded for examples ``idx`` (None where it recorded none), for
        the evaluator's check that its ``loss_before`` applies to what is measured now."""
        return None if self.n_tokens is None else self.n_tokens[idx]


@dataclass
class ForecastResult:
    """A forecast row: one table row per upstream example of the kind, with settings and cost."""

    table: pd.DataFrame  # example_id, kind, text, forgetting, observed, uncertainty, rank (+ lower, upper, measured)
    predictor: str
    settings: dict[str, Any]
    cost: dict[str, Any]
    uncertainty: str
    selection: pd.DataFrame | None = None  # auto: CV score of each candidate
    verify: pd.DataFrame | None = None  # verify: scores against the measured row
    paths: dict[str, Path] = field(default_factory=dict)

    def top(self, k: int = 20) -> pd.DataFrame:
        """The ``k`` examples with the highest forecast forgetting."""
        return self.table.sort_values("rank").head(k)

    @property
    def row(self) -> pd.Series:
        """Forecast forgetting per example id."""
        return self.table.set_index("example_id")["forgetting"]


# ---- the sweep ---------------------------------------------------------------------------------

def load_sweep(sweep: str | Path, kind: str = "lm") -> SweepData:
    """Read what a forecast needs from ``sweep`` for examples of ``kind``; one-line errors otherwise."""
    check_kind(kind)
    store = SweepStore(sweep)
    manifest = store.read_manifest()
    config = manifest.get("config")
    if not isinstance(config, dict) or "train" not in config:
        raise StoreError(f"{store.path} records no sweep config (an imported matrix?): the encoding its base "
                         "losses were measured with cannot be reproduced")
    matrix = select_kind(store.load_matrix(), kind)
    known = np.flatnonzero(np.isfinite(matrix.values).any(axis=1))
    if known.size < 2:
        raise DataError(f"the sweep {store.path} has {known.size} known row(s) with forgetting of {kind!r} "
                        "examples; a forecast needs at least 2")
    matrix = subset_rows(matrix, known)
    ids = [str(i) for i in matrix.col_names]
    table = matrix.upstream if matrix.upstream is not None else store.read_upstream()  # read by load_matrix
    examples = store.upstream_examples(ids, table=table)  # DataError when it stores ids and losses only
    loss_before, n_tokens = store.base_losses(ids, table=table)
    if loss_before is None:
        raise DataError(f"the sweep {store.path} has no loss_before values in its upstream table")
    tau, tau_source = noise_margin(matrix)
    record = store.eval_record()
    return SweepData(store.path, manifest, kind, matrix, examples, loss_before, n_tokens, record, tau, tau_source)


def forecast_probe(data: SweepData, probe: int, *, method: str = "random", seed: int = 0) -> np.ndarray:
    """Sorted column indices of the ``probe`` examples to evaluate (a count in ``1 .. N``)."""
    if isinstance(probe, bool) or not isinstance(probe, (int, np.integer)):
        raise DataError(f"the probe is a count of upstream examples, got {probe!r}")
    if probe < 1:
        raise DataError(f"probe size must be positive, got {probe}: observe at least one example")
    count = probe_size(int(probe), data.n)  # DataError when larger than N
    return choose_probe(data.n, count, method=method, known=data.matrix.values, seed=seed)  # type: ignore[arg-type]


# ---- completing the row ------------------------------------------------------------------------

def select_predictor(data: SweepData, size: int, *, seed: int = 0) -> tuple[str, pd.DataFrame | None, str]:
    """(name, CV scores, why): the candidate with the lowest task-grouped CV RMSE on the known rows."""
    tasks = np.unique(data.groups).size
    if tasks < 2:
        return "knn", None, f"knn: the known rows hold {tasks} task, too few for task-grouped cross-validation"
    if size >= data.n:
        return "knn", None, "knn: every example is observed, nothing to choose for"
    result = evaluate(data.matrix, list(AUTO_CANDIDATES), probe=[size], draws=AUTO_DRAWS, seed=seed,
                      tau=data.tau, baselines=False)  # choose among the candidates only
    scores = result.summary()[["predictor", "rmse", "rmse_sd", "pearson", "f1", "precision@10"]]
    scores = scores.sort_values("rmse", kind="stable").reset_index(drop=True)
    best = str(scores["predictor"].iloc[0])
    return best, scores, f"{best}: lowest RMSE under {result.protocol['splits']}, {AUTO_DRAWS} draws of {size} probes"


def _task_texts(name: str, data: SweepData) -> list[str] | None:
    """Every known row's task text, for the predictors that read texts (None for the others)."""
    from forgetscope.predict.semantic import TEXT_PREDICTORS, texts_from_matrix

    return texts_from_matrix(data.matrix)[0] if name in TEXT_PREDICTORS else None


def _fit(name: str, data: SweepData, rows: np.ndarray, params: dict[str, Any]) -> Any:
    """``name`` fitted on the known rows ``rows`` (their values, task groups and, if it reads texts, texts)."""
    tasks = _task_texts(name, data)
    texts: dict[str, Any] = {}
    if tasks is not None:
        texts = {"task_texts": [tasks[r] for r in rows], "example_texts": [e.full_text for e in data.examples]}
    predictor = get_predictor(name, **params)
    upstream = data.matrix.upstream if predictor.needs_upstream else None  # per-example features
    return predictor.fit(data.matrix.values[rows], groups=data.groups[rows], upstream=upstream, **texts)


def interval_band(name: str, data: SweepData, params: dict[str, Any], idx: np.ndarray, coverage: float,
                  interval: str = DEFAULT_INTERVAL) -> tuple[Band, list[HeldOut]]:
    """The split-conformal :class:`~forgetscope.predict.conformal.Band` at ``coverage`` and the held-out known
    tasks (values, completion) it was calibrated on."""
    from forgetscope.predict.conformal import calibrate, task_out_predictions

    tasks = _task_texts(name, data)

    def fit_predict(_rows, _groups, probe_idx, values, held):
        keep = np.setdiff1d(np.arange(data.matrix.shape[0]), held)
        texts = None if tasks is None else [tasks[r] for r in held]
        return _fit(name, data, keep, params).predict_rows(probe_idx, values, task_texts=texts)

    held_out = task_out_predictions(data.matrix.values, data.groups, idx, fit_predict)
    return calibrate(held_out, idx, coverage, interval), held_out


def bootstrap_spread(name: str, data: SweepData, params: dict[str, Any], idx: np.ndarray, observed: np.ndarray,
                     *, n_boot: int = N_BOOTSTRAP, seed: int = 0, task_text: str | None = None) -> np.ndarray:
    """sd over ``n_boot`` refits on known rows resampled by task (with replacement) of the completed row."""
    groups = data.groups
    names = np.unique(groups)
    rows_of = {g: np.flatnonzero(groups == g) for g in names}
    rng = np.random.default_rng([seed, 7])
    preds = []
    for _ in range(n_boot):
        picked = rng.choice(names, names.size, replace=True)
        rows = np.concatenate([rows_of[g] for g in picked])
        try:
            p = _fit(name, data, rows, params)
        except DataError:  # a resample that leaves an example unobserved
            continue
        preds.append(p.predict(idx, observed, task_text=task_text))
    if len(preds) < 2:
        return np.full(data.n, np.nan)
    return np.std(np.stack(preds), axis=0, ddof=1)


def _snippet(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= SNIPPET else text[: SNIPPET - 1] + "…"


def forecast_row(data: SweepData, idx: np.ndarray, observed: np.ndarray, *, predictor: str = "auto",
                 seed: int = 0, task_text: str | None = None, coverage: float | None = None,
                 interval: str = DEFAULT_INTERVAL) -> ForecastResult:
    """Complete the row from the forgetting ``observed`` on probe examples ``idx`` (no I/O).

    ``lower``/``upper`` are a split-conformal interval at ``coverage`` (:mod:`forgetscope.predict.conformal`),
    ``interval`` ``normalized`` or ``absolute``: by default 90 % when the sweep has at least 3 known tasks
    (else none, and the settings say why); an explicit ``coverage`` with fewer tasks is a DataError.
    """
    from forgetscope.predict.conformal import DEFAULT_COVERAGE, MIN_TASKS, check_coverage, check_interval

    check_interval(interval)
    if coverage is not None:
        check_coverage(coverage)
    n_tasks = int(np.unique(data.groups).size)
    if coverage is None and n_tasks >= MIN_TASKS:
        coverage = DEFAULT_COVERAGE
    idx = np.asarray(idx, dtype=np.intp)
    observed = np.asarray(observed, np.float64)
    if not np.isfinite(observed).any():
        raise DataError("no probe example has a finite forgetting value (missing base losses?)")
    selection, why = None, "given"
    if predictor == "auto":
        predictor, selection, why = select_predictor(data, idx.size, seed=seed)
    check_predictor(predictor, task_text)
    params: dict[str, Any] = {"seed": seed} if "seed" in _accepted(predictor) else {}
    fitted = _fit(predictor, data, np.arange(data.matrix.shape[0]), params)
    if predictor == "lowrank":
        params["rank"] = fitted.rank_  # the bootstrap refits keep the chosen rank
    params.update(getattr(fitted, "chosen_params_", {}))  # and the feature predictors their rank and shrinkage
    row = fitted.predict(idx, observed, task_text=task_text)  # its values on the probe scale the interval
    ok = np.isfinite(observed)
    final = complete_from_probe(fitted, idx, observed, predicted=row)  # measured values win on the probe
    if hasattr(fitted, "neighbour_spread"):
        spread = fitted.neighbour_spread(idx[ok], observed[ok])[0]
        how = f"{predictor}: weighted sd of the {getattr(fitted, 'k', '')} neighbour rows, scaled as the prediction"
    else:
        spread = bootstrap_spread(predictor, data, params, idx, observed, seed=seed, task_text=task_text)
        how = f"{predictor}: sd over {N_BOOTSTRAP} refits on task-bootstrapped known rows"
    is_obs = np.zeros(data.n, dtype=bool)
    is_obs[idx[ok]] = True
    spread = np.where(is_obs, 0.0, spread)
    table = pd.DataFrame({"example_id": [e.example_id for e in data.examples], "kind": data.kind,
                          "text": [_snippet(e.full_text) for e in data.examples], "forgetting": final,
                          "observed": is_obs, "uncertainty": spread})
    table["rank"] = table["forgetting"].rank(ascending=False, method="first").astype(int)
    if coverage is not None:
        from forgetscope.predict.conformal import held_out_coverage

        band, held_out = interval_band(predictor, data, params, idx, coverage, interval)
        half = float(band.halfwidth(observed[None], row[idx][None])[0])
        table["lower"] = np.where(is_obs, final, final - half)
        table["upper"] = np.where(is_obs, final, final + half)
        band_info = {"coverage": coverage, "interval": interval, "halfwidth": half, "quantile": band.quantile,
                     "scale": float(band.scale(observed[None], row[idx][None])[0]), "scale_floor": band.floor,
                     "scores": band.n_scores, "method": band.describe(),
                     "held_out_tasks": held_out_coverage(held_out, idx, coverage, interval)}
    else:
        band_info = {"coverage": None, "interval": interval,
                     "why": f"the sweep has {n_tasks} known task(s); intervals need {MIN_TASKS}"}
    settings = {"sweep": str(data.path), "kind": data.kind, "probe": int(idx.size), "predictor": predictor,
                "predictor_choice": why, "tau": data.tau, "tau_source": data.tau_source,
                "max_length": data.max_length, "chat": data.chat, "eval_dtype": data.eval_dtype,
                "known_rows": int(data.matrix.shape[0]),
                "known_tasks": n_tasks, "interval": band_info,
                "probe_ids": [data.examples[i].example_id for i in idx]}
    if predictor == "lowrank":
        settings["lowrank_rank"] = int(fitted.rank_)
    return ForecastResult(table, predictor, settings, {}, how, selection)


def check_predictor(predictor: str, task_text: str | None = None) -> None:
    """Refuse, before any model is evaluated, a predictor a forecast cannot use."""
    if predictor == "auto":
        return
    if PREDICTORS.get(predictor).output != "forgetting":
        raise ConfigError(f"{predictor} predicts probabilities of 'forgotten', not forgetting values; "
                          "choose auto, additive, knn, knn-baseline, lowrank, additive-features, "
                          "lowrank-features, semantic or semantic-knn")
    from forgetscope.predict.semantic import TEXT_PREDICTORS

    if predictor in TEXT_PREDICTORS and not task_text:
        raise ConfigError(f"{predictor} ({PREDICTORS.get(predictor).display_name()}) needs the new task's text: "
                          "forecast with --task, or pass task_text")


def check_interval_request(data: SweepData, coverage: float | None, interval: str = DEFAULT_INTERVAL) -> None:
    """Refuse, before any model is loaded, an unknown interval kind, a coverage outside (0, 1) or one the
    sweep cannot calibrate (fewer known tasks than :data:`~forgetscope.predict.conformal.MIN_TASKS`)."""
    from forgetscope.predict.conformal import MIN_TASKS, check_coverage, check_interval

    check_interval(interval)
    if coverage is None:
        return
    check_coverage(coverage)
    n_tasks = int(np.unique(data.groups).size)
    if n_tasks < MIN_TASKS:
        raise DataError(f"forecast intervals need at least {MIN_TASKS} known tasks to calibrate on, the sweep has "
                        f"{n_tasks}; leave the coverage unset to forecast without intervals")


def _accepted(name: str) -> list[str]:
    from forgetscope.predict.registry import predictor_params

    return predictor_params(name)


def verify_forecast(result: ForecastResult, data: SweepData, idx: np.ndarray, observed: np.ndarray,
                    truth: np.ndarray, *, top: int = 20) -> pd.DataFrame:
    """Scores of the forecast and of ``additive`` against the measured row, on the unprobed examples."""
    scored = np.asarray(truth, np.float64).copy()
    scored[idx] = np.nan
    k = max(1, min(int(top), int(np.isfinite(scored).sum())))
    additive = get_predictor("additive").fit(data.matrix.values).predict(idx, observed)
    rows = []
    compared = [(result.predictor, result.table["forgetting"].to_numpy())]
    if result.predictor != "additive":
        compared.append(("additive", additive))
    for label in ("column-mean", "probe-mean"):  # the trivial baselines, as in cross-validation
        compared.append((label, get_predictor(label).fit(data.matrix.values).predict(idx, observed)))
    ok = np.isfinite(scored)
    for label, pred in compared:
        s = score_rows(scored[None], np.asarray(pred, np.float64)[None], threshold=data.tau, ks=(k,))
        rows.append({"predictor": label, "method": PREDICTORS.get(label).display_name(), "scored": int(ok.sum()),
                     "rmse": s["rmse"], "pearson": s["pearson"], "spearman": s["spearman"], "f1": s["f1"], "k": k,
                     "precision@k": s[f"precision@{k}"], "recall@k": s[f"recall@{k}"],
                     "overlap@k": s[f"overlap@{k}"], "tau": data.tau})
    if "lower" in result.table:  # how often the forecast's interval holds the measured value, and how wide it is
        low, high = result.table["lower"].to_numpy(), result.table["upper"].to_numpy()
        rows[0]["interval_coverage"] = float(np.mean((scored[ok] >= low[ok]) & (scored[ok] <= high[ok])))
        rows[0]["interval_width"] = float(np.mean(high[ok] - low[ok]))
        rows[0]["nominal_coverage"] = result.settings["interval"]["coverage"]
        rows[0]["interval"] = result.settings["interval"]["interval"]
    share = float(np.mean(scored[ok] > data.tau)) if ok.any() else float("nan")
    rows.append({"predictor": "all-forgotten", "method": "all-forgotten", "scored": int(ok.sum()),
                 "f1": 2 * share / (1 + share) if share > 0 else 0.0, "tau": data.tau})
    result.table["measured"] = truth
    return pd.DataFrame(rows)


def forecast_from_losses(data: SweepData, idx: np.ndarray, probe_loss: np.ndarray, *,
                         verify_loss: np.ndarray | None = None, predictor: str = "auto", seed: int = 0,
                         top: int = 20, task_text: str | None = None, out_dir: str | Path | None = None,
                         settings: dict[str, Any] | None = None, cost: dict[str, Any] | None = None,
                         coverage: float | None = None, interval: str = DEFAULT_INTERVAL) -> ForecastResult:
    """Complete, verify (when the full row's losses are given) and write a forecast from measured losses."""
    observed = np.asarray(probe_loss, np.float64) - data.loss_before[idx]
    result = forecast_row(data, idx, observed, predictor=predictor, seed=seed, task_text=task_text,
                          coverage=coverage, interval=interval)
    if verify_loss is not None:
        result.verify = verify_forecast(result, data, idx, observed,
                                        np.asarray(verify_loss, np.float64) - data.loss_before, top=top)
    result.settings.update(settings or {})
    result.settings["top"] = int(top)
    result.cost = {"probe_evaluations": int(idx.size), "n_examples": data.n,
                   "share_evaluated": idx.size / data.n, "inference_skipped": 1 - idx.size / data.n, **(cost or {})}
    if out_dir is not None:
        result.paths = write_forecast(result, out_dir)
    return result


def write_forecast(result: ForecastResult, out_dir: str | Path) -> dict[str, Path]:
    """Write ``forecast.parquet`` (one row per example) and ``forecast.json`` (settings, cost, scores)."""
    table_path, summary_path = SweepLayout.forecast_files(out_dir)
    write_parquet(table_path, result.table)
    write_json(summary_path, {
        "settings": result.settings, "predictor": result.predictor, "uncertainty": result.uncertainty,
        "cost": result.cost,
        "selection": None if result.selection is None else json.loads(result.selection.to_json(orient="records")),
        "verify": None if result.verify is None else json.loads(result.verify.to_json(orient="records")),
        "top": json.loads(result.top(int(result.settings.get("top", 20)))[
            ["rank", "example_id", "forgetting", "observed", "uncertainty"]].to_json(orient="records")),
    })
    return {"table": table_path, "summary": summary_path}


def default_name(model: Any = None, adapter: str | Path | None = None, task: str | Path | None = None) -> str:
    """A folder name for a forecast: the task file's, adapter's or model's name."""
    if task is not None:
        raw = Path(str(task)).stem
    elif adapter is not None:
        raw = Path(str(adapter)).name
    elif isinstance(model, (str, Path)):
        raw = Path(str(model)).name
    else:
        raw = "model"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", raw).strip("._") or "model"


