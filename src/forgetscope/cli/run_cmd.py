"""`forgetscope run CONFIG.yaml` and `forgetscope demo`: measure a forgetting matrix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer
from rich.table import Table

from forgetscope.cli.app import app, console
from forgetscope.store import ForgettingMatrix


def summary_table(matrix: ForgettingMatrix) -> Table:
    """Per-run summary: task learning and upstream forgetting."""
    table = Table(title=f"forgetting matrix {matrix.shape[0]} x {matrix.shape[1]} (nats; + = forgotten)")
    table.add_column("run", justify="left", overflow="fold", min_width=22)
    for col in ("task loss before→after", "mean F", "share F>0", "max F"):
        table.add_column(col, justify="right")
    runs = matrix.runs.set_index("run_id") if matrix.runs is not None and "run_id" in matrix.runs else None
    for i, name in enumerate(matrix.row_names):
        row = matrix.values[i]
        learn = ""
        if runs is not None and "task_loss_before" in runs:
            r = runs.loc[name]
            learn = f"{r['task_loss_before']:.3f}→{r['task_loss_after']:.3f}"
        table.add_row(name, learn, f"{np.nanmean(row):+.4f}", f"{np.nanmean(row > 0):.0%}", f"{np.nanmax(row):+.3f}")
    return table


def _report(matrix: ForgettingMatrix, output: Path) -> None:
    console.print(summary_table(matrix))
    if matrix.upstream is not None and "loss_before" in matrix.upstream:
        console.print(f"upstream loss before fine-tuning: mean {matrix.upstream['loss_before'].mean():.3f} nats/token")
    console.print(f"[bold green]results:[/] {output}  (F.npy, forgetting.parquet, runs.parquet, upstream.parquet)")


@app.command()
def run(
    config: Path = typer.Argument(..., help="sweep config (YAML)"),
    output: Path | None = typer.Option(None, help="sweep directory (default: the config's 'output')"),
    executor: str | None = typer.Option(None, help="local or ray (default: the config's 'executor')"),
    overwrite: bool = typer.Option(False, help="replace an existing, different sweep in the output directory"),
) -> None:
    """Fine-tune the base model on each task and measure the forgetting matrix (resumes if killed)."""
    from forgetscope.config import load_config
    from forgetscope.experiments import run_sweep

    cfg = load_config(config)
    out = output or cfg.output
    matrix = run_sweep(cfg, output=out, executor=executor, overwrite=overwrite)
    _report(matrix, Path(out))


@app.command()
def demo(
    output: Path = typer.Option(Path("sweeps/demo"), help="sweep directory"),
    tasks: int | None = typer.Option(None, min=1, help="number of demo tasks (default: all)"),
    upstream: int = typer.Option(160, min=2, help="number of upstream plain-text examples"),
    instruct: int = typer.Option(32, min=0, help="number of upstream instruction pairs (exact match)"),
    n_train: int = typer.Option(120, min=2, help="training examples per task"),
    steps: int = typer.Option(10, min=1, help="fine-tuning steps per task"),
    batch_size: int = typer.Option(8, min=1),
    lr: float = typer.Option(2e-3),
    max_length: int = typer.Option(96, min=8, help="tokens per example (longer ones are truncated)"),
    method: str = typer.Option("lora", help="lora or full"),
    seed: int = typer.Option(0),
    model: str = typer.Option("smollm2-135m-instruct", help="base model (default: the offline SmolLM2)"),
    executor: str = typer.Option("local"),
    overwrite: bool = typer.Option(False, help="replace an existing, different sweep in the output directory"),
) -> None:
    """Run the default offline demo sweep (SmolLM2-135M, demo suite, LoRA) and summarise it."""
    from forgetscope.experiments import run_sweep
    from forgetscope.experiments.demo import demo_config

    cfg = demo_config(output=output, n_upstream=upstream, n_instruct=instruct, n_tasks=tasks, n_train=n_train, steps=steps,
                      batch_size=batch_size, lr=lr, max_length=max_length, method=method, seed=seed, model=model)
    matrix = run_sweep(cfg, output=output, executor=executor, overwrite=overwrite)
    _report(matrix, output)
