"""`forgetscope import / analyze / predict` end to end on a small synthetic matrix."""

import json

import numpy as np
import pandas as pd
import pytest

from forgetscope.cli import run_app


@pytest.fixture()
def matrix_file(tmp_path):
    rng = np.random.default_rng(0)
    F = 0.3 + rng.normal(size=(12, 2)) @ rng.normal(size=(2, 150)) + 0.2 * rng.normal(size=(12, 150))
    np.save(tmp_path / "F.npy", F)
    return tmp_path / "F.npy"


def test_import_analyze_predict(tmp_path, matrix_file):
    sweep = tmp_path / "sweep"
    assert run_app(["import", str(matrix_file), str(sweep)]) == 0
    assert run_app(["analyze", str(sweep), "--max-rank", "4"]) == 0
    report = json.loads((sweep / "analysis" / "analysis.json").read_text())
    assert len(report["r2_by_rank"]) == 4
    for png in ("heatmap.png", "spectrum_r2.png"):
        assert (sweep / "analysis" / png).stat().st_size > 1000
    assert run_app(["predict", str(sweep), "--probe", "0.05", "--probe", "0.2", "-m", "knn", "-m", "lowrank",
                    "--folds", "3", "--k", "5"]) == 0
    table = pd.read_csv(sweep / "predict" / "predict_cv.csv")
    assert set(table["predictor"]) == {"additive", "knn", "lowrank"}
    for png in ("scatter.png", "precision_at_k.png"):
        assert (sweep / "predict" / png).stat().st_size > 1000


def test_matrix_file_directly_and_no_figures(tmp_path, matrix_file):
    out = tmp_path / "out"
    assert run_app(["predict", str(matrix_file), "-p", "10", "--probe-method", "active", "--no-figures",
                    "--out", str(out), "--folds", "2"]) == 0
    assert (out / "predict_summary.json").exists() and not (out / "scatter.png").exists()


@pytest.mark.parametrize("args, msg", [
    (["predict", "{f}", "-p", "0"], "probe size must be positive"),
    (["predict", "{f}", "-p", "100000"], "larger than"),
    (["predict", "{f}", "-m", "oracle"], "unknown predictor"),
    (["predict", "{f}", "--probe-method", "smart"], "unknown probe method"),
    (["analyze", "{d}/missing.npy"], "no such sweep directory or matrix file"),
])
def test_user_errors_are_one_line(tmp_path, matrix_file, capsys, args, msg):
    argv = [a.format(f=matrix_file, d=tmp_path) for a in args]
    assert run_app(argv) == 2
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err
