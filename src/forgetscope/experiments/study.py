"""A pre-registered replication study: one model's sweeps, run in the regime its own pilot selected.

The study file (``configs/studies/<model>.yaml``) fixes before any of its runs: the regime pilot whose
selection supplies ``train`` (so the regime is chosen by the pilot's rule, never by hand), the tasks and
seeds, the upstream examples, the sharpness measured on every run (on the run's own task data), the
format-only controls and the effect-matched null. ``null_control`` is a sweep-wide option, so the
effect-matched null is a second sweep over a subset of the tasks; its task rows repeat the main sweep's
(same config and seed) and double as a determinism check. The analyses and what decides each claim are
written in the file's comments.

:func:`load_study` validates the file (with the pilot's first candidate standing in for the regime, so a
study can be written and committed before its pilot has chosen); :func:`chosen_regime` reads the pilot's
selection and refuses while it is incomplete or when no candidate passed; :func:`study_configs` builds the
sweep configs; :func:`seal_study` records the file's SHA-256 before the first run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field

from forgetscope.config import SweepConfig, TrainConfig, _Strict, parse_config
from forgetscope.data.sources import DataSource
from forgetscope.errors import ConfigError
from forgetscope.experiments.regime_pilot import RegimePilot, candidate_configs, load_pilot, seal_file
from forgetscope.store.layout import StudyLayout

#: fields of the shared sweep block that the study sets itself
STUDY_OWNED = ("model", "output", "train", "null_control", "null_match")


class FormatControl(_Strict):
    """The format-only controls: each listed task again, trained on its prompts with other examples'
    responses (``control: shuffled_responses``), as a row named ``<task>_format``."""

    tasks: list[str] = Field(description="instruction-format tasks of the sweep that get a format-only row")
    seeds: list[int] | None = Field(None, description="their seeds (null: the sweep's, so the control's rows "
                                    "are as noisy as the task's)")


class EffectNull(_Strict):
    """The effect-matched null control: a second sweep whose runs also measure a random direction scaled
    until its mean F on a fixed subset matches the run's (``null_match: effect``)."""

    tasks: list[str] = Field(description="tasks of the sweep that get an effect-matched null row")
    seeds: list[int] = Field([0], description="their seeds")
    null_match_subset: int = Field(32, ge=1, description="the first this many lm upstream examples")
    null_match_tol: float = Field(0.05, gt=0, lt=1, description="relative tolerance on the subset's mean F")
    null_match_steps: int = Field(8, ge=1, le=32, description="at most this many evaluations of the subset")


class Study(_Strict):
    """One model's study file."""

    pilot: Path = Field(description="the regime pilot file whose selection supplies train")
    output: Path = Field(description="the study's directory: OUTPUT/sweep (every task, controls, sharpness) "
                         "and OUTPUT/null_sweep (the effect-matched null)")
    sweep: dict[str, Any] = Field(description="sweep config fields (seeds, upstream, tasks, eval, ...); "
                                  f"not {', '.join(STUDY_OWNED)}, which the study sets")
    sharpness: dict[str, Any] | None = Field(None, description="sharpness options measured on every run of the "
                                             "main sweep (forgetscope.measure.sharpness.SharpnessOptions); "
                                             "null: none")
    format_control: FormatControl | None = Field(None, description="the format-only controls")
    effect_null: EffectNull | None = Field(None, description="the effect-matched null control")

    @property
    def layout(self) -> StudyLayout:
        """The file names of the study's folder."""
        return StudyLayout(self.output)


def _read_yaml(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} {path} cannot be read as YAML: {str(exc).splitlines()[0]}") from None


def load_study(path: str | Path) -> tuple[Study, RegimePilot]:
    """Read and validate a study file and its pilot; every sweep config is built (with the pilot's first
    candidate's ``train`` as a stand-in) so a bad field fails here, before any work."""
    path = Path(path)
    study = parse_config(_read_yaml(path, "study file"), str(path), Study, what="study file")
    owned = sorted(set(study.sweep) & set(STUDY_OWNED))
    if owned:
        raise ConfigError(f"study file {path}: sweep.{owned[0]} is set by the study (train by the pilot's "
                          "selection); remove it")
    pilot = load_pilot(study.pilot)
    first = next(iter(candidate_configs(pilot).values()))
    study_configs(study, pilot, first.train)
    return study, pilot


