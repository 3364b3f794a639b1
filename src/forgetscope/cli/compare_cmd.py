"""`forgetscope compare CONFIG`: plain fine-tuning vs mitigation strategies, with run-level paired tests."""

from __future__ import annotations

import math
import shlex
from pathlib import Path

import typer
from rich import box
from rich.table import Table

from forgetscope.cli.app import app, console

NOT_TESTABLE = "not testable"


def _f(x, spec: str = ".4f") -> str:
    try:
        return "–" if math.isnan(float(x)) else format(x, spec)
    except (TypeError, ValueError):
        return "–"


def _p(x) -> str:
    """A p-value, or "not testable" where the test was not run (too few paired runs)."""
    try:
        return NOT_TESTABLE if math.isnan(float(x)) else format(float(x), ".2g")
    except (TypeError, ValueError):
        return NOT_TESTABLE


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def arm_name(label: str, predictor) -> str:
    """A strategy's label, with the predictor a predicted-replay arm completes its row with when the
    label does not already name it."""
    p = "" if predictor is None or (isinstance(predictor, float) and math.isnan(predictor)) else str(predictor)
    return label if not p or p in label else f"{label} ({p})"


def compare_table(summary) -> Table:
    """Held-out forgetting of each strategy against plain fine-tuning (the comparison's main result)."""
    from forgetscope.experiments.compare import summary_kind

    kind = summary_kind(summary)
    over = "upstream" if kind == "all" else f"{kind} upstream"
    table = Table(title=f"held-out {over} forgetting F vs plain fine-tuning (Wilcoxon signed-rank, paired over "
                        "task x seed runs and over tasks with seeds averaged, Holm-adjusted; t-tests and CIs in "
                        "summary.csv)", box=box.SIMPLE_HEAD, pad_edge=False)
    for c in ["strategy", "runs", "F", "forgotten", "Δ vs plain [95% CI]", "d_z", "p runs", "p tasks"]:
        table.add_column(c, justify="left" if c == "strategy" else "right", no_wrap=True)
    for r in summary.to_dict("records"):
        base = r["strategy"] == "plain"
        table.add_row(
            arm_name(r["strategy"], r.get("predictor")), str(r["runs"]),
            _f(r["forgetting_heldout"], ".3f"),
            _f(r["forgotten_share_heldout"], ".0%"),
            "" if base else f"{_f(r.get('diff_forgetting'), '+.3f')} [{_f(r.get('diff_ci_low'), '+.3f')}, "
                            f"{_f(r.get('diff_ci_high'), '+.3f')}]",
            "" if base else _f(r.get("dz"), "+.2f"),
            "" if base else _p(r.get("p_wilcoxon_holm")),
            "" if base else _p(r.get("task_p_wilcoxon_holm")),
        )
    return table


def cost_table(summary) -> Table:
    """What each strategy did to the target task, and what it cost."""
    table = Table(title="target task loss and cost (p Holm-adjusted)", box=box.SIMPLE_HEAD, pad_edge=False)
    for c in ["strategy", "kind", "task loss", "Δ task loss", "p task (Wilcoxon)", "train s", "upstream evals"]:
        table.add_column(c, justify="left" if c in ("strategy", "kind") else "right", no_wrap=c in ("strategy", "kind"))
    for r in summary.to_dict("records"):
        base = r["strategy"] == "plain"
        table.add_row(
            r["strategy"], str(r.get("kind", "")),
            _f(r["task_loss_after"], ".3f"),
            "" if base else _f(r.get("diff_task_loss"), "+.3f"),
            "" if base else _p(r.get("task_loss_p_wilcoxon_holm")),
            _f(r["train_wall_s"], ".0f"), _f(r["upstream_evaluations"], ".0f"),
        )
    return table


