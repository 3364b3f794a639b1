"""`forgetscope forecast`: which upstream examples a fine-tuned model forgot, from a probe of a few of them."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from forgetscope.cli.app import app, console, emit_json, fail, json_mode, old_out_option, option_alias


def _fmt(x: float, spec: str = ".3f") -> str:
    return "–" if x != x else format(x, spec)


@app.command()
def forecast(
    sweep: Path = typer.Argument(..., help="sweep directory whose base losses and known rows are reused"),
    model: str | None = typer.Option(None, "--model", help="the fine-tuned model: a local dir, .gguf file or hub id "
                                                           "(with --adapter: the base it applies to, default the "
                                                           "sweep's model)"),
    adapter: Path | None = typer.Option(None, "--adapter", help="a LoRA adapter directory trained on the sweep's model"),
    task: Path | None = typer.Option(None, "--task", help="fine-tune the sweep's model on this data file first "
                                                          "(the sweep's train config), then forecast"),
    probe: int = typer.Option(30, help="upstream examples to evaluate (the rest are predicted)"),
    predictor: str = typer.Option("auto", help="auto (lowest task-grouped CV RMSE on the known rows), additive, "
                                               "knn, knn-baseline, lowrank, additive-features, lowrank-features "
                                               "(with the sweep's per-example loss_before and length), semantic "
                                               "(a pure text prior) or semantic-knn (both need --task)"),
    kind: str = typer.Option("lm", help="upstream examples of this kind: lm or instruction"),
    top: int = typer.Option(20, help="how many of the most forgotten examples to print"),
    verify: bool = typer.Option(False, help="also evaluate every example and score the forecast against it"),
    probe_method: str = typer.Option("random", help="random or active (highest-leverage examples)"),
    seed: int = typer.Option(0, help="seed for the probe draw and the predictor"),
    output: Path | None = typer.Option(None, "--output", "-o", help="output folder (default SWEEP/forecast/<name>)"),
    out: Path | None = old_out_option(),
    coverage: float | None = typer.Option(None, help="coverage of the split-conformal interval in (0, 1) (default "
                                          "0.9 when the sweep has at least 3 known tasks, else no interval)"),
    null_control: bool = typer.Option(False, help="with --task: also measure the null control (a random "
                                                  "perturbation the size of the update) on the evaluated examples"),
    interval_kind: str = typer.Option("normalized", "--interval",
                                      help="normalized (the half-width scales with the RMS of the row's probe "
                                           "residuals) or absolute (one half-width for every row)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON document (forecast.json: predictor, cost, "
                                 "top examples, verify scores) on stdout; tables and info go to stderr"),
) -> None:
    """Evaluate a fine-tuned model on --probe upstream examples and predict its forgetting on the rest."""
    json_mode(as_json)
    out = option_alias(output, out, old="--out", new="--output")
    if null_control and task is None:
        fail("--null-control perturbs the update of a run trained here: use it with --task")
    if task is not None:
        if model is not None or adapter is not None:
            fail("--task fine-tunes the sweep's own base model; leave out --model and --adapter")
        from forgetscope.experiments.forecast import forecast_task

        result = forecast_task(sweep, task, probe=probe, predictor=predictor, kind=kind, top=top, verify=verify,
                               probe_method=probe_method, seed=seed, out=out, coverage=coverage,
                               null_control=null_control, interval=interval_kind)
    else:
        if model is None and adapter is None:
            fail("name what to forecast: --model (a fine-tuned model), --adapter (a LoRA adapter of the "
                 "sweep's model) or --task (a data file to fine-tune on first)")
        from forgetscope.experiments.forecast import forecast as run_forecast

        result = run_forecast(sweep, model, adapter=adapter, probe=probe, predictor=predictor, kind=kind, top=top,
                              verify=verify, probe_method=probe_method, seed=seed, out=out, coverage=coverage,
                              interval=interval_kind)
    cost = result.cost
    console.print(f"predictor [bold]{result.predictor}[/] ({result.settings.get('predictor_choice')}); "
                  f"evaluated {cost['probe_evaluations']} of {cost['n_examples']} {kind} examples "
                  f"({cost['inference_skipped']:.1%} of upstream inference skipped)")
    if result.selection is not None:
        sel = Table(title="predictor choice: task-grouped CV on the known rows (mean ± sd over draws)")
        for c in ("predictor", "RMSE", "Pearson", "F1(τ)"):
            sel.add_column(c, justify="left" if c == "predictor" else "right", overflow="fold")
        for row in result.selection.to_dict("records"):
            sel.add_row(str(row["predictor"]), f"{_fmt(row['rmse'], '.4f')} ± {_fmt(row['rmse_sd'], '.4f')}",
                        _fmt(row["pearson"]), _fmt(row["f1"]))
        console.print(sel)
    interval = result.settings.get("interval") or {}
    has_interval = "lower" in result.table
    band = (f"{interval['coverage']:.0%} interval: split-conformal, {interval['interval']}" if has_interval
            else f"± {result.uncertainty}; no calibrated interval: {interval.get('why', '')}")
    table = Table(title=f"top {top} predicted forgotten examples (F = loss increase, nats; {band})")
    for c in ("rank", "example", "F", "interval" if has_interval else "±", "source", "text"):
        table.add_column(c, justify="left" if c in ("example", "source", "text") else "right",
                         overflow="fold")
    for row in result.top(top).to_dict("records"):
        spread = (f"[{row['lower']:+.3f}, {row['upper']:+.3f}]" if has_interval else _fmt(row["uncertainty"]))
        table.add_row(str(row["rank"]), str(row["example_id"]), f"{row['forgetting']:+.3f}", spread,
                      "observed" if row["observed"] else "predicted", str(row["text"]))
    console.print(table)
    if result.verify is not None:
        ver = Table(title=f"verify: against the measured row on the {int(result.verify['scored'].iloc[0])} unprobed "
                          f"examples (forgotten = F > τ = {result.settings['tau']:.3g})")
        k = int(result.verify["k"].iloc[0])
        for c in ("method", "RMSE", "Pearson", "Spearman", "F1(τ)", f"P@{k}", f"overlap@{k}"):
            ver.add_column(c, justify="left" if c == "method" else "right", overflow="fold")
        for row in result.verify.to_dict("records"):
            ver.add_row(str(row["method"]), _fmt(row.get("rmse", float("nan")), ".4f"),
                        _fmt(row.get("pearson", float("nan"))), _fmt(row.get("spearman", float("nan"))),
                        _fmt(row["f1"]), _fmt(row.get("precision@k", float("nan"))),
                        _fmt(row.get("overlap@k", float("nan"))))
        console.print(ver)
        first = result.verify.iloc[0]
        if "interval_coverage" in result.verify and first["interval_coverage"] == first["interval_coverage"]:
            console.print(f"interval: {first['interval_coverage']:.1%} of this task's unprobed examples inside "
                          f"(nominal {first['nominal_coverage']:.0%}), mean width {first['interval_width']:.3f} nats",
                          highlight=False)
            held = interval.get("held_out_tasks")
            if held:  # one task's coverage says little: the known tasks' per-task coverage beside it
                from forgetscope.predict.conformal import coverage_text

                parts = ("coverage", "coverage_task_min", "coverage_task_p10", "coverage_tasks_below")
                console.print("the same interval on the known tasks, each held out in turn: "
                              + coverage_text(*(held[k] for k in parts), interval["coverage"]), highlight=False)
    console.print(f"wrote {result.paths['table']} and {result.paths['summary'].name}")
    if as_json:
        import json

        emit_json({"table": str(result.paths["table"]), **json.loads(result.paths["summary"].read_text())})
