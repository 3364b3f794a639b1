"""The Markdown table of a regime pilot, copied from its selection.json and each candidate's verdict.json, so
every pilot number the docs quote comes from a file a command wrote.

    python benchmarks/regime_tables.py configs/regimes/gemma3.yaml   # writes OUTPUT/tables.md

One row per candidate in the pilot file's order: its update (lr x steps), runs, mean held-out task loss, and
each pre-registered criterion's measured value against its target, then the selection rule's outcome. A
candidate that has not started is written as such; the answers criterion says when it could not be measured.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from study_tables import num  # noqa: E402


def met(check: dict[str, Any] | None) -> str:
    if check is None:
        return "not checked"
    return "met" if check["met"] else "**not met**"


def answers_cell(check: dict[str, Any] | None, min_known: int) -> str:
    if check is None:
        return "not checked"
    if check.get("value") is None:
        return "no instruction pairs: not measurable, **not met**"
    known = check.get("known_before_per_run")
    kept = f"{num(check['value'])} kept of {num(known, '{:.1f}')} known per run"
    if not check.get("measurable", True):
        return f"{kept}; fewer than {min_known} known: not measurable, **not met**"
    return f"{kept}: {met(check)}"


def candidate_row(name: str, v: dict[str, Any] | None, train: dict[str, Any], min_known: int) -> str:
    update = f"{train.get('lr', float('nan')):g} × {train.get('steps', '–')}"
    if v is None:
        return f"| {name} | {update} | 0 | not started | | | | | | no |"
    c = v["criteria"]
    learns = c.get("learns")
    cells = [
        f"{num(learns['value'])} of runs: {met(learns)}" if learns else "not checked",
        f"{num(c['seed_r']['value'])} (≥ {c['seed_r']['target']:g}): {met(c['seed_r'])}",
        f"{num(c['damage']['value'])} (≤ {c['damage']['target']:g}): {met(c['damage'])}",
        (f"{num(c['below_uniform']['value'], '{:.2f}')} (≤ {num(c['below_uniform']['target'], '{:.2f}')}): "
         f"{met(c['below_uniform'])}") if "below_uniform" in c else "not checked",
        answers_cell(c.get("answers_retained"), min_known),
    ]
    runs = f"{v['n_runs']}" + ("" if v.get("complete") else " (unfinished)")
    usable = "yes" if v["usable"] else "no"
    return f"| {name} | {update} | {runs} | {num(v['mean_task_loss_after'], '{:.4f}')} | " + " | ".join(cells) + f" | {usable} |"


def render(pilot: Any, selection: dict[str, Any], verdicts: dict[str, dict[str, Any] | None]) -> str:
    from forgetscope.experiments.regime_pilot import candidate_configs

    configs = candidate_configs(pilot)
    crit = pilot.criteria
    state = "complete" if selection.get("complete") else "not complete"
    chosen = selection.get("chosen")
    base_loss = next((v["base_mean_loss"] for v in verdicts.values() if v and "base_mean_loss" in v), None)
    lines = [f"# Regime pilot of {pilot.model}: tables from selection.json", "",
             f"Pilot {state}: {len(selection.get('candidates_finished', []))} of {len(configs)} candidates "
             f"finished. Uniform-guess loss log(vocabulary) = {num(selection.get('uniform_loss'), '{:.2f}')} nats; "
             f"the base model's mean loss on the texts = {num(base_loss, '{:.2f}')} nats.",
             "", "| candidate | lr × steps | runs | mean held-out task loss after | every run learns | seed r | "
             "worst run's mean F / base loss | worst run's mean loss on the texts | known answers kept "
             f"(≥ {crit.answers_retained_min:g}) | usable |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, cfg in configs.items():
        lines.append(candidate_row(name, verdicts.get(name), cfg.train.model_dump(), crit.answers_min_known))
    lines += ["", f"Selection (`{pilot.selection}`, ties within {pilot.tie_nats:g} nats): "
              f"**{chosen if chosen else 'none'}**. {selection.get('reason', '')}."]
    return "\n".join(lines) + "\n"


def read_pilot(argv: list[str] | None, description: str) -> tuple[Any, Path] | None:
    """The pilot file named on the command line, loaded and validated, and its path; None after one error
    line on stderr when it cannot be read (the caller exits 2, having written nothing)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("pilot", type=Path)
    args = ap.parse_args(argv)
    from forgetscope.errors import ForgetscopeError
    from forgetscope.experiments.regime_pilot import load_pilot

    try:
        return load_pilot(args.pilot), args.pilot
    except ForgetscopeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def main(argv: list[str] | None = None) -> int:
    read = read_pilot(argv, __doc__.splitlines()[0])
    if read is None:
        return 2
    pilot, path = read
    layout = pilot.layout
    if not layout.selection.is_file():
        print(f"error: {layout.selection} does not exist; run `python benchmarks/regime_pilot.py {path}` "
              "first", file=sys.stderr)
        return 2
    selection = json.loads(layout.selection.read_text())
    verdicts = {name: json.loads(layout.verdict(name).read_text()) if layout.verdict(name).is_file() else None
                for name in pilot.candidates}
    layout.tables.write_text(render(pilot, selection, verdicts))
    print(layout.tables)
    return 0


if __name__ == "__main__":
    sys.exit(main())
