"""The pre-registered replication study: its files, the regime taken from the pilot, the controls built."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from forgetscope.errors import ConfigError
from forgetscope.experiments.regime_pilot import candidate_configs
from forgetscope.experiments.sharpness import SharpnessSweepConfig
from forgetscope.experiments.study import chosen_regime, load_study, seal_study, study_configs

ROOT = Path(__file__).parents[1]
STUDIES = ROOT / "configs" / "studies"


def _local_copy(tmp_path: Path, name: str = "smollm2") -> Path:
    """The committed study and its pilot, writing under tmp_path."""
    pilot = (ROOT / "configs" / "regimes" / f"{name}.yaml").read_text().replace(
        f"benchmarks/results/regimes/{name}", str(tmp_path / "pilot"))
    (tmp_path / "pilot.yaml").write_text(pilot)
    study = (STUDIES / f"{name}.yaml").read_text().replace(f"configs/regimes/{name}.yaml", str(tmp_path / "pilot.yaml"))
    study = study.replace(f"benchmarks/results/study/{name}", str(tmp_path / "study"))
    path = tmp_path / "study.yaml"
    path.write_text(study)
    return path


def _select(tmp_path: Path, **selection) -> None:
    (tmp_path / "pilot").mkdir(exist_ok=True)
    (tmp_path / "pilot" / "selection.json").write_text(json.dumps(selection))


@pytest.mark.parametrize("name", ["smollm2", "gemma3"])
def test_the_committed_study_files_build_the_main_and_the_null_sweep(name):
    study, pilot = load_study(STUDIES / f"{name}.yaml")
    first = next(iter(candidate_configs(pilot).values()))
    configs = study_configs(study, pilot, first.train)
    main, null = configs["sweep"], configs["null_sweep"]
    assert isinstance(main, SharpnessSweepConfig) and main.model == pilot.model
    controls = [t for t in main.tasks if t.control == "shuffled_responses"]
    assert len(controls) == 12 and all(t.source == f"demo:{t.name.removesuffix('_format')}" for t in controls)
    real = [t for t in main.tasks if t.control is None]
    assert len(real) * len(main.seed_list) >= 48  # >= 24 tasks x 2 seeds
    assert null.null_control and null.null_match == "effect" and len(null.tasks) == 12
    assert {t.name for t in null.tasks} <= {t.name for t in real}
    assert main.train == null.train == first.train and main.upstream == null.upstream


def test_the_regime_is_the_pilots_choice_and_nothing_runs_before_it(tmp_path):
    path = _local_copy(tmp_path)
    study, pilot = load_study(path)
    with pytest.raises(ConfigError, match="no selection yet"):
        chosen_regime(pilot)
    _select(tmp_path, complete=False, chosen="lora_all_lr1e-3_s20")
    with pytest.raises(ConfigError, match="not finished"):
        chosen_regime(pilot)
    _select(tmp_path, complete=True, chosen=None)
    with pytest.raises(ConfigError, match="no usable regime"):
        chosen_regime(pilot)
    _select(tmp_path, complete=True, chosen="lora_all_lr2e-3_s20")
    name, train = chosen_regime(pilot)
    assert name == "lora_all_lr2e-3_s20" and train.lr == 2e-3 and train.steps == 20
    assert study_configs(study, pilot, train)["sweep"].train.lr == 2e-3


def test_a_study_that_sets_train_or_names_an_unknown_control_task_is_refused(tmp_path):
    path = _local_copy(tmp_path)
    text = path.read_text()
    path.write_text(text.replace("  eval: {max_length: auto, chat: auto}",
                                 "  eval: {max_length: auto, chat: auto}\n  train: {lr: 0.1}"))
    with pytest.raises(ConfigError, match="sweep.train is set by the study"):
        load_study(path)
    path.write_text(text.replace("format_control:\n  tasks: [capital_cities", "format_control:\n  tasks: [nope"))
    with pytest.raises(ConfigError, match="format_control.tasks: 'nope'"):
        load_study(path)


def test_a_study_file_changed_after_its_seal_is_refused(tmp_path):
    path = _local_copy(tmp_path)
    study, _ = load_study(path)
    seal = seal_study(path, study)
    assert json.loads(seal.read_text())["sha256"] and seal_study(path, study) == seal
    path.write_text(path.read_text().replace("seeds: [0]", "seeds: [1]"))
    with pytest.raises(ConfigError, match="changed after its first result"):
        seal_study(path, load_study(path)[0])
