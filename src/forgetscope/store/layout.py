"""Every artifact's file name, owned in one place.

A sweep directory (and the experiments that extend it) looks like this::

    SWEEP/
      manifest.json              config, versions, seeds, model and data hashes, status
      upstream.parquet           example_id, kind, text/prompt/response/answer, n_tokens, loss_before, em_before
      runs.parquet               one row per finished run (task, strategy, hyperparameters, timings, task loss)
      forgetting.parquet         long format: run_id, example_id, loss_after, em_after, forgetting
                                 (with null_control also loss_null, forgetting_null)
      F.npy                      cached M x N forgetting matrix, rows in runs.parquet order
      F_null.npy                 with null_control: each run's null-control row (same shape as F.npy)
      runs/<run_id>.json         per-run record (the resume checkpoint: written last)
      runs/<run_id>.parquet      per-run long rows (its sha256 is in the record: checked when read back)
      runs/damaged/              ``forgetscope run --repair``: the files of runs that could not be read back
      logs/<run_id>/             training curves when ``report_to`` is on
      report.html                ``forgetscope report``
      analysis/<kind>/           ``forgetscope analyze --kind lm|instruction``: analysis.json, heatmap.png, ...
                                 (``--kind all``, and matrices without kinds: directly in analysis/;
                                 the names of one such folder: :class:`AnalysisLayout`)
      predict/<kind>/            ``forgetscope predict``: predict_summary.csv, predict_curves.csv, figures
                                 (``--kind all``: directly in predict/; the names: :class:`PredictLayout`)
      forecast/<name>/           ``forgetscope forecast``: forecast.parquet (one row per example), forecast.json
      replay/<name>/             ``forgetscope replay-mix``: replay.jsonl (the examples to mix in), replay.json
      compare/                   ``forgetscope compare``: split.json, summary.csv, tests.csv, per_run.csv,
                                 primary.json (a SAM radius grid's primary contrast),
                                 compare.png, command.txt, wall_time.json, oracle/<task>__s<seed>.json,
                                 probe/<task>__s<seed>.json
      sharpness.parquet          ``forgetscope sharpness``: one row per run
      sharpness/                 correlation.json/.csv, landscape.parquet, figures
      scaling_config.json        the config of a scaling sweep recorded before ``forgetscope scaling`` wrote
                                 manifest.json (read only to name such a directory, which cannot be resumed)
      scaling/                   runs/<run>.parquet, points.parquet/.csv, fit.json, figures
                                 (the names of one such folder: :class:`ScalingLayout`)

Code never spells these names itself: it asks a :class:`SweepLayout` (or the layout of one of its folders,
:class:`AnalysisLayout`, :class:`PredictLayout`, :class:`ScalingLayout`) for the path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

FORMAT = "forgetscope-sweep/1"
FORECAST_TABLE = "forecast.parquet"
FORECAST_SUMMARY = "forecast.json"
REPLAY_EXAMPLES = "replay.jsonl"
REPLAY_SUMMARY = "replay.json"


@dataclass(frozen=True)
class _Folder:
    """The layout of one folder: its ``root``, given as any path (kept as a :class:`~pathlib.Path`). Each layout
    below adds the names of its files as properties; equal when of the same class and root."""

    root: Path

    def __init__(self, root: str | os.PathLike[str]):
        object.__setattr__(self, "root", Path(root))


class SweepLayout(_Folder):
    """Paths of one sweep directory's artifacts."""

    # ---- the sweep itself ----------------------------------------------------------------
    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def upstream(self) -> Path:
        return self.root / "upstream.parquet"

    @property
    def runs_table(self) -> Path:
        return self.root / "runs.parquet"

    @property
    def forgetting(self) -> Path:
        return self.root / "forgetting.parquet"

    @property
    def matrix(self) -> Path:
        return self.root / "F.npy"

    @property
    def null_matrix(self) -> Path:
        return self.root / "F_null.npy"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    def run_record(self, run_id: str) -> Path:
        return self.runs_dir / f"{run_id}.json"

    def run_rows(self, run_id: str) -> Path:
        return self.runs_dir / f"{run_id}.parquet"

    @property
    def damaged_dir(self) -> Path:
        return self.runs_dir / "damaged"

    def logs(self, run_id: str) -> Path:
        return self.root / "logs" / run_id

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    # ---- analyse and predict ------------------------------------------------------------------
    @property
    def analysis_dir(self) -> Path:
        return self.root / "analysis"

    @property
    def predict_dir(self) -> Path:
        return self.root / "predict"

    @property
    def predict_summary(self) -> Path:
        return self.predict_files().summary

    @property
    def predict_curves(self) -> Path:
        return self.predict_files().curves

    def analysis_dir_for(self, kind: str = "all") -> Path:
        """``analysis/<kind>/`` for one kind of upstream example, ``analysis/`` for every column."""
        return self.analysis_dir if kind == "all" else self.analysis_dir / kind

    def predict_dir_for(self, kind: str = "all") -> Path:
        """``predict/<kind>/`` for one kind of upstream example, ``predict/`` for every column."""
        return self.predict_dir if kind == "all" else self.predict_dir / kind

    def analysis_files(self, kind: str = "all") -> AnalysisLayout:
        """The files of ``analysis/<kind>/`` (``analysis/`` for every column)."""
        return AnalysisLayout(self.analysis_dir_for(kind))

    def predict_files(self, kind: str = "all") -> PredictLayout:
        """The files of ``predict/<kind>/`` (``predict/`` for every column)."""
        return PredictLayout(self.predict_dir_for(kind))

    def predict_summary_for(self, kind: str = "all") -> Path:
        return self.predict_files(kind).summary

    def predict_curves_for(self, kind: str = "all") -> Path:
        return self.predict_files(kind).curves

    # ---- forecast -----------------------------------------------------------------------
    @property
    def forecast_root(self) -> Path:
        return self.root / "forecast"

    def forecast_dir(self, name: str) -> Path:
        return self.forecast_root / name

    @staticmethod
    def forecast_files(directory: str | os.PathLike[str]) -> tuple[Path, Path]:
        """(``forecast.parquet``, ``forecast.json``) inside a forecast folder (the default one or ``--out``)."""
        d = Path(directory)
        return d / FORECAST_TABLE, d / FORECAST_SUMMARY

    # ---- replay-mix ---------------------------------------------------------------------
    def replay_dir(self, name: str) -> Path:
        return self.root / "replay" / name

    @staticmethod
    def replay_files(directory: str | os.PathLike[str]) -> tuple[Path, Path]:
        """(``replay.jsonl``, ``replay.json``) inside a replay-mix folder."""
        d = Path(directory)
        return d / REPLAY_EXAMPLES, d / REPLAY_SUMMARY

    # ---- compare ------------------------------------------------------------------------
    @property
    def compare_dir(self) -> Path:
        return self.root / "compare"

    @property
    def compare_split(self) -> Path:
        return self.compare_dir / "split.json"

    @property
    def compare_summary(self) -> Path:
        return self.compare_dir / "summary.csv"

    @property
    def compare_per_run(self) -> Path:
        return self.compare_dir / "per_run.csv"

    @property
    def compare_tests(self) -> Path:
        return self.compare_dir / "tests.csv"

    @property
    def compare_chart(self) -> Path:
        return self.compare_dir / "compare.png"

    @property
    def compare_primary(self) -> Path:
        """The pre-registered primary contrast of a SAM radius grid (``primary`` of its config)."""
        return self.compare_dir / "primary.json"

    @property
    def compare_selection(self) -> Path:
        """The replay budget a dose pilot selects by its fixed rule (:mod:`forgetscope.experiments.compare.dose`)."""
        return self.compare_dir / "selection.json"

    @property
    def compare_command(self) -> Path:
        return self.compare_dir / "command.txt"

    @property
    def compare_wall_time(self) -> Path:
        return self.compare_dir / "wall_time.json"

    def compare_oracle(self, task: str, seed: int) -> Path:
        return self.compare_dir / "oracle" / f"{task}__s{seed}.json"

    def compare_probe(self, task: str, seed: int) -> Path:
        return self.compare_dir / "probe" / f"{task}__s{seed}.json"

    # ---- sharpness ----------------------------------------------------------------------
    @property
    def sharpness_table(self) -> Path:
        return self.root / "sharpness.parquet"

    @property
    def sharpness_dir(self) -> Path:
        return self.root / "sharpness"

    @property
    def sharpness_correlation(self) -> Path:
        """Spearman/Pearson of each sharpness measure with mean forgetting (+ kind, options)."""
        return self.sharpness_dir / "correlation.json"

    @property
    def sharpness_correlation_csv(self) -> Path:
        return self.sharpness_dir / "correlation.csv"

    @property
    def sharpness_landscape(self) -> Path:
        """1-D loss profiles: run_id, direction, alpha, loss."""
        return self.sharpness_dir / "landscape.parquet"

    @property
    def sharpness_landscape_figure(self) -> Path:
        return self.sharpness_dir / "landscape.png"

    @property
    def sharpness_scatter(self) -> Path:
        """Each sharpness measure against mean forgetting."""
        return self.sharpness_dir / "sharpness_vs_forgetting.png"

    # ---- scaling ------------------------------------------------------------------------
    @property
    def scaling_config(self) -> Path:
        return self.root / "scaling_config.json"

    @property
    def scaling_dir(self) -> Path:
        return self.root / "scaling"

    @property
    def scaling(self) -> ScalingLayout:
        """The files of ``scaling/``."""
        return ScalingLayout(self.scaling_dir)

    def scaling_run(self, run_id: str) -> Path:
        return self.scaling.run(run_id)

    @property
    def scaling_fit(self) -> Path:
        return self.scaling.fit

    @property
    def scaling_points(self) -> Path:
        return self.scaling.points


