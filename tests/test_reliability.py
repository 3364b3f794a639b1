"""Nothing mixed, nothing silent: one writer per output directory, multi-process launches refused, inputs
recognised by their content, stored runs checked before a resume trusts them, and bad input refused in one
line before any model loads."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import sweep_config_dict

from forgetscope.config import parse_config
from forgetscope.errors import StoreError
from forgetscope.store.lock import LOCK_NAME, OutputLock, refuse_multi_process


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    with OutputLock(tmp_path / "out", command="forgetscope run a.yaml"):
        with pytest.raises(StoreError, match=r"being written by pid \d+ .*forgetscope run a\.yaml"):
            OutputLock(tmp_path / "out").acquire()
    with OutputLock(tmp_path / "out"):  # released on exit: the next writer gets it
        assert json.loads((tmp_path / "out" / LOCK_NAME).read_text())["command"]


def test_a_lock_refused_before_anything_was_written_leaves_no_directory(tmp_path):
    with OutputLock(tmp_path / "new"):
        pass
    assert not (tmp_path / "new").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="is a file"):
        OutputLock(tmp_path / "file").acquire()


def test_run_sweep_refuses_a_directory_another_process_writes(tiny_dir, tiny_data, tmp_path):
    from forgetscope.config import parse_config
    from forgetscope.experiments import run_sweep

    out = tmp_path / "sweep"
    cfg = parse_config(sweep_config_dict(tiny_dir, tiny_data, out))
    with OutputLock(out, command="the first writer"):  # held deterministically before the second starts
        with pytest.raises(StoreError, match="the first writer"):
            run_sweep(cfg)
        assert [p.name for p in out.iterdir()] == [LOCK_NAME]  # the refused writer wrote nothing
    matrix = run_sweep(cfg)  # once the holder is gone the sweep runs, and resumes over its own lock file
    assert matrix.shape[0] == 2
    assert run_sweep(cfg).shape == matrix.shape


def test_the_cli_refuses_the_second_writer_with_exit_2(tiny_dir, tiny_data, tmp_path, capsys):
    import yaml

    from forgetscope.cli import run_app

    out = tmp_path / "sweep"
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump(sweep_config_dict(tiny_dir, tiny_data, out)))
    with OutputLock(out, command="the first writer"):
        assert run_app(["run", str(config)]) == 2
    err = capsys.readouterr().err
    assert "one writer per output directory" in err and "Traceback" not in err


def test_a_multi_process_launch_is_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(StoreError, match="WORLD_SIZE=4"):
        refuse_multi_process("forgetscope run")
    monkeypatch.setenv("WORLD_SIZE", "1")
    refuse_multi_process("forgetscope run")  # a single process is fine


# ---- nothing mixed: inputs known by their content, stored runs checked before they are trusted ----

@pytest.fixture(autouse=True)
def _own_hash_cache(tmp_path, monkeypatch):
    """Content hashes are remembered in forgetscope's cache dir: a fresh one per test."""
    monkeypatch.setenv("FORGETSCOPE_CACHE", str(tmp_path / "fs-cache"))


def _model_copy(tiny_dir, tmp_path):
    import shutil

    return Path(shutil.copytree(tiny_dir, tmp_path / "model-copy"))


def _rewrite_keeping_stat(path: Path, data: bytes) -> None:
    """Replace a file's bytes in place with as many other bytes, and set its mtime back."""
    st = path.stat()
    assert len(data) == st.st_size
    with open(path, "r+b") as fh:
        fh.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns


def _cfg(tiny_dir, tiny_data, out, **changes):
    from forgetscope.config import parse_config

    d = sweep_config_dict(tiny_dir, tiny_data, out)
    d.update(changes)
    return parse_config(d)


