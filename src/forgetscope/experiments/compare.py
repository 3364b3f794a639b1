"""``forgetscope compare CONFIG``: plain fine-tuning against mitigation strategies, with paired tests.

A compare config is a sweep config (model, upstream, tasks, seeds, train, eval; see
:mod:`forgetscope.config`) plus::

    strategies:                       # each runs on every task x seed, paired with a plain run
      - {name: replay, label: replay-random, options: {ratio: 0.25, policy: random}}
      - {name: replay, label: replay-predicted, options: {ratio: 0.25, policy: predicted}}
      - {name: replay, label: replay-oracle, options: {ratio: 0.25, policy: oracle}}
      - {name: sam, options: {rho: 0.05}}
      - {name: ewc, options: {lam: 100}}
      - {name: lwf}
    known_tasks: [definitions, jargon]  # plain runs only: extra known rows for the predicted policy
    compare: {replay_fraction: 0.5, probe: 0.1, predictor: knn, threshold: 0.0, bootstrap: 2000}

Protocol (one sweep directory, every run written to the sweep store as it finishes; rerunning the
same command resumes):

1. the upstream set is split once (seeded) into a *replay pool* (``replay_fraction``) — the only
   examples strategies may train on or take statistics from (replay, EWC's Fisher, LWF's prompts) —
   and a *held-out* half on which forgetting is compared (never trained on by any strategy);
2. plain runs for every task x seed (and for ``known_tasks``, first seed);
3. for the ``oracle`` policy, the plain run's forgetting row over the pool is the truth it gets; for
   ``predicted``, a probe set S (``probe`` of the pool, seeded per run) is observed on the plain
   run — exactly the plain fine-tuned model evaluated on S only, |S| upstream evaluations — and the
   row is completed by ``predictor`` fitted on the plain rows of the *other* tasks (this sweep's, or
   the ``known`` sweep's), never this task's;
4. every strategy on every task x seed, from the same base weights and the same task batches.

Reported per strategy: mean forgetting on the held-out examples, share of held-out examples forgotten
(F > ``threshold``), mean forgetting on all examples it did not train on, task loss after fine-tuning,
training wall time, upstream evaluations spent; and against plain, paired on the same task x seed:
the mean difference with a bootstrap CI and Wilcoxon p over examples (pooled task x seed x example
pairs), Wilcoxon p over task x seed run means, and the same for task loss.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field, field_validator, model_validator

from forgetscope.analysis.stats import bootstrap_ci, paired_test
from forgetscope.config import SweepConfig, TaskConfig, _Strict, names_to_tasks
from forgetscope.errors import ConfigError
from forgetscope.experiments.spec import RunSpec
from forgetscope.store.layout import SweepLayout


class StrategySpec(_Strict):
    name: str
    label: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    @property
    def display(self) -> str:
        return self.label or self.name


class CompareOptions(_Strict):
    replay_fraction: float = Field(0.5, gt=0, lt=1)
    probe: float = Field(0.1, gt=0)
    predictor: str = "knn"
    predictor_options: dict[str, Any] = Field(default_factory=dict)
    known: str | None = None  # another sweep with plain rows of other tasks (default: this comparison's)
    threshold: float = 0.0
    bootstrap: int = Field(2000, ge=100)


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
        overlap = {t.name for t in self.tasks} & {t.name for t in self.known_tasks}
        if overlap:
            raise ValueError(f"known_tasks: {sorted(overlap)} are already compared tasks")
        return self


def load_compare_config(path: str | Path, **overrides: Any) -> CompareConfig:
    from forgetscope.config import load_config

    cfg = load_config(path, model=CompareConfig, **overrides)
    _validate_strategy_options(cfg)
    return cfg


def _validate_strategy_options(cfg: CompareConfig) -> None:
    """Build each strategy once with placeholder inputs, so bad options fail before any training."""
    from forgetscope.train import make_strategy

    for s in cfg.strategies:
        opts = dict(s.options)
        if s.name == "replay":
            policy = opts.get("policy", "random")
            if policy == "oracle":
                opts.setdefault("forgetting", {})
            if policy == "predicted":
                opts.setdefault("known", "<compare>")
        make_strategy(s.name, **opts)


def _spec(task: str, seed: int, name: str, options: dict[str, Any]) -> RunSpec:
    return RunSpec(task, seed, name, tuple(sorted(options.items())))


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


def run_compare(cfg: CompareConfig, *, output: str | Path | None = None, overwrite: bool = False,
                log=print) -> dict[str, Any]:
    """Run (or resume) a comparison; returns {"summary": DataFrame, "per_run": DataFrame, "paths": ...}.

    Runs go through the config's executor (``local`` or ``ray``) in two phases: the plain runs, then
    every strategy (whose replay options are derived from the plain rows).
    """
    from forgetscope.experiments.session import SweepSession
    from forgetscope.experiments.sweep import ensure_upstream_measured, open_store, run_specs

    output = Path(output or cfg.output)
    cfg = cfg.model_copy(update={"output": output})  # the fingerprint covers strategies, known tasks, options
    session = SweepSession.prepare(cfg.model_copy(update={"tasks": list(cfg.tasks) + list(cfg.known_tasks)}))
    session.config = cfg.model_copy(update={"tasks": list(cfg.tasks) + list(cfg.known_tasks)})
    layout = SweepLayout(output)
    ids = [e.example_id for e in session.upstream]
    pool_ids, held_ids = split_upstream(ids, cfg.compare.replay_fraction, cfg.seed)
    pool_set = set(pool_ids)
    session.extras["strategy_upstream"] = [e for e in session.upstream if e.example_id in pool_set]
    store = open_store(cfg, session, output, overwrite)
    _write_json(layout.compare_split, {"pool": pool_ids, "heldout": held_ids})
    ensure_upstream_measured(session, store)
    order: list[str] = []

    def run(specs: list[RunSpec]) -> None:
        order.extend(s.run_id for s in specs)
        run_specs(session, store, specs, order=order, executor=cfg.executor,
                  on_run=lambda spec, record: log(f"  {spec.run_id}: task loss {record['task_loss_after']:.3f}, "
                                                  f"train {record['train_wall_s']:.0f}s"))

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
                if st.name == "replay" and opts.get("policy") == "oracle":
                    f = layout.compare_oracle(t, s)
                    row = plain_row(t, s)
                    _write_json(f, {"values": {i: _num(row[col[i]]) for i in pool_ids},
                                    "evaluations": len(ids), "source": plain[(t, s)].run_id})
                    opts["forgetting_file"] = str(f)
                if st.name == "replay" and opts.get("policy") == "predicted":
                    f = layout.compare_probe(t, s)
                    from forgetscope.predict import choose_probe

                    pick = choose_probe(len(pool_ids), cfg.compare.probe, seed=s)
                    probe_ids = [pool_ids[k] for k in pick]
                    row = plain_row(t, s)
                    _write_json(f, {"values": {i: _num(row[col[i]]) for i in probe_ids},
                                    "evaluations": len(probe_ids),
                                    "source": f"{plain[(t, s)].run_id} evaluated on the probe set only"})
                    opts.setdefault("known", cfg.compare.known or str(output))
                    opts.setdefault("predictor", cfg.compare.predictor)
                    opts.setdefault("predictor_options", dict(cfg.compare.predictor_options))
                    opts["probe_file"] = str(f)
                    opts.setdefault("seed", s)
                specs[(st.display, t, s)] = _spec(t, s, st.name, opts)
    log(f"strategies: {len(specs)} runs ({', '.join(s.display for s in cfg.strategies)})")
    run(list(specs.values()))
    matrix = store.consolidate(order)
    result = summarize(matrix, cfg, plain, specs, held_ids)
    paths = save_results(result, layout)
    store.update_manifest(status="complete", completed=time.strftime("%Y-%m-%dT%H:%M:%S%z"), kind="compare")
    result["paths"] = paths
    return result


def _num(x: float) -> float | None:
    return None if not np.isfinite(x) else float(x)


def _write_json(path: Path, obj: Any) -> None:
    from forgetscope.store.io import write_json

    write_json(path, obj)


def summarize(matrix, cfg: CompareConfig, plain: dict, specs: dict, held_ids: list[str]) -> dict[str, Any]:
    """Per-run metrics and per-strategy paired tests against plain (see the module docstring)."""
    runs = matrix.runs.set_index("run_id")
    row_of = {r: i for i, r in enumerate(matrix.row_names)}
    col = {c: j for j, c in enumerate(matrix.col_names)}
    held = np.array([col[i] for i in held_ids])
    thr = cfg.compare.threshold
    labels = ["plain"] + [s.display for s in cfg.strategies]
    keyed: dict[tuple[str, str, int], Any] = {("plain", t, s): sp for (t, s), sp in plain.items()}
    keyed.update(specs)
    per_run = []
    for (label, t, s), spec in keyed.items():
        r = matrix.values[row_of[spec.run_id]]
        rec = runs.loc[spec.run_id]
        info = json.loads(rec["strategy_info"]) if isinstance(rec.get("strategy_info"), str) else {}
        h = r[held]
        per_run.append({"strategy": label, "task": t, "seed": s, "run_id": spec.run_id,
                        "forgetting_heldout": float(np.nanmean(h)),
                        "forgotten_share_heldout": float(np.mean(h[np.isfinite(h)] > thr)),
                        "forgetting_all_untrained": float(np.nanmean(r)),
                        "task_loss_before": float(rec["task_loss_before"]),
                        "task_loss_after": float(rec["task_loss_after"]),
                        "train_wall_s": float(rec["train_wall_s"]),
                        "upstream_evaluations": info.get("upstream_evaluations", 0)})
    per_run_df = pd.DataFrame(per_run)
    rows = []
    for i, label in enumerate(labels):
        sub = per_run_df[per_run_df["strategy"] == label]
        ex_a, ex_b, run_a, run_b, task_a, task_b, all_h = [], [], [], [], [], [], []
        for (lab, t, s), spec in keyed.items():
            if lab != label:
                continue
            a = matrix.values[row_of[spec.run_id]][held]
            b = matrix.values[row_of[plain[(t, s)].run_id]][held]
            all_h.append(a)
            ex_a.append(a)
            ex_b.append(b)
            run_a.append(np.nanmean(a))
            run_b.append(np.nanmean(b))
            task_a.append(float(runs.loc[spec.run_id, "task_loss_after"]))
            task_b.append(float(runs.loc[plain[(t, s)].run_id, "task_loss_after"]))
        allv = np.concatenate(all_h)
        allv = allv[np.isfinite(allv)]
        lo, hi = bootstrap_ci(allv, n_boot=cfg.compare.bootstrap, seed=i)
        row = {"strategy": label, "runs": len(sub),
               "forgetting_heldout": float(allv.mean()), "forgetting_ci_low": lo, "forgetting_ci_high": hi,
               "forgotten_share_heldout": float(np.mean(allv > thr)),
               "forgetting_all_untrained": float(sub["forgetting_all_untrained"].mean()),
               "task_loss_after": float(sub["task_loss_after"].mean()),
               "task_loss_sd": float(sub["task_loss_after"].std(ddof=1)) if len(sub) > 1 else float("nan"),
               "train_wall_s": float(sub["train_wall_s"].mean()),
               "upstream_evaluations": float(pd.to_numeric(sub["upstream_evaluations"]).mean())}
        if label != "plain":
            ex = paired_test(np.concatenate(ex_a), np.concatenate(ex_b), n_boot=cfg.compare.bootstrap, seed=i)
            rn = paired_test(run_a, run_b, n_boot=cfg.compare.bootstrap, seed=i)
            tk = paired_test(task_a, task_b, n_boot=cfg.compare.bootstrap, seed=i)
            row.update({"diff_forgetting": ex["mean_diff"], "diff_ci_low": ex["ci_low"], "diff_ci_high": ex["ci_high"],
                        "p_examples": ex["p_wilcoxon"], "n_example_pairs": ex["n"], "p_runs": rn["p_wilcoxon"],
                        "diff_task_loss": tk["mean_diff"], "p_task_runs": tk["p_wilcoxon"]})
        rows.append(row)
    return {"summary": pd.DataFrame(rows), "per_run": per_run_df}


def save_results(result: dict[str, Any], layout: SweepLayout) -> dict[str, Path]:
    layout.compare_dir.mkdir(parents=True, exist_ok=True)
    paths = {"summary": layout.compare_summary, "per_run": layout.compare_per_run, "chart": layout.compare_chart}
    result["summary"].to_csv(paths["summary"], index=False)
    result["per_run"].to_csv(paths["per_run"], index=False)
    bar_chart(result["summary"], paths["chart"])
    return paths


def bar_chart(summary: pd.DataFrame, path: Path) -> Path:
    """Two panels: held-out forgetting (95% bootstrap CI) and task loss after (± sd over runs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = summary["strategy"].tolist()
    x = np.arange(len(labels))
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 1.6 * len(labels)), 4.2))
    m = summary["forgetting_heldout"].to_numpy()
    err = np.vstack([m - summary["forgetting_ci_low"].to_numpy(), summary["forgetting_ci_high"].to_numpy() - m])
    colors = ["#888888"] + ["#3b75af"] * (len(labels) - 1)
    axes[0].bar(x, m, yerr=np.abs(err), capsize=4, color=colors)
    axes[0].set_ylabel("mean forgetting on held-out upstream (nats)")
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
    fig.suptitle("strategies vs plain fine-tuning (error bars: 95% bootstrap CI / sd over runs)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
