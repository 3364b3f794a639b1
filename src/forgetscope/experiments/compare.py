"""``forgetscope compare CONFIG``: plain fine-tuning against mitigation strategies, with run-level tests.

A compare config is a sweep config (model, upstream, tasks, seeds, train, eval; see
:mod:`forgetscope.config`) plus::

    strategies:                       # each runs on every task x seed, paired with a plain run
      - {name: replay, label: replay-random, options: {policy: random}}
      - {name: replay, label: replay-offline, options: {policy: predicted}}
      - {name: replay, label: replay-online, options: {policy: predicted, mode: online}}
      - {name: replay, label: replay-oracle, options: {policy: oracle}}
      - {name: replay, label: replay-mir, options: {policy: mir, candidates: 30}}
      - {name: sam, options: {rho: 0.05}}
      - {name: ewc}
      - {name: lwf, options: {forget_data: data/conflicting_task.jsonl}}
    known_tasks: [definitions, jargon]  # plain runs only: extra known rows for the predicted policy
    compare: {replay_fraction: 0.5, probe: 30, predictor: knn, threshold: 0.0, bootstrap: 9999,
              direct: [[replay-offline, replay-random], [replay-online, replay-random]], kind: lm}

Protocol (one sweep directory, every run written to the sweep store as it finishes; rerunning the
same command resumes where it stopped):

1. the upstream set is split once (seeded) into a *replay pool* (``replay_fraction``) — the only
   examples strategies may train on or take statistics from (replay, EWC's Fisher, LWF with
   ``source: upstream``) — and a *held-out* part on which forgetting is compared (never trained on);
2. plain runs for every task x seed (and for ``known_tasks``, first seed);
3. for the ``oracle`` policy, the plain run's forgetting row over the pool is the truth it gets; for
   offline ``predicted``, a probe set S (``probe`` of the pool, seeded per seed) is observed on the
   plain run — the plain fine-tuned model evaluated on S only, |S| upstream evaluations — and the row
   is completed by ``predictor`` fitted on the plain rows of the *other* tasks (this sweep's, or the
   ``known`` sweep's), never this task's; online ``predicted`` measures S itself on its own model at
   the end of its warm-up, against base losses it measures once before training (2|S| evaluations);
4. every strategy on every task x seed, from the same base weights and the same task batches.

Per run (``per_run.csv``): mean forgetting on the held-out examples, share of them forgotten
(F > ``threshold``), mean forgetting on every example the run did not train on, held-out task loss and
next-token accuracy after fine-tuning, training wall time, upstream evaluations spent.

The three forgetting metrics average the upstream examples of one kind (``compare.kind``: ``lm``,
``instruction`` or ``all``; by default the sweep's default kind, ``lm`` when the upstream set has
plain-text examples), because the two kinds are separate experiments; ``summary.csv`` names it in
``upstream_kind``. With both kinds upstream, ``per_run.csv`` also has each metric per kind
(``forgetting_heldout_lm``, ``forgetting_heldout_instruction``, ...) as a description; the tests, the
summary and the Holm family use the headline metrics only. With one kind upstream the columns and
their values are those of a comparison over every column.

Tests (``tests.csv``; see :mod:`forgetscope.analysis.stats`): every strategy against plain, and the
``direct`` pairs (default: each predicted-replay arm against the random-replay arm with the same
ratio), on three metrics (held-out forgetting, task loss, task accuracy), each paired over task x seed
runs: Wilcoxon signed-rank and paired t p-values, a BCa bootstrap CI of the mean difference over runs,
the effect size d_z, and Holm's adjustment across *every* row of the table (one family per test).
The example-level Wilcoxon p over pooled held-out examples appears only as the descriptive column
``p_examples_descriptive``: examples of one run share a model, so it is not a valid test.
``summary.csv`` holds one row per strategy: its run-level means, and its comparison with plain.
LWF is reported as *graceful forgetting* (judged by task loss and accuracy), not as a mitigation.

``command.txt`` holds the command that produced the directory and ``wall_time.json`` the wall time
of every invocation (a resumed comparison adds one), updated after each run.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from pydantic import Field, field_validator, model_validator

from forgetscope.analysis.stats import holm, mean_ci, paired_run_test, paired_test
from forgetscope.config import SweepConfig, TaskConfig, _Strict, names_to_tasks
from forgetscope.data.types import kind_option, require_kind
from forgetscope.errors import ConfigError, DataError
from forgetscope.experiments.run import Experiment
from forgetscope.experiments.spec import RunSpec
from forgetscope.measure.forgetting import forgotten_share
from forgetscope.store.layout import SweepLayout
from forgetscope.store.matrix import default_kind

METRICS = ("forgetting_heldout", "task_loss_after", "task_accuracy_after")
DEFAULT_RATIO = 1 / 32


class StrategySpec(_Strict):
    name: str
    label: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    @property
    def display(self) -> str:
        return self.label or self.name

    @property
    def policy(self) -> str | None:
        return self.options.get("policy", "random") if self.name == "replay" else None

    @property
    def kind(self) -> str:
        return "graceful forgetting" if self.name == "lwf" else "mitigation"


class CompareOptions(_Strict):
    replay_fraction: float = Field(0.5, gt=0, lt=1)
    probe: float = Field(30, gt=0)
    predictor: str = "knn"
    predictor_options: dict[str, Any] = Field(default_factory=dict)
    known: str | None = None  # another sweep with plain rows of other tasks (default: this comparison's)
    threshold: float = 0.0
    bootstrap: int = Field(9999, ge=100)
    direct: list[tuple[str, str]] | None = None  # [strategy, baseline strategy] pairs tested head to head
    kind: str | None = None  # upstream examples the forgetting metrics average (None: the sweep's default kind)
    # split by source instead of at random: held-out = upstream examples of these categories (``category``
    # of the example's metadata), pool = those of ``pool_categories`` (default: every other category)
    heldout_categories: list[str] | None = None
    pool_categories: list[str] | None = None
    # strategy runs measure the pool too (for forgetting_all_untrained); false: the held-out part only,
    # which is all the tests use (plain runs always measure every example: they are the known rows)
    measure_pool: bool = True

    _kind = field_validator("kind")(kind_option)

    @model_validator(mode="after")
    def _split(self) -> CompareOptions:
        if self.pool_categories is not None and self.heldout_categories is None:
            raise ValueError("compare.pool_categories needs compare.heldout_categories (the held-out sources)")
        if self.heldout_categories is not None:
            if not self.heldout_categories:
                raise ValueError("compare.heldout_categories: name at least one category")
            both = sorted(set(self.heldout_categories) & set(self.pool_categories or []))
            if both:
                raise ValueError(f"compare: the held-out set overlaps the pool: categories {both} are in both "
                                 "heldout_categories and pool_categories")
        return self


class CompareConfig(SweepConfig):
    strategies: list[StrategySpec]
    known_tasks: list[TaskConfig] = Field(default_factory=list)
    compare: CompareOptions = CompareOptions()

    _known_names = field_validator("known_tasks", mode="before")(lambda v: names_to_tasks(v))

    @model_validator(mode="after")
    def _check_strategies(self) -> CompareConfig:
        from forgetscope.train import strategy_names

        if not self.strategies:
            raise ValueError("strategies: name at least one strategy to compare with plain fine-tuning")
        names = strategy_names()
        for i, s in enumerate(self.strategies):
            if s.name not in names:
                raise ValueError(f"strategies.{i}.name: unknown strategy {s.name!r}; choose from {', '.join(names)}")
            if s.name == "plain":
                raise ValueError(f"strategies.{i}.name: plain fine-tuning is always run as the baseline")
        labels = [s.display for s in self.strategies]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ValueError(f"strategies: duplicate labels {dupes}; give each a distinct label")
        if "plain" in labels:
            raise ValueError("strategies: 'plain' is the baseline's label; give the strategy another label")
        overlap = {t.name for t in self.tasks} & {t.name for t in self.known_tasks}
        if overlap:
            raise ValueError(f"known_tasks: {sorted(overlap)} are already compared tasks")
        for i, (a, b) in enumerate(self.compare.direct or []):
            for x in (a, b):
                if x not in labels and x != "plain":
                    raise ValueError(f"compare.direct.{i}: no strategy labelled {x!r}; labels are {', '.join(labels)}")
            if a == b:
                raise ValueError(f"compare.direct.{i}: compares {a!r} with itself")
        return self

    def predictor_of(self, s: StrategySpec) -> str | None:
        """The predictor a predicted-replay arm completes its row with (None for other arms)."""
        return str(s.options.get("predictor", self.compare.predictor)) if s.policy == "predicted" else None

    def direct_pairs(self) -> list[tuple[str, str]]:
        """Head-to-head comparisons: ``compare.direct``, or each predicted-replay arm against the
        random-replay arm with the same ratio (the first one, when several) and, for arms that complete
        a row, against the probe-only arm with the same ratio and mode (observation without completion)."""
        from forgetscope.mitigate.replay import PROBE_ONLY

        if self.compare.direct is not None:
            return [(a, b) for a, b in self.compare.direct]
        out = []
        for s in self.strategies:
            if s.policy != "predicted":
                continue
            ratio = s.options.get("ratio", DEFAULT_RATIO)
            same = [r for r in self.strategies if r.options.get("ratio", DEFAULT_RATIO) == ratio]
            random = [r for r in same if r.policy == "random"]
            if random:
                out.append((s.display, random[0].display))
            if self.predictor_of(s) != PROBE_ONLY:
                mode = s.options.get("mode", "offline")
                probe_only = [r for r in same if self.predictor_of(r) == PROBE_ONLY
                              and r.options.get("mode", "offline") == mode]
                if probe_only:
                    out.append((s.display, probe_only[0].display))
        return out


def load_compare_config(path: str | Path, **overrides: Any) -> CompareConfig:
    from forgetscope.config import load_config

    cfg = load_config(path, model=CompareConfig, **overrides)
    _validate_strategy_options(cfg)
    return cfg


def validate_compare(cfg: CompareConfig) -> tuple[list[str], list[str]]:
    """Everything a comparison can check before any model is loaded or file written: the sweep's own
    checks (executor, input files), then the split of the upstream set into pool and held-out and the
    probe against the pool. Returns (pool ids, held-out ids)."""
    from forgetscope.experiments.session import load_upstream
    from forgetscope.experiments.validate import validate_sweep

    validate_sweep(cfg)
    for t in cfg.known_tasks:
        validate_sweep(cfg.model_copy(update={"tasks": [t]}))
    return split_for(cfg, load_upstream(cfg))


def _validate_strategy_options(cfg: CompareConfig) -> None:
    """Build each strategy once with placeholder inputs, so bad options fail before any training."""
    from forgetscope.mitigate.replay import replay_schedule
    from forgetscope.train import make_strategy

    for i, s in enumerate(cfg.strategies):
        opts = dict(s.options)
        if s.name == "replay":
            policy = opts.get("policy", "random")
            if policy == "oracle":
                opts.setdefault("forgetting", {})
            if policy == "predicted":
                opts.setdefault("known", "<compare>")
                opts.setdefault("predictor", cfg.compare.predictor)
        strategy = make_strategy(s.name, **opts)
        if s.policy == "mir":  # the largest draw of one step, with full task batches
            most = int(replay_schedule(cfg.train.steps, cfg.train.batch_size, strategy.ratio).max())
            if strategy.options.candidates < most:
                raise ConfigError(f"strategies.{i} ({s.display}): mir candidates={strategy.options.candidates} is "
                                  f"smaller than the {most} replay examples drawn in one step; use candidates >= {most}")


def _spec(task: str, seed: int, name: str, options: dict[str, Any]) -> RunSpec:
    return RunSpec(task, seed, name, tuple(sorted(options.items())))


def split_by_category(upstream: list, heldout: list[str], pool: list[str] | None) -> tuple[list[str], list[str]]:
    """(pool, held-out) example ids by source: held-out = examples whose ``category`` is in ``heldout``,
    pool = those in ``pool`` (default: every other category). Unknown categories fail in one line."""
    cats = [str(e.meta.get("category")) for e in upstream]
    present = sorted(set(cats))
    for what, names in (("heldout_categories", heldout), ("pool_categories", pool or [])):
        unknown = sorted(set(names) - set(present))
        if unknown:
            raise ConfigError(f"compare.{what}: no upstream example has category {unknown}; the upstream set "
                              f"has {', '.join(present)}")
    held_set = set(heldout)
    pool_set = set(pool) if pool is not None else set(present) - held_set
    pool_ids = [e.example_id for e, c in zip(upstream, cats) if c in pool_set]
    held_ids = [e.example_id for e, c in zip(upstream, cats) if c in held_set]
    if not pool_ids:
        raise ConfigError("compare: the replay pool is empty (every upstream category is held out)")
    return pool_ids, held_ids


def split_for(cfg: CompareConfig, upstream: list) -> tuple[list[str], list[str]]:
    """The comparison's (pool, held-out) split, checked against the probe size before any run."""
    from forgetscope.predict.probe import probe_size

    c = cfg.compare
    if c.heldout_categories is not None:
        pool_ids, held_ids = split_by_category(upstream, c.heldout_categories, c.pool_categories)
    else:
        pool_ids, held_ids = split_upstream([e.example_id for e in upstream], c.replay_fraction, cfg.seed)
    for s in cfg.strategies:
        if s.policy == "predicted":
            size = s.options.get("probe", c.probe)
            try:
                probe_size(size, len(pool_ids))
            except DataError as exc:
                raise ConfigError(f"strategy {s.display}: {exc}; the probe must fit the replay pool of "
                                  f"{len(pool_ids)} examples (lower compare.probe)") from None
    return pool_ids, held_ids


