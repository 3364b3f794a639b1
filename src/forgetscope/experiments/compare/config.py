"""A comparison's config: the strategies, the ``compare`` options, and every check made before any run.

:func:`validate_compare` splits the upstream set into the replay pool and the held-out part (by source
category or at random) and checks each predicted arm's probe against the pool, before any model is
loaded or file written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, field_validator, model_validator

from forgetscope.config import SweepConfig, TaskConfig, _Strict, names_to_tasks
from forgetscope.data.types import kind_option, require_kind
from forgetscope.errors import ConfigError, DataError
from forgetscope.store.matrix import default_kind

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
    """Build each strategy once with placeholder inputs, so bad options fail before any training. The
    inputs the comparison derives from its plain runs (the oracle's row, the offline probe's values, by
    default the known rows) do not exist yet and stand in empty; paths the config names are checked
    (:func:`~forgetscope.experiments.strategy_inputs.resolve_strategy_inputs`, no matrix read)."""
    from forgetscope.experiments.strategy_inputs import placeholder_rows, resolve_strategy_inputs
    from forgetscope.mitigate.replay_sampling import replay_schedule
    from forgetscope.train import make_strategy

    for i, s in enumerate(cfg.strategies):
        opts = dict(s.options)
        if s.name == "replay":
            policy = opts.get("policy", "random")
            if policy == "oracle":
                opts.pop("forgetting_file", None)  # written by the comparison from the plain run
                opts.setdefault("forgetting", {})
            if policy == "predicted":
                if opts.get("mode", "offline") == "offline":
                    opts.pop("probe_file", None)  # written by the comparison from the plain run
                if "known" not in opts and cfg.compare.known is None:  # this comparison's plain rows, run later
                    opts.update(known=placeholder_rows(), known_base_losses={})
                opts.setdefault("known", cfg.compare.known)
                opts.setdefault("predictor", cfg.compare.predictor)
        strategy = make_strategy(s.name, **resolve_strategy_inputs(s.name, opts, load=False))
        if s.policy == "mir":  # the largest draw of one step, with full task batches
            most = int(replay_schedule(cfg.train.steps, cfg.train.batch_size, strategy.ratio).max())
            if strategy.options.candidates < most:
                raise ConfigError(f"strategies.{i} ({s.display}): mir candidates={strategy.options.candidates} is "
                                  f"smaller than the {most} replay examples drawn in one step; use candidates >= {most}")


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