def test_a_model_file_changed_with_the_same_size_and_mtime_refuses_to_resume_naming_it(tiny_dir, tiny_data,
                                                                                       tmp_path):
    from forgetscope.experiments import run_sweep

    model = _model_copy(tiny_dir, tmp_path)
    out = tmp_path / "sweep"
    run_sweep(_cfg(model, tiny_data, out))
    recorded = json.loads((out / "manifest.json").read_text())["inputs"]["model"]
    assert set(recorded["files"]) >= {"config.json", "model.safetensors", "tokenizer.json"}
    weights = model / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    _rewrite_keeping_stat(weights, bytes(data))
    with pytest.raises(StoreError, match=r"model file .*model\.safetensors changed since this sweep started"):
        run_sweep(_cfg(model, tiny_data, out))


def test_a_model_is_hashed_once_per_file_version(tiny_dir, tmp_path, monkeypatch):
    import forgetscope.models as models

    model = _model_copy(tiny_dir, tmp_path)
    calls = []
    real = models.file_sha256
    monkeypatch.setattr(models, "file_sha256", lambda p, *a: calls.append(Path(p).name) or real(p, *a))
    first = models.resolve_model(str(model))
    n_files = len(first.files)
    assert len(calls) == n_files  # every config, tokenizer and weight file read once
    again = models.resolve_model(str(model))
    assert len(calls) == n_files and again.sha256 == first.sha256  # the second time from the cache
    (model / "generation_config.json").write_text((model / "generation_config.json").read_text() + " ")
    changed = models.resolve_model(str(model))
    assert calls[n_files:] == ["generation_config.json"]  # only the changed file is read again
    assert changed.files["generation_config.json"] != first.files["generation_config.json"]


def test_a_sweep_recorded_before_content_hashes_still_resumes(tiny_dir, tiny_data, tmp_path):
    from forgetscope.experiments import run_sweep
    from forgetscope.models import legacy_directory_digest

    model = _model_copy(tiny_dir, tmp_path)
    out = tmp_path / "sweep"
    cfg = _cfg(model, tiny_data, out)
    run_sweep(cfg)
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    old = {"location": str(model.resolve()), "gguf_file": None, "sha256": legacy_directory_digest(model)}
    manifest["inputs"]["model"] = old  # as sweeps recorded a local model before content hashes
    manifest["model"] = {"kind": "local", **old}
    manifest_path.write_text(json.dumps(manifest))
    for record in (out / "runs").glob("*.json"):  # runs written before checksums
        rec = json.loads(record.read_text())
        rec.pop("rows_sha256")
        record.write_text(json.dumps(rec))
    rerun = []
    run_sweep(cfg, on_run=lambda spec, rec: rerun.append(spec.run_id))
    assert rerun == []  # compared on what both record: resumed, nothing redone
    weights = model / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    with pytest.raises(StoreError, match="changed since this sweep started"):  # the old record still guards
        run_sweep(cfg)