def split_upstream(ids: list[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(pool, held-out) example ids: a seeded random split, pool = round(fraction × N)."""
    rng = np.random.default_rng([seed, 2718])
    n_pool = round(fraction * len(ids))
    if not 0 < n_pool < len(ids):
        raise ConfigError(f"compare.replay_fraction={fraction} leaves an empty pool or held-out set "
                          f"with {len(ids)} upstream examples")
    perm = rng.permutation(len(ids))
    pool = sorted(perm[:n_pool].tolist())
    held = sorted(perm[n_pool:].tolist())
    return [ids[i] for i in pool], [ids[i] for i in held]


def headline_kind(cfg: CompareConfig, upstream: list, held_ids: list[str]) -> str:
    """The kind of upstream example the forgetting metrics average: ``compare.kind``, else the upstream
    set's default kind; a one-line error when the held-out part has no example of it."""
    kind = cfg.compare.kind or default_kind(np.array([e.kind for e in upstream], dtype=object))
    require_kind(upstream, kind)
    held = set(held_ids)
    if kind != "all" and not any(e.kind == kind for e in upstream if e.example_id in held):
        raise ConfigError(f"compare.kind: the held-out part of the upstream set has no {kind!r} example "
                          f"(compare.replay_fraction={cfg.compare.replay_fraction}); add {kind} examples or "
                          "lower replay_fraction")
    return kind


def kind_columns(matrix, kind: str, ids: list[str] | None = None) -> np.ndarray:
    """Indices of the columns of ``matrix`` among ``ids`` (their order; every column by default) whose
    upstream example is of ``kind`` (``all``: every one)."""
    keep = set(matrix.select_kind(kind).col_names)
    col = {c: j for j, c in enumerate(matrix.col_names)}
    return np.array([col[i] for i in (matrix.col_names if ids is None else ids) if i in keep], dtype=np.intp)


def forgetting_metrics(row: np.ndarray, held: np.ndarray, untrained: np.ndarray, threshold: float,
                       suffix: str = "") -> dict[str, float]:
    """A run's forgetting metrics over the columns ``held`` (held-out) and ``untrained`` (every column;
    replayed examples are NaN in the row), named with ``suffix``."""
    import warnings

    h = row[held]
    with warnings.catch_warnings():  # no finite entry (e.g. a kind without held-out examples): NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        return {f"forgetting_heldout{suffix}": float(np.nanmean(h)),
                f"forgotten_share_heldout{suffix}": forgotten_share(h, threshold),
                f"forgetting_all_untrained{suffix}": float(np.nanmean(row[untrained]))}


# ---- the runs -----------------------------------------------------------------------------------
def token_accuracy(model, encoded: list, pad_id: int, batch_size: int = 16) -> float:
    """Share of scored tokens whose greedy next-token prediction is the target (token-weighted)."""
    from forgetscope.data.encoding import IGNORE_INDEX, collate

    if not encoded:
        return float("nan")
    device = next(model.parameters()).device
    hits = total = 0
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(encoded), batch_size):
                batch = collate(encoded[start:start + batch_size], pad_id, device)
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                targets = batch["labels"][:, 1:]
                scored = targets != IGNORE_INDEX
                hits += int(((logits[:, :-1].argmax(-1) == targets) & scored).sum())
                total += int(scored.sum())
    finally:
        model.train(was_training)
    return hits / total if total else float("nan")


