"""Sweeps end to end on a tiny model: layout, determinism, resume, and bad input."""

import errno
import json

import numpy as np
import pandas as pd
import pytest
from conftest import sweep_config_dict, write_jsonl

from forgetscope.config import parse_config
from forgetscope.errors import ConfigError, DataError, StoreError
from forgetscope.experiments import run_sweep
from forgetscope.store import SweepStore, load_forgetting


def _cfg(tiny_dir, tiny_data, out, **train):
    return parse_config(sweep_config_dict(tiny_dir, tiny_data, out, **train))


def _no_temp_files(path):
    return not [p for p in path.rglob("*") if p.name.endswith(".tmp")]


def test_sweep_writes_the_documented_layout(tiny_dir, tiny_data, tmp_path):
    out = tmp_path / "sweep"
    m = run_sweep(_cfg(tiny_dir, tiny_data, out))
    for name in ("manifest.json", "upstream.parquet", "runs.parquet", "forgetting.parquet", "F.npy"):
        assert (out / name).is_file(), name
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["model"]["kind"] == "local"
    assert manifest["versions"]["torch"] and manifest["seeds"] == [0]
    assert m.shape == (2, 13)
    F = np.load(out / "F.npy")
    up = pd.read_parquet(out / "upstream.parquet")
    long = pd.read_parquet(out / "forgetting.parquet")
    # F is loss_after - loss_before, row by row
    row = long[long.run_id == m.row_names[0]].set_index("example_id").loc[up.example_id]
    np.testing.assert_allclose(F[0], row.loss_after.to_numpy() - up.loss_before.to_numpy())
    assert not np.allclose(F[0], F[1])  # different tasks forget differently
    runs = pd.read_parquet(out / "runs.parquet")
    assert {"task_loss_before", "task_loss_after", "trainable_params", "wall_s"} <= set(runs.columns)
    assert up.loc[up.example_id == "q1", "em_before"].notna().all()
    assert up.loc[up.example_id == "u0", "em_before"].isna().all()
    loaded = load_forgetting(out)
    np.testing.assert_array_equal(loaded.values, F)
    assert _no_temp_files(out)


def test_same_seed_gives_the_same_matrix(tiny_dir, tiny_data, tmp_path):
    a = run_sweep(_cfg(tiny_dir, tiny_data, tmp_path / "a"))
    b = run_sweep(_cfg(tiny_dir, tiny_data, tmp_path / "b"))
    np.testing.assert_array_equal(a.values, b.values)


def test_killed_sweep_resumes_without_redoing_finished_runs(tiny_dir, tiny_data, tmp_path):
    out = tmp_path / "sweep"
    cfg = _cfg(tiny_dir, tiny_data, out)
    seen = []

    def kill_after_first(spec, record):
        seen.append(spec.run_id)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(cfg, on_run=kill_after_first)
    store = SweepStore(out)
    assert store.finished_run_ids() == [seen[0]]
    assert store.read_manifest()["status"] == "running"
    assert _no_temp_files(out)
    first_row = np.load(out / "F.npy")[0].copy()

    resumed = []
    m = run_sweep(cfg, on_run=lambda spec, rec: resumed.append(spec.run_id))
    assert resumed == [r for r in m.row_names if r != seen[0]]  # only the unfinished run ran
    np.testing.assert_array_equal(m.values[0], first_row)
    full = run_sweep(cfg, output=tmp_path / "fresh")
    np.testing.assert_array_equal(m.values, full.values)


def test_changed_config_in_same_directory_is_refused(tiny_dir, tiny_data, tmp_path):
    out = tmp_path / "sweep"
    run_sweep(_cfg(tiny_dir, tiny_data, out))
    with pytest.raises(StoreError, match="different sweep"):
        run_sweep(_cfg(tiny_dir, tiny_data, out, steps=4))
    m = run_sweep(_cfg(tiny_dir, tiny_data, out, steps=4), overwrite=True)
    assert m.shape == (2, 13)


def test_empty_task_fails_before_anything_is_written(tiny_dir, tiny_data, tmp_path):
    empty = tiny_data["root"] / "data" / "empty.jsonl"
    empty.write_text("")
    d = sweep_config_dict(tiny_dir, tiny_data, tmp_path / "sweep")
    d["tasks"].append({"name": "empty", "source": str(empty)})
    with pytest.raises(DataError, match="empty"):
        run_sweep(parse_config(d))
    assert not (tmp_path / "sweep").exists()


