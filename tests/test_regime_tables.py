"""benchmarks/regime_tables.py: a pilot's criteria are copied from its verdicts, an unmeasurable answers
criterion is named as such, and a pilot without a selection is refused."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from conftest import load_script

tables = load_script(Path(__file__).parents[1] / "benchmarks" / "regime_tables.py")
PILOT = Path(__file__).parents[1] / "configs" / "regimes" / "gemma3.yaml"


def _pilot(tmp_path: Path) -> tuple[Path, Path]:
    cfg = yaml.safe_load(PILOT.read_text(encoding="utf-8"))
    out = tmp_path / "pilot"
    cfg["output"] = str(out)
    path = tmp_path / "pilot.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path, out


def _verdict(known: float, measurable: bool) -> dict:
    c = {"learns": {"value": 1.0, "target": 1.0, "met": True},
         "seed_r": {"value": 0.9123, "target": 0.7, "met": True},
         "damage": {"value": 0.0456, "target": 0.1, "met": True},
         "below_uniform": {"value": 4.567, "target": 12.4766, "met": True},
         "answers_retained": {"value": 0.625, "target": 0.5, "known_before_per_run": known,
                              "measurable": measurable, "met": measurable}}
    return {"n_runs": 12, "mean_task_loss_after": 1.23456, "criteria": c, "usable": measurable, "complete": True}


def test_rows_copy_each_criterion_and_name_an_unmeasurable_one(tmp_path: Path) -> None:
    path, out = _pilot(tmp_path)
    (out / "lora_all_lr1e-4_s20").mkdir(parents=True)
    (out / "lora_all_lr1e-4_s20" / "verdict.json").write_text(json.dumps(_verdict(4.0, False)))
    (out / "selection.json").write_text(json.dumps({
        "complete": False, "candidates_finished": ["lora_all_lr1e-4_s20"], "uniform_loss": 12.4766,
        "chosen": None, "reason": "no candidate meets every criterion: no usable regime"}))
    assert tables.main([str(path)]) == 0
    text = (out / "tables.md").read_text(encoding="utf-8")
    row = next(line for line in text.splitlines() if line.startswith("| lora_all_lr1e-4_s20 "))
    assert "| 12 | 1.2346 |" in row and "0.912 (≥ 0.7): met" in row and "0.046 (≤ 0.1): met" in row
    assert "0.625 kept of 4.0 known per run; fewer than 5 known: not measurable, **not met** | no |" in row
    assert "| lora_all_lr3e-4_s20 | 0.0003 × 20 | 0 | not started |" in text
    assert "**none**. no candidate meets every criterion: no usable regime." in text


def test_a_pilot_without_a_selection_is_refused_and_nothing_written(tmp_path: Path, capsys) -> None:
    path, out = _pilot(tmp_path)
    assert tables.main([str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "selection.json does not exist" in err and "\n" not in err
    assert not out.exists()


base_answers = load_script(Path(__file__).parents[1] / "benchmarks" / "base_answers.py")


def test_base_answers_refuse_a_pilot_without_instruction_pairs(tmp_path: Path, capsys) -> None:
    cfg = yaml.safe_load((PILOT.parent / "smollm2.yaml").read_text(encoding="utf-8"))
    cfg["output"] = str(tmp_path / "pilot")
    cfg["base"]["upstream"] = {"source": "demo", "n": 8, "n_instruct": 0, "lm_targets": "human"}
    path = tmp_path / "pilot.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    assert base_answers.main([str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: the pilot {path} has no instruction pairs with a gold answer"
    assert not (tmp_path / "pilot").exists()
