"""The Markdown tables of a replication study's claims, copied from its claims.json, so every number the
docs quote comes from a file a command wrote.

    python benchmarks/study_tables.py configs/studies/smollm2.yaml   # writes OUTPUT/analysis/tables.md

Reads OUTPUT/analysis/claims.json (benchmarks/study_analysis.py) and writes one table per claim, each claim
beside its baseline or control, then the per-task table. A part that was not computed is written as such.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any


def num(x: Any, fmt: str = "{:.3f}") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return fmt.format(x)


def series(values: list[float], fmt: str = "{:.3f}") -> str:
    return " / ".join(num(v, fmt) for v in values)


def verdict(flag: Any) -> str:
    return {True: "shown", False: "not shown", None: "partly / not measurable"}.get(flag, str(flag))


def missing(part: dict | None) -> str | None:
    if part is None:
        return "not in claims.json"
    return part.get("not_computed")


def ci(lo: Any, hi: Any, fmt: str = "{:+.3f}") -> str:
    return f"[{num(lo, fmt)}, {num(hi, fmt)}]"


def low_rank(c: dict) -> list[str]:
    m = c.get("marginals")
    if (why := missing(m)) is not None:
        return [f"C1–C3: not computed ({why})"]
    out = ["| claim | F | baseline (within-row shuffles) | verdict |", "|---|---|---|---|"]
    p, inter = m.get("permutation"), m.get("interaction_r2")
    verdicts = {v["claim"]: v for v in m.get("verdicts", [])}
    if p:
        for metric in ("global", "reference"):
            if metric in p:
                out.append(f"| C1 R²(1…5), {metric} metric | {series(p[metric]['r2'])} | mean "
                           f"{series(p[metric]['shuffle_mean'])}; band top {series(p[metric]['shuffle_high'])} "
                           f"({p['n_shuffles']} shuffles) | "
                           f"{verdict(verdicts.get('low rank beyond row scale', {}).get('shown'))} |")
    s = m.get("interaction_seed_reliability", {})
    out.append(f"| C2 seed-pair correlation of the interaction ({s.get('n_tasks')} tasks) | "
               f"{num(s.get('mean_r_interaction'), '{:+.3f}')} {ci(s.get('ci_low'), s.get('ci_high'))} | 0 | "
               f"{verdict(next((v['shown'] for k, v in verdicts.items() if 'reproducib' in k), None))} |")
    if inter:
        g = inter["global"]
        out.append(f"| C3 interaction R²(1…{len(g['r2'])}), global | {series(g['r2'])} | mean "
                   f"{series(g['shuffle_mean'])}; band top {series(g['shuffle_high'])} | "
                   f"{verdict(verdicts.get('low-rank interaction', {}).get('shown'))} |")
    split, cat = m.get("variance_split", {}), m.get("category_share")
    out.append("")
    out.append(f"Variance split (shares of F's sum of squares about its mean): runs {num(split.get('runs'))}, "
               f"examples {num(split.get('examples'))}, interaction {num(split.get('interaction'))}.")
    if cat:
        out.append(f"Source-category share of the interaction: {num(cat['r2'])} (label shuffles: mean "
                   f"{num(cat['shuffle_mean'])}, top {num(cat['shuffle_high'])}; {cat['n_categories']} categories).")
    out += ["", "Verdict lines as printed:"] + [f"- {v['line']}" for v in m.get("verdicts", [])]
    return out


def format_control(c: dict) -> list[str]:
    f = c.get("format_control")
    if (why := missing(f)) is not None:
        return [f"C4: not computed ({why})"]
    s, share = f["specificity"], f["share"]
    t = s["test"]
    return ["| C4 | task seeds r_seed | task seed × its format-only seed r_format | difference [95 % CI] | "
            "r_format disattenuated | control's seeds | verdict |", "|---|---|---|---|---|---|---|",
            f"| {s['n_tasks']} tasks | {num(s['mean_r_seed'], '{:+.3f}')} | {num(s['mean_r_format'], '{:+.3f}')} | "
            f"{num(t['mean_diff'], '{:+.3f}')} {ci(t['ci_low'], t['ci_high'])} | "
            f"{num(s.get('mean_r_format_disattenuated'))} | r {num(s.get('mean_r_format_seeds'), '{:+.3f}')}"
            f"{' (noisier than the tasks)' if s.get('control_noisier_than_tasks') else ''} | "
            f"{verdict(s['shown'])} |", "",
            f"Share of the controlled tasks' interaction their format-only rows explain: "
            f"{num(share['interaction_share'])} (of every task's interaction: {num(share['interaction_share_all'])})."]


def effect_null(c: dict) -> list[str]:
    e = c.get("effect_null")
    if (why := missing(e)) is not None:
        return [f"C5: not computed ({why})"]
    t = e["test"]
    return ["| C5 | r with own seed replica | r with effect-matched null | difference [95 % CI] | Wilcoxon p "
            "(two-sided) | effect match (all texts / subset) | verdict |", "|---|---|---|---|---|---|---|",
            f"| {e['n_tasks']} tasks | {num(e['mean_r_seed_replica'], '{:+.3f}')} | "
            f"{num(e['mean_r_effect_null'], '{:+.3f}')} | {num(t['mean_diff'], '{:+.3f}')} "
            f"{ci(t['ci_low'], t['ci_high'])} | {num(t['p_wilcoxon'], '{:.2g}')} | "
            f"{num(e['effect_ratio_median'], '{:.2f}')} / {num(e.get('effect_ratio_subset_median'), '{:.2f}')} "
            f"({e.get('n_not_matched', '–')} not matched) | {verdict(e['shown'])} |"]


def learning(c: dict) -> list[str]:
    lc = c.get("learning")
    if (why := missing(lc)) is not None:
        return [f"C6: not computed ({why})"]
    out = ["| C6 set | tasks | Pearson (p, Holm) | Spearman (p) | left one task out: Pearson range, largest p | "
           "most influential | holds |", "|---|---|---|---|---|---|---|"]
    for name, r in lc.items():
        out.append(f"| {name} | {r['n_tasks']} | {num(r['pearson'], '{:+.3f}')} ({num(r['p'], '{:.2g}')}, "
                   f"{num(r['p_holm'], '{:.2g}')}) | {num(r['spearman'], '{:+.3f}')} "
                   f"({num(r['spearman_p'], '{:.2g}')}) | {num(r['loo_min'], '{:+.3f}')} … "
                   f"{num(r['loo_max'], '{:+.3f}')}, {num(r['loo_max_p'], '{:.2g}')} | {r['most_influential']} | "
                   f"{'yes' if r['holds'] else 'no'} |")
    return out


def completion(c: dict) -> list[str]:
    comp = c.get("completion")
    if (why := missing(comp)) is not None:
        return [f"C7: not computed ({why})"]
    out = [f"Protocol: {comp['protocol']}.", "",
           "| C7 predictor | tasks | RMSE | additive | difference [95 % CI] | tasks better | Wilcoxon p (Holm) |",
           "|---|---|---|---|---|---|---|"]
    for t in comp["tests_against_additive"]:
        out.append(f"| {t['predictor']} | {t['n_tasks']} | {num(t['rmse'], '{:.4f}')} | "
                   f"{num(t['rmse_baseline'], '{:.4f}')} | {num(t['mean_diff'], '{:+.4f}')} "
                   f"{ci(t['ci_low'], t['ci_high'], '{:+.4f}')} | {t['tasks_better']} | "
                   f"{num(t['p_wilcoxon_holm'], '{:.2g}')} |")
    out += ["", "| 90 % intervals | pooled coverage | per task: min | 10th percentile | tasks below 0.8 |",
            "|---|---|---|---|---|"]
    pooled = {r["predictor"]: r.get("coverage") for r in comp["summary"]}
    for name, cov in comp["coverage_per_task"].items():
        out.append(f"| {name} | {num(pooled.get(name))} | {num(cov.get('task_min'))} | {num(cov.get('task_p10'))} "
                   f"| {num(cov.get('tasks_below'), '{:.0f}')} |")
    return out


def flatness(c: dict) -> list[str]:
    fl = c.get("flatness")
    if (why := missing(fl)) is not None:
        return [f"C8: not computed ({why})"]
    out = ["| C8 measure | covariates | tasks | Spearman with mean F (p, Holm) | rank coefficient beyond the "
           "covariates [95 % CI] |", "|---|---|---|---|---|"]
    for part in ("primary", "with_format_covariate"):
        if part not in fl:
            continue
        for name, m in fl[part]["measures"].items():
            out.append(f"| {name} | {', '.join(fl[part]['covariates'])} | {m['n_tasks']} | "
                       f"{num(m['spearman'], '{:+.3f}')} ({num(m['p'], '{:.2g}')}, {num(m['p_holm'], '{:.2g}')}) | "
                       f"{num(m['partial_coef'], '{:+.3f}')} {ci(*m['partial_ci'])} |")
    return out


def damage_and_earlier(c: dict) -> list[str]:
    out = []
    d = c.get("damage")
    if missing(d) is None:
        out += ["| criterion | value | target | met |", "|---|---|---|---|"]
        for name, chk in d.get("criteria", {}).items():
            out.append(f"| {name} | {num(chk.get('value'))} | {num(chk.get('target'))} | "
                       f"{'yes' if chk.get('met') else 'no'} |")
    e = c.get("earlier_study_r2")
    if missing(e) is None:
        out += ["", f"The earlier study's matrix ({e['shape'][0]} × {e['shape'][1]}): R²(1…5) global "
                f"{series(e['global'])}, reference {series(e['reference'])}."]
    return out


def per_task(c: dict) -> list[str]:
    out = ["| task | family | seeds | mean F (nats/token) | learning (drop of held-out task loss) |",
           "|---|---|---|---|---|"]
    for r in c.get("per_task", []):
        out.append(f"| {r['task']} | {r.get('family') or '–'} | {r.get('n_seeds')} | "
                   f"{num(r['mean_f'], '{:+.4f}')} | {num(r['learning'])} |")
    return out


def render(claims: dict) -> str:
    head = [f"# {claims['study']}: claims", "",
            f"Regime {claims['regime']}; {claims['n_runs']} of {claims['n_planned']} planned runs "
            f"({'complete' if claims['complete'] else 'INCOMPLETE'}); {claims['n_task_runs']} task runs × "
            f"{claims['n_examples_lm']} human-written texts.", ""]
    parts = [("Low rank (C1–C3)", low_rank), ("Format-only control (C4)", format_control),
             ("Effect-matched null (C5)", effect_null), ("Forgetting and learning (C6)", learning),
             ("Completion (C7)", completion), ("Flatness (C8)", flatness),
             ("Damage, and the earlier study", damage_and_earlier), ("Per task", per_task)]
    body = []
    for title, fn in parts:
        body += [f"## {title}", "", *fn(claims), ""]
    return "\n".join(head + body)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study", type=Path)
    args = ap.parse_args()
    from forgetscope.experiments.study import load_study

    study, _ = load_study(args.study)
    dest = study.layout.tables
    dest.write_text(render(json.loads(study.layout.claims.read_text())))
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
