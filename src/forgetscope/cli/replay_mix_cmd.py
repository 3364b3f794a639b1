"""`forgetscope replay-mix`: the upstream examples to mix into your own fine-tuning data."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from forgetscope.cli.app import app, console, fail


@app.command("replay-mix")
def replay_mix(
    sweep: Path = typer.Argument(..., help="sweep directory: the known rows and the upstream texts to replay"),
    probe_from: str | None = typer.Option(None, "--probe-from", help="a first fine-tune (local dir, .gguf or hub "
                                                                     "id) whose probe forecast chooses the examples"),
    adapter: Path | None = typer.Option(None, "--adapter", help="a LoRA adapter of the sweep's model to probe "
                                                                "instead of --probe-from"),
    forecast_dir: Path | None = typer.Option(None, "--forecast", help="a folder `forgetscope forecast` wrote"),
    n: int | None = typer.Option(None, "--n", help="how many examples to replay"),
    task_examples: int | None = typer.Option(None, "--task-examples",
                                             help="task examples your fine-tune trains on (steps x batch): the "
                                                  "budget is int(task_examples x ratio) + 1"),
    ratio: float = typer.Option(1 / 32, help="replay examples per task example (the reference's 1/32)"),
    temperature: float = typer.Option(0.1, help="softmax temperature of the sampling weights"),
    weighting: str = typer.Option("softmax", help="softmax or linear"),
    predictor: str = typer.Option("auto", help="the predictor that completes the probed row"),
    probe: int = typer.Option(30, help="upstream examples evaluated on the first fine-tune"),
    kind: str = typer.Option("lm", help="upstream examples of this kind: lm or instruction"),
    seed: int = typer.Option(0, help="seed of the probe and the draws"),
    train_seed: int = typer.Option(0, help="your fine-tune's seed (the draws' stream, as forgetscope's own loop)"),
    output: Path | None = typer.Option(None, "--output", "-o", help="output folder (default SWEEP/replay/<name>)"),
) -> None:
    """Write the upstream examples predicted to be forgotten as JSONL for datasets / TRL / LLaMA-Factory."""
    if probe_from is None and adapter is None and forecast_dir is None:
        fail("name where the forgetting values come from: --probe-from MODEL, --adapter DIR or --forecast DIR")
    from forgetscope.experiments.replay_mix import replay_examples
    from forgetscope.store.layout import SweepLayout

    name = Path(str(forecast_dir or adapter or probe_from)).name or "mix"
    out = output or SweepLayout(sweep).replay_dir(name)
    mix = replay_examples(sweep, forecast_dir=forecast_dir, probe_from=probe_from, adapter=adapter, kind=kind, n=n,
                          task_examples=task_examples, ratio=ratio, weighting=weighting, temperature=temperature,
                          seed=seed, train_seed=train_seed, predictor=predictor, probe=probe, out=out)
    table = Table(title=f"{len(mix.ids)} replay examples of {mix.settings['pool']} (softmax(F̂/{temperature}) "
                        "without replacement, in draw order)" if weighting == "softmax" else
                  f"{len(mix.ids)} replay examples of {mix.settings['pool']} (in draw order)")
    for c in ("draw", "example", "F̂", "text"):
        table.add_column(c, justify="right" if c in ("draw", "F̂") else "left",
                         overflow="fold" if c == "text" else "ellipsis")
    text_col = "text" if kind == "lm" else "prompt"
    for row in mix.table.head(20).to_dict("records"):
        table.add_row(str(row["draw"]), str(row["example_id"]), f"{row['predicted_forgetting']:+.3f}",
                      str(row[text_col])[:100])
    console.print(table)
    p = mix.settings["interleave_probabilities"]
    console.print(f"wrote {mix.paths['jsonl']} and {mix.paths['json'].name}; mix it in with "
                  f"datasets.interleave_datasets([task, replay], probabilities=[{p[0]:.4f}, {p[1]:.4f}], "
                  "stopping_strategy='first_exhausted') or concatenate and shuffle")