def test_a_hub_model_is_pinned_by_its_commit(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from huggingface_hub import HfApi, constants

    from forgetscope.experiments.session import model_changes
    from forgetscope.models import ModelSource, _pinned, resolve_model

    repo = tmp_path / "hub" / "models--owner--name"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("c0ffee" * 6 + "abcd")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    offline = resolve_model("owner/name")
    assert offline.revision == "c0ffee" * 6 + "abcd"  # offline: the commit the cache holds for main
    assert _pinned(offline) == {"revision": offline.revision}  # and the weights are loaded at that commit
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(HfApi, "model_info", lambda self, repo_id, **kw: SimpleNamespace(sha="f" * 40))
    online = resolve_model("owner/name")
    assert online.revision == "f" * 40  # online: what the hub resolves main to now
    old, new = offline.describe(), online.describe()
    assert "resolves to commit ffffffffffff, not the sweep's c0ffeec0ffee" in model_changes(old, new)[0]
    assert model_changes({"location": "owner/name", "sha256": None}, new) == []  # recorded before commits
    assert model_changes(new, ModelSource("hub", "owner/name", revision="f" * 40).describe()) == []


@pytest.fixture
def finished_sweep(tiny_dir, tiny_data, tmp_path):
    """A finished two-run sweep and its config."""
    from forgetscope.experiments import run_sweep

    out = tmp_path / "sweep"
    cfg = _cfg(tiny_dir, tiny_data, out)
    matrix = run_sweep(cfg)
    return out, cfg, matrix


def test_a_run_file_that_no_longer_matches_its_checksum_is_refused_naming_it(finished_sweep):
    import pandas as pd

    from forgetscope.store import SweepStore

    out, _, matrix = finished_sweep
    run_id = matrix.row_names[0]
    store = SweepStore(out)
    assert len(store.read_run_record(run_id)["rows_sha256"]) == 64
    assert "rows_sha256" not in store.read_runs().columns  # a property of the file, not of the run
    rows_path = out / "runs" / f"{run_id}.parquet"
    rows = pd.read_parquet(rows_path)
    rows["loss_after"] += 1.0  # a whole, readable file with other numbers in it
    rows.to_parquet(rows_path, index=False)
    with pytest.raises(StoreError, match=rf"runs/{run_id}\.parquet in .* does not match the sha256"):
        store.consolidate()
    record_path = out / "runs" / f"{run_id}.json"
    record = json.loads(record_path.read_text())
    record.pop("rows_sha256")  # a run written before checksums: accepted as it is
    record_path.write_text(json.dumps(record))
    assert store.consolidate().shape == matrix.shape


@pytest.mark.parametrize("suffix", [".parquet", ".json"])
def test_a_damaged_run_file_is_named_before_any_model_loads_and_repair_runs_it_again(finished_sweep, suffix,
                                                                                    monkeypatch):
    import numpy as np

    from forgetscope.experiments import SweepSession, run_sweep

    out, cfg, matrix = finished_sweep
    run_id = matrix.row_names[1]
    damaged = out / "runs" / f"{run_id}{suffix}"
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])  # truncated
    with monkeypatch.context() as m:
        m.setattr(SweepSession, "base", lambda self: pytest.fail("a model was loaded"))
        with pytest.raises(StoreError, match=rf"runs/{run_id}\{suffix} in .* is damaged: .*--repair"):
            run_sweep(cfg)
    rerun = []
    repaired = run_sweep(cfg, repair=True, on_run=lambda spec, rec: rerun.append(spec.run_id))
    assert rerun == [run_id]  # only the damaged run ran again
    set_aside = sorted(p.name for p in (out / "runs" / "damaged").iterdir())
    assert set_aside == [f"{run_id}.json", f"{run_id}.parquet"]
    np.testing.assert_array_equal(repaired.values, matrix.values)  # the same seed gives the same row back