class CompareExperiment(Experiment):
    """A sweep run that also records the task's held-out next-token accuracy after fine-tuning."""

    name = "compare"

    def measure_unmerged(self, session, spec: RunSpec, model: Any) -> dict[str, Any]:
        from forgetscope.data.encoding import encode_examples
        from forgetscope.models import context_length

        _, tok = session.base()
        task = session.tasks[spec.task]
        enc = encode_examples(tok, task.heldout, session.config.train.max_length,
                              model_max_length=context_length(model), chat=session.chat)
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        return {"task_accuracy_after": token_accuracy(model, enc, pad)}

    def evaluate(self, session, spec: RunSpec, model: Any, hooks: list) -> pd.DataFrame:
        """Plain runs: every upstream example. Strategy runs with ``compare.measure_pool: false``: the
        held-out part only (the rest stays NaN), measured with the same encoding and settings."""
        measured = session.extras.get("strategy_measured")
        if spec.strategy == "plain" or measured is None:
            return super().evaluate(session, spec, model, hooks)
        from forgetscope.precision import DTYPES, merge_for_evaluation

        model = merge_for_evaluation(model, DTYPES[session.precision().dtype])
        keep = set(measured)
        after = session.evaluate(model, [e for e in session.upstream if e.example_id in keep],
                                 desc=f"held-out upstream after {spec.task}")
        return after.rename(columns={"loss": "loss_after", "em": "em_after"})[
            ["example_id", "loss_after", "em_after"]]


