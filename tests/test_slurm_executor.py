"""The Slurm executor on submitit's local cluster (jobs are local subprocesses): the same matrix as the local
executor, every run stored as its job finishes, resume, failure reports naming the job's log, and one-line
errors for bad options, a missing sbatch and a missing submitit."""

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from conftest import sweep_config_dict
from pydantic import Field

from forgetscope.cli import run_app
from forgetscope.config import SweepConfig, parse_config
from forgetscope.errors import ConfigError, ForgetscopeError
from forgetscope.experiments import EXECUTORS, get_executor, register_executor, run_sweep
from forgetscope.store import SweepStore

HERE = Path(__file__).resolve().parent
NO_SUBMITIT = "submitit is not installed (pip install 'forgetscope[slurm]')"


class SlurmSweepConfig(SweepConfig):
    """A sweep config with a ``slurm`` mapping, the block the executor reads (checked by the executor)."""

    slurm: dict[str, Any] = Field(default_factory=dict)


@pytest.fixture
def submitit(monkeypatch):
    mod = pytest.importorskip("submitit", reason=NO_SUBMITIT)
    # jobs unpickle this module's config class: let their Python import it as the driver does
    paths = [str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))
    return mod


def _cfg(tiny_dir, tiny_data, out, model=SweepConfig, **extra):
    d = sweep_config_dict(tiny_dir, tiny_data, out, steps=2, device="cpu")  # cpu: no GPU asked, same device
    d.update(extra)
    return parse_config(d, model=model)


def _job_folders(out: Path) -> list[Path]:
    return sorted(p for p in (out / "slurm").iterdir() if p.is_dir() and "%" not in p.name)  # not %j: pickles


@pytest.mark.slow  # two job processes that import torch: ~15 s
def test_the_local_cluster_gives_the_same_matrix_and_resumes(submitit, tiny_dir, tiny_data, tmp_path):
    local = run_sweep(_cfg(tiny_dir, tiny_data, tmp_path / "local"), executor="local")
    cfg = _cfg(tiny_dir, tiny_data, tmp_path / "slurm", model=SlurmSweepConfig, executor="slurm",
               slurm={"cluster": "local", "time_min": 10})
    stored = []
    remote = run_sweep(cfg, on_run=lambda spec, rec: stored.append(spec.run_id))
    assert sorted(stored) == ["code__plain__s0", "qa__plain__s0"]  # each stored once, as its job finished
    assert remote.row_names == local.row_names
    np.testing.assert_array_equal(remote.values, local.values)
    store = SweepStore(tmp_path / "slurm")
    runs = store.read_runs()
    assert len(runs) == 2 and (runs["executor"] == "slurm").all()  # ran in jobs, stored by the driver
    assert store.read_manifest()["status"] == "complete"
    jobs = _job_folders(tmp_path / "slurm")
    assert len(jobs) == 2 and all(any(j.glob("*_log.err")) for j in jobs)  # one job (and its logs) per run

    again = []
    m = run_sweep(cfg, on_run=lambda spec, rec: again.append(spec.run_id))
    assert again == [] and _job_folders(tmp_path / "slurm") == jobs  # resuming submits nothing
    np.testing.assert_array_equal(m.values, local.values)


@pytest.mark.slow  # three job processes: ~20 s
def test_a_failed_job_is_reported_with_its_log_after_the_rest_is_stored(submitit, tiny_dir, tiny_data,
                                                                        tmp_path):
    from forgetscope.experiments.executors.slurm import SlurmExecutor

    def fail_qa(config, spec, extras, experiment):  # a local function: submitit pickles it by value
        from forgetscope.experiments.executors.slurm import execute_in_job

        if spec.task == "qa":
            raise RuntimeError("qa is broken for good")
        return execute_in_job(config, spec, extras, experiment)

    register_executor("slurm-flaky", lambda: SlurmExecutor(cluster="local", time_min=10, run_fn=fail_qa))
    register_executor("slurm-local", lambda: SlurmExecutor(cluster="local", time_min=10))
    cfg = _cfg(tiny_dir, tiny_data, tmp_path / "sweep")
    failed = (r"^1 of 2 run\(s\) failed .*: qa__plain__s0: "
              r"RuntimeError: qa is broken for good \(log: .+\.err\)$")
    with pytest.raises(ForgetscopeError, match=failed) as info:
        run_sweep(cfg, executor="slurm-flaky")
    assert "\n" not in str(info.value)
    log = Path(str(info.value).rsplit("(log: ", 1)[1].rstrip(")"))
    assert "qa is broken for good" in log.read_text()  # the job's own stderr, with the traceback
    store = SweepStore(tmp_path / "sweep")
    assert store.finished_run_ids() == ["code__plain__s0"]  # the run that finished is stored
    assert store.read_manifest()["status"] == "running"

    resumed = []
    run_sweep(cfg, executor="slurm-local", on_run=lambda spec, rec: resumed.append(spec.run_id))
    assert resumed == ["qa__plain__s0"]  # only the failed run is submitted again
    assert store.read_manifest()["status"] == "complete"


