"""A comparison's config: the strategies, the ``compare`` options, and every check made before any run.

:func:`validate_compare` splits the upstream set into the replay pool and the held-out part (by source
category or at random), checks each predicted arm's probe and replay budget against the pool, and checks
that known rows from another sweep cover the pool once the trained task is left out, before any model is
loaded or file written.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import AliasChoices, Field, field_validator, model_validator

from forgetscope.config import SweepConfig, TaskConfig, _Strict, names_to_tasks
from forgetscope.data.types import kind_option, require_kind
from forgetscope.errors import ConfigError, DataError
from forgetscope.store.layout import SweepLayout
from forgetscope.store.matrix import default_kind
from forgetscope.train.hooks import (
    ComparisonDefaults,
    StrategyInputs,
    declared_defaults,
    declared_inputs,
    strategy_kind,
)


class StrategySpec(_Strict):
    name: str = Field(description="a registered strategy: replay, sam, ewc, lwf, ... (not plain: it is "
                      "always run as the baseline)")
    label: str | None = Field(None, description="the arm's name in every table (null: the strategy's name)")
    options: dict[str, Any] = Field(default_factory=dict, description="the strategy's own options")

    @property
    def display(self) -> str:
        return self.label or self.name

    @property
    def inputs(self) -> StrategyInputs:
        """What the strategy's own options need from the comparison (declared by its options model; the
        comparison's defaults not applied: :meth:`CompareConfig.inputs_of`)."""
        return declared_inputs(self.name, self.options)

    @property
    def policy(self) -> str | None:
        """The selection rule of the arm (replay's ``policy``); None for strategies without one."""
        return self.inputs.policy

    @property
    def kind(self) -> str:
        return strategy_kind(self.name)


class KnownRows(_Strict):
    """Known rows for the predicted arms from an existing sweep (an earlier study's plain fine-tunes)."""

    sweep: str = Field(description="the sweep directory whose plain rows are the known rows")
    leave_task_out: bool = Field(True, description="drop the rows of the task being trained (every other task "
                                                   "is known); false keeps them")
    kind: Literal["all", "lm", "instruction"] = Field(
        "all", description="the columns fitted: all, or one kind of upstream example (e.g. lm, as the "
        "cross-validation that chose the predictor)")


class PrimaryPair(_Strict):
    """The one contrast fixed before the runs: held-out forgetting of arm ``a`` against arm ``b``, tested
    over tasks (each task's seeds averaged first), not adjusted for multiplicity."""

    a: str = Field(description="the arm tested (a strategy label)")
    b: str = Field(description="the arm it is tested against (a strategy label, or plain)")


