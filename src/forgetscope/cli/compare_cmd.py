"""`forgetscope compare CONFIG`: plain fine-tuning vs mitigation strategies, with paired significance tests."""

from __future__ import annotations

import math
from pathlib import Path

import typer
from rich.table import Table

from forgetscope.cli.app import app, console


def _f(x, spec: str = ".4f") -> str:
    try:
        return "–" if math.isnan(float(x)) else format(x, spec)
    except (TypeError, ValueError):
        return "–"


def compare_table(summary) -> Table:
    table = Table(title="forgetting on held-out upstream examples vs plain fine-tuning (paired)")
    cols = ["strategy", "runs", "forgetting [95% CI]", "forgotten", "Δ vs plain [95% CI]", "p (examples)",
            "p (runs)", "task loss", "Δ task loss", "p (task)", "train s", "upstream evals"]
    for c in cols:
        table.add_column(c, justify="left" if c == "strategy" else "right")
    for r in summary.to_dict("records"):
        is_plain = r["strategy"] == "plain"
        table.add_row(
            r["strategy"], str(r["runs"]),
            f"{_f(r['forgetting_heldout'])} [{_f(r['forgetting_ci_low'])}, {_f(r['forgetting_ci_high'])}]",
            _f(r["forgotten_share_heldout"], ".1%"),
            "" if is_plain else f"{_f(r['diff_forgetting'], '+.4f')} [{_f(r['diff_ci_low'], '+.4f')}, "
                                f"{_f(r['diff_ci_high'], '+.4f')}]",
            "" if is_plain else _f(r["p_examples"], ".2g"),
            "" if is_plain else _f(r["p_runs"], ".2g"),
            _f(r["task_loss_after"], ".3f"),
            "" if is_plain else _f(r["diff_task_loss"], "+.3f"),
            "" if is_plain else _f(r["p_task_runs"], ".2g"),
            _f(r["train_wall_s"], ".0f"), _f(r["upstream_evaluations"], ".0f"),
        )
    return table


@app.command()
def compare(
    config: Path = typer.Argument(..., help="compare config YAML (a sweep config plus `strategies:`)"),
    output: Path | None = typer.Option(None, "--output", "-o", help="sweep directory (default: config's output)"),
    overwrite: bool = typer.Option(False, help="replace an existing directory holding a different sweep"),
    check: bool = typer.Option(False, help="only validate the config and the strategy options"),
) -> None:
    """Run plain fine-tuning and the configured strategies on the same tasks and seeds; test the differences."""
    from forgetscope.experiments.compare import load_compare_config, run_compare

    cfg = load_compare_config(config)
    if check:
        console.print(f"{config}: ok ({len(cfg.tasks)} tasks x {len(cfg.seed_list)} seeds, "
                      f"strategies: {', '.join(s.display for s in cfg.strategies)})")
        return
    result = run_compare(cfg, output=output, overwrite=overwrite, log=lambda m: console.print(m, highlight=False))
    console.print(compare_table(result["summary"]))
    paths = result["paths"]
    console.print(f"wrote {paths['summary']}, {paths['per_run']} and {paths['chart']}")