def test_the_cli_names_a_damaged_run_file_and_repairs_it(finished_sweep, tmp_path, capsys):
    import yaml

    from forgetscope.cli import run_app

    out, cfg, matrix = finished_sweep
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    (out / "runs" / f"{matrix.row_names[0]}.parquet").write_bytes(b"PAR1 not really")
    assert run_app(["run", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"runs/{matrix.row_names[0]}.parquet" in err and "Traceback" not in err
    assert "error:" in err and len(err.strip().splitlines()) <= 3  # one line, soft-wrapped at most
    assert run_app(["run", str(config), "--repair"]) == 0
    assert (out / "runs" / "damaged" / f"{matrix.row_names[0]}.parquet").is_file()


# ---- nothing silent: bad input is one line, before any work ----

def _run_cli(argv, capsys):
    from forgetscope.cli import run_app

    code = run_app([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, " ".join(err.split())


def test_non_utf8_data_and_config_files_are_one_line_naming_the_file(tiny_dir, tiny_data, tmp_path, capsys):
    import yaml

    bad = tiny_data["root"] / "data" / "latin1.jsonl"
    bad.write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9"}\n')
    d = sweep_config_dict(tiny_dir, tiny_data, tmp_path / "sweep")
    d["tasks"][0]["source"] = str(bad)
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump(d))
    code, err = _run_cli(["run", config], capsys)
    assert code == 2 and "latin1.jsonl: line 2 is not UTF-8" in err
    text = yaml.safe_dump(sweep_config_dict(tiny_dir, tiny_data, tmp_path / "s"))
    config.write_bytes(text.encode() + b"# \xff\n")
    code, err = _run_cli(["run", config], capsys)
    assert code == 2 and f"config {config} is not UTF-8" in err
    assert not (tmp_path / "sweep").exists() and not (tmp_path / "s").exists()


def test_an_output_path_that_is_a_file_is_one_line(tiny_dir, tiny_data, tmp_path, capsys):
    import numpy as np
    import yaml

    taken = tmp_path / "taken.txt"
    taken.write_text("mine")
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump(sweep_config_dict(tiny_dir, tiny_data, tmp_path / "sweep")))
    matrix = tmp_path / "F.npy"
    np.save(matrix, np.arange(6.0).reshape(2, 3))
    assert _run_cli(["import", matrix, tmp_path / "imported"], capsys)[0] == 0
    imported = tmp_path / "imported"
    for argv in (["run", config, "--output", taken], ["import", matrix, taken],
                 ["analyze", imported, "-o", taken], ["analyze", imported, "--out", taken]):
        code, err = _run_cli(argv, capsys)
        assert code == 2 and f"output {taken} is a file, not a directory" in err, argv
    assert taken.read_text() == "mine"


def test_a_read_only_output_directory_is_one_line_before_the_model_loads(tiny_dir, tiny_data, tmp_path,
                                                                         capsys, monkeypatch):
    import errno

    import numpy as np
    import yaml

    import forgetscope.models as models

    locked = tmp_path / "read-only"
    locked.mkdir()
    locked.chmod(0o555)
    real_open = os.open

    def open_(path, *args, **kwargs):  # what a read-only directory does, for a root user too
        if str(path).startswith(str(locked)):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_)
    monkeypatch.setattr(models, "load_weights", lambda *a, **k: pytest.fail("the model was loaded"))
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump(sweep_config_dict(tiny_dir, tiny_data, locked / "sweep")))
    np.save(tmp_path / "F.npy", np.arange(6.0).reshape(2, 3))
    assert _run_cli(["import", tmp_path / "F.npy", tmp_path / "imported"], capsys)[0] == 0
    for argv, where in ((["run", config], locked), (["run", config, "--output", locked], locked),
                        (["import", tmp_path / "F.npy", locked / "m"], locked),
                        (["analyze", tmp_path / "imported", "-o", locked], locked)):
        code, err = _run_cli(argv, capsys)
        assert code == 2 and "cannot write in" in err and str(where) in err, argv
        assert "Permission denied" in err, argv
    locked.chmod(0o755)
    assert list(locked.iterdir()) == []


def test_eval_max_length_above_the_context_is_refused_before_weights_load(tiny_dir, tiny_data, tmp_path,
                                                                          monkeypatch):
    import forgetscope.models as models
    from forgetscope.errors import ConfigError
    from forgetscope.experiments import run_sweep

    monkeypatch.setattr(models, "load_weights", lambda *a, **k: pytest.fail("weights were loaded"))
    assert models.config_context_length(models.resolve_model(str(tiny_dir))) == 128  # read from config.json
    with pytest.raises(ConfigError, match="eval.max_length=4096 is longer than the model's context of 128"):
        run_sweep(_cfg(tiny_dir, tiny_data, tmp_path / "sweep", eval={"max_length": 4096}))
    assert not (tmp_path / "sweep").exists()


def test_asking_for_more_examples_than_exist_is_refused_saying_how_many(tiny_dir, tiny_data, tmp_path):
    from forgetscope.errors import DataError
    from forgetscope.experiments import SweepSession

    upstream = {"source": str(tiny_data["upstream"]), "n": 50}
    too_many = _cfg(tiny_dir, tiny_data, tmp_path / "a", upstream=upstream)
    with pytest.raises(DataError, match="50 asked for, but there are only 13"):
        SweepSession.prepare(too_many)
    d = sweep_config_dict(tiny_dir, tiny_data, tmp_path / "b")
    d["tasks"][0]["n_train"] = 10  # 12 rows, 3 held out: 9 to train on
    with pytest.raises(DataError, match=r"\(n_train\) of task 'code'.*10 asked for, .* only 9"):
        SweepSession.prepare(parse_config(d))
    d["tasks"][0]["n_train"] = 9
    assert len(SweepSession.prepare(parse_config(d)).tasks["code"].train) == 9
    demo = _cfg(tiny_dir, tiny_data, tmp_path / "c", tasks=[{"name": "python_faq", "n_train": 120}])
    with pytest.raises(DataError, match=r"demo task 'python_faq': 120 asked for, but there are only 101"):
        SweepSession.prepare(demo)