COMPARE = CompareExperiment()


class WallClock:
    """``command.txt`` and ``wall_time.json``: what produced the directory and how long each invocation took."""

    def __init__(self, layout: SweepLayout, command: str | None):
        self.layout = layout
        self.t0 = time.perf_counter()
        self.runs = 0
        layout.compare_dir.mkdir(parents=True, exist_ok=True)
        if command:
            _write_text(layout.compare_command, command.rstrip() + "\n")
        data = _read_json(layout.compare_wall_time) or {"invocations": []}
        data["invocations"].append({"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "wall_s": 0.0, "runs": 0,
                                    "finished": None})
        self.data = data
        self.save()

    def save(self, finished: bool = False) -> None:
        inv = self.data["invocations"][-1]
        inv["wall_s"] = round(time.perf_counter() - self.t0, 1)
        inv["runs"] = self.runs
        if finished:
            inv["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.data["total_wall_s"] = round(sum(i["wall_s"] for i in self.data["invocations"]), 1)
        self.data["complete"] = finished
        _write_json(self.layout.compare_wall_time, self.data)

    def run_done(self) -> None:
        self.runs += 1
        self.save()


def run_compare(cfg: CompareConfig, *, output: str | Path | None = None, overwrite: bool = False,
                log=print, command: str | None = None) -> dict[str, Any]:
    """Run (or resume) a comparison; returns {"summary", "tests", "per_run" (DataFrames), "paths"}.

    Runs go through the config's executor (``local`` or ``ray``) in two phases: the plain runs, then
    every strategy (whose replay options are derived from the plain rows). ``command`` is written to
    ``compare/command.txt``.
    """
    from forgetscope.experiments.session import SweepSession
    from forgetscope.experiments.sweep import ensure_upstream_measured, open_store, run_specs

    output = Path(output or cfg.output)
    cfg = cfg.model_copy(update={"output": output})  # the fingerprint covers strategies, known tasks, options
    validate_compare(cfg)  # a bad split or probe fails here, before any model is loaded or file written
    session = SweepSession.prepare(cfg.model_copy(update={"tasks": list(cfg.tasks) + list(cfg.known_tasks)}))
    session.config = cfg.model_copy(update={"tasks": list(cfg.tasks) + list(cfg.known_tasks)})
    layout = SweepLayout(output)
    ids = [e.example_id for e in session.upstream]
    pool_ids, held_ids = split_for(cfg, session.upstream)
    headline_kind(cfg, session.upstream, held_ids)  # a kind with no held-out example fails before any run
    pool_set = set(pool_ids)
    session.extras["strategy_upstream"] = [e for e in session.upstream if e.example_id in pool_set]
    if not cfg.compare.measure_pool:
        session.extras["strategy_measured"] = list(held_ids)
    store = open_store(cfg, session, output, overwrite)
    clock = WallClock(layout, command)
    _write_json(layout.compare_split, {"pool": pool_ids, "heldout": held_ids})
    ensure_upstream_measured(session, store)
    order: list[str] = []

    def on_run(spec: RunSpec, record: dict[str, Any]) -> None:
        clock.run_done()
        log(f"  {spec.run_id}: task loss {record['task_loss_after']:.3f}, train {record['train_wall_s']:.0f}s")

    def run(specs: list[RunSpec]) -> None:
        order.extend(s.run_id for s in specs)
        run_specs(session, store, specs, order=order, executor=cfg.executor, experiment=COMPARE, on_run=on_run)

    seeds = cfg.seed_list
    tasks = [t.name for t in cfg.tasks]
    log(f"plain runs: {len(tasks)} tasks x {len(seeds)} seeds + {len(cfg.known_tasks)} known-only tasks")
    plain = {(t, s): _spec(t, s, "plain", {}) for t in tasks for s in seeds}
    run(list(plain.values()) + [_spec(t.name, seeds[0], "plain", {}) for t in cfg.known_tasks])
    matrix = store.consolidate(order)
    col = {c: j for j, c in enumerate(matrix.col_names)}
    row_of = {r: i for i, r in enumerate(matrix.row_names)}

    def plain_row(t: str, s: int) -> np.ndarray:
        return matrix.values[row_of[plain[(t, s)].run_id]]

    specs: dict[tuple[str, str, int], Any] = {}
    for s in seeds:
        for t in tasks:
            for st in cfg.strategies:
                opts = dict(st.options)
                if st.policy == "oracle":
                    f = layout.compare_oracle(t, s)
                    row = plain_row(t, s)
                    _write_json(f, {"values": {i: _num(row[col[i]]) for i in pool_ids},
                                    "evaluations": len(ids), "source": plain[(t, s)].run_id})
                    opts["forgetting_file"] = str(f)
                if st.policy == "predicted":
                    opts.setdefault("known", cfg.compare.known or str(output))
                    opts.setdefault("predictor", cfg.compare.predictor)
                    opts.setdefault("predictor_options", dict(cfg.compare.predictor_options))
                    opts.setdefault("seed", s)
                    if opts.get("mode", "offline") == "online":
                        opts.setdefault("probe", cfg.compare.probe)
                        # the probe's base losses are measured once by the run itself (|S| evaluations), with
                        # the same encoding as its evaluation after the warm-up
                        opts.setdefault("probe_base", "measure")
                    else:
                        from forgetscope.predict import choose_probe

                        f = layout.compare_probe(t, s)
                        pick = choose_probe(len(pool_ids), cfg.compare.probe, seed=s)
                        probe_ids = [pool_ids[k] for k in pick]
                        row = plain_row(t, s)
                        _write_json(f, {"values": {i: _num(row[col[i]]) for i in probe_ids},
                                        "evaluations": len(probe_ids),
                                        "source": f"{plain[(t, s)].run_id} evaluated on the probe set only"})
                        opts["probe_file"] = str(f)
                specs[(st.display, t, s)] = _spec(t, s, st.name, opts)
    log(f"strategies: {len(specs)} runs ({', '.join(s.display for s in cfg.strategies)})")
    run(list(specs.values()))
    matrix = store.consolidate(order)
    result = summarize(matrix, cfg, plain, specs, held_ids)
    paths = save_results(result, layout)
    store.update_manifest(status="complete", completed=time.strftime("%Y-%m-%dT%H:%M:%S%z"), kind="compare")
    clock.save(finished=True)
    result["paths"] = paths
    return result


def _num(x: float) -> float | None:
    return None if not np.isfinite(x) else float(x)


def _write_json(path: Path, obj: Any) -> None:
    from forgetscope.store.io import write_json

    write_json(path, obj)


def _write_text(path: Path, text: str) -> None:
    import os
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


# ---- the statistics -----------------------------------------------------------------------------
def _setting(spec: StrategySpec) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(spec.options.items()) if not isinstance(v, (dict, list)))


