"""`forgetscope import-lm-eval`: real lm-evaluation-harness sample logs (a tiny local model, a local task) to a
sweep directory on which analyze, predict and report work."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from forgetscope.cli import run_app

pytest.importorskip("lm_eval")
pytestmark = pytest.mark.slow  # lm-eval and its model load take about 30 s on two CPU cores

MC, LL = "fs_tiny_mc", "fs_tiny_ll"
QUESTIONS = [
    ("What is two plus two?", ["four", "five", "three"], 0),
    ("What colour is the sky?", ["green", "blue", "red"], 1),
    ("Which animal barks?", ["cat", "cow", "dog"], 2),
    ("What is the opposite of hot?", ["cold", "warm", "wet"], 0),
    ("Which is a fruit?", ["stone", "apple", "chair"], 1),
    ("How many legs has a spider?", ["six", "four", "eight"], 2),
    ("What do bees make?", ["honey", "milk", "silk"], 0),
    ("Which planet do we live on?", ["Mars", "Earth", "Venus"], 1),
    ("What falls from clouds?", ["sand", "smoke", "rain"], 2),
    ("Which is a colour?", ["purple", "loud", "fast"], 0),
]
TEXTS = [("The quick brown fox jumps over the", "lazy dog"), ("To be, or not to", "be"),
         ("Water boils at one hundred", "degrees"), ("Call me", "Ishmael"),
         ("The rain in Spain stays mainly in the", "plain"), ("Seven plus five equals", "twelve")]


def _write_tasks(root: Path) -> Path:
    """Two lm-eval tasks read from local JSONL files: multiple_choice (acc) and loglikelihood (acc)."""
    tasks = root / "tasks"
    tasks.mkdir(parents=True)
    (root / "mc.jsonl").write_text("".join(json.dumps({"question": q, "choices": c, "label": g}) + "\n"
                                           for q, c, g in QUESTIONS))
    (root / "ll.jsonl").write_text("".join(json.dumps({"context": c, "continuation": t}) + "\n" for c, t in TEXTS))
    cache = root / "hf-datasets"
    (tasks / "mc.yaml").write_text(f"""task: {MC}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {root / 'mc.jsonl'}
  cache_dir: {cache}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
metric_list:
  - metric: acc
""")
    (tasks / "ll.yaml").write_text(f"""task: {LL}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {root / 'll.jsonl'}
  cache_dir: {cache}
test_split: test
output_type: loglikelihood
doc_to_text: "{{{{context}}}}"
doc_to_target: "{{{{continuation}}}}"
metric_list:
  - metric: acc
""")
    return tasks


def _perturbed(src: Path, dst: Path, seed: int, scale: float) -> Path:
    """A copy of the model with Gaussian noise on every weight (a stand-in for a fine-tuned model)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(src)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale * p.std().clamp_min(1e-3))
    model.save_pretrained(dst)
    AutoTokenizer.from_pretrained(src).save_pretrained(dst)
    return dst


def _lm_eval(model_dir: Path, out: Path, tasks_dir: Path, **kwargs) -> Path:
    """Run lm-eval as ``lm_eval run --model hf --log_samples --output_path OUT`` does (its save calls)."""
    import lm_eval
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.tasks import TaskManager

    tracker = EvaluationTracker(output_path=str(out))
    results = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={model_dir},dtype=float32",
                                      tasks=[MC, LL], task_manager=TaskManager(include_path=str(tasks_dir)),
                                      log_samples=True, device="cpu", batch_size=8,
                                      evaluation_tracker=tracker, **kwargs)
    samples = results.pop("samples")
    tracker.save_results_aggregated(results=results, samples=samples)
    for task in results["configs"]:
        tracker.save_results_samples(task_name=task, samples=samples[task])
    return out


