"""`forgetscope predict`: cross-validate forgetting predictors from probe sets (tables, CSV/JSON, figures)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from forgetscope.cli.analyze_cmd import KIND_HELP, default_out, load_kind
from forgetscope.cli.app import app, console


def _fmt(x: float, spec: str = ".4f") -> str:
    return "–" if x != x else format(x, spec)  # NaN -> dash


@app.command()
def predict(
    source: Path = typer.Argument(..., help="sweep directory or matrix file (.npy/.csv/.parquet)"),
    probe: list[float] = typer.Option([0.05], "--probe", "-p",
                                      help="probe size: fraction of examples (<= 1) or a count; repeatable"),
    predictor: list[str] = typer.Option(["additive", "knn", "lowrank"], "--predictor", "-m",
                                        help="zero, additive, knn, knn-baseline, lowrank, logistic, "
                                             "semantic; repeatable"),
    probe_method: str = typer.Option("random", help="random or active (highest-leverage examples)"),
    folds: int = typer.Option(5, help="cross-validation folds over tasks"),
    seed: int = typer.Option(0, help="seed for folds and random probe sets"),
    threshold: float = typer.Option(0.0, help="'forgotten' means F > threshold (F1, precision@k)"),
    rank: int = typer.Option(3, help="rank for lowrank and logistic"),
    ridge: float = typer.Option(1.0, help="ridge multiplier for lowrank / logistic"),
    method: str = typer.Option("auto", help="lowrank factorisation: auto, svd or als"),
    neighbors: int = typer.Option(5, help="k for knn"),
    similarity: str = typer.Option("cosine", help="knn similarity: cosine or rmse"),
    k: list[int] = typer.Option([10, 100], "--k", help="k for precision/recall@k; repeatable"),
    out: Path | None = typer.Option(None, help="output folder (default SWEEP/predict/KIND)"),
    figures: bool = typer.Option(True, help="write PNG figures"),
    kind: str | None = typer.Option(None, help=KIND_HELP),
) -> None:
    """Leave-tasks-out CV: predict held-out tasks' rows from a probe set, scored against `additive`."""
    from forgetscope.analysis import plots
    from forgetscope.predict import evaluate

    matrix, kind = load_kind(source, kind)
    params = {"lowrank": {"rank": rank, "ridge": ridge, "method": method, "seed": seed},
              "logistic": {"rank": rank, "ridge": ridge, "threshold": threshold, "seed": seed},
              "knn": {"k": neighbors, "similarity": similarity}}
    result = evaluate(matrix, list(dict.fromkeys(predictor)), probe=list(probe), n_folds=folds, seed=seed,
                      probe_method=probe_method, threshold=threshold, ks=tuple(k), params=params)
    summary = result.summary()
    k0 = k[0] if k else None
    table = Table(title=f"leave-tasks-out CV, {matrix.shape[0]} tasks x {matrix.shape[1]} {kind} examples, "
                        f"{probe_method} probes")
    cols = ["predictor", "probe", "skipped", "RMSE", "RMSE/additive", "Pearson", "Spearman", "F1"]
    if k0:
        cols += [f"P@{k0}", f"R@{k0}"]
    for c in cols:
        table.add_column(c, justify="left" if c == "predictor" else "right")
    for row in summary.to_dict("records"):
        cells = [row["predictor"], f"{row['probe_size']} ({row['probe_frac']:.1%})",
                 f"{row['inference_skipped']:.1%}", _fmt(row["rmse"]), _fmt(row["rmse_ratio_vs_additive"], ".3f"),
                 _fmt(row["pearson"], ".3f"), _fmt(row["spearman"], ".3f"), _fmt(row["f1"], ".3f")]
        if k0:
            cells += [_fmt(row[f"precision@{k0}"], ".3f"), _fmt(row[f"recall@{k0}"], ".3f")]
        table.add_row(*cells)
    console.print(table)

    out_dir = out or default_out(source, "predict", kind)
    paths = result.save(out_dir)
    if figures:
        largest = result.scatter["probe_frac"].max()
        plots.scatter_pred_true(result.scatter[result.scatter["probe_frac"] == largest], out_dir / "scatter.png")
        curves = result.curves[result.curves["probe_frac"] == result.curves["probe_frac"].max()]
        plots.precision_at_k(curves, out_dir / "precision_at_k.png")
    console.print(f"wrote {paths['cv'].parent}")
