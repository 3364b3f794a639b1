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
    for png in ("heatmap.png", "spectrum_r2.png", "r2_vs_shuffles.png"):
        assert (sweep / "analysis" / png).stat().st_size > 1000
    assert run_app(["predict", str(sweep), "--probe", "0.05", "--probe", "0.2", "-m", "knn", "-m", "lowrank",
                    "--folds", "3", "--k", "5"]) == 0
    table = pd.read_csv(sweep / "predict" / "predict_cv.csv")
    assert set(table["predictor"]) == {"additive", "knn", "lowrank", "column-mean", "probe-mean", "all-forgotten"}
    for png in ("scatter.png", "precision_at_k.png"):
        assert (sweep / "predict" / png).stat().st_size > 1000


def test_matrix_file_directly_and_no_figures(tmp_path, matrix_file):
    out = tmp_path / "out"
    assert run_app(["predict", str(matrix_file), "-p", "10", "--probe-method", "active", "--no-figures",
                    "--output", str(out), "--folds", "2"]) == 0
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


@pytest.fixture()
def kind_sweep(tmp_path):
    """A sweep directory whose columns are 90 plain-text and 60 instruction examples with different structure."""
    from forgetscope.store import ForgettingMatrix, write_matrix_sweep

    rng = np.random.default_rng(1)
    lm = 0.2 + rng.normal(size=(12, 1)) @ rng.normal(size=(1, 90)) + 0.05 * rng.normal(size=(12, 90))
    inst = -1.0 + rng.normal(size=(12, 60))
    cols = [f"t{j}" for j in range(90)] + [f"p{j}" for j in range(60)]
    upstream = pd.DataFrame({"example_id": cols, "kind": ["lm"] * 90 + ["instruction"] * 60, "loss_before": 1.0})
    m = ForgettingMatrix(np.hstack([lm, inst]), [f"r{i}" for i in range(12)], cols, upstream=upstream)
    write_matrix_sweep(m, tmp_path / "kinds")
    return tmp_path / "kinds"


def test_matrix_select_kind_keeps_the_columns_of_one_kind(kind_sweep):
    from forgetscope.errors import DataError
    from forgetscope.store import load_forgetting

    m = load_forgetting(kind_sweep)
    assert m.kind_counts() == {"lm": 90, "instruction": 60} and m.default_kind() == "lm"
    lm = m.select_kind("lm")
    assert lm.shape == (12, 90) and lm.col_names[0] == "t0" and set(lm.kinds) == {"lm"}
    assert lm.upstream["example_id"].tolist() == lm.col_names
    np.testing.assert_array_equal(m.select_kind("instruction").values, m.values[:, 90:])
    assert m.select_kind("all").shape == (12, 150)
    with pytest.raises(DataError, match="unknown example kind 'text'"):
        m.select_kind("text")
    only_lm = lm.select_kind("lm")
    with pytest.raises(DataError, match=r"no 'instruction' examples in this matrix; kinds present: lm \(90\)"):
        only_lm.select_kind("instruction")


def test_analyze_and_predict_work_per_kind(kind_sweep, capsys):
    assert run_app(["analyze", str(kind_sweep), "--max-rank", "3", "--no-figures"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "kind: lm" in out and "90 of 150 upstream examples" in out
    lm = json.loads((kind_sweep / "analysis" / "lm" / "analysis.json").read_text())
    assert run_app(["analyze", str(kind_sweep), "--max-rank", "3", "--no-figures", "--kind", "instruction"]) == 0
    inst = json.loads((kind_sweep / "analysis" / "instruction" / "analysis.json").read_text())
    assert lm["r2_by_rank"][0] > 0.8 and inst["r2_by_rank"][0] < 0.5  # lm columns: rank 1; the others: noise
    assert run_app(["predict", str(kind_sweep), "--kind", "instruction", "-m", "knn", "--folds", "3",
                    "--no-figures"]) == 0
    assert "12 tasks x 60 instruction examples" in " ".join(capsys.readouterr().out.split())
    assert (kind_sweep / "predict" / "instruction" / "predict_summary.csv").is_file()


@pytest.mark.parametrize("args, msg", [
    (["analyze", "{s}", "--kind", "instruction"], "no 'instruction' examples in this matrix; kinds present: lm (150)"),
    (["predict", "{s}", "--kind", "lm"], "no 'lm' examples in this matrix; kinds present: instruction (150)"),
    (["analyze", "{f}", "--kind", "lm"], "does not record which examples are 'lm'"),
    (["predict", "{f}", "--kind", "text"], "unknown example kind 'text'; use one of lm, instruction, all"),
])
def test_a_kind_with_no_examples_is_one_line_and_writes_nothing(tmp_path, matrix_file, capsys, args, msg):
    from forgetscope.store import ForgettingMatrix, write_matrix_sweep

    rng = np.random.default_rng(0)
    kind = "lm" if "instruction" in args else "instruction"
    cols = [f"c{j}" for j in range(150)]
    m = ForgettingMatrix(rng.normal(size=(6, 150)), [f"r{i}" for i in range(6)], cols,
                         upstream=pd.DataFrame({"example_id": cols, "kind": kind, "loss_before": 1.0}))
    sweep = tmp_path / "one-kind"
    write_matrix_sweep(m, sweep)
    argv = [a.format(s=sweep, f=matrix_file) for a in args]
    assert run_app(argv) == 2
    err = capsys.readouterr().err
    assert msg in " ".join(err.split()) and "Traceback" not in err
    assert not (sweep / "analysis").exists() and not (sweep / "predict").exists()
    assert not (tmp_path / "F_analysis").exists() and not (tmp_path / "F_predict").exists()


def test_predict_records_where_its_noise_margin_came_from(tmp_path, matrix_file):
    out = tmp_path / "out"
    args = ["predict", str(matrix_file), "-p", "10", "--no-figures", "--output", str(out), "--folds", "2"]
    assert run_app(args) == 0
    proto = json.loads(next(out.glob("predict_protocol*.json")).read_text())
    assert proto["tau_source"].startswith("default")  # no seeds to estimate it from: the default, said so
    assert run_app([*args, "--tau", "0.1"]) == 0
    proto = json.loads(next(out.glob("predict_protocol*.json")).read_text())
    assert proto["tau_source"] == "given" and proto["tau"] == 0.1
