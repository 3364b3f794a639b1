"""A self-contained HTML report of one sweep, or of several side by side (``forgetscope report DIR [DIR ...]``).

    from forgetscope.report import build_report
    path = build_report("sweeps/demo")                                  # -> sweeps/demo/report.html
    path = build_report(["sweeps/smollm2", "sweeps/gemma3"], "both.html")  # several sweeps: output required

One HTML file, figures embedded as base64 PNG (and a small heat map again as inline SVG with a tooltip per
cell, :mod:`forgetscope.report.hover`), CSS inline, one inline script that sorts a table when its header is
clicked (:mod:`forgetscope.report.sortable`, allowed by its hash), and a Content-Security-Policy that forbids any
fetch: it opens offline and can be mailed or archived. The page leads with what was found (per task: mean F,
share forgotten, the top texts, the null row and the within-row shuffle baseline:
:mod:`forgetscope.report.sections.headline`); then runs, heat map, which texts were forgotten or improved,
spectrum/R², additive and multiplicative fits, prediction and stored forecasts, strategy comparison, scaling
laws, sharpness; provenance last. Sections appear only when their data exists. Plain-text (``lm``) and
instruction examples are separate experiments: the heat map, forgotten texts, spectrum, fits and prediction
sections appear once per kind present (the default kind, ``lm`` when present, first with the plain section ids;
the others with ``-<kind>`` ids), or for one kind only (``kind=``); :mod:`forgetscope.report.sections` lists
which file each one reads (every name comes from :class:`~forgetscope.store.SweepLayout`), and every table
names its file. A section that cannot be built is listed in the footer with the reason. Several sweeps:
:mod:`forgetscope.report.multi`.
"""

from __future__ import annotations

import logging
import os
import shlex
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from forgetscope.data.types import check_kind
from forgetscope.errors import ForgetscopeError, StoreError
from forgetscope.report.sections import BUILDERS, PER_KIND, ReportContext, Section, Skip
from forgetscope.store import SweepLayout, SweepStore, atomic_path

__all__ = ["REPORT_NAME", "build_report", "collect_sections"]

REPORT_NAME = SweepLayout(".").report.name
log = logging.getLogger(__name__)


KIND_TITLES = {"lm": "plain text (lm)", "instruction": "prompt/response (instruction)", "all": "all examples"}


def report_kinds(matrix, kind: str | None = None) -> list[str]:
    """The kinds the report shows: ``kind`` alone, else each kind present, the default first."""
    if kind is not None:
        check_kind(kind)
        if matrix is not None:
            matrix.select_kind(kind)  # a kind the sweep lacks: a one-line DataError before anything is written
        return [kind]
    if matrix is None or not matrix.kind_counts():
        return ["all"]
    default = matrix.default_kind()
    return [default, *(k for k in matrix.kind_counts() if k != default)]


def collect_sections(sweep_dir: str | os.PathLike[str], *, predict: bool | str = "auto", seed: int = 0,
                     strict: bool = False, kind: str | None = None
                     ) -> tuple[list[Section], list[tuple[str, str, str]], ReportContext]:
    """Build every section that has data; returns (sections, skipped as (key, title, reason), context).

    The sections in ``PER_KIND`` are built once per kind of :func:`report_kinds`.
    """
    store = SweepStore(sweep_dir)
    manifest = store.read_manifest()  # raises a one-line StoreError for a missing/foreign directory
    try:
        matrix = store.load_matrix()
    except StoreError as exc:
        if store.layout.matrix.is_file():
            raise
        log.info("no matrix yet: %s", exc)
        matrix = None
    kinds = report_kinds(matrix, kind)
    ctx = ReportContext(path=store.path, store=store, manifest=manifest, matrix=matrix, predict=predict, seed=seed,
                        headline_kind=kinds[0], kinds=tuple(kinds))
    labelled = kinds != ["all"]  # section titles name the kind whenever the sweep has kinds
    per_kind = [b for b in BUILDERS if b[0] in PER_KIND]
    plan: list[tuple[str, str, Callable[[ReportContext], Section], ReportContext, str | None]] = []
    for key, title, builder in BUILDERS:
        if key not in PER_KIND:
            plan.append((key, title, builder, ctx, None))
        elif key == per_kind[0][0]:  # the per-kind group, once per kind, where its first section belongs
            for n, k in enumerate(kinds):
                kctx = ctx.for_kind(k)
                plan += [(pkey if n == 0 else f"{pkey}-{k}", ptitle, pbuilder, kctx, k if labelled else None)
                         for pkey, ptitle, pbuilder in per_kind]
    sections: list[Section] = []
    skipped: list[tuple[str, str, str]] = []
    for key, title, builder, c, k in plan:
        suffix = f" — {KIND_TITLES[k]}" if k else ""
        try:
            sec = builder(c)
            sec.key, sec.title = key, sec.title + suffix
            sections.append(sec)
        except Skip as why:
            skipped.append((key, title + suffix, str(why)))
        except Exception as exc:
            if strict:
                raise
            log.warning("report section %s failed: %s: %s", key, type(exc).__name__, exc)
            skipped.append((key, title + suffix, f"failed: {type(exc).__name__}: {exc}"))
    return sections, skipped, ctx


