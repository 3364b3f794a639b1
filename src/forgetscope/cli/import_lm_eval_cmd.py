"""`forgetscope import-lm-eval`: per-item forgetting from lm-evaluation-harness sample logs, as a sweep directory."""

from __future__ import annotations

from pathlib import Path

import typer

from forgetscope.cli.app import app, console, fail, old_out_option, option_alias


@app.command("import-lm-eval")
def import_lm_eval_(
    before: Path = typer.Argument(..., metavar="BEFORE_DIR",
                                  help="lm-eval --output_path of the base model (run with --log_samples)"),
    afters: list[Path] = typer.Argument(..., metavar="AFTER_DIR",
                                        help="lm-eval --output_path of each fine-tuned model (same tasks)"),
    output: Path | None = typer.Option(None, "--output", "-o", help="sweep directory to create (absent or empty)"),
    out: Path | None = old_out_option(),
    name: list[str] | None = typer.Option(None, "--name", help="row name of each AFTER run, in order "
                                          "(repeatable; default: the directory names)"),
    metric: str | None = typer.Option(None, help="per-item accuracy metric for em_before/em_after "
                                      "(default: acc, else exact_match)"),
) -> None:
    """Match lm-eval sample logs by (task, doc_id): F = loss increase of the gold continuation (total nats)."""
    from forgetscope.lm_eval_logs import import_lm_eval

    out = option_alias(output, out, old="--out", new="--output")
    if out is None:
        fail("name the sweep directory to create: --output DIR")
    matrix = import_lm_eval(before, list(afters), out, names=name or None, metric=metric)
    m, n = matrix.shape
    tasks = matrix.upstream["lm_eval_task"].nunique() if matrix.upstream is not None else 0
    skipped = matrix.meta.get("lm_eval_skipped") or {}
    left = ("; left out (no gold log-likelihood): "
            + ", ".join(f"{t} ({k})" for t, k in skipped.items())) if skipped else ""
    console.print(f"imported {m} run(s) x {n} items of {tasks} lm-eval task(s), F in total nats per item"
                  f"{left} -> {out}", highlight=False, soft_wrap=True)
