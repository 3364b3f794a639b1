"""docs/config.md is generated from the config models; it must match what the script writes now."""

import importlib.util
from pathlib import Path

from forgetscope.config import SweepConfig, TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("config_reference", ROOT / "scripts" / "config_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_config_reference_is_current():
    expected = _script().render()
    committed = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    assert committed == expected, "docs/config.md is stale: run python scripts/config_reference.py"


def test_every_field_of_the_listed_models_has_help_text_and_a_row():
    script = _script()
    page = script.render()
    for model in script.MODELS:
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
    for name in (*SweepConfig.model_fields, *TrainConfig.model_fields):
        assert f"| `{name}` |" in page, name