@pytest.fixture(scope="module")
def logs(tmp_path_factory, tiny_dir) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lm-eval")
    tasks = _write_tasks(root)
    ft1 = _perturbed(tiny_dir, root / "models" / "ft1", seed=1, scale=0.5)
    ft2 = _perturbed(tiny_dir, root / "models" / "ft2", seed=2, scale=1.0)
    out = root / "logs"
    return {"root": root,
            "base": _lm_eval(tiny_dir, out / "base", tasks),
            "ft1": _lm_eval(ft1, out / "ft1", tasks),
            "ft2": _lm_eval(ft2, out / "ft2", tasks),
            "ft1_prompt": _lm_eval(ft1, out / "ft1_prompt", tasks, system_instruction="Answer briefly.")}


def _samples(run: Path, task: str) -> dict[int, dict]:
    (path,) = run.glob(f"*/samples_{task}_*.jsonl")
    return {s["doc_id"]: s for s in map(json.loads, path.read_text().splitlines())}


def _gold_ll(sample: dict, task: str) -> float:
    """The gold continuation's log-likelihood, read straight from the logged filtered_resps."""
    gold = int(sample["target"]) if task == MC else 0
    return float(sample["filtered_resps"][gold][0])


def test_real_logs_give_the_matrix_f_and_binary_forgetting(logs, tmp_path):
    from forgetscope.lm_eval_logs import import_lm_eval
    from forgetscope.predict.binary import binary_forgetting
    from forgetscope.store import SweepStore

    out = tmp_path / "sweep"
    m = import_lm_eval(logs["base"], [logs["ft1"], logs["ft2"]], out)
    assert m.shape == (2, len(QUESTIONS) + len(TEXTS))
    assert m.row_names == ["ft1", "ft2"]
    assert set(m.kinds) == {"instruction"} and np.isfinite(m.values).all()
    up = m.upstream
    assert up["lm_eval_task"].value_counts().to_dict() == {MC: len(QUESTIONS), LL: len(TEXTS)}
    assert (up["category"] == up["lm_eval_task"]).all()
    assert set(up["lm_eval_output_type"]) == {"multiple_choice", "loglikelihood"}
    assert m.meta["source"] == "lm-eval" and m.meta["lm_eval"]["before"]["lm_eval_version"]

    # F = (-ll_after) - (-ll_before) of the logged gold log-likelihoods, item by item
    before = {t: _samples(logs["base"], t) for t in (MC, LL)}
    for i, run in enumerate(("ft1", "ft2")):
        after = {t: _samples(logs[run], t) for t in (MC, LL)}
        for j, eid in enumerate(m.col_names):
            task, doc = eid.rsplit("/", 1)
            b, a = before[task][int(doc)], after[task][int(doc)]
            assert m.values[i, j] == pytest.approx(-_gold_ll(a, task) + _gold_ll(b, task), abs=1e-12)
    gold_text = up.set_index("example_id").loc[f"{MC}/1", "response"]
    assert gold_text.strip() == QUESTIONS[1][1][QUESTIONS[1][2]]

    # binary forgetting from the logged acc: forgotten where the base was right and the run is not
    long = SweepStore(out).read_forgetting()
    assert {"em_after", "loss_after", "forgetting"} <= set(long.columns)
    em_b = np.array([before[e.rsplit("/", 1)[0]][int(e.rsplit("/", 1)[1])]["acc"] for e in m.col_names], float)
    np.testing.assert_array_equal(up["em_before"].to_numpy(float), em_b)
    B = binary_forgetting(out)
    for i, run in enumerate(("ft1", "ft2")):
        after = {t: _samples(logs[run], t) for t in (MC, LL)}
        em_a = np.array([after[e.rsplit("/", 1)[0]][int(e.rsplit("/", 1)[1])]["acc"] for e in m.col_names], float)
        want = np.where(em_b == 1, np.where(em_a == 0, 1.0, 0.0), np.nan)
        np.testing.assert_array_equal(B.values[i], want)
    assert np.isfinite(B.values).any(), "the base model answers no item right: binary forgetting is untested"