class AnalysisLayout(_Folder):
    """Paths of one analysis folder (``SWEEP/analysis/<kind>/``, or the folder ``analyze --output`` names)::

        analysis.json                      everything printed: the low-rank report, null control, marginals
        r2_by_rank.csv                     R²(k) (global and reference) with singular values
        heatmap.png, spectrum_r2.png       figures
        r2_vs_shuffles.png                 R²(k) of F against its within-row shuffles (the band), per metric
        null_per_run.csv                   with null rows: each run's mean F and null, R² on the null profile
        null_r2_by_rank.csv                with null rows: R²(k) of F, of the nulls, of the residual
        marginals_by_rank.csv              R²(k) against within-row shuffles
        interaction_seed_reliability.csv   where tasks have several seeds: their agreement on the interaction
        format_control.csv                 with format-only rows: each controlled task against its control
    """

    @property
    def summary(self) -> Path:
        return self.root / "analysis.json"

    @property
    def r2_by_rank(self) -> Path:
        return self.root / "r2_by_rank.csv"

    @property
    def format_control(self) -> Path:
        return self.root / "format_control.csv"

    @property
    def heatmap(self) -> Path:
        return self.root / "heatmap.png"

    @property
    def spectrum(self) -> Path:
        return self.root / "spectrum_r2.png"

    @property
    def r2_vs_shuffles(self) -> Path:
        return self.root / "r2_vs_shuffles.png"

    @property
    def null_per_run(self) -> Path:
        return self.root / "null_per_run.csv"

    @property
    def null_r2_by_rank(self) -> Path:
        return self.root / "null_r2_by_rank.csv"

    @property
    def marginals_by_rank(self) -> Path:
        return self.root / "marginals_by_rank.csv"

    @property
    def interaction_seed_reliability(self) -> Path:
        return self.root / "interaction_seed_reliability.csv"


