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

A design that can credit row completion adds (see docs/mitigation.md)::

    compare: {budget: 120,                                  # replay examples per run, above the probe
              known: {sweep: STUDY_SWEEP, leave_task_out: true},
              heldout_sources: [devils_dictionary, tcl_code],  # by upstream category, never in the pool
              primary: {a: replay-lowrank, b: replay-probe-fill}}  # tested over tasks, unadjusted

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
ratio), on three metrics (held-out forgetting, task loss, task accuracy), each paired at two levels: over
task x seed runs (level ``run``) and over tasks with each task's seeds averaged (level ``task``, the units
when seeds of a task share its data): Wilcoxon signed-rank and paired t p-values, a BCa bootstrap CI of
the mean difference (percentile where BCa is undefined), the effect size d_z, and Holm's adjustment
within each level over its secondary rows. A primary contrast named in the config is reported
unadjusted, apart from that family.
The example-level Wilcoxon p over pooled held-out examples appears only as the descriptive column
``p_examples_descriptive``: examples of one run share a model, so it is not a valid test.
``summary.csv`` holds one row per strategy: its run-level means, and its comparison with plain.
LWF is reported as *graceful forgetting* (judged by task loss and accuracy), not as a mitigation.

``command.txt`` holds the command that produced the directory and ``wall_time.json`` the wall time
of every invocation (a resumed comparison adds one), updated after each run.
"""

from forgetscope.experiments.compare.config import (
    CompareConfig,
    CompareOptions,
    KnownRows,
    PrimaryPair,
    StrategySpec,
    check_known_rows,
    headline_kind,
    load_compare_config,
    refuse_pending,
    split_by_category,
    split_for,
    split_upstream,
    validate_compare,
)
from forgetscope.experiments.compare.run import (
    COMPARE,
    CompareExperiment,
    WallClock,
    run_compare,
    save_results,
)
from forgetscope.experiments.compare.run import (
    _spec as _spec,
)
from forgetscope.experiments.compare.stats import (
    METRICS,
    assign_roles,
    forgetting_metrics,
    kind_columns,
    run_level_tests,
    summarize,
    summary_kind,
)

__all__ = ["COMPARE", "METRICS", "CompareConfig", "CompareExperiment", "CompareOptions", "KnownRows",
           "PrimaryPair", "StrategySpec", "WallClock", "assign_roles", "check_known_rows", "forgetting_metrics",
           "headline_kind", "kind_columns", "load_compare_config", "refuse_pending",
           "run_compare", "run_level_tests", "save_results", "split_by_category", "split_for", "split_upstream",
           "summarize", "summary_kind", "validate_compare"]
