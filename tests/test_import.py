"""Importing external matrices (NPY/CSV/Parquet, wide or long) into sweep directories."""

import numpy as np
import pandas as pd
import pytest

from forgetscope.errors import DataError, ForgetscopeError
from forgetscope.importing import import_matrix, load_any, read_matrix_file, read_names

F = np.array([[0.1, 0.2, np.nan], [0.4, 0.5, 0.6]])


def test_npy_with_and_without_names(tmp_path):
    np.save(tmp_path / "f.npy", F)
    m = read_matrix_file(tmp_path / "f.npy")
    assert m.row_names == ["row_0", "row_1"] and m.col_names == ["col_0", "col_1", "col_2"]
    (tmp_path / "rows.txt").write_text("taskA\ntaskB\n")
    m = read_matrix_file(tmp_path / "f.npy", row_names=read_names(tmp_path / "rows.txt"))
    assert m.row_names == ["taskA", "taskB"]
    np.testing.assert_array_equal(np.isnan(m.values), np.isnan(F))


def test_csv_and_parquet_wide_and_long(tmp_path):
    wide = pd.DataFrame(F, columns=["e1", "e2", "e3"])
    wide.insert(0, "task", ["a", "b"])
    wide.to_csv(tmp_path / "w.csv", index=False)
    wide.to_parquet(tmp_path / "w.parquet")
    for name in ("w.csv", "w.parquet"):
        m = read_matrix_file(tmp_path / name)
        assert m.row_names == ["a", "b"] and m.col_names == ["e1", "e2", "e3"]
    long = pd.DataFrame({"run_id": ["a", "a", "b", "b", "b"], "example_id": ["e1", "e2", "e1", "e2", "e3"],
                         "forgetting": [0.1, 0.2, 0.4, 0.5, 0.6]})
    long.to_parquet(tmp_path / "l.parquet")
    m = read_matrix_file(tmp_path / "l.parquet")
    assert m.shape == (2, 3) and np.isnan(m.values[0, 2])
    pd.DataFrame(F).to_csv(tmp_path / "plain.csv", index=False)  # numeric header, no names column
    assert read_matrix_file(tmp_path / "plain.csv").row_names == ["row_0", "row_1"]


def test_import_roundtrip_and_load_any(tmp_path):
    np.save(tmp_path / "f.npy", F)
    m = import_matrix(tmp_path / "f.npy", tmp_path / "sweep")
    again = load_any(tmp_path / "sweep")
    np.testing.assert_array_equal(np.isnan(again.values), np.isnan(F))
    assert again.row_names == m.row_names
    with pytest.raises(ForgetscopeError, match="refusing to overwrite"):
        import_matrix(tmp_path / "f.npy", tmp_path / "sweep")
    import_matrix(tmp_path / "f.npy", tmp_path / "sweep", overwrite=True)


@pytest.mark.parametrize("setup, msg", [
    (lambda p: np.save(p / "x.npy", np.zeros(3)), "2-D"),
    (lambda p: (p / "x.txt").write_text("1 2"), "unsupported"),
    (lambda p: (p / "x.csv").write_text("task,a\nt1,hello\n"), "non-numeric"),
    (lambda p: (p / "x.csv").write_text(""), "cannot read"),
])
def test_bad_files(tmp_path, setup, msg):
    setup(tmp_path)
    path = next(tmp_path.iterdir())
    with pytest.raises(DataError, match=msg):
        read_matrix_file(path)


def test_mismatched_names_and_missing_paths(tmp_path):
    np.save(tmp_path / "f.npy", F)
    with pytest.raises(DataError, match="3 row names for a matrix with 2 rows"):
        read_matrix_file(tmp_path / "f.npy", row_names=["a", "b", "c"])
    with pytest.raises(DataError, match="column names"):
        read_matrix_file(tmp_path / "f.npy", col_names=["a"])
    with pytest.raises(ForgetscopeError, match="not unique"):
        read_matrix_file(tmp_path / "f.npy", row_names=["a", "a"])
    with pytest.raises(DataError, match="no such"):
        load_any(tmp_path / "nope")
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(DataError, match="not a forgetscope sweep"):
        load_any(tmp_path / "emptydir")
    with pytest.raises(DataError, match="names file not found"):
        read_names(tmp_path / "missing.txt")