def summarize(matrix, cfg: CompareConfig, plain: dict, specs: dict, held_ids: list[str]) -> dict[str, Any]:
    """Per-run metrics, run-level paired tests (Holm-adjusted) and one summary row per strategy.

    The forgetting metrics average the columns of ``compare.kind`` (default: the matrix's default kind);
    with several kinds, per-kind copies of them are added to the per-run table as a description.
    """
    runs = matrix.runs.set_index("run_id")
    row_of = {r: i for i, r in enumerate(matrix.row_names)}
    kind = cfg.compare.kind or matrix.default_kind()
    held, untrained = kind_columns(matrix, kind, held_ids), kind_columns(matrix, kind)
    present = list(matrix.kind_counts())
    extras = {k: (kind_columns(matrix, k, held_ids), kind_columns(matrix, k)) for k in present} \
        if len(present) > 1 else {}
    thr = cfg.compare.threshold
    by_label = {s.display: s for s in cfg.strategies}
    labels = ["plain"] + list(by_label)
    keyed: dict[tuple[str, str, int], Any] = {("plain", t, s): sp for (t, s), sp in plain.items()}
    keyed.update(specs)
    per_run = []
    for (label, t, s), spec in keyed.items():
        r = matrix.values[row_of[spec.run_id]]
        rec = runs.loc[spec.run_id]
        raw = rec.get("strategy_info")
        info = json.loads(raw) if isinstance(raw, str) else (raw if isinstance(raw, dict) else {})
        acc = rec.get("task_accuracy_after", np.nan)
        per_kind = {name: v for k, (hk, uk) in extras.items()
                    for name, v in forgetting_metrics(r, hk, uk, thr, f"_{k}").items()}
        headline = forgetting_metrics(r, held, untrained, thr)
        if label != "plain" and not cfg.compare.measure_pool:  # the pool was not measured: no such mean
            for d in (headline, per_kind):
                for name in [n for n in d if n.startswith("forgetting_all_untrained")]:
                    d[name] = float("nan")
        per_run.append({"strategy": label, "task": t, "seed": s, "run_id": spec.run_id,
                        **headline, **per_kind,
                        "task_loss_before": float(rec["task_loss_before"]),
                        "task_loss_after": float(rec["task_loss_after"]),
                        "task_accuracy_after": float(acc) if acc is not None else float("nan"),
                        "train_wall_s": float(rec["train_wall_s"]),
                        "upstream_evaluations": float(info.get("upstream_evaluations", 0) or 0),
                        "strategy_info": json.dumps(info, sort_keys=True, default=str)})
    per_run_df = pd.DataFrame(per_run)
    tests = run_level_tests(per_run_df, matrix, keyed, held, cfg)

    rows = []
    for i, label in enumerate(labels):
        sub = per_run_df[per_run_df["strategy"] == label]
        lo, hi = mean_ci(sub["forgetting_heldout"], n_resamples=cfg.compare.bootstrap, seed=i)
        spec = by_label.get(label)
        infos = [json.loads(x) for x in sub["strategy_info"]]
        rhos = {x["rho"] for x in infos if "rho" in x}
        predictors = {x["predictor"] for x in infos if "predictor" in x}
        row = {"strategy": label, "kind": "baseline" if spec is None else spec.kind,
               "setting": "" if spec is None else _setting(spec), "runs": len(sub),
               "predictor": predictors.pop() if len(predictors) == 1 else "",
               "rho": rhos.pop() if len(rhos) == 1 else float("nan"), "upstream_kind": kind,
               "forgetting_heldout": float(sub["forgetting_heldout"].mean()),
               "forgetting_ci_low": lo, "forgetting_ci_high": hi,
               "forgotten_share_heldout": float(sub["forgotten_share_heldout"].mean()),
               "forgetting_all_untrained": float(sub["forgetting_all_untrained"].mean()),
               "task_loss_after": float(sub["task_loss_after"].mean()),
               "task_loss_sd": float(sub["task_loss_after"].std(ddof=1)) if len(sub) > 1 else float("nan"),
               "task_accuracy_after": float(sub["task_accuracy_after"].mean()),
               "train_wall_s": float(sub["train_wall_s"].mean()),
               "upstream_evaluations": float(sub["upstream_evaluations"].mean())}
        if label != "plain":
            for metric, prefix in (("forgetting_heldout", ""), ("task_loss_after", "task_loss_"),
                                   ("task_accuracy_after", "task_accuracy_")):
                at = (tests["strategy"] == label) & (tests["baseline"] == "plain") & (tests["metric"] == metric)
                t = tests[at & (tests["level"] == "run")]
                if t.empty:
                    continue
                t = t.iloc[0]
                tt = tests[at & (tests["level"] == "task")].iloc[0]
                row[f"{prefix}n_tasks"] = tt["n_pairs"]
                for p in ("p_wilcoxon_holm", "p_t_holm"):
                    row[f"{prefix}task_{p}"] = tt[p]
                name = "forgetting" if metric == "forgetting_heldout" else metric.removesuffix("_after")
                row[f"diff_{name}"] = t["mean_diff"]
                row[f"{prefix}diff_ci_low"], row[f"{prefix}diff_ci_high"] = t["ci_low"], t["ci_high"]
                row[f"{prefix}dz"] = t["dz"]
                for p in ("p_wilcoxon", "p_t", "p_wilcoxon_holm", "p_t_holm"):
                    row[f"{prefix}{p}"] = t[p]
                if metric == "forgetting_heldout":
                    row["n_pairs"] = t["n_pairs"]
                    row["note"] = t["note"]
                    row["p_examples_descriptive"] = t["p_examples_descriptive"]
                    row["n_example_pairs"] = t["n_example_pairs"]
        rows.append(row)
    return {"summary": pd.DataFrame(rows), "tests": tests, "per_run": per_run_df}