def test_missing_task_file(tiny_dir, tiny_data, tmp_path):
    d = sweep_config_dict(tiny_dir, tiny_data, tmp_path / "sweep")
    d["tasks"][0]["source"] = str(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match="nope.jsonl"):
        run_sweep(parse_config(d))
    assert not (tmp_path / "sweep").exists()


def test_sequence_longer_than_context_is_refused(tiny_dir, tiny_data, tmp_path):
    with pytest.raises(DataError, match="longer than the model's context"):
        run_sweep(_cfg(tiny_dir, tiny_data, tmp_path / "sweep", max_length=4096))
    # the directory may hold the manifest of a not-yet-started sweep but no data tables
    assert not (tmp_path / "sweep" / "F.npy").exists()


def test_disk_full_leaves_no_half_written_files(tiny_dir, tiny_data, tmp_path, monkeypatch):
    import forgetscope.store.io as store_mod

    out = tmp_path / "sweep"
    real = store_mod.pd.DataFrame.to_parquet
    calls = {"n": 0}

    def flaky(self, path, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:  # upstream, first run's rows, then fail mid-write
            with open(path, "wb") as fh:
                fh.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(self, path, *a, **k)

    monkeypatch.setattr(store_mod.pd.DataFrame, "to_parquet", flaky)
    with pytest.raises(OSError):
        run_sweep(_cfg(tiny_dir, tiny_data, out))
    assert _no_temp_files(out)
    for p in out.rglob("*.parquet"):
        pd.read_parquet(p)  # every file on disk is whole
    monkeypatch.setattr(store_mod.pd.DataFrame, "to_parquet", real)
    assert run_sweep(_cfg(tiny_dir, tiny_data, out)).shape == (2, 13)


def test_malformed_config_names_the_field(tiny_dir, tiny_data, tmp_path):
    d = sweep_config_dict(tiny_dir, tiny_data, tmp_path / "s")
    d["train"]["steps"] = "many"
    with pytest.raises(ConfigError, match=r"train\.steps"):
        parse_config(d)
    d["train"]["steps"] = 3
    d["train"]["lrate"] = 0.1
    with pytest.raises(ConfigError, match=r"train\.lrate: unknown field"):
        parse_config(d)
    with pytest.raises(ConfigError, match="tasks"):
        parse_config({**sweep_config_dict(tiny_dir, tiny_data, tmp_path / "s"), "tasks": []})


def test_upstream_with_duplicate_ids_is_refused(tiny_dir, tiny_data, tmp_path):
    write_jsonl(tiny_data["upstream"], [{"id": "x", "text": "a b c"}, {"id": "x", "text": "d e f"}])
    with pytest.raises(DataError, match="duplicate"):
        run_sweep(_cfg(tiny_dir, tiny_data, tmp_path / "s"))


def test_upstream_table_records_kinds_and_the_manifest_the_inputs(tiny_dir, tiny_data, tmp_path):
    out = tmp_path / "sweep"
    m = run_sweep(_cfg(tiny_dir, tiny_data, out))
    up = pd.read_parquet(out / "upstream.parquet")
    assert dict(zip(up.example_id, up.kind))["q1"] == "instruction"
    assert set(up.loc[up.example_id != "q1", "kind"]) == {"lm"}
    assert list(m.kinds) == up.kind.tolist()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["upstream_kinds"] == {"lm": 12, "instruction": 1}
    inputs = manifest["inputs"]
    assert inputs["upstream"]["source"] == str(tiny_data["upstream"]) and len(inputs["upstream"]["sha256"]) == 64
    assert set(inputs["tasks"]) == {"code", "qa"} and inputs["model"]["sha256"]
    # the default eval.max_length (512) is capped at the tiny model's context; nothing is cut
    assert manifest["eval"]["max_length"] == 128
    assert manifest["eval"]["truncated_examples"] == 0 and (up.n_truncated == 0).all()


def test_editing_a_data_file_after_a_sweep_refuses_to_resume_naming_the_file(tiny_dir, tiny_data, tmp_path):
    out = tmp_path / "sweep"
    cfg = _cfg(tiny_dir, tiny_data, out)
    run_sweep(cfg)
    before = sorted(p.name for p in out.rglob("*"))
    path = tiny_data["upstream"]
    path.write_text(path.read_text().replace("lazy dog", "sleepy dog"))
    with pytest.raises(StoreError, match=rf"upstream data file {path} changed since this sweep started.*--overwrite"):
        run_sweep(cfg)
    assert sorted(p.name for p in out.rglob("*")) == before  # nothing touched
    code = tiny_data["code"]
    code.write_text(code.read_text().replace("x * 1", "x * 11"))
    with pytest.raises(StoreError, match=rf"data of task 'code': file {code} changed"):
        run_sweep(cfg)
    m = run_sweep(cfg, overwrite=True)
    assert m.shape == (2, 13)
    assert run_sweep(cfg).shape == (2, 13)  # the fresh sweep resumes with the edited files


def test_changed_config_names_the_changed_field(tiny_dir, tiny_data, tmp_path):
    out = tmp_path / "sweep"
    run_sweep(_cfg(tiny_dir, tiny_data, out))
    with pytest.raises(StoreError, match=r"train\.steps: 3 → 4"):
        run_sweep(_cfg(tiny_dir, tiny_data, out, steps=4))
    d = sweep_config_dict(tiny_dir, tiny_data, out)
    d["eval"]["max_batch_tokens"] = 512  # batching trades memory for speed only: the sweep resumes
    assert run_sweep(parse_config(d)).shape == (2, 13)


def test_eval_max_length_is_separate_and_truncation_is_counted(tiny_dir, tiny_data, tmp_path):
    out = tmp_path / "sweep"
    d = sweep_config_dict(tiny_dir, tiny_data, out)
    d["eval"]["max_length"] = 36
    run_sweep(parse_config(d))
    up = pd.read_parquet(out / "upstream.parquet")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["eval"]["max_length"] == 36 and manifest["config"]["train"]["max_length"] == 64
    cut = up[up.n_truncated > 0]
    assert manifest["eval"]["truncated_examples"] == len(cut) > 0
    assert manifest["eval"]["truncated_tokens"] == int(up.n_truncated.sum())
    assert (up.n_tokens <= 35).all()  # at most max_length - 1 scored positions


def test_the_eval_record_is_resolved_once_written_and_read_back(tiny_dir, tiny_data, tmp_path):
    """eval.max_length travels one way: resolved once when the base model loads, written to the manifest's
    eval entry in the order sweeps have always written it, read back whole by the store."""
    from forgetscope.experiments.session import SweepSession
    from forgetscope.measure.record import EvalRecord
    from forgetscope.store import SweepStore

    out = tmp_path / "sweep"
    d = sweep_config_dict(tiny_dir, tiny_data, out)
    d["eval"]["max_length"] = 36
    cfg = parse_config(d)
    session = SweepSession.prepare(cfg)
    assert session.record is None and session._base is None  # a plain attribute: reading it loads nothing
    run_sweep(cfg, session=session)
    assert session.record == EvalRecord(max_length=36, chat=True, dtype="float32", max_batch_tokens=256)
    assert session.evaluator.record is session.record and session.chat is True
    manifest = json.loads((out / "manifest.json").read_text())
    assert list(manifest["eval"]) == ["max_length", "chat", "n_upstream", "truncated_examples", "truncated_tokens",
                                      "device", "dtype"]
    assert SweepStore(out).eval_record() == session.record


def test_eval_max_length_above_the_context_is_refused_before_anything_is_written(tiny_dir, tiny_data, tmp_path):
    d = sweep_config_dict(tiny_dir, tiny_data, tmp_path / "sweep")
    d["eval"]["max_length"] = 4096
    with pytest.raises(ConfigError, match=r"eval\.max_length=4096 is longer than the model's context of 128"):
        run_sweep(parse_config(d))
    assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize("row, msg", [
    ({"id": "x", "text": "."}, "tokenises to 1 token"),
    ({"id": "x", "prompt": "Say nothing.", "response": "   "}, "missing or empty field 'response'"),
])
def test_bad_upstream_examples_fail_before_anything_is_written(tiny_dir, tiny_data, tmp_path, row, msg):
    write_jsonl(tiny_data["upstream"], [{"id": "u0", "text": "The quick brown fox."}, row])
    with pytest.raises(DataError, match=msg):
        run_sweep(_cfg(tiny_dir, tiny_data, tmp_path / "sweep"))
    assert not (tmp_path / "sweep").exists()