class CompareOptions(_Strict):
    replay_fraction: float = Field(0.5, gt=0, lt=1, description="share of the upstream set in the replay pool "
                                   "(a seeded random split); the rest is held out")
    probe: float = Field(30, gt=0, description="probe set observed by predicted replay: a fraction in (0, 1] of "
                         "the pool or a number of examples")
    probe_seed: Literal["run", "task"] = Field(
        "run", description="what seeds the probe of the predicted arms (and their draws): run, the run's seed "
        "(every task of one seed observes the same probe examples); task, the seed and the task's name (each task "
        "its own probe, so a comparison over tasks also spans probe draws)")
    predictor: str = Field("knn", description="the predictor completing a predicted-replay arm's row from its "
                           "probe (see docs/prediction.md)")
    predictor_options: dict[str, Any] = Field(default_factory=dict, description="the predictor's own options")
    known: str | KnownRows | None = Field(None, description="known rows from another sweep: its path, or "
                                          "{sweep: PATH, leave_task_out: true} (null: this comparison's plain "
                                          "rows of the other tasks)")
    budget: int | None = Field(None, ge=1, description="replay examples per run, absolute, for every replay arm "
                                                      "that sets neither ratio nor budget")
    primary: PrimaryPair | None = Field(None, description="the primary contrast {a: ARM, b: ARM}")
    pending: list[str] = Field(default_factory=list, description="config fields that are still placeholders: "
                                                                  "checked, but no run starts until it is empty")
    threshold: float = Field(0.0, description="an example counts as forgotten when its F (nats) is above this")
    bootstrap: int = Field(9999, ge=100, description="bootstrap resamples of each confidence interval")
    direct: list[tuple[str, str]] | None = Field(
        None, description="[strategy, baseline strategy] label pairs tested head to head (null: each "
        "predicted-replay arm against the random-replay arm with the same ratio)")
    kind: str | None = Field(None, description="upstream examples the forgetting metrics average: lm, "
                             "instruction or all (null: the sweep's default kind)")
    heldout_categories: list[str] | None = Field(
        None, validation_alias=AliasChoices("heldout_sources", "heldout_categories"),
        description="split by source instead of at random: the held-out set is the upstream examples of these "
        "categories (the example's metadata category); also spelt heldout_sources")
    pool_categories: list[str] | None = Field(
        None, validation_alias=AliasChoices("pool_sources", "pool_categories"),
        description="replay pool sources (default: every other category); also spelt pool_sources")
    measure_pool: bool = Field(True, description="strategy runs measure the pool too (for "
                               "forgetting_all_untrained); false: the held-out part only, which is all the tests "
                               "use (plain runs always measure every example: they are the known rows)")

    _kind = field_validator("kind")(kind_option)

    @property
    def known_path(self) -> str | None:
        """The known sweep's path (None: this comparison's own plain rows)."""
        return self.known.sweep if isinstance(self.known, KnownRows) else self.known

    @property
    def leave_task_out(self) -> bool:
        return self.known.leave_task_out if isinstance(self.known, KnownRows) else True

    @model_validator(mode="after")
    def _split(self) -> CompareOptions:
        if self.pool_categories is not None and self.heldout_categories is None:
            raise ValueError("compare.pool_categories (pool_sources) needs compare.heldout_categories "
                             "(heldout_sources: the held-out sources)")
        if self.heldout_categories is not None:
            if not self.heldout_categories:
                raise ValueError("compare.heldout_categories (heldout_sources): name at least one category")
            both = sorted(set(self.heldout_categories) & set(self.pool_categories or []))
            if both:
                raise ValueError(f"compare: the held-out set overlaps the pool: sources {both} are in both "
                                 "heldout_categories (heldout_sources) and pool_categories (pool_sources)")
        return self


