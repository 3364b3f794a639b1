"""`--json` on analyze / predict / measure (one JSON document on stdout, the files still written) and tables
that keep every column and digit when stdout is a pipe."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from conftest import TEXTS, write_jsonl

from forgetscope.cli import run_app


@pytest.fixture()
def matrix_file(tmp_path):
    rng = np.random.default_rng(0)
    F = 0.3 + rng.normal(size=(10, 2)) @ rng.normal(size=(2, 80)) + 0.2 * rng.normal(size=(10, 80))
    np.save(tmp_path / "F.npy", F)
    return tmp_path / "F.npy"


def test_analyze_json_is_the_whole_stdout_and_matches_analysis_json(matrix_file, tmp_path, capsys):
    out = tmp_path / "an"
    assert run_app(["analyze", str(matrix_file), "-k", "3", "--no-figures", "-o", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)  # nothing but the document on stdout
    assert "low-rank structure" in captured.err and "wrote" in captured.err  # tables and info on stderr
    written = json.loads((out / "analysis.json").read_text())
    assert doc["kind"] == "all" and doc["output"] == str(out)
    assert doc["r2_by_rank"] == pytest.approx(written["r2_by_rank"])
    by_metric = doc["r2_by_rank_by_metric"]
    assert set(by_metric) >= {"global", "reference"} and all(len(v) == 3 for v in by_metric.values())
    verdicts = doc["marginals"]["verdicts"]
    assert verdicts and all({"claim", "shown", "line"} <= set(v) for v in verdicts)
    assert (out / "r2_by_rank.csv").exists()


def test_predict_json_holds_the_summary_rows(matrix_file, tmp_path, capsys):
    out = tmp_path / "pr"
    assert run_app(["predict", str(matrix_file), "-p", "10", "--folds", "2", "--draws", "2", "--no-figures",
                    "-o", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["summary"] == json.loads((out / "predict_summary.json").read_text(), parse_constant=lambda c: None)
    methods = {row["method"] for row in doc["summary"]}
    assert {"additive", "knn", "lowrank"} <= methods
    additive = next(r for r in doc["summary"] if r["method"] == "additive")
    assert additive["rmse"] > 0 and additive["probe_size"] == 10
    assert doc["protocol"]["splits"] and isinstance(doc["task_tests"], list)


def test_json_stdout_is_strict_json_without_nan(matrix_file, tmp_path, capsys):
    assert run_app(["predict", str(matrix_file), "-p", "10", "--folds", "2", "--draws", "1", "--no-figures",
                    "-o", str(tmp_path / "pr"), "--json"]) == 0
    text = capsys.readouterr().out
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))


def test_a_user_error_with_json_leaves_stdout_empty(tmp_path, capsys):
    assert run_app(["analyze", str(tmp_path / "missing.npy"), "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "error:" in captured.err


def test_stdout_is_back_after_a_json_command(matrix_file, tmp_path, capsys):
    assert run_app(["analyze", str(matrix_file), "-k", "2", "--no-figures", "-o", str(tmp_path / "a"),
                    "--shuffles", "20", "--json"]) == 0
    capsys.readouterr()
    assert run_app(["analyze", str(matrix_file), "-k", "2", "--no-figures", "-o", str(tmp_path / "b")]) == 0
    assert "low-rank structure" in capsys.readouterr().out


def test_piped_analyze_keeps_every_column_and_digit(matrix_file, tmp_path, capsys):
    assert run_app(["analyze", str(matrix_file), "-k", "3", "--no-figures", "-o", str(tmp_path / "an")]) == 0
    out = capsys.readouterr().out  # captured: not a terminal
    assert "…" not in out
    for header in ("singular value", "energy share", "R²(k) global", "R²(k) reference", "interaction"):
        assert header in out, header
    # each rank's row of the shuffle table on one line: observed R² and the full band, for both metrics
    band = r"-?\d\.\d{3} \[-?\d\.\d{3}, -?\d\.\d{3}\]"
    rows = [line for line in out.splitlines() if re.search(rf"{band}.*{band}.*{band}", line)]
    assert len(rows) == 3


@pytest.fixture(scope="module")
def measure_files(tiny_dir, tmp_path_factory):
    """A nudged copy of the tiny model (a stand-in fine-tune, with its tokenizer) and an upstream file."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = tmp_path_factory.mktemp("measure_json")
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    model.save_pretrained(root / "ft")
    AutoTokenizer.from_pretrained(tiny_dir).save_pretrained(root / "ft")
    up = write_jsonl(root / "upstream.jsonl", [{"id": f"u{i}", "text": t} for i, t in enumerate(TEXTS)])
    return {"base": tiny_dir, "ft": root / "ft", "upstream": up, "root": root}


def test_measure_json_holds_the_summary_and_top_examples(measure_files, capsys):
    out = measure_files["root"] / "sweep"
    assert run_app(["measure", "--model", str(measure_files["ft"]), "--base", str(measure_files["base"]),
                    "--upstream", str(measure_files["upstream"]), "-o", str(out), "--top", "3", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["output"] == str(out) and doc["measured"] == ["ft"]
    (kind, part), = doc["kinds"].items()
    (row,) = part["summary"]
    assert row["finetune"] == "ft" and row["n_measured"] == len(TEXTS)
    assert 0.0 <= row["share_forgotten"] <= 1.0 and row["max_forgetting"] >= row["mean_forgetting"]
    top = part["top"]
    assert [t["rank"] for t in top] == [1, 2, 3] and top[0]["forgetting"] == pytest.approx(row["max_forgetting"])
    assert all(t["text"] for t in top)


def test_forecast_json_holds_predictor_cost_top_and_verify(tiny_dir, tiny_data, measure_files, tmp_path, capsys):
    from conftest import sweep_config_dict

    from forgetscope.config import parse_config
    from forgetscope.experiments import run_sweep

    sweep = tmp_path / "sweep"
    run_sweep(parse_config(sweep_config_dict(tiny_dir, tiny_data, sweep)))
    assert run_app(["forecast", str(sweep), "--model", str(measure_files["ft"]), "--probe", "4", "--top", "3",
                    "--verify", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    written = json.loads((sweep / "forecast" / "ft" / "forecast.json").read_text(), parse_constant=lambda c: None)
    assert doc["predictor"] == written["predictor"] and doc["cost"]["probe_evaluations"] == 4
    assert [t["rank"] for t in doc["top"]] == [1, 2, 3] and doc["top"] == written["top"]
    assert doc["verify"] and {"rmse", "pearson"} <= set(doc["verify"][0])