def task_means(per_run: pd.DataFrame, arm: str, base: str, metric: str) -> tuple[list[float], list[float]]:
    """One paired value per task: ``metric`` of ``arm`` and of ``base`` averaged over the seeds both have
    (the seeds of a task share its data, so tasks, not runs, are the independent units)."""
    a = per_run[per_run["strategy"] == arm].set_index(["task", "seed"])[metric]
    b = per_run[per_run["strategy"] == base].set_index(["task", "seed"])[metric]
    both = a.index.intersection(b.index)
    a, b = a.loc[both], b.loc[both]
    ta = a.groupby(level="task", sort=True).mean()
    tb = b.groupby(level="task", sort=True).mean()
    return ta.tolist(), tb.loc[ta.index].tolist()


def run_level_tests(per_run: pd.DataFrame, matrix, keyed: dict, held: np.ndarray, cfg: CompareConfig) -> pd.DataFrame:
    """Every strategy vs plain and every direct pair, on every metric, paired over task x seed runs
    (``level`` run) and over tasks with their seeds averaged (``level`` task: the independent units);
    Holm's adjustment across all rows of one level (one family per test and level)."""
    row_of = {r: i for i, r in enumerate(matrix.row_names)}
    comparisons = [(s.display, "plain") for s in cfg.strategies] + cfg.direct_pairs()
    indexed = per_run.set_index(["strategy", "task", "seed"])
    out = []
    for k, (arm, base) in enumerate(comparisons):
        a_runs = per_run[per_run["strategy"] == arm][["task", "seed"]]
        pairs = [(t, s) for t, s in zip(a_runs["task"], a_runs["seed"]) if (base, t, s) in indexed.index]
        for metric in METRICS:
            a = [indexed.loc[(arm, t, s), metric] for t, s in pairs]
            b = [indexed.loc[(base, t, s), metric] for t, s in pairs]
            r = paired_run_test(a, b, n_resamples=cfg.compare.bootstrap, seed=k)
            row = {"comparison": f"{arm} vs {base}", "strategy": arm, "baseline": base, "metric": metric,
                   "n_pairs": r["n"], "mean_strategy": r["mean_a"], "mean_baseline": r["mean_b"],
                   "mean_diff": r["mean_diff"], "ci_low": r["ci_low"], "ci_high": r["ci_high"],
                   "sd_diff": r["sd_diff"], "dz": r["dz"], "p_wilcoxon": r["p_wilcoxon"], "p_t": r["p_t"],
                   "note": r["note"], "p_examples_descriptive": float("nan"), "n_example_pairs": 0}
            if metric == "forgetting_heldout":
                ea = [matrix.values[row_of[keyed[(arm, t, s)].run_id]][held] for t, s in pairs]
                eb = [matrix.values[row_of[keyed[(base, t, s)].run_id]][held] for t, s in pairs]
                if ea:
                    ex = paired_test(np.concatenate(ea), np.concatenate(eb), n_boot=200, seed=k)
                    row["p_examples_descriptive"], row["n_example_pairs"] = ex["p_wilcoxon"], ex["n"]
            out.append({"level": "run", **row})
            ta, tb = task_means(per_run, arm, base, metric)
            r = paired_run_test(ta, tb, n_resamples=cfg.compare.bootstrap, seed=k)
            out.append({"level": "task", "comparison": row["comparison"], "strategy": arm, "baseline": base,
                        "metric": metric, "n_pairs": r["n"], "mean_strategy": r["mean_a"],
                        "mean_baseline": r["mean_b"], "mean_diff": r["mean_diff"], "ci_low": r["ci_low"],
                        "ci_high": r["ci_high"], "sd_diff": r["sd_diff"], "dz": r["dz"],
                        "p_wilcoxon": r["p_wilcoxon"], "p_t": r["p_t"], "note": r["note"],
                        "p_examples_descriptive": float("nan"), "n_example_pairs": 0})
    tests = pd.DataFrame(out)
    for col in ("p_wilcoxon", "p_t"):
        tests[f"{col}_holm"] = np.nan
        for level in ("run", "task"):
            at = tests["level"] == level
            tests.loc[at, f"{col}_holm"] = holm(tests.loc[at, col].to_numpy())
    return tests