@dataclass(frozen=True)
class PredictLayout:
    """Paths of one prediction folder (``SWEEP/predict/<kind>/``, or the folder ``predict --output`` names);
    the tables are ``<prefix>_<name>`` (``predict_summary.csv``, ...)::

        <prefix>_cv.csv, _summary.csv/.json, _curves.csv, _protocol.json    every evaluation
        <prefix>_tasks.csv, _task_tests.csv                                 with per-task errors
        <prefix>_noise.csv, _gap_closed.csv, _gap_summary.csv/.json         where tasks have noise floors
        scatter.png, precision_at_k.png                                     figures
    """

    root: Path
    prefix: str

    def __init__(self, root: str | os.PathLike[str], prefix: str = "predict"):
        object.__setattr__(self, "root", Path(root))
        object.__setattr__(self, "prefix", prefix)

    def _table(self, name: str) -> Path:
        return self.root / f"{self.prefix}_{name}"

    @property
    def cv(self) -> Path:
        return self._table("cv.csv")

    @property
    def summary(self) -> Path:
        return self._table("summary.csv")

    @property
    def summary_json(self) -> Path:
        return self._table("summary.json")

    @property
    def curves(self) -> Path:
        return self._table("curves.csv")

    @property
    def protocol(self) -> Path:
        return self._table("protocol.json")

    @property
    def tasks(self) -> Path:
        return self._table("tasks.csv")

    @property
    def task_tests(self) -> Path:
        return self._table("task_tests.csv")

    @property
    def noise(self) -> Path:
        return self._table("noise.csv")

    @property
    def gap_closed(self) -> Path:
        return self._table("gap_closed.csv")

    @property
    def gap_summary(self) -> Path:
        return self._table("gap_summary.csv")

    @property
    def gap_summary_json(self) -> Path:
        return self._table("gap_summary.json")

    @property
    def scatter(self) -> Path:
        return self.root / "scatter.png"

    @property
    def precision_at_k(self) -> Path:
        return self.root / "precision_at_k.png"


