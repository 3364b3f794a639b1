#!/usr/bin/env python3
"""Write docs/config.md, the reference of every field a YAML config may set, from the config models' schemas.

The help text lives on the fields themselves (``Field(description=...)``), so the reference is generated,
never edited by hand; tests/test_config_reference.py fails when the committed page differs from what this
script writes now. Run after changing a config model:

    python scripts/config_reference.py            # --out docs/config.md
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from forgetscope.config import EvalConfig, LoadConfig, SourceConfig, SweepConfig, TaskConfig, TrainConfig
from forgetscope.experiments.compare.config import (
    CompareConfig,
    CompareOptions,
    KnownRows,
    PrimaryPair,
    StrategySpec,
)
from forgetscope.experiments.compare.sam_grid import PrimaryContrast, SamGrid, SamGridConfig
from forgetscope.experiments.measure import FinetuneEntry, MeasureConfig
from forgetscope.experiments.regime_pilot import RegimeCriteria, RegimePilot
from forgetscope.experiments.scaling import ScalingConfig, ScalingCriteria
from forgetscope.experiments.sharpness import SharpnessSweepConfig
from forgetscope.measure.sharpness import SharpnessOptions

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "config.md"

#: (title, the command that reads it, the models of its tables in order); a model extending another
#: lists only the fields it adds.
SECTIONS: list[tuple[str, str, list[type[BaseModel]]]] = [
    ("Sweep", "`forgetscope run` (`--check` validates only)",
     [SweepConfig, SourceConfig, TaskConfig, TrainConfig, EvalConfig, LoadConfig]),
    ("Comparison", "`forgetscope compare`", [CompareConfig, StrategySpec, CompareOptions, KnownRows, PrimaryPair]),
    ("SAM radius grid", "`forgetscope compare` (a config with `sam_grid`)", [SamGridConfig, SamGrid, PrimaryContrast]),
    ("Sharpness sweep", "`forgetscope sharpness`", [SharpnessSweepConfig, SharpnessOptions]),
    ("Scaling sweep", "`forgetscope scaling`", [ScalingConfig, ScalingCriteria]),
    ("Measuring existing fine-tunes", "`forgetscope measure`", [MeasureConfig, FinetuneEntry]),
    ("Regime pilot", "`python benchmarks/regime_pilot.py`", [RegimePilot, RegimeCriteria]),
]

HEADER = """# Config reference

Every field a YAML config may set, with its type, default and meaning. Generated from the config models by
`python scripts/config_reference.py`; do not edit by hand (tests/test_config_reference.py checks that this
page matches the models). Unknown fields are refused with an error naming them. Nested models are written
as YAML mappings (`train: {steps: 30, lr: 5e-4}`); *required* fields have no default.
"""

LIMITS = {"minimum": ">= {}", "exclusiveMinimum": "> {}", "maximum": "<= {}", "exclusiveMaximum": "< {}"}
SCALARS = {"string": "str", "integer": "int", "number": "float", "boolean": "bool", "null": "null",
           "object": "mapping", "array": "list"}


def _name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def type_of(schema: dict[str, Any]) -> str:
    """A short type for a field's JSON schema: ``int >= 1``, ``list[int] | null``, ``"lora" | "full"``."""
    if "$ref" in schema:
        return f"[{_name(schema['$ref'])}](#{_name(schema['$ref']).lower()})"
    if "anyOf" in schema:
        return " \\| ".join(type_of(s) for s in schema["anyOf"])
    if "enum" in schema:
        return " \\| ".join(json.dumps(v) for v in schema["enum"])
    if "const" in schema:
        return json.dumps(schema["const"])
    kind = schema.get("type")
    if kind == "array":
        items = schema.get("prefixItems")
        inner = ", ".join(type_of(s) for s in items) if items else type_of(schema.get("items", {}))
        out = f"{'tuple' if items else 'list'}[{inner}]"
    elif kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        out = f"mapping of {type_of(schema['additionalProperties'])}"
    else:
        out = "path" if schema.get("format") == "path" else SCALARS.get(kind, "any")
    limits = [fmt.format(schema[k]) for k, fmt in LIMITS.items() if k in schema]
    return f"{out} {', '.join(limits)}" if limits else out


def default_of(model: type[BaseModel], name: str) -> str:
    """The field's default as YAML would spell it; a nested model shows only the fields it sets."""
    field = model.model_fields[name]
    if field.is_required():
        return "*required*"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        changed = value.model_dump(mode="json", exclude_defaults=True)
        return f"`{json.dumps(changed)}`" if changed else "its defaults"
    if isinstance(value, Path):
        value = str(value)
    return f"`{json.dumps(value)}`"


def _rst_to_md(text: str) -> str:
    """A docstring's reST roles and double backquotes as Markdown code."""
    text = re.sub(r":\w+:`~?([^`]+)`", r"`\1`", text).replace("``", "`")
    return text[:-2] + "." if text.endswith("::") else text


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def table(model: type[BaseModel]) -> str:
    """One model's section: its docstring's first paragraph and a row per field it declares."""
    schema = model.model_json_schema(by_alias=False)
    parent = next((b for b in model.__mro__[1:] if b in MODELS), None)
    own = model.__dict__.get("__annotations__", {})
    fields = [n for n in model.model_fields if parent is None or n not in parent.model_fields or n in own]
    lines = [f"### {model.__name__}", ""]
    doc = (model.__doc__ or "").strip().split("\n\n")[0]
    if doc and not doc.startswith(("Usage docs", "A base class")):
        lines += [_rst_to_md(_cell(doc)), ""]
    if parent is not None:
        lines += [f"Every field of [{parent.__name__}](#{parent.__name__.lower()}), and:", ""]
    lines += ["| field | type | default | description |", "|---|---|---|---|"]
    for name in fields:
        prop = schema["properties"][name]
        lines.append(f"| `{name}` | {type_of(prop)} | {default_of(model, name)} | "
                     f"{_cell(model.model_fields[name].description or '')} |")
    return "\n".join(lines) + "\n"


MODELS = [m for _, _, models in SECTIONS for m in models]


def render() -> str:
    """The whole page, as written to docs/config.md."""
    parts = [HEADER]
    for title, command, models in SECTIONS:
        parts.append(f"## {title}\n\nRead by {command}.\n")
        parts.extend(table(m) for m in models)
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    args.out.write_text(render(), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