def save_results(result: dict[str, Any], layout: SweepLayout) -> dict[str, Path]:
    layout.compare_dir.mkdir(parents=True, exist_ok=True)
    paths = {"summary": layout.compare_summary, "tests": layout.compare_tests, "per_run": layout.compare_per_run,
             "chart": layout.compare_chart}
    result["summary"].to_csv(paths["summary"], index=False)
    result["tests"].to_csv(paths["tests"], index=False)
    result["per_run"].to_csv(paths["per_run"], index=False)
    bar_chart(result["summary"], paths["chart"])
    return paths


def summary_kind(summary: pd.DataFrame) -> str:
    """The upstream kind a summary's forgetting averages (``all`` for summaries written before kinds)."""
    return str(summary["upstream_kind"].iloc[0]) if "upstream_kind" in summary else "all"


def bar_chart(summary: pd.DataFrame, path: Path) -> Path:
    """Two panels: held-out forgetting (mean over runs, 95% bootstrap CI over runs) and task loss (± sd)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = summary["strategy"].tolist()
    x = np.arange(len(labels))
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 1.6 * len(labels)), 4.2))
    m = summary["forgetting_heldout"].to_numpy()
    err = np.vstack([m - summary["forgetting_ci_low"].to_numpy(), summary["forgetting_ci_high"].to_numpy() - m])
    colors = ["#888888" if k == "baseline" else "#c07a2c" if k == "graceful forgetting" else "#3b75af"
              for k in summary.get("kind", pd.Series(["mitigation"] * len(labels)))]
    axes[0].bar(x, m, yerr=np.nan_to_num(np.abs(err)), capsize=4, color=colors)
    kind = summary_kind(summary)
    axes[0].set_ylabel("mean forgetting on held-out upstream (nats)" if kind == "all"
                       else f"mean forgetting on held-out {kind} upstream (nats)")
    axes[0].axhline(m[0], color="#888888", ls="--", lw=0.8)
    t = summary["task_loss_after"].to_numpy()
    sd = np.nan_to_num(summary["task_loss_sd"].to_numpy())
    axes[1].bar(x, t, yerr=sd, capsize=4, color=colors)
    axes[1].set_ylabel("task held-out loss after fine-tuning (nats)")
    lo = np.nanmin(t - sd)
    axes[1].set_ylim(bottom=max(0.0, lo - 0.1 * abs(lo)))
    for ax in axes:
        ax.set_xticks(x)
        ax.set_xticklabels(labels, rotation=30, ha="right")
    fig.suptitle("strategies vs plain fine-tuning (error bars: 95% bootstrap CI over runs / sd over runs)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
