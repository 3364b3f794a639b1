"""`forgetscope run CONFIG.yaml` and `forgetscope demo`: measure a forgetting matrix."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import typer
from rich.table import Table

from forgetscope.cli.app import app, console
from forgetscope.errors import ForgetscopeError
from forgetscope.store import ForgettingMatrix


def summary_table(matrix: ForgettingMatrix, kind: str = "all") -> Table:
    """Per-run summary of one kind of upstream example: task learning and upstream forgetting.

    "share F>0" is the share of *measured* entries that are forgotten (excluded entries left out); for
    instruction examples with gold answers, "answers lost" is the share of the answers the base model
    got right that the fine-tuned model no longer gets (binary forgetting).
    """
    from forgetscope.data.types import KIND_LABELS
    from forgetscope.measure.forgetting import forgotten_share
    from forgetscope.predict.binary import binary_forgetting

    sub = matrix.select_kind(kind)
    binary = None
    if kind == "instruction" and sub.path is not None:
        try:
            binary = binary_forgetting(sub)
        except ForgetscopeError:
            binary = None
    title = f"{KIND_LABELS[kind]}: {sub.shape[0]} runs x {sub.shape[1]} examples (F in nats; + = forgotten)"
    table = Table(title=title)
    table.add_column("run", justify="left", overflow="fold", min_width=22)
    cols = ["task loss before→after", "mean F", "share F>0", "max F"]
    if binary is not None and np.isfinite(binary.values).any():
        cols.append("answers lost")
    else:
        binary = None
    for col in cols:
        table.add_column(col, justify="right")
    runs = sub.runs.set_index("run_id") if sub.runs is not None and "run_id" in sub.runs else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a row with no measured entry prints nan
        for i, name in enumerate(sub.row_names):
            row = sub.values[i]
            learn = ""
            if runs is not None and "task_loss_before" in runs:
                r = runs.loc[name]
                learn = f"{r['task_loss_before']:.3f}→{r['task_loss_after']:.3f}"
            cells = [name, learn, f"{np.nanmean(row):+.4f}", _pct(forgotten_share(row)), f"{np.nanmax(row):+.3f}"]
            if binary is not None:
                lost = binary.values[i]
                n = int(np.isfinite(lost).sum())
                cells.append(f"{int(np.nansum(lost))}/{n}" if n else "–")
            table.add_row(*cells)
    return table


def family_table(matrix: ForgettingMatrix, kind: str) -> Table | None:
    """Per task family (instruction / plain_text): do its tasks forget, above seed noise, while learning?"""
    from forgetscope.analysis.regime import family_summary

    if matrix.runs is None or "family" not in matrix.runs or "task" not in matrix.runs:
        return None
    fam = family_summary(matrix)
    table = Table(title=f"{kind}: per task family", caption="tasks F̄>0: share of tasks whose mean F > 0; "
                  "seed r: mean correlation of two seeds' rows; learned: runs whose task loss fell")
    table.add_column("family", no_wrap=True, min_width=11)
    for col in ("tasks", "runs", "tasks F̄>0", "entries F>0", "mean F", "seed r", "learned"):
        table.add_column(col, justify="right")
    for r in fam.itertuples():
        corr = "–" if not np.isfinite(r.seed_corr) else f"{r.seed_corr:.2f}"
        table.add_row(str(r.family), str(r.n_tasks), str(r.n_runs), _pct(r.share_tasks_forgetting),
                      _pct(r.share_entries_forgotten), f"{r.mean_forgetting:+.4f}", corr,
                      _pct(r.share_runs_learning))
    return table


def _pct(x: float) -> str:
    return "–" if not np.isfinite(x) else f"{x:.0%}"


def report_kinds(matrix: ForgettingMatrix, kind: str | None = None) -> list[str]:
    """The kinds a summary shows: ``kind`` alone, else every kind present (``all`` when kinds are unknown)."""
    if kind is not None:
        return [kind]
    return list(matrix.kind_counts()) or ["all"]


def _report(matrix: ForgettingMatrix, output: Path, kind: str | None = None) -> None:
    from forgetscope.store import SweepStore

    counts = matrix.kind_counts()
    parts = ", ".join(f"{n} {k}" for k, n in counts.items())
    console.print(f"[bold]forgetting matrix {matrix.shape[0]} x {matrix.shape[1]}[/]"
                  + (f" ({parts} upstream examples)" if parts else ""))
    for k in report_kinds(matrix, kind):
        sub = matrix.select_kind(k)
        console.print(summary_table(sub, k))
        families = family_table(sub, k)
        if families is not None:
            console.print(families)
        if sub.upstream is not None and "loss_before" in sub.upstream:
            console.print(f"{k} upstream loss before fine-tuning: mean {sub.upstream['loss_before'].mean():.3f} "
                          "nats/token")
    store = SweepStore(output)
    ev = store.read_manifest().get("eval") if store.exists() else None
    if ev:
        console.print(f"evaluation: max_length {ev['max_length']}, {ev['truncated_examples']} of "
                      f"{ev['n_upstream']} upstream examples truncated ({ev['truncated_tokens']} tokens dropped)"
                      + (f", {ev['device']}/{ev['dtype']}" if "device" in ev and "dtype" in ev else ""))
    console.print(f"[bold green]results:[/] {output}  (F.npy, forgetting.parquet, runs.parquet, upstream.parquet)")


def _prepare(cfg, kind: str | None):
    """The sweep's session, with a requested kind checked against its upstream set before anything runs."""
    from forgetscope.data.types import check_kind, require_kind
    from forgetscope.experiments import SweepSession

    if kind is not None:
        check_kind(kind)
    session = SweepSession.prepare(cfg)
    if kind is not None:
        require_kind(session.upstream, kind)
    return session


