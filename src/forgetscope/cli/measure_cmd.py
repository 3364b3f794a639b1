"""`forgetscope measure`: what did my existing fine-tunes forget? One row per fine-tune, nothing trained."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from forgetscope.cli.app import app, console, emit_json, err_console, json_mode

if TYPE_CHECKING:
    from forgetscope.experiments.measure import MeasureResult


def _json_doc(result: MeasureResult, kinds: list[str], top: int) -> dict:
    """Per kind, each fine-tune's mean F, share F>0 and max F (the summary table's numbers) and its ``top``
    most forgotten examples."""
    import warnings

    import numpy as np

    from forgetscope.measure.forgetting import forgotten_share

    doc: dict = {"output": str(result.path), "measured": result.measured, "resumed": result.resumed,
                 "notes": result.notes, "kinds": {}}
    for k in kinds:
        sub = result.matrix.select_kind(k)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a row with no measured entry gives NaN (null)
            rows = [{"finetune": name, "mean_forgetting": float(np.nanmean(row)), "share_forgotten": forgotten_share(row),
                     "max_forgetting": float(np.nanmax(row)), "n_measured": int(np.isfinite(row).sum())}
                    for name, row in zip(sub.row_names, sub.values, strict=True)]
        shown = result.top(top, kind=None if k == "all" else k)
        doc["kinds"][k] = {"summary": rows, "top": shown.to_dict("records")}
    return doc


@app.command()
def measure(
    config: Path | None = typer.Argument(None, help="measure config (YAML: base, finetunes, upstream, eval, output)"),
    model: list[str] = typer.Option([], "--model", help="a fine-tuned checkpoint: local directory, .gguf file or "
                                                         "hub id; repeatable"),
    adapter: list[Path] = typer.Option([], "--adapter", help="a LoRA (peft) adapter directory trained on the base; "
                                                             "repeatable"),
    base: str | None = typer.Option(None, "--base", help="the base model (default: the config's, else the offline "
                                                         "SmolLM2-135M-Instruct)"),
    upstream: str | None = typer.Option(None, "--upstream", help="upstream examples: demo (default), a data file "
                                                                 "or hf:NAME[:CONFIG]"),
    n: int | None = typer.Option(None, "--n", min=1, help="how many upstream examples (default: the demo's, or "
                                                          "every example of a file)"),
    eval_max_length: int | None = typer.Option(None, min=2, help="evaluation tokens per upstream example "
                                               "(default: 512 capped at the model's context)"),
    output: Path | None = typer.Option(None, "--output", "-o", help="sweep directory to write or resume "
                                                                   "(default: the config's, else sweeps/measured)"),
    device: str | None = typer.Option(None, help="auto, cpu, cuda, ..."),
    top: int = typer.Option(10, min=1, help="how many of each fine-tune's most forgotten texts to print"),
    kind: str | None = typer.Option(None, help="print only this kind: lm or instruction (default: each kind present)"),
    overwrite: bool = typer.Option(False, help="replace an output that holds other measurements"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON document (per fine-tune summary and top "
                                 "forgotten examples, per kind) on stdout; tables and info go to stderr"),
) -> None:
    """Measure existing fine-tunes (checkpoints or LoRA adapters) against their base on an upstream set."""
    from forgetscope.cli.run_cmd import report_kinds, summary_table
    from forgetscope.data.types import check_kind
    from forgetscope.experiments.measure import build_config, measure_finetunes

    json_mode(as_json)
    if kind is not None:
        check_kind(kind)
    cfg = build_config(config, models=model, adapters=adapter, base=base, output=output, device=device)
    if upstream is not None or n is not None or eval_max_length is not None:  # on top of the config's
        up = {**cfg.upstream.model_dump(), **({"source": upstream} if upstream is not None else {}),
              **({"n": n} if n is not None else {})}
        ev = {**cfg.eval.model_dump(), **({"max_length": eval_max_length} if eval_max_length is not None else {})}
        cfg = build_config(cfg, upstream=up, eval=ev)
    result = measure_finetunes(cfg, overwrite=overwrite)
    for note in result.notes:
        err_console.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)
    if result.resumed:
        console.print(f"already measured, skipped: {', '.join(result.resumed)}", highlight=False)
    matrix = result.matrix
    for k in report_kinds(matrix, kind):
        console.print(summary_table(matrix.select_kind(k), k))
        shown = result.top(top, kind=None if k == "all" else k)
        for name, rows in shown.groupby("finetune", sort=False):
            table = Table(title=f"{name}: the {len(rows)} most forgotten {k} examples (F = loss after − before, "
                                "nats/token; + = forgotten)")
            for c in ("rank", "example", "F", "before→after", "text"):
                table.add_column(c, justify="left" if c in ("example", "text") else "right",
                                 overflow="fold")
            for r in rows.to_dict("records"):
                table.add_row(str(r["rank"]), str(r["example_id"]), f"{r['forgetting']:+.3f}",
                              f"{r['loss_before']:.3f}→{r['loss_after']:.3f}", str(r["text"]))
            console.print(table)
    console.print(f"[bold green]results:[/] {result.path}  ({len(result.measured)} measured now, "
                  f"{matrix.shape[0]} fine-tunes x {matrix.shape[1]} upstream examples; read it with "
                  "forgetscope analyze / predict / report)", highlight=False)
    if as_json:
        emit_json(_json_doc(result, report_kinds(matrix, kind), top))