def test_heldout_must_be_a_fraction_or_a_count_and_a_demo_task_keeps_its_own(tmp_path):
    from forgetscope.errors import ConfigError

    base = {"tasks": [{"name": "mine", "source": "data.jsonl"}]}
    for heldout in (1.5, 0, -0.2):
        base["tasks"][0]["heldout"] = heldout
        with pytest.raises(ConfigError, match=rf"tasks\.0\.heldout: .*{heldout}"):
            parse_config(base)
    for heldout in (0.25, 3, 3.0):
        base["tasks"][0]["heldout"] = heldout
        assert parse_config(base).tasks[0].heldout == heldout
    for task in ({"name": "code", "heldout": 16}, {"name": "mine", "source": "demo:code", "heldout": 0.5}):
        with pytest.raises(ConfigError, match=r"heldout: .*shipped demo task keeps the held-out examples"):
            parse_config({"tasks": [task]})
    assert parse_config({"tasks": ["code"]}).tasks[0].heldout == 0.2  # left out: the shipped split


def test_a_csv_row_with_more_fields_than_the_header_is_refused_naming_it(tmp_path):
    from forgetscope.data.loading import load_examples
    from forgetscope.errors import DataError

    ok = tmp_path / "ok.csv"
    ok.write_text('text,id\n"one, quoted",a\ntwo,b\n')
    assert [e.text for e in load_examples(ok)] == ["one, quoted", "two"]
    wide = tmp_path / "wide.csv"
    wide.write_text("text,id\none,a\n\ntwo,b,extra\n")
    with pytest.raises(DataError, match=r"wide\.csv: row 1 \(line 4\) has 3 fields but the header has 2"):
        load_examples(wide)
    first = tmp_path / "first.csv"  # pandas would read a wider first row as an index and shift every field
    first.write_text("text,id\none,a,extra\n")
    with pytest.raises(DataError, match="row 0"):
        load_examples(first)


def test_demo_tasks_beyond_the_suite_and_analyze_of_one_row_are_refused(tmp_path, capsys):
    import numpy as np

    from forgetscope.data.demo import demo_task_names

    code, err = _run_cli(["demo", "--tasks", "1000", "--output", tmp_path / "demo"], capsys)
    assert code == 2 and f"the demo suite has {len(demo_task_names())} tasks" in err
    assert not (tmp_path / "demo").exists()
    np.save(tmp_path / "one.npy", np.arange(5.0).reshape(1, 5))
    assert _run_cli(["import", tmp_path / "one.npy", tmp_path / "one"], capsys)[0] == 0
    code, err = _run_cli(["analyze", tmp_path / "one"], capsys)
    assert code == 2 and "analyze needs at least 2 rows" in err
    assert not (tmp_path / "one" / "analysis").exists()


def test_rebuilding_a_finished_sweep_keeps_its_row_order(tmp_path):
    """consolidate() without an order rewrites a committed sweep byte for byte (it once sorted the rows)."""
    import shutil
    from pathlib import Path

    from forgetscope.store import SweepStore

    src = Path(__file__).parents[1] / "benchmarks/results/replication/replication_smollm2/sweep"
    sweep = shutil.copytree(src, tmp_path / "sweep")
    before = (sweep / "F.npy").read_bytes()
    order = SweepStore(sweep).read_runs()["run_id"].tolist()
    assert order != sorted(order)  # the recorded order is not the sorted one: the test can fail
    matrix = SweepStore(sweep).consolidate()
    assert matrix.row_names == order and (sweep / "F.npy").read_bytes() == before
