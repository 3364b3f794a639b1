"""Section builders of the HTML report, one module per section, in report order.

Each builder returns a :class:`Section`, or raises :class:`Skip` when its data is absent. Every file a
section reads is named by :class:`~forgetscope.store.SweepLayout` (``ctx.layout``); nothing else is looked for.

=====================  ==================================================================================
section                data (``SweepLayout`` attribute: file)
=====================  ==================================================================================
headline               ``matrix`` + ``runs_table`` + ``upstream`` (+ ``null_matrix``: F_null.npy): per task and
                       kind, mean F, share forgotten, the top texts, the null row and the within-row shuffle
                       baseline of :mod:`forgetscope.analysis.marginals` (computed here)
runs                   ``runs_table`` + ``matrix``: runs.parquet + F.npy
heatmap                ``matrix``, sorted by :func:`forgetscope.analysis.lowrank.factor_order`; up to 60 runs, 400
                       examples and 10,000 cells also as inline SVG with a tooltip per cell
                       (:mod:`forgetscope.report.hover`), its texts from ``upstream``
examples               ``matrix`` + its upstream table (``upstream``: upstream.parquet, columns ``text`` or
                       ``prompt``/``response``): each task's most-forgotten and most-improved examples with their
                       text
lowrank                spectrum and R²(k) from :mod:`forgetscope.analysis.lowrank` (computed here)
fits                   additive / multiplicative fits, forgetting vs task learning (computed here)
prediction             ``predict_summary`` + ``predict_curves``: predict/predict_summary.csv and
                       predict/predict_curves.csv (:meth:`forgetscope.predict.CVResult.save`), else a small
                       leave-tasks-out cross-validation run here (``additive``, ``knn``, ``lowrank``); and each
                       stored forecast of the kind (``forecast_dir(name)`` + ``forecast_files``:
                       forecast/<name>/forecast.parquet and forecast.json): its top predicted-forgotten examples
strategies             ``compare_summary``: compare/summary.csv (``forgetscope compare``), else computed here
                       when runs.parquet holds several strategies on the same tasks and seeds (mean ± SEM
                       over the report's kind of upstream example, ``ctx.headline_kind``; run-level paired
                       Wilcoxon and t against ``plain``, Holm-adjusted)
scaling                ``scaling_fit``: scaling/fit.json, + ``scaling_points``: scaling/points.parquet
sharpness              ``sharpness_table``: sharpness.parquet (``run_id``, ``mean_forgetting``,
                       ``mean_forgetting_kind``, ``sharpness_*``)
provenance             ``manifest``: manifest.json (config, model, versions, seeds); the matrix's upstream table
=====================  ==================================================================================

The heat map, example texts, spectrum, fits and prediction sections are built once per kind of upstream example
(``PER_KIND``; ``ctx.kind`` and ``ctx.matrix`` hold one kind's columns); saved prediction results are then
read from ``layout.predict_summary_for(kind)`` (``predict/<kind>/``; ``predict/`` for all columns).

Every table names the file(s) it was read from (``ReportContext.source``). A builder that fails for any other
reason is reported as skipped with the error (the report still renders); ``build_report(..., strict=True)`` re-raises instead (tests use it).
"""

from __future__ import annotations

from collections.abc import Callable

from forgetscope.report.sections import (
    examples,
    fits,
    headline,
    heatmap,
    lowrank,
    prediction,
    provenance,
    runs,
    scaling,
    sharpness,
    strategies,
)
from forgetscope.report.sections.base import ReportContext, Section, Skip, table_html

__all__ = ["BUILDERS", "PER_KIND", "ReportContext", "Section", "Skip", "table_html"]

#: Sections built once per kind of upstream example (their context's matrix holds that kind's columns).
PER_KIND = frozenset({"heatmap", "examples", "lowrank", "fits", "prediction"})

BUILDERS: list[tuple[str, str, Callable[[ReportContext], Section]]] = [
    ("headline", "What was found", headline.build),
    ("runs", "Runs", runs.build),
    ("heatmap", "Forgetting heat map", heatmap.build),
    ("examples", "Which texts were forgotten", examples.build),
    ("lowrank", "Spectrum and R²(k)", lowrank.build),
    ("fits", "Additive and multiplicative models", fits.build),
    ("prediction", "Prediction", prediction.build),
    ("strategies", "Strategy comparison", strategies.build),
    ("scaling", "Scaling laws", scaling.build),
    ("sharpness", "Sharpness", sharpness.build),
    ("provenance", "Provenance", provenance.build),
]
"""(key, title in the list of left-out sections, builder), in the order the report shows them."""
