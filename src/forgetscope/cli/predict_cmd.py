"""`forgetscope predict`: evaluate forgetting predictors under the task-grouped protocol (tables, CSV/JSON, figures)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from forgetscope.cli.analyze_cmd import KIND_HELP, default_out, load_kind
from forgetscope.cli.app import app, console, emit_json, json_mode, old_out_option, option_alias


def _fmt(x: float, spec: str = ".4f") -> str:
    return "–" if x != x else format(x, spec)  # NaN -> dash


def _pm(row: dict, col: str, spec: str = ".3f") -> str:
    """``mean ± sd`` of a summary column (sd over draws)."""
    mean, sd = row.get(col, float("nan")), row.get(f"{col}_sd", float("nan"))
    return _fmt(mean, spec) if sd != sd else f"{_fmt(mean, spec)} ± {_fmt(sd, spec)}"


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


#: predictors that read per-example features of the upstream table
FEATURE_PREDICTORS = ("additive-features", "lowrank-features")


def _check_features(matrix, names: list[str], features: str | None, example_meta: str | None) -> list[str] | None:
    """The feature list for the feature predictors, checked against the upstream table before any fit."""
    wanted = _names(features)
    if not any(n in FEATURE_PREDICTORS for n in names):
        if wanted is not None:
            from forgetscope.errors import ConfigError

            raise ConfigError("--features is read only by " + " and ".join(FEATURE_PREDICTORS))
        return None
    from forgetscope.predict.features import encode_features, with_example_meta

    upstream = getattr(with_example_meta(matrix, example_meta) if example_meta else matrix, "upstream", None)
    encode_features(upstream, wanted)  # a missing column or an unencoded text column: one line, exit 2
    return wanted


def _noise_text(result) -> str:
    """The noise-floor lines under the table: the floor, tasks above noise, median share of the gap closed."""
    from forgetscope.predict.noise import ABOVE_NOISE

    pooled = "the table's pooled RMSE is dominated by the noisiest tasks"
    if not len(result.noise):
        return f"no task was run with several seeds: no noise floor; {pooled}"
    gaps = result.gap_summary()
    gaps = gaps[(gaps["probe_size"] == gaps["probe_size"].max()) & (gaps["predictor"] != "additive")]
    if not len(gaps):
        return f"noise floor of {len(result.noise)} tasks; {pooled}"
    first = gaps.iloc[0]
    parts = [f"{r['method']} {_fmt(r['gap_closed_median'], '.2f')} (per-task RMSE/additive {r['rmse_ratio_median']:.3f})"
             for r in gaps.to_dict("records")]
    return (f"noise floor of {first['n_tasks']} tasks with several seeds (median {first['median_floor_ratio']:.2f} × "
            f"additive's RMSE), {first['n_above_noise']} above noise (additive RMSE > {ABOVE_NOISE:g} × floor); "
            f"{pooled}\nshare of the gap additive → floor closed, median over the tasks above noise (probe "
            f"{first['probe_size']}): " + "; ".join(parts))


@app.command()
def predict(
    source: Path = typer.Argument(..., help="sweep directory or matrix file (.npy/.csv/.parquet)"),
    probe: list[float] = typer.Option([30], "--probe", "-p",
                                      help="probe size: a count of examples (or a fraction < 1); repeatable"),
    predictor: list[str] | None = typer.Option(
        None, "--predictor", "-m",
        help="zero, additive, column-mean, probe-mean, knn, knn-baseline, lowrank, logistic, semantic (a pure "
             "text prior from frozen MiniLM embeddings), semantic-knn (text-weighted neighbour rows), "
             "additive-features, lowrank-features (with per-example features of the upstream table); repeatable; "
             "default additive, knn, lowrank (logistic with --binary); trivial baselines are always added"),
    probe_method: str = typer.Option("random", help="random or active (highest-leverage examples)"),
    folds: int = typer.Option(5, help="cross-validation folds over tasks (all rows of a task leave together)"),
    draws: int = typer.Option(10, help="seeded probe draws; tables give mean ± sd over draws"),
    seed: int = typer.Option(0, help="seed for folds and probe draws"),
    test_tasks: str | None = typer.Option(None, help="fixed split: comma-separated test tasks, the rest known"),
    train_group: str | None = typer.Option(None, help="out-of-domain: train on this runs-table 'group'"),
    test_group: str | None = typer.Option(None, help="out-of-domain: test on this runs-table 'group'"),
    tau: float | None = typer.Option(None, help="noise margin: forgotten means F > tau (default: the sd of "
                                                "seed-to-seed differences, else 0.05 nats)"),
    binary: bool = typer.Option(False, help="binary forgetting (exact match lost): F1, precision, recall, AUC"),
    rank: int | None = typer.Option(None, help="rank for lowrank (default: task-grouped CV) and logistic "
                                               "(default 3, 5 with --binary)"),
    ridge: float = typer.Option(1.0, help="ridge multiplier for lowrank / logistic"),
    method: str = typer.Option("auto", help="lowrank factorisation: auto, svd or als"),
    neighbors: int = typer.Option(5, help="k for knn"),
    similarity: str = typer.Option("cosine", help="knn similarity: cosine or rmse"),
    k: list[int] = typer.Option([10, 100], "--k", help="k for precision/recall@k; repeatable"),
    output: Path | None = typer.Option(None, "--output", "-o", help="output folder (default SWEEP/predict/KIND)"),
    out: Path | None = old_out_option(),
    figures: bool = typer.Option(True, help="write PNG figures"),
    kind: str | None = typer.Option(None, help=KIND_HELP + "; instruction with --binary"),
    interval: str = typer.Option("normalized", help="conformal interval scored: normalized (half-width scaled by "
                                                    "each row's probe-residual RMS) or absolute (one half-width)"),
    features: str | None = typer.Option(
        None, help="example features for additive-features / lowrank-features: comma-separated upstream-table "
                   "columns, COLUMN:onehot for a text column, COLUMN:log for a length (default: loss_before, "
                   "n_tokens:log and category:onehot where the table has them)"),
    example_meta: str | None = typer.Option(
        None, help="join per-example metadata onto the upstream table by id: a JSONL/CSV/Parquet file with an "
                   "example_id or id column, or 'demo' (the shipped upstream sets' category and source)"),
    noise_floor: bool | None = typer.Option(
        None, "--noise-floor/--no-noise-floor",
        help="each task's noise floor from its seeds and the share of the gap additive → floor each predictor "
             "closes (default: where tasks have several seeds; --noise-floor requires them)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON document (the summary rows, protocol, "
                                 "paired task tests) on stdout; tables and info go to stderr"),
) -> None:
    """Predict held-out tasks' rows from probe sets (task-grouped CV or fixed/out-of-domain splits), against `additive`."""
    from forgetscope.analysis import plots
    from forgetscope.predict import evaluate, noise_margin
    from forgetscope.predict.evaluate import prediction_matrix
    from forgetscope.store import PredictLayout

    json_mode(as_json)
    matrix, kind = load_kind(source, kind or ("instruction" if binary else None))
    matrix = prediction_matrix(matrix, binary=binary)
    threshold = tau if binary or tau is not None else noise_margin(matrix)[0]  # the logistic predictor's cut
    names = list(dict.fromkeys(predictor or (["logistic"] if binary else ["additive", "knn", "lowrank"])))
    feature_list = _check_features(matrix, names, features, example_meta)
    if example_meta is not None:
        from forgetscope.predict.features import with_example_meta

        matrix = with_example_meta(matrix, example_meta)
    params = {"lowrank": {"rank": rank, "ridge": ridge, "method": method, "seed": seed},
              "logistic": {"rank": rank or (5 if binary else 3), "ridge": ridge,
                           "threshold": 0.0 if binary else float(threshold or 0.0), "seed": seed},
              "knn": {"k": neighbors, "similarity": similarity},
              **{name: {"features": feature_list, "seed": seed} for name in FEATURE_PREDICTORS}}
    result = evaluate(matrix, names, probe=list(probe), n_folds=folds, draws=draws, seed=seed,
                      probe_method=probe_method, tau=None if binary else tau, binary=binary,
                      test_tasks=_names(test_tasks), train_group=train_group, test_group=test_group,
                      ks=tuple(k), params=params, interval=interval, noise_floor=noise_floor)
    summary = result.summary()
    proto = result.protocol
    m, n = matrix.shape
    what = "binary forgetting" if binary else f"forgotten = F > τ = {proto['tau']:.3g} ({proto['tau_source']})"
    table = Table(title=f"{m} runs x {n} {kind} examples; {proto['splits']}; {draws} draws of {probe_method} probes; "
                        f"{what}; mean ± sd over draws")
    k0 = k[0] if k else None
    if binary:
        cols = ["method", "probe", "skipped", "F1", "precision", "recall", "AUC"]
    else:
        cols = ["method", "probe", "skipped", "RMSE (pooled)", "RMSE/additive", "Pearson", "Spearman", "F1(τ)"]
        if k0:
            cols += [f"P@{k0}", f"R@{k0}"]
    for c in cols:
        table.add_column(c, justify="left" if c == "method" else "right", overflow="fold")
    for row in summary.to_dict("records"):
        cells = [str(row["method"]), f"{row['probe_size']} ({row['probe_frac']:.1%})", f"{row['inference_skipped']:.1%}"]
        if binary:
            cells += [_pm(row, "f1"), _pm(row, "precision"), _pm(row, "recall"), _pm(row, "auc")]
        else:
            cells += [_pm(row, "rmse", ".4f"), _pm(row, "rmse_ratio_vs_additive"), _pm(row, "pearson"),
                      _pm(row, "spearman"), _pm(row, "f1")]
            if k0:
                cells += [_pm(row, f"precision@{k0}"), _pm(row, f"recall@{k0}")]
        table.add_row(*cells)
    console.print(table)
    if "coverage" in summary:
        from forgetscope.predict.conformal import coverage_text

        c = proto["coverage"]
        parts = ("coverage", "coverage_task_min", "coverage_task_p10", "coverage_tasks_below")
        cov = [f"{r['method']} {coverage_text(*(r[p] for p in parts), c)} (width {_fmt(r['interval_width'], '.3f')})"
               for r in summary.to_dict("records") if r.get("coverage") == r.get("coverage")]
        if cov:
            console.print(f"{c:.0%} split-conformal intervals ({proto['interval']}, as a forecast makes them), share "
                          "of unprobed entries inside (per-task figures within each draw, mean over draws):\n  "
                          + "\n  ".join(cov), highlight=False)

    if not binary:
        console.print(_noise_text(result), highlight=False)
    tests = result.task_tests()
    if len(tests):
        lines = [f"{r['method']} {r['mean_diff']:+.4f} [{_fmt(r['ci_low'], '+.4f')}, {_fmt(r['ci_high'], '+.4f')}], "
                 f"better on {r['tasks_better']}/{r['n_tasks']}, Wilcoxon p (Holm) {_fmt(r['p_wilcoxon_holm'], '.2g')}"
                 + (f" ({r['note']})" if r["note"] else "")
                 for r in tests.to_dict("records") if r["probe_size"] == tests["probe_size"].max()]
        console.print(f"per-task RMSE minus additive's, paired over test tasks (probe {tests['probe_size'].max()}): "
                      + "; ".join(lines), highlight=False)

    out_dir = option_alias(output, out, old="--out", new="--output") or default_out(source, "predict", kind)
    paths = result.save(out_dir, task_tests=tests)
    if figures and not binary:
        files = PredictLayout(out_dir)
        largest = result.scatter["probe_frac"].max()
        plots.write_pred_scatter(result.scatter[result.scatter["probe_frac"] == largest], files.scatter)
        curves = result.curves[result.curves["probe_frac"] == result.curves["probe_frac"].max()]
        plots.write_precision_curves(curves, files.precision_at_k)
    console.print(f"wrote {paths['cv'].parent}")
    if as_json:
        import json

        doc = {"source": str(source), "kind": kind, "output": str(paths["cv"].parent),
               "summary": json.loads(paths["json"].read_text()), "protocol": json.loads(paths["protocol"].read_text()),
               "task_tests": tests.to_dict("records")}
        if "gap_json" in paths:
            doc["gap_summary"] = json.loads(paths["gap_json"].read_text())
        emit_json(doc)