def _sweeps(sweep_dir: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Path]:
    if isinstance(sweep_dir, (str, os.PathLike)):
        return [Path(sweep_dir)]
    paths = [Path(p) for p in sweep_dir]
    if not paths:
        raise ForgetscopeError("name at least one sweep directory to report")
    if len({p.resolve() for p in paths}) != len(paths):
        raise ForgetscopeError("a sweep directory is named twice: " + ", ".join(map(str, paths)))
    return paths


def build_report(sweep_dir: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
                 output: str | os.PathLike[str] | None = None, *, title: str | None = None,
                 predict: bool | str = "auto", seed: int = 0, strict: bool = False, kind: str | None = None) -> Path:
    """Write the HTML report of ``sweep_dir`` to ``output`` (default ``SWEEP/report.html``) and return its path.

    ``sweep_dir`` may be a list of sweeps: with several, the page compares them side by side
    (:mod:`forgetscope.report.multi`) and ``output`` is required (no sweep's directory is the obvious place).
    ``predict``: ``"auto"`` reads saved prediction results or runs a small cross-validation; ``False``
    only reads saved results. ``strict`` re-raises a section's error instead of listing it as skipped.
    ``kind`` (``lm``, ``instruction`` or ``all``) shows only that kind's sections; by default each kind
    present gets its own.
    """
    paths = _sweeps(sweep_dir)
    if len(paths) > 1:
        return _build_multi(paths, output, title=title, seed=seed, strict=strict, kind=kind)
    sweep = paths[0]
    sections, skipped, ctx = collect_sections(sweep, predict=predict, seed=seed, strict=strict, kind=kind)
    out = Path(output) if output is not None else SweepLayout(sweep).report
    if out.is_dir():
        out = SweepLayout(out).report
    m = ctx.matrix
    subtitle = f"sweep {sweep.resolve().name}"
    if m is not None:
        subtitle += f" — {m.shape[0]} runs × {m.shape[1]} upstream examples"
        counts = m.kind_counts()
        if counts:
            subtitle += " (" + ", ".join(f"{n} {k}" for k, n in counts.items()) + ")"
    status = ctx.manifest.get("status")
    if status and status != "complete":
        subtitle += f" — status: {status} (partial results)"
    return _write(out, title=title or f"forgetscope report: {sweep.resolve().name}", subtitle=subtitle,
                  sections=sections, skipped=skipped, command="forgetscope report " + shlex.quote(str(sweep)))


def _build_multi(paths: list[Path], output: str | os.PathLike[str] | None, *, title: str | None, seed: int,
                 strict: bool, kind: str | None) -> Path:
    from forgetscope.report.multi import collect_multi_sections

    if output is None:
        raise ForgetscopeError(f"a report of {len(paths)} sweeps needs an output file (-o/--output FILE.html)")
    out = Path(output)
    if out.is_dir():
        raise ForgetscopeError(f"{out} is a directory: name the HTML file of a report of several sweeps")
    if kind is not None:
        check_kind(kind)
    sections, skipped, entries, k = collect_multi_sections(paths, kind=kind, seed=seed, strict=strict)
    names = [e.label for e in entries]
    over = "" if k == "all" else f"; compared on the {k} upstream examples"
    subtitle = f"{len(paths)} sweeps: " + ", ".join(
        f"{e.label} ({e.matrix.shape[0]} runs × {e.matrix.shape[1]} examples)" for e in entries) + over
    command = "forgetscope report " + " ".join(shlex.quote(str(p)) for p in paths) + " -o " + shlex.quote(str(out))
    return _write(out, title=title or "forgetscope report: " + " vs ".join(names), subtitle=subtitle,
                  sections=sections, skipped=skipped, command=command)


def _write(out: Path, *, title: str, subtitle: str, sections: list[Section], skipped: list[tuple[str, str, str]],
           command: str) -> Path:
    """Render the page (template, the sorting script and the CSP source that allows it) and write it atomically."""
    import jinja2

    import forgetscope
    from forgetscope.report.sortable import SCRIPT, csp_source

    env = jinja2.Environment(loader=jinja2.PackageLoader("forgetscope.report", "."),
                             autoescape=jinja2.select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)
    try:
        template = env.get_template("template.html")
    except jinja2.TemplateNotFound:  # pragma: no cover - packaging problem
        raise ForgetscopeError("report template missing from the installed package (template.html)") from None
    values: dict[str, Any] = dict(title=title, subtitle=subtitle, sections=sections, skipped=skipped,
                                  version=forgetscope.__version__, generated=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                                  command=command, script=SCRIPT, script_source=csp_source(SCRIPT))
    html = template.render(**values)
    with atomic_path(out) as tmp:
        tmp.write_text(html, encoding="utf-8")
    return out
