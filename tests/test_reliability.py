"""Nothing mixed, nothing silent: one writer per output directory, multi-process launches refused."""

from __future__ import annotations

import json

import pytest
from conftest import sweep_config_dict

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