class CompareConfig(SweepConfig):
    strategies: list[StrategySpec] = Field(description="the arms, each run on every task x seed and paired "
                                           "with a plain run")
    known_tasks: list[TaskConfig] = Field(default_factory=list, description="tasks run plain only (first "
                                          "seed): extra known rows for predicted replay")
    compare: CompareOptions = Field(CompareOptions(), description="the comparison's split, predictor and tests")

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
        p = self.compare.primary
        if p is not None:
            for field, x in (("a", p.a), ("b", p.b)):
                if x not in labels and x != "plain":
                    raise ValueError(f"compare.primary.{field}: no arm labelled {x!r}; arms are plain, "
                                     f"{', '.join(labels)}")
            if p.a == p.b:
                raise ValueError(f"compare.primary: compares {p.a!r} with itself")
        defaults = self.defaults()
        for i, s in enumerate(self.strategies):  # an arm's options model may refuse what compare sets for it
            try:
                declared_defaults(s.name, s.options, defaults)
            except ValueError as exc:
                raise ValueError(f"strategies.{i} ({s.display}): {exc}") from None
        for i, s in enumerate(self.strategies):
            known = s.inputs.known_rows
            own_rows = known is not None and s.options.get(known, self.compare.known_path) is None
            if own_rows and not self.inputs_of(s).leave_task_out:
                raise ValueError(f"strategies.{i} ({s.display}): leave_task_out false with this comparison's own "
                                 "plain rows would complete the row from the task's own plain run (the oracle's "
                                 "truth); name another sweep in known")
        for i, field in enumerate(self.compare.pending):
            head, _, rest = field.partition(".")
            fields = type(self).model_fields
            ok = head in fields and (not rest or head != "compare" or rest in CompareOptions.model_fields)
            if not ok:
                raise ValueError(f"compare.pending.{i}: {field!r} is not a config field (e.g. train, compare.budget)")
        return self

    def probe_seed_for(self, task: str, seed: int) -> int:
        """The seed of a predicted arm's probe (and draws) in the run of ``task`` with ``seed``
        (``compare.probe_seed``)."""
        if self.compare.probe_seed == "run":
            return seed
        return int(np.random.SeedSequence([seed, zlib.crc32(task.encode())]).generate_state(1)[0])

    def defaults(self) -> ComparisonDefaults:
        """What ``compare`` sets for every arm that takes it (a replay budget, the predictor, the known rows'
        task rule and kind)."""
        c = self.compare
        return ComparisonDefaults(budget=c.budget, predictor=c.predictor, leave_task_out=c.leave_task_out,
                                  known_kind=c.known.kind if isinstance(c.known, KnownRows) else "all")

    def options_of(self, s: StrategySpec) -> dict[str, Any]:
        """Arm ``s``'s options with what it takes from the comparison (its options model's
        :meth:`~forgetscope.train.hooks.StrategyOptions.comparison_defaults`) where it sets nothing itself."""
        return {**declared_defaults(s.name, s.options, self.defaults()), **s.options}

    def inputs_of(self, s: StrategySpec) -> StrategyInputs:
        """What arm ``s`` needs from the comparison, with the comparison's defaults applied (its options model's
        :meth:`~forgetscope.train.hooks.StrategyOptions.inputs`)."""
        return declared_inputs(s.name, self.options_of(s))

    def budget_of(self, s: StrategySpec) -> int | None:
        """The replay examples per run of an arm dosed by a budget (its own, else ``compare.budget``); None for
        arms dosed by a ratio, and for arms that replay nothing."""
        dose = self.inputs_of(s).dose
        return int(dose[1]) if dose is not None and dose[0] == "budget" else None

    def completes(self, s: StrategySpec) -> bool:
        """Whether an arm completes its row from known rows (predicted replay, not probe-only or probe-fill)."""
        return self.inputs_of(s).completes

    def predictor_of(self, s: StrategySpec) -> str | None:
        """The predictor a predicted-replay arm completes its row with (None for other arms)."""
        return self.inputs_of(s).predictor

    def direct_pairs(self) -> list[tuple[str, str]]:
        """Head-to-head comparisons: ``compare.direct``, or each predicted-replay arm against the
        random-replay arm with the same dose (ratio or budget; the first one, when several) and, for arms
        that complete a row, against each observation-only arm (probe-only, probe-fill: the first of each)
        with the same dose and mode (observation without completion)."""
        from forgetscope.mitigate.replay_policies import OBSERVE_ONLY

        if self.compare.direct is not None:
            return [(a, b) for a, b in self.compare.direct]

        def dose(r: StrategySpec) -> tuple[str, float] | None:
            return self.inputs_of(r).dose

        out = []
        for s in self.strategies:
            if s.policy != "predicted":
                continue
            same = [r for r in self.strategies if r.inputs.replays and dose(r) == dose(s)]
            random = [r for r in same if r.policy == "random"]
            if random:
                out.append((s.display, random[0].display))
            if self.completes(s):
                mode = s.inputs.mode
                for name in OBSERVE_ONLY:
                    observe = [r for r in same if r.policy == "predicted" and self.predictor_of(r) == name
                               and r.inputs.mode == mode]
                    if observe:
                        out.append((s.display, observe[0].display))
        return out


def load_compare_config(path: str | Path, **overrides: Any) -> CompareConfig:
    from forgetscope.config import load_config
    from forgetscope.experiments.compare.sam_grid import compare_model_for

    cfg = load_config(path, model=compare_model_for(path), **overrides)
    _validate_strategy_options(cfg)
    return cfg


def refuse_pending(cfg: CompareConfig) -> None:
    """A pre-registered config whose placeholders (``compare.pending``) are not filled in yet passes every
    check but starts no run."""
    if cfg.compare.pending:
        raise ConfigError(f"compare.pending: {', '.join(cfg.compare.pending)} still hold placeholders; fill them "
                          "in as the config's comments say and empty compare.pending before running")


