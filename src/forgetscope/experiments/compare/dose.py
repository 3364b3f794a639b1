"""The replay budget a dose pilot selects, by the rule its config fixes before any run.

A dose pilot (``configs/replay_dose_pilot.yaml``) pairs, at several budgets B, an ``oracle`` replay arm with a
``random`` one (``compare.direct``). Its question is whether choosing what to replay can help at all, and at
which budget most. The rule, applied to the comparison's ``tests.csv`` at the task level on held-out
forgetting:

* d(B) = mean over tasks of (oracle − random), with the pair's 95 % bootstrap CI (unadjusted);
* B shows headroom when the CI's upper bound is below 0;
* the chosen budget is, among those with headroom, the one with the most negative d(B) rounded to 3
  decimals, the smaller budget on a tie;
* no budget with headroom means nothing for a predictor to win: no budget is chosen.

Pure: reads tables, returns a dict; :func:`write_selection` is the one writer of ``compare/selection.json``.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from forgetscope.errors import ConfigError
from forgetscope.experiments.compare.stats import contrast_rows

RULE = ("per budget B: d(B) = task-level mean of (oracle - random) held-out forgetting with its 95 % bootstrap CI; "
        "headroom when the CI's upper bound < 0; chosen = the budget with headroom whose d(B), rounded to 3 "
        "decimals, is most negative (the smaller budget on a tie); none chosen when no budget shows headroom")


def dose_pairs(cfg: Any) -> list[dict[str, Any]]:
    """The config's oracle-against-random pairs, one per budget: ``{"budget", "oracle", "random"}``, by budget.

    Refused (ConfigError) when a direct pair is not an oracle arm against a random arm of the same budget,
    or a budget has two pairs: the rule needs exactly one contrast per dose."""
    by_label = {s.display: s for s in cfg.strategies}
    pairs: dict[int, dict[str, Any]] = {}
    for a, b in cfg.direct_pairs():
        pa, pb = cfg.inputs_of(by_label[a]).policy, cfg.inputs_of(by_label[b]).policy
        ba, bb = cfg.budget_of(by_label[a]), cfg.budget_of(by_label[b])
        if (pa, pb) != ("oracle", "random") or ba is None or ba != bb:
            raise ConfigError(f"compare.direct: {a} vs {b} is not an oracle arm against a random arm of one budget "
                              f"(policies {pa}/{pb}, budgets {ba}/{bb}); a dose pilot pairs exactly those")
        if ba in pairs:
            raise ConfigError(f"compare.direct: the budget {ba} is paired twice")
        pairs[ba] = {"budget": ba, "oracle": a, "random": b}
    if not pairs:
        raise ConfigError("compare.direct: no oracle-against-random pair; a dose pilot needs one per budget")
    return [pairs[k] for k in sorted(pairs)]


def select_budget(tests: pd.DataFrame, pairs: list[dict[str, Any]], *, n_tasks: int,
                  metric: str = "forgetting_heldout") -> dict[str, Any]:
    """Apply the rule to ``tests`` (a comparison's ``tests.csv``) for ``pairs`` (:func:`dose_pairs`).

    ``n_tasks`` is the number of tasks the config lists; a pair measured on fewer is reported, and the
    selection is then marked not confirmatory (the rule was fixed for every task)."""
    per_budget, short = [], []
    for p in pairs:
        hit = tests[contrast_rows(tests, p["oracle"], p["random"], metric, "task")]
        if len(hit) != 1:
            raise ConfigError(f"tests.csv has {len(hit)} task-level rows of {p['oracle']} vs {p['random']} on "
                              f"{metric}; run the comparison to the end first")
        r = hit.iloc[0]
        hi = float(r["ci_high"])  # NaN (too few tasks for a CI) is no headroom
        note = "" if pd.isna(r.get("note")) else str(r.get("note"))
        per_budget.append({**p, "n_tasks": int(r["n_pairs"]), "mean_oracle": float(r["mean_strategy"]),
                           "mean_random": float(r["mean_baseline"]), "d": float(r["mean_diff"]),
                           "ci_low": float(r["ci_low"]), "ci_high": hi, "headroom": bool(hi < 0), "note": note})
        if int(r["n_pairs"]) != n_tasks:
            short.append(f"budget {p['budget']}: {int(r['n_pairs'])} of {n_tasks} tasks")
        if "percentile" in note or not math.isfinite(hi):  # the rule names a BCa CI
            short.append(f"budget {p['budget']}: {note or 'no CI'}")
    with_room = [b for b in per_budget if b["headroom"]]
    chosen = min(with_room, key=lambda b: (round(b["d"], 3), b["budget"]))["budget"] if with_room else None
    finding = (f"budget {chosen}: oracle replay forgets less than random replay with the largest margin"
               if chosen is not None else
               "no budget shows headroom: oracle replay is not better than random replay within the CI at any "
               "budget, so there is nothing for a predictor to win and the completion comparison is not run")
    return {"rule": RULE, "metric": metric, "level": "task", "per_budget": per_budget, "chosen": chosen,
            "finding": finding, "confirmatory": not short, "departures": short}


def write_selection(cfg: Any, layout: Any) -> dict[str, Any]:
    """:func:`select_budget` on the finished comparison under ``layout`` (its
    :class:`~forgetscope.store.layout.SweepLayout`), written to ``compare/selection.json``; returns it."""
    from forgetscope.store.io import write_json
    from forgetscope.store.scaling import json_safe

    if not layout.compare_tests.exists():
        raise ConfigError(f"{layout.compare_tests} does not exist; run the dose pilot to the end first")
    result = select_budget(pd.read_csv(layout.compare_tests), dose_pairs(cfg), n_tasks=len(cfg.tasks))
    result["source"] = str(layout.compare_tests)
    write_json(layout.compare_selection, json_safe(result))
    return result
