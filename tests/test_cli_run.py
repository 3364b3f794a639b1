"""The `forgetscope run` / `demo` CLI: success, and one clear error line with a non-zero exit."""

import pytest
import yaml
from conftest import sweep_config_dict, write_jsonl

from forgetscope.cli import run_app


def _write(tmp_path, data):
    p = tmp_path / "sweep.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_run_writes_a_sweep_and_prints_a_summary(tiny_dir, tiny_data, tmp_path, capsys):
    cfg = _write(tmp_path, sweep_config_dict(tiny_dir, tiny_data, tmp_path / "out"))
    assert run_app(["run", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "forgetting matrix 2 x 13" in out and "code__plain__s0" in out
    assert (tmp_path / "out" / "F.npy").is_file()


def _error_line(capsys):
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, err
    return errors[0]


def test_missing_config_file(tmp_path, capsys):
    assert run_app(["run", str(tmp_path / "nope.yaml")]) == 2
    assert "config file not found" in _error_line(capsys)


def test_malformed_field(tiny_dir, tiny_data, tmp_path, capsys):
    data = sweep_config_dict(tiny_dir, tiny_data, tmp_path / "out")
    data["train"]["batch_size"] = -1
    assert run_app(["run", str(_write(tmp_path, data))]) == 2
    assert "train.batch_size" in _error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_unknown_model(tiny_dir, tiny_data, tmp_path, capsys):
    data = sweep_config_dict(tiny_dir, tiny_data, tmp_path / "out")
    data["model"] = "definitely-not-a-model"
    assert run_app(["run", str(_write(tmp_path, data))]) == 2
    assert "unknown model 'definitely-not-a-model'" in _error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_not_yaml(tmp_path, capsys):
    p = tmp_path / "bad.yaml"
    p.write_text("tasks: [unclosed\n")
    assert run_app(["run", str(p)]) == 2
    assert "not valid YAML" in _error_line(capsys)


def test_ctrl_c_exits_130_and_says_how_to_resume(tiny_dir, tiny_data, tmp_path, capsys, monkeypatch):
    
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("forgetscope.experiments.run.execute_run", interrupted)
    cfg = _write(tmp_path, sweep_config_dict(tiny_dir, tiny_data, tmp_path / "out"))
    assert run_app(["run", str(cfg)]) == 130
    assert "resume" in capsys.readouterr().err
    assert not (tmp_path / "out" / "F.npy").exists()
    assert not list((tmp_path / "out").rglob("*.tmp"))


def test_disk_full_is_one_line(tiny_dir, tiny_data, tmp_path, capsys, monkeypatch):
    import errno

    import forgetscope.store.sweep_store as store_mod

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", "upstream.parquet")

    monkeypatch.setattr(store_mod, "write_parquet", full)
    cfg = _write(tmp_path, sweep_config_dict(tiny_dir, tiny_data, tmp_path / "out"))
    assert run_app(["run", str(cfg)]) == 2
    assert "disk full" in _error_line(capsys)


def test_demo_rejects_bad_method(capsys, tmp_path):
    assert run_app(["demo", "--method", "qlora", "--output", str(tmp_path / "d"), "--tasks", "1"]) == 2
    assert "method" in _error_line(capsys)


def test_run_summarises_each_kind_with_the_nan_aware_share_and_truncation(tiny_dir, tiny_data, tmp_path, capsys):
    cfg = _write(tmp_path, sweep_config_dict(tiny_dir, tiny_data, tmp_path / "out"))
    assert run_app(["run", str(cfg)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "12 lm, 1 instruction upstream examples" in out
    assert "plain text (lm: loss over all tokens): 2 runs x 12 examples" in out
    assert "prompt/response (instruction" in out
    assert "0 of 13 upstream examples truncated (0 tokens dropped)" in out


def test_run_with_a_kind_the_upstream_set_lacks_is_refused_before_anything_runs(tiny_dir, tiny_data, tmp_path,
                                                                                 capsys):
    write_jsonl(tiny_data["upstream"], [{"id": f"u{i}", "text": f"Sentence number {i} is here."} for i in range(4)])
    cfg = _write(tmp_path, sweep_config_dict(tiny_dir, tiny_data, tmp_path / "out"))
    assert run_app(["run", str(cfg), "--kind", "instruction"]) == 2
    assert "no 'instruction' examples in the upstream set; kinds present: lm (4)" in _error_line(capsys)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("row, msg", [
    ({"id": "x", "prompt": "Say nothing.", "response": ""}, "missing or empty field 'response'"),
    ({"id": "x", "text": "."}, "tokenises to 1 token"),
])
def test_bad_upstream_example_is_one_line_and_exit_2(tiny_dir, tiny_data, tmp_path, capsys, row, msg):
    write_jsonl(tiny_data["upstream"], [{"id": "u0", "text": "The quick brown fox."}, row])
    cfg = _write(tmp_path, sweep_config_dict(tiny_dir, tiny_data, tmp_path / "out"))
    assert run_app(["run", str(cfg)]) == 2
    assert msg in _error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_eval_max_length_above_the_context_is_one_line_and_exit_2(tiny_dir, tiny_data, tmp_path, capsys):
    d = sweep_config_dict(tiny_dir, tiny_data, tmp_path / "out")
    d["eval"]["max_length"] = 100000
    assert run_app(["run", str(_write(tmp_path, d))]) == 2
    assert "eval.max_length=100000 is longer than the model's context of 128 tokens" in _error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_edited_data_file_is_one_line_naming_it(tiny_dir, tiny_data, tmp_path, capsys):
    cfg = _write(tmp_path, sweep_config_dict(tiny_dir, tiny_data, tmp_path / "out"))
    assert run_app(["run", str(cfg)]) == 0
    qa = tiny_data["qa"]
    qa.write_text(qa.read_text().replace("What is 3", "What is three"))
    assert run_app(["run", str(cfg)]) == 2
    line = _error_line(capsys)
    assert f"data of task 'qa': file {qa} changed since this sweep started" in line and "--overwrite" in line


def test_demo_options_choose_the_upstream_design(tiny_dir, tiny_data, tmp_path, capsys):
    import pandas as pd

    base = ["demo", "--model", str(tiny_dir), "--task", "code", "--task", "elements", "--n-train", "8",
            "--steps", "1", "--batch-size", "4", "--lora-rank", "2", "--target-module", "q_proj"]
    assert run_app([*base, "--output", str(tmp_path / "pairs"), "--upstream", "0", "--instruct", "5"]) == 0
    up = pd.read_parquet(tmp_path / "pairs" / "upstream.parquet")
    assert up["kind"].tolist() == ["instruction"] * 5
    out = " ".join(capsys.readouterr().out.split())
    assert "forgetting matrix 2 x 5 (5 instruction upstream examples)" in out
    assert run_app([*base, "--output", str(tmp_path / "file"), "--upstream-file", str(tiny_data["upstream"]),
                    "--chat", "off", "--kind", "lm"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "plain text (lm: loss over all tokens): 2 runs x 12 examples" in out and "prompt/response" not in out
    import json

    manifest = json.loads((tmp_path / "file" / "manifest.json").read_text())
    assert manifest["config"]["train"]["lora_rank"] == 2 and manifest["eval"]["chat"] is False
    assert run_app([*base, "--output", str(tmp_path / "none"), "--upstream", "0", "--instruct", "0"]) == 2
    assert "needs upstream examples" in _error_line(capsys)


@pytest.mark.parametrize("change, message", [
    ({"strategy": "replai"}, "unknown strategy 'replai'"),
    ({"strategy": "sam", "strategy_options": {"rho": -1}}, "rho"),
    ({"executor": "slurmm"}, "slurmm"),
    ({"null_control": True, "train": {"method": "lora", "steps": 1, "target_modules": ["nope_proj"]}}, "nope_proj"),
])
def test_a_bad_strategy_executor_or_null_control_fails_before_anything_is_written(
        tiny_dir, tiny_data, tmp_path, capsys, change, message):
    out = tmp_path / "out"
    data = {**sweep_config_dict(tiny_dir, tiny_data, out), **change}
    assert run_app(["run", str(_write(tmp_path, data))]) == 2
    assert message in _error_line(capsys)
    assert not out.exists()


def test_the_demo_prints_a_summary_per_task_family(tiny_dir, tiny_data, tmp_path, capsys):
    data = sweep_config_dict(tiny_dir, tiny_data, tmp_path / "out")
    assert run_app(["run", str(_write(tmp_path, data))]) == 0
    out = capsys.readouterr().out
    assert "per task family" in out and "plain_text" in out and "instruction" in out


def _files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_run_check_prints_the_plan_and_writes_nothing(tiny_dir, tiny_data, tmp_path, capsys, monkeypatch):
    import forgetscope.models

    def no_weights(*args, **kwargs):
        raise AssertionError("run --check loaded the model's weights")

    monkeypatch.setattr(forgetscope.models, "load_model", no_weights)
    data = {**sweep_config_dict(tiny_dir, tiny_data, tmp_path / "out"), "seeds": [0, 1]}
    data["tasks"][1]["seeds"] = [3]  # a task with its own seeds
    cfg = _write(tmp_path, data)
    before = _files(tmp_path)
    assert run_app(["run", str(cfg), "--check"]) == 0
    out = " ".join(capsys.readouterr().out.replace("│", " ").split())  # the task table's cells, space-separated
    assert f"{cfg}: ok" in out and "plan: 3 run(s) = 2 task(s), 3 seed(s) in all (some tasks set their own)" in out
    assert "upstream: 12 lm + 1 instruction example(s)" in out and "full fine-tuning, 3 steps" in out
    assert f"output: {tmp_path / 'out'} — a new sweep directory" in out
    assert "code plain_text 9 3 0, 1 2" in out and "qa instruction 9 3 3 1" in out  # name, family, sizes, seeds, runs
    assert _files(tmp_path) == before and not (tmp_path / "out").exists()

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "notes.txt").write_text("not a sweep")
    before = _files(tmp_path)
    assert run_app(["run", str(cfg), "-o", str(elsewhere), "--check"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "exists and is not a sweep; run would refuse without --overwrite" in out
    assert _files(tmp_path) == before


def test_run_check_refuses_a_bad_config_in_one_line(tiny_dir, tiny_data, tmp_path, capsys):
    data = {**sweep_config_dict(tiny_dir, tiny_data, tmp_path / "out"), "strategy": "nope"}
    before = _files(tmp_path)
    assert run_app(["run", str(_write(tmp_path, data)), "--check"]) == 2
    assert "nope" in _error_line(capsys)
    assert _files(tmp_path) == before + ["sweep.yaml"]


@pytest.mark.parametrize("command", ["run", "demo", "scaling", "sharpness"])
def test_output_has_the_short_flag_o(command):
    import typer

    from forgetscope.cli import app

    group = typer.main.get_command(app)
    params = {p.name: p for p in group.get_command(None, command).params}
    assert {"--output", "-o"} <= set(params["output"].opts)