@app.command()
def run(
    config: Path = typer.Argument(..., help="sweep config (YAML)"),
    output: Path | None = typer.Option(None, "--output", "-o", help="sweep directory (default: the config's "
                                       "'output')"),
    executor: str | None = typer.Option(None, help="local, ray or slurm (default: the config's 'executor')"),
    overwrite: bool = typer.Option(False, help="replace an existing, different sweep in the output directory"),
    kind: str | None = typer.Option(None, help="summarise only this kind: lm, instruction or all "
                                    "(default: each kind present)"),
    repair: bool = typer.Option(False, help="on resume, move the files of runs that cannot be read back "
                                "(truncated, changed) to runs/damaged/ and run those runs again"),
    check: bool = typer.Option(False, "--check", help="only validate the config and print the plan (runs, tasks x "
                               "seeds, upstream examples, what the output holds): no weights loaded, nothing "
                               "trained or written"),
) -> None:
    """Fine-tune the base model on each task and measure the forgetting matrix (resumes if killed)."""
    from forgetscope.config import load_config
    from forgetscope.experiments import run_sweep

    if check:
        return _check(config, output, executor, kind)
    from forgetscope.store.io import check_output_dir

    cfg = load_config(config)
    out = check_output_dir(output or cfg.output)  # a file or a read-only folder: before data or model
    matrix = run_sweep(cfg, output=out, executor=executor, overwrite=overwrite, session=_prepare(cfg, kind),
                       repair=repair)
    _report(matrix, Path(out), kind)


def _check(config: Path, output: Path | None, executor: str | None, kind: str | None) -> None:
    """``run --check``: the plan of a config, printed; nothing loaded onto a device, trained or written."""
    from rich.markup import escape

    from forgetscope.config import load_config
    from forgetscope.data.types import check_kind
    from forgetscope.experiments.check import check_sweep

    if kind is not None:
        check_kind(kind)
    plan = check_sweep(load_config(config), output=output, executor=executor)
    if kind is not None and kind != "all" and kind not in plan.upstream:
        raise ForgetscopeError(f"no {kind!r} examples in the upstream set; kinds present: "
                               + ", ".join(f"{k} ({n})" for k, n in plan.upstream.items()))
    console.print(f"[bold green]{escape(str(config))}: ok[/]", highlight=False)
    for line in plan.lines()[:-1]:
        console.print(line, highlight=False, markup=False)
    table = Table(title="tasks")
    for c in ("task", "family", "train", "held-out", "seeds", "runs"):
        table.add_column(c, justify="left" if c in ("task", "family", "seeds") else "right")
    for t in plan.tasks:
        table.add_row(t["name"], t["family"] or "–", str(t["n_train"]), str(t["n_heldout"]),
                      ", ".join(map(str, t["seeds"])), str(t["runs"]))
    console.print(table)
    console.print(plan.lines()[-1], highlight=False, markup=False)


