"""A grid of SAM radii run as one comparison, with its primary contrast fixed in the config.

A compare config may replace ``strategies:`` by a ``sam_grid:`` block and must then name its
``primary:`` contrast::

    sam_grid: {rho: [0.0, 0.05, 0.5, 2.0, 5.0], adaptive: false, base: adamw}
    primary: {rho: 2.0, metric: forgetting_heldout, matched_on: task_loss_after, alternative: less}

ρ = 0 is plain fine-tuning, which every comparison runs as its baseline; each ρ > 0 becomes one ``sam``
arm labelled ``sam-rho<ρ>``. A grid without 0 is refused: without the baseline the radii are not
compared with anything. The primary contrast is answered by :func:`primary_result` with
:func:`forgetscope.analysis.stats.matched_contrast` over tasks (seeds averaged): the difference in the
metric between the chosen radius and plain at matched task loss. Every other radius and metric is
secondary: the comparison's own tests, Holm-adjusted, and the same matched contrast for each other radius
(``secondary_radii`` in ``primary.json``, Holm over those radii).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import Field, field_validator, model_validator

from forgetscope.config import _Strict
from forgetscope.experiments.compare.config import CompareConfig
from forgetscope.mitigate.sam import BASE_OPTIMIZERS


def rho_label(rho: float) -> str:
    """The strategy label of the SAM arm with radius ``rho``."""
    return f"sam-rho{rho:g}"


class SamGrid(_Strict):
    rho: list[float] = Field(description="SAM radii; 0 is plain fine-tuning (the baseline) and must be listed")
    adaptive: bool = Field(False, description="ASAM for every arm")
    base: str = Field("adamw", description="the optimizer SAM wraps: adamw, adam or sgd")

    @field_validator("rho")
    @classmethod
    def _with_zero(cls, v: list[float]) -> list[float]:
        if any(not math.isfinite(x) or x < 0 for x in v):
            raise ValueError(f"radii must be finite and >= 0, got {v}")
        if len(set(v)) != len(v):
            raise ValueError(f"a radius is listed twice: {v}")
        if 0 not in v:
            raise ValueError(f"the grid {v} has no 0: rho = 0 is plain fine-tuning, the baseline every radius "
                             "is compared with; add 0")
        if len(v) < 2:
            raise ValueError("list at least one radius above 0 besides 0")
        return sorted(v)

    @field_validator("base")
    @classmethod
    def _known_base(cls, v: str) -> str:
        if v not in BASE_OPTIMIZERS:
            raise ValueError(f"unknown optimizer {v!r}; choose from {', '.join(BASE_OPTIMIZERS)}")
        return v

    def strategies(self) -> list[dict[str, Any]]:
        """One ``sam`` strategy per radius above 0."""
        return [{"name": "sam", "label": rho_label(r), "options": {"rho": r, "adaptive": self.adaptive,
                                                                   "base": self.base}}
                for r in self.rho if r > 0]


class PrimaryContrast(_Strict):
    """The one contrast the grid is run to answer, fixed before any run."""

    rho: float = Field(description="the radius whose arm is contrasted with plain fine-tuning")
    metric: Literal["forgetting_heldout", "forgotten_share_heldout"] = Field(
        "forgetting_heldout", description="the per-run metric contrasted")
    matched_on: Literal["task_loss_after"] = Field("task_loss_after",
                                                   description="the covariate at which the arms are compared")
    alternative: Literal["less", "greater", "two-sided"] = Field(
        "less", description="the alternative hypothesis about the SAM arm against plain fine-tuning")
    alpha: float = Field(0.05, gt=0, lt=1, description="the test's significance level")
    question: str = Field("at matched task loss, does SAM forget less than plain fine-tuning?",
                          description="the question in words, written with the result")


class SamGridConfig(CompareConfig):
    """A compare config whose SAM arms come from ``sam_grid`` and whose primary contrast is ``primary``."""

    sam_grid: SamGrid = Field(description="the SAM radii; each radius above 0 becomes one sam arm")
    primary: PrimaryContrast = Field(description="the one contrast fixed before the runs")

    @model_validator(mode="before")
    @classmethod
    def _grid_to_strategies(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "sam_grid" not in data:
            return data
        if "strategies" in data:
            raise ValueError("strategies: a config with sam_grid gets its strategies from the grid; remove strategies")
        grid = data["sam_grid"]
        rho = grid.get("rho") if isinstance(grid, dict) else None
        ok = isinstance(rho, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in rho)
        labels = [{"name": "sam", "label": rho_label(float(r)),
                   "options": {"rho": float(r), **{k: grid[k] for k in ("adaptive", "base") if k in grid}}}
                  for r in (rho if ok else []) if math.isfinite(r) and r > 0]
        # an invalid grid still gets a placeholder arm, so the error printed is the grid's, not "no strategies"
        return {**data, "strategies": labels or [{"name": "sam", "label": "sam-grid"}]}

    @model_validator(mode="after")
    def _primary_in_grid(self) -> SamGridConfig:
        if getattr(self.compare, "primary", None) is not None:
            raise ValueError("compare.primary: a SAM grid's primary contrast is the top-level primary (at matched "
                             "task loss); remove compare.primary, the comparison's own tests stay secondary")
        if self.primary.rho <= 0 or self.primary.rho not in self.sam_grid.rho:
            raise ValueError(f"primary.rho: {self.primary.rho:g} is not a radius above 0 of sam_grid.rho "
                             f"{self.sam_grid.rho}")
        return self

    @property
    def primary_arm(self) -> str:
        return rho_label(self.primary.rho)


def compare_model_for(path: str | Path) -> type[CompareConfig]:
    """The config class of a compare YAML: :class:`SamGridConfig` when its top level has ``sam_grid``.
    An unreadable file gives :class:`CompareConfig`, whose loader reports the problem in one line."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return CompareConfig
    return SamGridConfig if isinstance(data, dict) and "sam_grid" in data else CompareConfig


