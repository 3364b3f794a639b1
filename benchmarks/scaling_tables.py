"""The Markdown tables of the scaling study, copied from its fit.json (and, when present, the secondary
hold-out's fit_<rule>.json and the criteria calibration), so every number the docs quote comes from a file a
command wrote.

    python benchmarks/scaling_tables.py configs/scaling_study.yaml   # writes OUTPUT/scaling/tables.md

Tables: the pre-registered verdict per task (each criterion with the numbers it was decided on), the
exponents per task with both kinds of interval and their agreement across tasks, the held-out errors of every
law beside the trivial rules, and the calibration of the jackknife criteria under their nulls.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from forgetscope.experiments.scaling import load_scaling_config
from forgetscope.store.layout import SweepLayout

sys.path.insert(0, str(Path(__file__).resolve().parent))
from study_tables import ci, num  # noqa: E402

CALIBRATION = Path(__file__).resolve().parent / "results" / "scaling_study" / "criteria_calibration.json"


def mark(flag: Any) -> str:
    return "yes" if flag else "no"


def task_report(fit: dict[str, Any], task: str, n_tasks: int) -> dict[str, Any] | None:
    """The task's own report: ``by_task``'s, or the fit itself when the study has one task; never the pooled
    fit for a task of several (a task without its own fit has none)."""
    if "by_task" in fit:
        return fit["by_task"].get(task)
    return fit if n_tasks == 1 else None


def verdict_table(fit: dict[str, Any]) -> list[str]:
    crit = fit.get("criteria")
    if not crit:
        return ["No criteria in this fit."]
    target, law, rules = crit["target"], crit["law"], crit["baselines"]
    out = [f"Target `{target}`, law `{law}`, intervals: {crit['ci_used']}; a criterion holds on at least "
           f"{crit['min_tasks']} of {crit['n_tasks']} tasks.", "",
           f"| task | held-out RMSE: {' / '.join(['law', *rules])} (n) | extrapolates | alpha [95% CI] | "
           "beta [95% CI] | grows | slope c [95% CI] | inverse linear |", "|---|---|---|---|---|---|---|---|"]
    for task, v in crit["per_task"].items():
        report = task_report(fit, task, crit["n_tasks"])
        if report is None:
            out.append(f"| {task} | no fit | no | – | – | no | – | no |")
            continue
        decided = v.get("heldout_rmse") or {k: report.get("heldout_comparison", {}).get(target, {}).get(k, {})
                                            .get("rmse") for k in (law, *rules)}
        rmse = " / ".join(num(decided.get(k), "{:.4f}") for k in (law, *rules))
        f = report.get("fits", {}).get(target, {}).get(law, {})
        lin = report.get("fits", {}).get(target, {}).get("linear", {})
        iv = v.get("intervals", {})
        cells = [f"{num(p.get(k), '{:+.3f}')} {ci(*(iv.get(k) or [None, None]))}"
                 for p, k in ((f.get("params", {}), "alpha"), (f.get("params", {}), "beta"),
                              (lin.get("params", {}), "c"))]
        out.append(f"| {task} | {rmse} ({v.get('heldout_n', 0)}) | {mark(v['extrapolates'])} | {cells[0]} | "
                   f"{cells[1]} | {mark(v['grows'])} | {cells[2]} | {mark(v.get('inverse_linear'))} |")
    counts, holds = crit["tasks_meeting"], crit["holds"]
    out += ["", "| criterion | tasks meeting it | holds |", "|---|---|---|"]
    out += [f"| {k} | {counts[k]} of {crit['n_tasks']} | {mark(holds[k])} |" for k in counts]
    out += ["", f"**The paper's description is {'supported' if crit['supported'] else 'not supported'} here** "
                "(all criteria must hold).", "", "Reasons recorded per task:", ""]
    out += [f"* {task}: " + ("; ".join(v["reasons"]) or "none") for task, v in crit["per_task"].items()]
    return out


def exponent_table(fit: dict[str, Any]) -> list[str]:
    agree = fit.get("criteria", {}).get("exponent_agreement")
    if not agree:
        return ["No exponent agreement in this fit."]
    out = ["| task | exponent | estimate | jackknife SE | jackknife 95% CI | least-squares 95% CI (descriptive) | "
           "on its bound |", "|---|---|---|---|---|---|---|"]
    for task, v in agree["per_task"].items():
        if v is None:
            out.append(f"| {task} | – | no fit | | | | |")
            continue
        for p in ("alpha", "beta"):
            e = v[p]
            out.append(f"| {task} | {p} | {num(e['estimate'], '{:+.3f}')} | {num(e['se'])} | {ci(*e['ci95'])} | "
                       f"{ci(*e['ci95_least_squares'])} | {mark(e['at_bound'])} |")
    out += ["", "| exponent | tasks used | pooled (inverse-variance) | Cochran's Q (df) | p | I² | excluded |",
            "|---|---|---|---|---|---|---|"]
    for p in ("alpha", "beta"):
        q = agree[p]
        out.append(f"| {p} | {len(q['tasks'])} | {num(q['pooled'], '{:+.3f}')} ± {num(q['pooled_se'])} | "
                   f"{num(q['Q'], '{:.2f}')} ({q['df']}) | {num(q['p'], '{:.3g}')} | {num(q['I2'], '{:.2f}')} | "
                   f"{', '.join(q['excluded']) or 'none'} |")
    return out


def heldout_table(fit: dict[str, Any], target: str) -> list[str]:
    tasks = fit.get("by_task") or {"all": fit}
    names = sorted({k for r in tasks.values() for k in r.get("heldout_comparison", {}).get(target, {})})
    out = ["| task | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for task, r in tasks.items():
        comp = r.get("heldout_comparison", {}).get(target, {})
        out.append(f"| {task} | " + " | ".join(num(comp.get(k, {}).get("rmse"), "{:.4f}") for k in names) + " |")
    return out


def calibration_table(cal: dict[str, Any]) -> list[str]:
    out = [f"{cal['draws_per_task']} draws per task and scenario ({cal['resampling']}); nominal one-sided rate "
           f"under a null {cal['nominal_one_sided']:.1%}.", "",
           "| scenario | what is counted | rate pooled over tasks [Wilson 95%] | per task |", "|---|---|---|---|"]
    for scenario, reads in cal["pooled"].items():
        for k, v in reads.items():
            if k == "failed_fits":
                continue
            per = ", ".join(f"{t} {c[scenario][k]}/{c[scenario]['draws']}" for t, c in cal["per_task"].items()
                            if scenario in c)
            out.append(f"| {scenario} | {k} | {v['rate']:.3f} [{v['wilson95'][0]:.3f}, {v['wilson95'][1]:.3f}] | "
                       f"{per} |")
    failed = {s: r["failed_fits"] for s, r in cal["pooled"].items() if r.get("failed_fits")}
    skipped = {t: c["not_calibrated"] for t, c in cal["per_task"].items() if "not_calibrated" in c}
    out += ["", "Draws whose fit failed (counted as meeting no criterion, as in the study): "
            + (", ".join(f"{s} {n}" for s, n in failed.items()) or "none") + "."]
    if skipped:
        out.append("Tasks not calibrated: " + "; ".join(f"{t} ({why})" for t, why in skipped.items()) + ".")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", type=Path)
    args = ap.parse_args(argv)
    config = load_scaling_config(args.config)
    layout = SweepLayout(config.output).scaling
    if not layout.fit.is_file():
        print(f"error: {layout.fit} does not exist; run `forgetscope scaling {args.config}` first", file=sys.stderr)
        return 2
    fit = json.loads(layout.fit.read_text())
    target = fit.get("criteria", {}).get("target", "ce_forgetting")
    lines = [f"# Scaling study: tables from {layout.fit.name}", "",
             f"Hold-out `{fit['holdout_rule']}` ({fit.get('holdout_role', 'primary')}): {fit['n_points']} points, "
             f"{fit['n_heldout']} held out.", "", "## Pre-registered criteria", "", *verdict_table(fit), "",
             "## Exponents per task (a description)", "", *exponent_table(fit), "",
             f"## Held-out RMSE of every law and trivial rule (`{target}`)", "", *heldout_table(fit, target)]
    for secondary in layout.secondary_fits():
        other = json.loads(secondary.read_text())
        lines += ["", f"## Secondary: {secondary.name} (hold-out `{other['holdout_rule']}`, reported as such)", "",
                  *verdict_table(other)]
    if CALIBRATION.is_file():
        lines += ["", "## Calibration of the jackknife criteria (benchmarks/scaling_criteria_calibration.py)", "",
                  *calibration_table(json.loads(CALIBRATION.read_text()))]
    out = layout.tables
    out.write_text("\n".join(lines) + "\n")
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