def test_slurm_options_are_checked_in_one_line(submitit, tiny_dir, tiny_data, tmp_path):
    from forgetscope.experiments.executors.slurm import SlurmExecutor

    with pytest.raises(ConfigError, match=r"unknown option 'partiton' \(did you mean 'partition'\?\)"):
        SlurmExecutor(partiton="gpu")
    executor = get_executor("slurm")
    for block, message in [({"gpus": 1}, r"slurm: unknown option 'gpus' \(did you mean 'gpus_per_node'\?\)"),
                           ({"time_min": "soon"}, r"slurm\.time_min: .*integer.*'soon'"),
                           ({"cluster": "cloud"}, r"slurm\.cluster: .*'slurm', 'local' or 'debug'.*'cloud'")]:
        cfg = _cfg(tiny_dir, tiny_data, tmp_path / "out", model=SlurmSweepConfig, slurm=block)
        with pytest.raises(ConfigError, match=message) as info:
            executor.check_config(cfg)
        assert "\n" not in str(info.value)

    cfg = _cfg(tiny_dir, tiny_data, tmp_path / "out", model=SlurmSweepConfig,
               slurm={"cluster": "local", "gpus": 1})
    with pytest.raises(ConfigError, match="unknown option 'gpus'"):
        run_sweep(cfg, executor="slurm")
    assert not (tmp_path / "out" / "slurm").exists() and not SweepStore(tmp_path / "out").finished_run_ids()


def _write(tmp_path, data) -> str:
    p = tmp_path / "sweep.yaml"
    p.write_text(yaml.safe_dump(data))
    return str(p)


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, err
    return errors[0]


def test_no_sbatch_is_one_line_and_exit_2_through_the_cli(submitit, tiny_dir, tiny_data, tmp_path, capsys,
                                                            monkeypatch):
    import forgetscope.experiments.executors.slurm as slurm

    monkeypatch.setattr(slurm.shutil, "which", lambda name: None)
    cfg = _write(tmp_path, sweep_config_dict(tiny_dir, tiny_data, tmp_path / "out", steps=1, device="cpu"))
    assert run_app(["run", cfg, "--executor", "slurm"]) == 2  # the default cluster is slurm
    line = _error_line(capsys)
    assert "sbatch is not on PATH" in line and "cluster: local" in line
    assert not (tmp_path / "out" / "slurm").exists()


def test_missing_submitit_is_one_line_and_exit_2_through_the_cli(tiny_dir, tiny_data, tmp_path, capsys,
                                                                 monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)  # as if it were not installed
    monkeypatch.delitem(sys.modules, "forgetscope.experiments.executors.slurm", raising=False)
    monkeypatch.setitem(EXECUTORS._entries, "slurm", "forgetscope.experiments.executors.slurm:SlurmExecutor")
    cfg = _write(tmp_path, sweep_config_dict(tiny_dir, tiny_data, tmp_path / "out", steps=1))
    assert run_app(["run", cfg, "--executor", "slurm"]) == 2
    line = _error_line(capsys)
    assert "executor 'slurm' cannot be imported" in line and "pip install 'forgetscope" in line
    assert not (tmp_path / "out").exists()  # refused before the sweep directory is touched
    with pytest.raises(ConfigError, match=r"install it with: pip install 'forgetscope\[slurm\]'$"):
        get_executor("slurm")