def primary_result(per_run: pd.DataFrame, cfg: SamGridConfig) -> dict[str, Any]:
    """The primary contrast on a comparison's ``per_run.csv`` table: the chosen radius against plain at
    matched task loss (:func:`~forgetscope.analysis.stats.matched_contrast`), with the verdict at
    ``primary.alpha``. ``confirmatory`` is false, and ``verdict`` says why, when the test is not the one
    registered: the matched point extrapolated (every task's task-loss difference of one sign), or fewer
    degrees of freedom than the configured tasks give (a task dropped, or a constant covariate)."""
    from forgetscope.analysis.stats import matched_contrast

    p = cfg.primary
    res = matched_contrast(per_run, cfg.primary_arm, "plain", metric=p.metric, covariate=p.matched_on,
                           alternative=p.alternative)
    rejected = bool(math.isfinite(res["p"]) and res["p"] < p.alpha)
    expected_dof = len(cfg.tasks) - 2
    departures = []
    if res["extrapolated"]:
        departures.append("the matched point is extrapolated")
    if res.get("dof") != expected_dof:
        departures.append(f"{res.get('dof')} degrees of freedom, not the registered {expected_dof}")
    outcome = "rejected" if rejected else "not rejected"
    res.update(question=p.question, alpha=p.alpha, rejected=rejected, expected_dof=expected_dof,
               confirmatory=not departures,
               verdict=outcome if not departures else f"{outcome}, not confirmatory: {'; '.join(departures)}")
    return res


def secondary_radii(per_run: pd.DataFrame, cfg: SamGridConfig) -> dict[str, dict[str, Any]]:
    """The same matched contrast for every other radius above 0, by arm label: secondary, each with its own
    ``p`` and ``p_holm``, Holm's adjustment over these radii (the primary radius is the registered test and
    is not among them)."""
    from forgetscope.analysis.stats import holm, matched_contrast

    p = cfg.primary
    out = {rho_label(r): {"rho": r, **matched_contrast(per_run, rho_label(r), "plain", metric=p.metric,
                                                         covariate=p.matched_on, alternative=p.alternative)}
           for r in cfg.sam_grid.rho if r > 0 and r != p.rho}
    for res, adjusted in zip(out.values(), holm([res["p"] for res in out.values()]), strict=True):
        res["p_holm"] = float(adjusted)
    return out


def write_primary(per_run: pd.DataFrame, cfg: SamGridConfig, layout: Any) -> dict[str, Any]:
    """:func:`primary_result` written to ``compare/primary.json`` (``layout``: the sweep's
    :class:`~forgetscope.store.layout.SweepLayout`), with the other radii's contrasts under
    ``secondary_radii`` (:func:`secondary_radii`); returns the primary result."""
    from forgetscope.store.io import write_json
    from forgetscope.store.scaling import json_safe

    res = primary_result(per_run, cfg)
    write_json(layout.compare_primary, json_safe({**res, "grid": cfg.sam_grid.model_dump(),
                                                  "secondary_radii": secondary_radii(per_run, cfg)}))
    return res