def chosen_regime(pilot: RegimePilot) -> tuple[str, TrainConfig]:
    """The candidate the pilot selected by its own rule, and its ``train``; a ConfigError while the pilot is
    unfinished, and when no candidate met every criterion (then no claim is replicated on the model)."""
    path = pilot.layout.selection
    if not path.is_file():
        raise ConfigError(f"the regime pilot of {pilot.model} has no selection yet ({path}); run it first")
    selection = json.loads(path.read_text())
    if not selection.get("complete"):
        raise ConfigError(f"the regime pilot of {pilot.model} is not finished ({path}: complete false); "
                          "every candidate runs before one is chosen")
    name = selection.get("chosen")
    if name is None:
        raise ConfigError(f"no candidate of the regime pilot of {pilot.model} met every criterion ({path}): "
                          "the model has no usable regime and no claim is replicated on it")
    configs = candidate_configs(pilot)
    if name not in configs:
        raise ConfigError(f"{path} chose {name!r}, which is not a candidate of the pilot file")
    return name, configs[name].train


def _format_name(task: str) -> str:
    return f"{task}_format"


def study_configs(study: Study, pilot: RegimePilot, train: TrainConfig) -> dict[str, SweepConfig]:
    """``{"sweep": ..., "null_sweep": ...}``: the main sweep (every task, the format-only rows and the
    sharpness options) and, when configured, the effect-matched null's sweep."""
    from forgetscope.experiments.sharpness import SharpnessSweepConfig

    base = {**study.sweep, "model": pilot.model, "train": train.model_dump(exclude_unset=True)}
    main = parse_config({**base, "output": str(study.layout.sweep)}, "(study sweep)")
    names = [t.name for t in main.tasks]
    tasks = [t.model_dump(exclude_unset=True) for t in main.tasks]
    for part, listed in (("format_control", study.format_control), ("effect_null", study.effect_null)):
        unknown = [t for t in (listed.tasks if listed else []) if t not in names]
        if unknown:
            raise ConfigError(f"study file: {part}.tasks: {unknown[0]!r} is not a task of the sweep")
    if study.format_control is not None:
        by_name = {t.name: t for t in main.tasks}
        for t in study.format_control.tasks:
            demo_source = DataSource("demo", t).spec
            if by_name[t].source not in (None, demo_source):
                raise ConfigError(f"study file: format_control.tasks: {t!r} reads {by_name[t].source}; a "
                                  "format-only row is built for shipped demo tasks only")
            entry: dict[str, Any] = {"name": _format_name(t), "source": demo_source,
                                     "control": "shuffled_responses"}
            if study.format_control.seeds is not None:
                entry["seeds"] = study.format_control.seeds
            tasks.append(entry)
    data = {**base, "tasks": tasks, "output": str(study.layout.sweep)}
    if study.sharpness is not None:
        data["sharpness"] = study.sharpness
    out: dict[str, SweepConfig] = {
        "sweep": parse_config(data, "(study sweep)", SharpnessSweepConfig if study.sharpness is not None
                              else SweepConfig)}
    if study.effect_null is not None:
        en = study.effect_null
        keep = [t for t in main.tasks if t.name in en.tasks]
        out["null_sweep"] = parse_config(
            {**base, "tasks": [t.model_dump(exclude_unset=True) for t in keep], "seeds": en.seeds,
             "output": str(study.layout.null_sweep), "null_control": True, "null_match": "effect",
             "null_match_subset": en.null_match_subset, "null_match_tol": en.null_match_tol,
             "null_match_steps": en.null_match_steps}, "(study null sweep)")
    return out


def seal_study(path: str | Path, study: Study) -> Path:
    """Record the study file's SHA-256 under its output before the first run; refuse a changed file."""
    return seal_file(path, study.layout.seal, what="study file")


__all__ = ["EffectNull", "FormatControl", "Study", "chosen_regime", "load_study", "seal_study",
           "study_configs"]