def tests_table(tests) -> Table:
    """The head-to-head comparisons (not against plain) on held-out forgetting."""
    table = Table(title="direct comparisons: held-out forgetting (paired over task x seed runs, and over tasks "
                        "with seeds averaged; p Holm-adjusted within each level)")
    for c in ["comparison", "level", "pairs", "Δ [95% CI]", "d_z [95% CI]", "p Wilcoxon", "p t", "note"]:
        table.add_column(c, justify="left" if c in ("comparison", "level", "note") else "right")
    rows = tests[(tests["baseline"] != "plain") & (tests["metric"] == "forgetting_heldout")]
    for r in rows.to_dict("records"):
        table.add_row(r["comparison"], str(r.get("level", "run")), str(r["n_pairs"]),
                      f"{_f(r['mean_diff'], '+.4f')} [{_f(r['ci_low'], '+.4f')}, {_f(r['ci_high'], '+.4f')}]",
                      f"{_f(r['dz'], '+.2f')} [{_f(r.get('dz_ci_low'), '+.2f')}, {_f(r.get('dz_ci_high'), '+.2f')}]",
                      _p(r["p_wilcoxon_holm"]), _p(r["p_t_holm"]), str(r.get("note") or ""))
    return table


@app.command()
def compare(
    config: Path = typer.Argument(..., help="compare config YAML (a sweep config plus `strategies:`)"),
    output: Path | None = typer.Option(None, "--output", "-o", help="sweep directory (default: config's output)"),
    overwrite: bool = typer.Option(False, help="replace an existing directory holding a different sweep"),
    check: bool = typer.Option(False, help="only validate the config and the strategy options"),
) -> None:
    """Run plain fine-tuning and the configured strategies on the same tasks and seeds; test the differences."""
    from forgetscope.experiments.compare import (
        load_compare_config,
        refuse_pending,
        run_compare,
        validate_compare,
    )

    cfg = load_compare_config(config)
    if check:
        pool, held = validate_compare(cfg)
        console.print(f"{config}: ok ({_plural(len(cfg.tasks), 'task')} x {_plural(len(cfg.seed_list), 'seed')}, "
                      f"pool {len(pool)}, held-out {len(held)} upstream examples, "
                      f"strategies: {', '.join(s.display for s in cfg.strategies)})")
        if cfg.compare.primary is not None:
            console.print(f"primary contrast: {cfg.compare.primary.a} vs {cfg.compare.primary.b} (held-out "
                          "forgetting, over tasks)", highlight=False)
        if cfg.compare.pending:
            console.print(f"pending (placeholders; no run starts until filled): {', '.join(cfg.compare.pending)}",
                          highlight=False)
        return
    refuse_pending(cfg)  # before the output directory is created
    command = ["forgetscope", "compare", str(config)] + (["--output", str(output)] if output else []) + (
        ["--overwrite"] if overwrite else [])
    result = run_compare(cfg, output=output, overwrite=overwrite, log=lambda m: console.print(m, highlight=False),
                         command=shlex.join(command))
    console.print(compare_table(result["summary"]))
    console.print(cost_table(result["summary"]))
    if "primary" in result:
        r = result["primary"]
        console.print(f"primary ({r['question']}): {r['arm']} - plain at matched {r['covariate']}: gamma "
                      f"{r['gamma']:+.4f} [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}] over {r['n_tasks']} tasks, "
                      f"p ({r['alternative']}) {r['p']:.3g}" + (f"; {r['note']}" if r["note"] else ""))
    if (result["tests"]["baseline"] != "plain").any():
        console.print(tests_table(result["tests"]))
    primary = result.get("primary_contrast")
    if primary is not None:
        console.print(f"primary contrast ({primary['comparison']}, held-out F over {primary['n_pairs']} tasks, "
                      f"unadjusted): {_f(primary['mean_diff'], '+.4f')} [{_f(primary['ci_low'], '+.4f')}, "
                      f"{_f(primary['ci_high'], '+.4f')}], d_z {_f(primary['dz'], '+.2f')}, p t {_p(primary['p_t'])}, "
                      f"p Wilcoxon {_p(primary['p_wilcoxon'])}", highlight=False)
    notes = result["summary"].get("note")
    if notes is not None and notes.fillna("").astype(str).str.len().gt(0).any():
        console.print(f"{NOT_TESTABLE}: a test needs at least 2 paired runs (t-test) or 6 (Wilcoxon); "
                      "see the note column of tests.csv")
    paths = result["paths"]
    console.print(f"wrote {paths['summary']}, {paths['tests']}, {paths['per_run']} and {paths['chart']}")