def validate_compare(cfg: CompareConfig) -> tuple[list[str], list[str]]:
    """Everything a comparison can check before any model is loaded or file written: the sweep's own
    checks (executor, report_to, loading options, input files), every arm's strategy name and options, then
    the split of the upstream set into pool and held-out, each arm's probe and budget against the pool, and
    known rows from another sweep against the pool. Returns (pool ids, held-out ids)."""
    from forgetscope.experiments.session import load_upstream
    from forgetscope.experiments.validate import validate_sweep

    validate_sweep(cfg)
    for t in cfg.known_tasks:
        validate_sweep(cfg.model_copy(update={"tasks": [t]}))
    _validate_strategy_options(cfg)
    pool_ids, held_ids = split_for(cfg, load_upstream(cfg))
    check_known_rows(cfg, pool_ids)
    return pool_ids, held_ids


def _validate_strategy_options(cfg: CompareConfig) -> None:
    """Build each strategy once with placeholder inputs, so bad options fail before any training. The
    inputs the comparison derives from its plain runs (the oracle's row, the offline probe's values, by
    default the known rows) do not exist yet and stand in empty; paths the config names are checked
    (:func:`~forgetscope.experiments.strategy_inputs.resolve_strategy_inputs`, no matrix read)."""
    from forgetscope.experiments.strategy_inputs import placeholder, resolve_strategy_inputs
    from forgetscope.train import make_strategy

    for i, s in enumerate(cfg.strategies):
        opts = cfg.options_of(s)
        inputs = declared_inputs(s.name, opts)
        for option in (inputs.own_row, inputs.probe_row):  # written by the comparison from the plain run
            if option is not None:
                opts.pop(option, None)
                for f in inputs.files_from(option):
                    opts.setdefault(f.into, placeholder(f))
        known = inputs.known_rows
        if known is not None:
            if known not in opts and cfg.compare.known is None:  # this comparison's plain rows, run later
                opts.update({f.into: placeholder(f) for f in inputs.files_from(known)})
            opts.setdefault(known, cfg.compare.known_path)
        try:
            strategy = make_strategy(s.name, **resolve_strategy_inputs(s.name, opts, load=False))
        except ConfigError as exc:
            raise type(exc)(f"strategies.{i} ({s.display}): {exc}") from None
        strategy.check_config(cfg.train)
        try:
            strategy.check_plan(cfg.train)  # e.g. MIR's largest draw of one step, with full task batches
        except ConfigError as exc:
            raise type(exc)(f"strategies.{i} ({s.display}): {exc}") from None


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
        budget = cfg.budget_of(s)
        inputs = cfg.inputs_of(s)
        if budget is not None and budget > len(pool_ids) and not inputs.repeats:
            raise ConfigError(f"strategy {s.display}: a budget of {budget} replay examples exceeds the replay pool "
                              f"of {len(pool_ids)} examples (some would be replayed twice); lower the budget")
        if inputs.known_rows is not None:  # a predicted arm: it observes a probe of the pool
            size = c.probe if inputs.probe is None else inputs.probe
            try:
                n_probe = probe_size(size, len(pool_ids))
            except DataError as exc:
                raise ConfigError(f"strategy {s.display}: {exc}; the probe must fit the replay pool of "
                                  f"{len(pool_ids)} examples (lower compare.probe)") from None
            # a dose given as a budget (the completion design); a ratio is the earlier design's dose, whose
            # committed comparison replayed fewer examples than its probe and stays runnable as it was
            if inputs.spends_beyond_probe and inputs.draws_after_probe is not None and budget is not None:
                drawn = inputs.draws_after_probe(cfg.train.steps, cfg.train.batch_size)
                if drawn <= n_probe:
                    dose = f"a budget of {budget} replay examples"
                    if inputs.mode == "online":
                        dose += f" leaves {drawn} after its online warm-up, which"
                    raise ConfigError(f"strategy {s.display}: {dose} is at or below its probe of {n_probe}, so "
                                      "every example it replays by its rule could be an observed one and "
                                      "completion cannot be credited; give a budget above the probe")
    return pool_ids, held_ids