class ScalingLayout(_Folder):
    """Paths of one scaling results folder (``SWEEP/scaling/``, or any folder the fits are written to)::

        runs/<run>.parquet           checkpoint rows of one finished run
        points.parquet, points.csv   the tidy checkpoint table
        fit.json                     every fit of the report
        fit_<rule>.json              the same fits under a secondary hold-out rule
        tables.md                    the Markdown tables of a study's fits (benchmarks/scaling_tables.py)
        <name>.png                   each figure of :func:`forgetscope.analysis.plots.scaling_figures`
                                     (scaling_fit, forgetting_vs_task_loss, predicted_vs_observed)
    """

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    def run(self, run_id: str) -> Path:
        return self.runs_dir / f"{run_id}.parquet"

    @property
    def points(self) -> Path:
        return self.root / "points.parquet"

    @property
    def points_csv(self) -> Path:
        return self.root / "points.csv"

    @property
    def fit(self) -> Path:
        return self.root / "fit.json"

    def secondary_fit(self, rule: str) -> Path:
        """The fits under hold-out ``rule`` when it is not the config's own (the primary fit.json stays)."""
        return self.root / f"fit_{rule}.json"

    def secondary_fits(self) -> list[Path]:
        """Every secondary fit written so far, by name."""
        return sorted(self.root.glob("fit_*.json"))

    @property
    def tables(self) -> Path:
        return self.root / "tables.md"

    def figure(self, name: str) -> Path:
        """The PNG of the figure called ``name``."""
        return self.root / f"{name}.png"


class PilotLayout(_Folder):
    """Paths of one regime pilot's folder (the pilot file's ``output``)::

        pilot.sha256.json      the pilot file's hash, sealed at its first run
        <candidate>/sweep/     each candidate's sweep (a :class:`SweepLayout`)
        <candidate>/verdict.json, <candidate>/per_run.csv   each candidate's criteria, measured
        selection.json         the selection rule applied to the candidates (``complete``, ``chosen``)
        tables.md              every candidate's criteria in one table (benchmarks/regime_tables.py)
        base_answers.json      the base model's greedy answers to the instruction pairs (benchmarks/base_answers.py)
    """

    @property
    def seal(self) -> Path:
        return self.root / "pilot.sha256.json"

    @property
    def selection(self) -> Path:
        return self.root / "selection.json"

    def candidate_dir(self, name: str) -> Path:
        return self.root / name

    def candidate_sweep(self, name: str) -> Path:
        return self.candidate_dir(name) / "sweep"

    def verdict(self, name: str) -> Path:
        return self.candidate_dir(name) / "verdict.json"

    def per_run(self, name: str) -> Path:
        return self.candidate_dir(name) / "per_run.csv"

    @property
    def tables(self) -> Path:
        return self.root / "tables.md"

    @property
    def base_answers(self) -> Path:
        return self.root / "base_answers.json"


class StudyLayout(_Folder):
    """Paths of one replication study's folder (the study file's ``output``)::

        study.sha256.json      the study file's hash, sealed at its first run
        regime.json            the regime the pilot chose, as the study ran it
        sweep/                 the main sweep (tasks, format-only rows); null_sweep/: the effect-matched null
        analysis/              claims.json (every claim beside its control), tables.md, figures,
                               determinism.json (the null sweep's task rows against the main sweep's)
    """

    @property
    def seal(self) -> Path:
        return self.root / "study.sha256.json"

    @property
    def regime(self) -> Path:
        return self.root / "regime.json"

    @property
    def sweep(self) -> Path:
        return self.root / "sweep"

    @property
    def null_sweep(self) -> Path:
        return self.root / "null_sweep"

    @property
    def analysis(self) -> Path:
        return self.root / "analysis"

    @property
    def claims(self) -> Path:
        return self.analysis / "claims.json"

    @property
    def tables(self) -> Path:
        return self.analysis / "tables.md"

    @property
    def r2_vs_shuffles(self) -> Path:
        return self.analysis / "r2_vs_shuffles.png"

    @property
    def learning(self) -> Path:
        return self.analysis / "learning.png"

    @property
    def determinism(self) -> Path:
        return self.analysis / "determinism.json"
