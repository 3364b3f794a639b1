"""The Ray executor on a local Ray instance: same matrix as the local executor, retries, failure reports."""

import numpy as np
import pytest
from conftest import sweep_config_dict

from forgetscope.config import parse_config
from forgetscope.errors import ForgetscopeError
from forgetscope.experiments import register_executor, run_sweep
from forgetscope.store import SweepStore

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'forgetscope[ray]')")

pytestmark = pytest.mark.slow  # starts Ray workers that import torch: ~40 s in all


@pytest.fixture(scope="module")
def local_ray():
    import torch

    # Workers use the driver's thread count, so float reductions (and hence the matrix) are bitwise equal.
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"FORGETSCOPE_NO_PROGRESS": "1", "OMP_NUM_THREADS": str(torch.get_num_threads())}})
    yield
    ray.shutdown()


def _cfg(tiny_dir, tiny_data, out):
    return parse_config(sweep_config_dict(tiny_dir, tiny_data, out))


def test_ray_gives_the_same_matrix_as_local(local_ray, tiny_dir, tiny_data, tmp_path):
    local = run_sweep(_cfg(tiny_dir, tiny_data, tmp_path / "local"), executor="local")
    remote = run_sweep(_cfg(tiny_dir, tiny_data, tmp_path / "ray"), executor="ray")
    assert remote.row_names == local.row_names
    np.testing.assert_array_equal(remote.values, local.values)
    runs = SweepStore(tmp_path / "ray").read_runs()
    assert (runs["executor"] == "ray").all()  # ran in Ray workers, stored by the driver
    assert SweepStore(tmp_path / "ray").read_manifest()["status"] == "complete"


def test_failures_are_retried_and_reported_without_losing_other_runs(local_ray, tiny_dir, tiny_data, tmp_path):
    from forgetscope.experiments.executors.ray import RayExecutor

    marker = tmp_path / "code_failed_once"

    def flaky(config, spec, extras, experiment):  # a local function: Ray ships it to the workers by value
        from forgetscope.experiments.executors.ray import execute_in_worker

        if spec.task == "qa":
            raise RuntimeError("qa is broken for good")
        if not marker.exists():
            marker.touch()
            raise RuntimeError("transient failure")
        return execute_in_worker(config, spec, extras, experiment)

    register_executor("ray-flaky", lambda: RayExecutor(run_fn=flaky, max_retries=1))
    cfg = _cfg(tiny_dir, tiny_data, tmp_path / "sweep")
    with pytest.raises(ForgetscopeError, match=r"1 of 2 run\(s\) failed after 1 retry.*qa__plain__s0: "
                                               r"RuntimeError: qa is broken for good"):
        run_sweep(cfg, executor="ray-flaky")
    store = SweepStore(tmp_path / "sweep")
    assert marker.exists()  # code failed once, was retried and succeeded
    assert store.finished_run_ids() == ["code__plain__s0"]
    assert store.read_manifest()["status"] == "running"

    resumed = []
    m = run_sweep(cfg, executor="ray", on_run=lambda spec, rec: resumed.append(spec.run_id))
    assert resumed == ["qa__plain__s0"]  # only the failed run runs again
    local = run_sweep(cfg, output=tmp_path / "local", executor="local")
    np.testing.assert_array_equal(m.values, local.values)


def _compare_cfg(tiny_dir, tiny_data, out, executor):
    from conftest import write_jsonl

    from forgetscope.experiments.compare import CompareConfig

    up = write_jsonl(tiny_data["root"] / "data" / "up_ray.jsonl",
                     [{"id": f"u{i}", "text": f"Sentence number {i} is about the fox and the dog {i % 5}."}
                      for i in range(16)])
    d = sweep_config_dict(tiny_dir, tiny_data, out, steps=2)
    d.update(upstream={"source": str(up)}, executor=executor,
             strategies=[{"name": "replay", "label": "replay-oracle", "options": {"ratio": 0.5, "policy": "oracle"}},
                         {"name": "sam", "options": {"rho": 0.05}}])
    return parse_config(d, model=CompareConfig)


def test_compare_runs_on_ray_and_matches_local(local_ray, tiny_dir, tiny_data, tmp_path):
    from forgetscope.experiments.compare import run_compare

    local = run_compare(_compare_cfg(tiny_dir, tiny_data, tmp_path / "local", "local"), log=lambda *_: None)
    remote = run_compare(_compare_cfg(tiny_dir, tiny_data, tmp_path / "ray", "ray"), log=lambda *_: None)
    runs = SweepStore(tmp_path / "ray").read_runs()
    assert len(runs) == 6 and (runs["executor"] == "ray").all()  # 2 tasks x (plain, oracle replay, sam)
    cols = ["strategy", "task", "seed", "forgetting_heldout", "task_loss_after"]
    a = local["per_run"][cols].sort_values(cols[:3]).reset_index(drop=True)
    b = remote["per_run"][cols].sort_values(cols[:3]).reset_index(drop=True)
    assert a[cols[:3]].equals(b[cols[:3]])
    np.testing.assert_allclose(b[cols[3:]].to_numpy(float), a[cols[3:]].to_numpy(float), rtol=0, atol=1e-6)
