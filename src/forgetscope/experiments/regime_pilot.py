"""A pre-registered regime pilot: candidates, criteria and a selection rule fixed in one file before any result.

The pilot file (``configs/regimes/<model>.yaml``) names the base model, the sweep settings every candidate
shares (``base``), the candidate regimes (each a set of sweep fields over ``base``), the criteria a usable
regime must meet, and the selection rule. :func:`load_pilot` validates it; :func:`candidate_configs` turns
it into ordinary sweep configs (one sweep directory per candidate, so a killed pilot resumes where it
stopped); :func:`seal_pilot` records the file's SHA-256 beside the first result and refuses a file that
changed after that; the verdicts themselves are computed by :func:`forgetscope.analysis.regime.regime_verdict`
and :func:`forgetscope.analysis.regime.select_regime`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field

from forgetscope.config import SweepConfig, _Strict, parse_config
from forgetscope.errors import ConfigError
from forgetscope.store.layout import PilotLayout


class RegimeCriteria(_Strict):
    """What a usable regime must show; none of them requires forgetting."""

    learns: bool = Field(True, description="every run's held-out task loss falls")
    seed_r_min: float = Field(0.7, ge=-1, le=1, description="mean over tasks of the seed rows' Pearson r")
    mean_f_max_share_of_base_loss: float = Field(
        0.10, gt=0, description="every run's mean F on the texts at most this share of the base mean loss")
    below_uniform: bool = Field(True, description="no run's mean loss on the texts above log(vocabulary)")
    answers_retained_min: float = Field(0.5, ge=0, le=1,
                                        description="share of the base model's right answers kept (pooled)")
    answers_min_known: int = Field(5, ge=1, description="fewer right answers before: not measurable, not met")


class RegimePilot(_Strict):
    """One model's pilot file."""

    model: str = Field(description="the base model every candidate fine-tunes")
    output: Path = Field(description="the pilot's directory; each candidate's sweep is written to "
                         "OUTPUT/NAME/sweep")
    base: dict[str, Any] = Field(description="the sweep config fields every candidate shares")
    all_linear: list[str] | None = Field(None, description="a YAML anchor the candidates may reuse")
    candidates: dict[str, dict[str, Any]] = Field(description="name -> the sweep config fields that candidate "
                                                  "sets over base (two or more seeds each)")
    criteria: RegimeCriteria = Field(RegimeCriteria(), description="what a usable regime must show")
    selection: Literal["lowest_task_loss"] = Field("lowest_task_loss", description="how one regime is picked "
                                                   "among those meeting the criteria")
    tie_nats: float = Field(0.01, ge=0, description="task losses closer than this (nats) count as a tie")

    @property
    def layout(self) -> PilotLayout:
        """The file names of the pilot's folder."""
        return PilotLayout(self.output)


def load_pilot(path: str | Path) -> RegimePilot:
    """Read and validate a pilot file, and every candidate's sweep config; errors name the field."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"pilot file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"pilot file {path} cannot be read as YAML: {str(exc).splitlines()[0]}") from None
    pilot = parse_config(data, str(path), RegimePilot, what="pilot file")
    if len(pilot.candidates) < 1:
        raise ConfigError(f"pilot file {path}: candidates: at least one candidate is needed")
    candidate_configs(pilot)  # every candidate validated before any work
    return pilot


def candidate_configs(pilot: RegimePilot) -> dict[str, SweepConfig]:
    """One sweep config per candidate: ``base`` with the candidate's fields, written under ``output``."""
    out = {}
    for name, fields in pilot.candidates.items():
        data = {**pilot.base, **fields, "model": pilot.model, "output": str(pilot.layout.candidate_sweep(name))}
        cfg = parse_config(data, f"(candidate {name})")
        if len(cfg.seed_list) < 2:
            raise ConfigError(f"candidate {name}: a pilot needs two or more seeds to measure rows above noise")
        out[name] = cfg
    return out


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def seal_file(path: str | Path, seal: Path, *, what: str, key: str = "file") -> Path:
    """Record ``path``'s SHA-256 in ``seal`` the first time; refuse a file that changed since.

    Called before the first run, so the seal exists before any result does."""
    path = Path(path)
    digest = _sha256(path)
    if seal.is_file():
        sealed = json.loads(seal.read_text())
        if sealed["sha256"] != digest:
            raise ConfigError(f"{what} {path} changed after its first result (sealed in {seal}); "
                              f"a pre-registered {what} cannot change: write a new one instead")
        return seal
    seal.parent.mkdir(parents=True, exist_ok=True)
    seal.write_text(json.dumps({key: str(path), "sha256": digest}, indent=1) + "\n")
    return seal


def seal_pilot(path: str | Path, pilot: RegimePilot) -> Path:
    """Seal a pilot file under its output (:func:`seal_file`)."""
    return seal_file(path, pilot.layout.seal, what="pilot file", key="pilot_file")


__all__ = ["RegimeCriteria", "RegimePilot", "candidate_configs", "load_pilot", "seal_file", "seal_pilot"]