@app.command()
def demo(
    output: Path = typer.Option(Path("sweeps/demo"), "--output", "-o", help="sweep directory"),
    tasks: int | None = typer.Option(None, min=1, help="number of demo tasks: the preset's 6 first, then the "
                                     "other shipped tasks (default: the preset's 6)"),
    task: list[str] = typer.Option([], "--task", help="a demo task by name; repeatable (default: the preset)"),
    upstream: int | None = typer.Option(None, min=0, help="number of upstream plain-text (lm) examples "
                                        "(default 96; 0: instruction pairs only; with --upstream-file: how "
                                        "many of its examples, default all)"),
    instruct: int = typer.Option(24, min=0, help="number of upstream instruction pairs (with gold answers)"),
    upstream_file: Path | None = typer.Option(None, help="an upstream data file in place of the demo sets "
                                              "(plain text and/or prompt/response pairs)"),
    n_train: int = typer.Option(120, min=2, help="training examples per task"),
    steps: int = typer.Option(40, min=1, help="fine-tuning steps per task"),
    batch_size: int = typer.Option(8, min=1),
    lr: float = typer.Option(5e-4),
    max_length: int = typer.Option(96, min=8, help="training tokens per example (longer ones are truncated)"),
    eval_max_length: int | None = typer.Option(None, min=8, help="evaluation tokens per upstream example "
                                               "(default: 512 capped at the model's context; truncation is "
                                               "counted)"),
    method: str = typer.Option("lora", help="lora or full"),
    lora_rank: int = typer.Option(8, min=1),
    target_module: list[str] = typer.Option([], "--target-module",
                                            help="LoRA target module; repeatable (default: every linear layer)"),
    chat: str = typer.Option("auto", help="chat template for prompt/response pairs: auto, on or off"),
    lm_targets: str = typer.Option("human", help="plain-text upstream set: human (human-written text), "
                                   "base_samples (the base model's T=1 continuations), base_continuations "
                                   "(its greedy ones: biased towards forgetting) or text (the original set)"),
    instruct_targets: str = typer.Option("base_samples", help="instruction responses scored: base_samples (the "
                                         "base model's own answers) or gold (the gold answers)"),
    null_control: bool = typer.Option(True, help="measure a random update of each run's size beside it"),
    kind: str | None = typer.Option(None, help="summarise only this kind: lm, instruction or all "
                                    "(default: each kind present)"),
    seed: int = typer.Option(0),
    model: str = typer.Option("smollm2-135m-instruct", help="base model (default: the offline SmolLM2; "
                              "gemma3-270m with the gemma3 extra)"),
    executor: str = typer.Option("local"),
    overwrite: bool = typer.Option(False, help="replace an existing, different sweep in the output directory"),
) -> None:
    """Run the default offline demo sweep (SmolLM2-135M, a preset of the demo suite, LoRA) and summarise it."""
    from forgetscope.experiments import run_sweep
    from forgetscope.experiments.demo import ALL_LINEAR, demo_config

    chat_value = {"auto": "auto", "on": True, "off": False}.get(chat)
    if chat_value is None:
        raise ForgetscopeError(f"--chat must be auto, on or off, got {chat!r}")
    n_upstream = upstream if upstream is not None or upstream_file is not None else 96
    cfg = demo_config(output=output, n_upstream=n_upstream, n_instruct=instruct, n_tasks=tasks, n_train=n_train,
                      steps=steps, batch_size=batch_size, lr=lr, max_length=max_length, method=method, seed=seed,
                      model=model, tasks=task or None, upstream_source=upstream_file, lora_rank=lora_rank,
                      target_modules=target_module or ALL_LINEAR,
                      eval_max_length=eval_max_length or "auto", chat=chat_value, lm_targets=lm_targets,
                      instruct_targets=instruct_targets, null_control=null_control)
    matrix = run_sweep(cfg, output=output, executor=executor, overwrite=overwrite, session=_prepare(cfg, kind))
    _report(matrix, output, kind)