def test_logs_without_filter_and_metrics_keys_read_the_same(logs, tmp_path):
    """lm-eval 0.4.5 writes samples without the "filter" and "metrics" keys later versions add."""
    from forgetscope.lm_eval_logs import lm_eval_forgetting

    old = tmp_path / "old"
    shutil.copytree(logs["ft1"], old)
    for path in old.glob("*/samples_*.jsonl"):
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        path.write_text("".join(json.dumps({k: v for k, v in r.items() if k not in ("filter", "metrics")}) + "\n"
                                for r in rows))
    new = lm_eval_forgetting(logs["base"], [logs["ft1"]])
    again = lm_eval_forgetting(logs["base"], [old], names=["ft1"])
    np.testing.assert_array_equal(new.rows["ft1"].to_numpy(), again.rows["ft1"].to_numpy())


def test_cli_import_then_analyze_predict_report(logs, tmp_path, capsys):
    out = tmp_path / "sweep"
    assert run_app(["import-lm-eval", str(logs["base"]), str(logs["ft1"]), str(logs["ft2"]), "--output", str(out),
                    "--name", "noise-0.5", "--name", "noise-1.0"]) == 0
    said = " ".join(capsys.readouterr().out.split())
    assert "imported 2 run(s) x 16 items of 2 lm-eval task(s)" in said
    assert run_app(["analyze", str(out), "--max-rank", "2", "--no-figures"]) == 0
    assert run_app(["predict", str(out), "--probe", "4", "--folds", "2", "--draws", "2", "--no-figures"]) == 0
    assert run_app(["predict", str(out), "--binary", "--probe", "2", "--folds", "2", "--draws", "2"]) == 0
    assert run_app(["report", str(out), "--no-predict"]) == 0
    from forgetscope.store import SweepLayout, load_forgetting

    assert load_forgetting(out).row_names == ["noise-0.5", "noise-1.0"]
    assert SweepLayout(out).report.is_file()


def _copy_without(src: Path, dst: Path, task: str | None = None, drop_last_line_of: str | None = None) -> Path:
    shutil.copytree(src, dst)
    if task:
        for p in dst.glob(f"*/samples_{task}_*.jsonl"):
            p.unlink()
    if drop_last_line_of:
        (p,) = dst.glob(f"*/samples_{drop_last_line_of}_*.jsonl")
        p.write_text("".join(line + "\n" for line in p.read_text().splitlines()[:-1]))
    return dst


def _two_models(logs: dict[str, Path], dst: Path) -> Path:
    for run in ("ft1", "ft2"):
        (sub,) = [p for p in logs[run].iterdir() if p.is_dir()]
        shutil.copytree(sub, dst / sub.name)
    return dst


@pytest.mark.parametrize("case, msg", [
    ("missing", "lm-eval output directory not found"),
    ("empty", "no lm-eval sample logs"),
    ("two_models", "sample logs of several models"),
    ("task_missing", "logs other tasks than the base run: lacks fs_tiny_ll"),
    ("doc_missing", "logs other doc ids for task 'fs_tiny_mc'"),
    ("other_prompt", "with another prompt than the base run"),
    ("base_itself", "evaluated the base model itself"),
    ("base_dir", "is the base run's own directory"),
    ("same_name", "several after directories are named"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(logs, tmp_path, capsys, case, msg):
    t = tmp_path
    after = {
        "missing": lambda: [t / "nope"],
        "empty": lambda: [(t / "empty").mkdir() or t / "empty"],
        "two_models": lambda: [_two_models(logs, t / "both")],
        "task_missing": lambda: [_copy_without(logs["ft1"], t / "ft1", task=LL)],
        "doc_missing": lambda: [_copy_without(logs["ft1"], t / "ft1", drop_last_line_of=MC)],
        "other_prompt": lambda: [logs["ft1_prompt"]],
        "base_itself": lambda: [_copy_without(logs["base"], t / "base_again")],
        "base_dir": lambda: [logs["base"]],
        "same_name": lambda: [logs["ft1"], _copy_without(logs["ft2"], t / "x" / "ft1")],
    }[case]()
    out = tmp_path / "sweep"
    assert run_app(["import-lm-eval", str(logs["base"]), *map(str, after), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert msg in " ".join(err.split()) and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_a_non_empty_out_is_refused(logs, tmp_path, capsys):
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert run_app(["import-lm-eval", str(logs["base"]), str(logs["ft1"]), "--output", str(out)]) == 2
    assert "refusing to write into" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