def known_row_sources(cfg: CompareConfig) -> list[tuple[StrategySpec, str, Any]]:
    """(arm, the config field that names it, path) for every completing arm whose known rows come from
    another sweep or file (its own option, else ``compare.known``); arms completing from this comparison's
    own plain rows are left out."""
    out = []
    for i, s in enumerate(cfg.strategies):
        inputs = cfg.inputs_of(s)
        if not inputs.completes or inputs.known_rows is None:
            continue
        key = inputs.known_rows
        path = s.options.get(key, cfg.compare.known_path)
        if path is not None:
            out.append((s, f"strategies.{i}.options.{key}" if key in s.options else "compare.known", path))
    return out


def check_known_rows(cfg: CompareConfig, pool_ids: list[str]) -> None:
    """Known rows read from another sweep must cover every pool example for every compared task, with that
    task's own rows left out (``leave_task_out``), so no completing arm falls back to NaN on part of the
    pool. This comparison's own plain rows measure every example and need no check."""
    from forgetscope.importing import load_any
    from forgetscope.predict.completion import known_rows
    from forgetscope.store import SweepStore

    loaded: dict[str, Any] = {}
    for s, where, path in known_row_sources(cfg):
        if str(path) not in loaded:
            store = SweepStore(path)
            status = store.read_manifest().get("status") if store.exists() else None
            if status not in (None, "complete"):
                raise ConfigError(f"{where}: the known sweep {path} is not complete (status {status!r}); rows are "
                                  "completed from a finished sweep, so every run of the comparison sees the same "
                                  "known rows")
            loaded[str(path)] = load_any(path)
        matrix = loaded[str(path)]
        inputs = cfg.inputs_of(s)
        leave = inputs.leave_task_out
        runs = matrix.runs
        if leave and (runs is None or "task" not in runs):
            raise ConfigError(f"{where}: {path} does not say which task each row is, so the trained task cannot "
                              "be left out; give a sweep directory (its runs table names the tasks)")
        pool = set(pool_ids)
        for t in cfg.tasks:
            try:
                _, cols = known_rows(matrix, drop_task=t.name if leave else None,
                                     strategy=inputs.known_strategy, what=where)
            except DataError as exc:
                raise ConfigError(f"{exc} (arm {s.display})") from None
            missing = sorted(pool - set(cols))
            if missing:
                left = f" with task {t.name!r} left out" if leave else ""
                raise ConfigError(f"{where}: the known rows of {path}{left} cover {len(pool) - len(missing)} of "
                                  f"the {len(pool)} replay pool examples (missing {', '.join(missing[:3])}"
                                  f"{' ...' if len(missing) > 3 else ''}); the known sweep must measure every "
                                  "pool example (the same upstream set)")


def known_rows_fingerprint(cfg: CompareConfig) -> dict[str, str]:
    """Content hashes of the known rows every completing arm reads from another sweep or file: a sweep's
    ``F.npy`` and ``runs.parquet``, or a matrix file's bytes, keyed by the path the config names."""
    import hashlib

    out: dict[str, str] = {}
    for _, _, path in known_row_sources(cfg):
        if str(path) in out:
            continue
        p = Path(path)
        files = [SweepLayout(p).matrix, SweepLayout(p).runs_table] if p.is_dir() else [p]
        h = hashlib.sha256()
        for f in files:
            h.update(f.read_bytes() if f.is_file() else b"")
        out[str(path)] = h.hexdigest()
    return out


def check_known_unchanged(recorded: dict[str, str] | None, cfg: CompareConfig) -> dict[str, str]:
    """The known rows' fingerprint, refused when a resumed comparison recorded a different one: every run of
    a comparison completes its row from the same known rows. Returns the current fingerprint."""
    now = known_rows_fingerprint(cfg)
    if recorded is None:
        return now
    changed = sorted(k for k in set(now) | set(recorded) if recorded.get(k) != now.get(k))
    if changed:
        raise ConfigError(f"compare.known: the known rows of {', '.join(changed)} changed since this comparison "
                          "started; its runs would complete rows from different known rows (use a new output, "
                          "or --overwrite)")
    return now


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
