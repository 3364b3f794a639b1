"""`forecast`: a fine-tuned model's forgetting row from a probe, on a tiny sweep (3 tasks, tiny Llama)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TEXTS, sweep_config_dict, write_jsonl

from forgetscope.cli import run_app
from forgetscope.config import parse_config
from forgetscope.errors import DataError, ModelError
from forgetscope.experiments import run_sweep
from forgetscope.experiments.forecast import forecast, same_base
from forgetscope.predict import get_predictor
from forgetscope.predict.forecast import load_sweep
from forgetscope.store import SweepStore, load_forgetting

BIBLE = "light dark sea land fish birds beasts man rest day night stars".split()


def _data(root):
    up = write_jsonl(root / "data" / "upstream.jsonl", [{"id": f"u{i}", "text": t} for i, t in enumerate(TEXTS)]
                     + [{"id": "q1", "prompt": "What is two plus two?", "response": "Four.", "answer": "four"}])
    code = write_jsonl(root / "data" / "code.jsonl",
                       [{"text": f"def f{i}(x):\n    return x * {i} + {i % 3}"} for i in range(12)])
    qa = write_jsonl(root / "data" / "qa.jsonl",
                     [{"prompt": f"What is {i} plus {i}?", "response": f"{2 * i}."} for i in range(12)])
    return {"upstream": up, "code": code, "qa": qa}


@pytest.fixture(scope="module")
def sweep(tiny_dir, tmp_path_factory):
    """A finished 3-task sweep of the tiny model: 12 plain-text upstream examples and 1 pair."""
    root = tmp_path_factory.mktemp("forecast")
    cfg = sweep_config_dict(tiny_dir, _data(root), root / "sweep")
    bible = write_jsonl(root / "data" / "bible.jsonl", [{"text": f"And God said, let there be {w}."} for w in BIBLE])
    cfg["tasks"].append({"name": "bible", "source": str(bible), "heldout": 3, "description": "Genesis verses"})
    run_sweep(parse_config(cfg))
    return root / "sweep"


def _finetuned(tiny_dir, seed=1, scale=0.02):
    """The base model with every weight nudged: a stand-in for a fine-tuned model (same tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p))
    return model.eval(), AutoTokenizer.from_pretrained(tiny_dir)


@pytest.fixture(scope="module")
def finetuned_dir(tiny_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("ft") / "finetuned"
    model, tok = _finetuned(tiny_dir)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _count_rows(model):
    """Count the sequences the decoder runs on (every upstream evaluation passes through it)."""
    seen = []
    handle = model.model.register_forward_hook(lambda mod, args, kwargs, out: seen.append(kwargs["input_ids"].shape[0]),
                                               with_kwargs=True)
    return seen, handle


def test_sweep_records_task_text(sweep):
    runs = pd.read_parquet(sweep / "runs.parquet").set_index("task")
    assert runs.loc["bible", "task_text"].startswith("Genesis verses\nAnd God said, let there be")
    assert runs.loc["code", "task_text"].startswith("code\ndef f")  # no description: the task name


@pytest.mark.parametrize("name", ["knn", "additive", "lowrank"])
def test_forecast_equals_predict_on_measured_minus_base(sweep, tiny_dir, tmp_path, name):
    from forgetscope.measure import evaluate_examples

    model, tok = _finetuned(tiny_dir)
    result = forecast(sweep, model, tokenizer=tok, probe=5, predictor=name, seed=0, out=tmp_path)
    matrix = load_forgetting(sweep)
    lm = [j for j, e in enumerate(matrix.col_names) if e != "q1"]
    known, upstream = matrix.values[:, lm], matrix.upstream.iloc[lm].reset_index(drop=True)
    ids = upstream["example_id"].tolist()
    idx = np.array([ids.index(i) for i in result.settings["probe_ids"]])
    data = load_sweep(sweep, "lm")
    measured = evaluate_examples(model, tok, [data.examples[i] for i in idx], max_length=data.max_length, exact=False,
                                 chat=bool(tok.chat_template))["loss"].to_numpy()
    observed = measured - upstream["loss_before"].to_numpy()[idx]
    expected = get_predictor(name).fit(known, groups=matrix.runs["task"].tolist()).predict(idx, observed)
    expected[idx] = observed
    got = result.table.set_index("example_id").loc[ids]
    # the same numbers up to float rounding (BLAS may sum in another order under load)
    np.testing.assert_allclose(got["forgetting"].to_numpy(), expected, rtol=0, atol=1e-12)
    assert got["observed"].to_numpy().sum() == 5 and got["observed"].to_numpy()[idx].all()
    assert (got.loc[got["observed"], "uncertainty"] == 0).all()
    assert np.isfinite(got["uncertainty"]).all() and (got.loc[~got["observed"], "uncertainty"] >= 0).all()
    assert sorted(got["rank"]) == list(range(1, 13))
    assert got["rank"].idxmin() == got["forgetting"].idxmax()


def test_probe_is_the_only_upstream_evaluation(sweep, tiny_dir, tmp_path):
    model, tok = _finetuned(tiny_dir)
    seen, handle = _count_rows(model)
    try:
        forecast(sweep, model, tokenizer=tok, probe=5, predictor="knn", out=tmp_path / "a")
        assert sum(seen) == 5  # five upstream sequences, nothing else
        seen.clear()
        result = forecast(sweep, model, tokenizer=tok, probe=5, predictor="knn", verify=True, out=tmp_path / "b")
        assert sum(seen) == 12  # verify adds the rest of the row: every example once
    finally:
        handle.remove()
    assert result.cost["probe_evaluations"] == 5 and result.cost["n_examples"] == 12
    # the forecast beside additive and the trivial baselines (all-forgotten scores F1 only)
    assert set(result.verify["predictor"]) == {"knn", "additive", "column-mean", "probe-mean", "all-forgotten"}
    scored = result.verify[result.verify["predictor"] != "all-forgotten"]
    assert np.isfinite(scored["rmse"]).all() and np.isfinite(result.table["measured"]).all()


def test_forecast_cli_writes_table_and_summary(sweep, finetuned_dir, capsys):
    assert run_app(["forecast", str(sweep), "--model", str(finetuned_dir), "--probe", "4", "--top", "3",
                    "--verify"]) == 0
    out = capsys.readouterr().out
    assert "top 3 predicted forgotten" in out and "verify" in out
    assert "of this task's unprobed examples inside" in out and "marginal" in out and "10th percentile" in out
    folder = sweep / "forecast" / "finetuned"
    table = pd.read_parquet(folder / "forecast.parquet")
    assert list(table.columns[:7]) == ["example_id", "kind", "text", "forgetting", "observed", "uncertainty", "rank"]
    assert len(table) == 12 and (table["kind"] == "lm").all() and table["text"].str.len().gt(0).all()
    summary = json.loads((folder / "forecast.json").read_text())
    assert summary["cost"]["probe_evaluations"] == 4 and summary["cost"]["n_examples"] == 12
    assert summary["settings"]["predictor"] in {"additive", "knn", "knn-baseline", "lowrank"}
    assert summary["selection"] and len(summary["top"]) == 3 and summary["cost"]["wall_s"] > 0


def test_adapter_for_the_sweep_base_is_merged(sweep, tiny_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_dir),
                           LoraConfig(r=2, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    torch.manual_seed(0)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.add_(0.5 * torch.randn_like(p))
    model.save_pretrained(tmp_path / "lora")
    result = forecast(sweep, adapter=tmp_path / "lora", probe=4, predictor="knn")
    assert result.paths["table"].parent == sweep / "forecast" / "lora"
    assert np.abs(result.table.loc[result.table["observed"], "forgetting"]).max() > 0  # the adapter changed losses


def test_same_base_rules(tiny_dir, tmp_path):
    manifest = {"config": {"model": str(tiny_dir)}, "model": {"kind": "local", "location": str(tiny_dir),
                                                              "sha256": "abc"}}
    assert same_base(str(tiny_dir), manifest) and same_base(str(tiny_dir) + "/", manifest)
    assert not same_base("HuggingFaceTB/SmolLM2-135M-Instruct", manifest)
    gguf = {"config": {"model": "smollm2-135m-instruct"},
            "model": {"kind": "gguf", "location": "/pkg", "gguf_file": "m.gguf", "sha256": "0123456789abcdef99"}}
    cache = tmp_path / "m-0123456789abcdef"
    cache.mkdir()
    assert same_base("smollm2-135m-instruct", gguf) and same_base(str(cache), gguf)
    assert not same_base(str(tmp_path), gguf)


@pytest.fixture(scope="module")
def other_tokenizer_dir(tmp_path_factory):
    """A tiny model whose tokenizer has another vocabulary (so other token counts)."""
    from forgetscope.models import tiny_llama
    from forgetscope.testing import tiny_tokenizer

    path = tmp_path_factory.mktemp("other") / "model"
    tok = tiny_tokenizer(vocab_size=270)
    tiny_llama(vocab_size=len(tok)).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def foreign_adapter(tmp_path_factory):
    """A LoRA adapter trained on another tiny model directory."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from forgetscope.testing import tiny_model_dir

    root = tmp_path_factory.mktemp("foreign")
    base = tiny_model_dir(root / "base", seed=5)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    model.save_pretrained(root / "adapter")
    return root / "adapter"


@pytest.fixture(scope="module")
def one_task_sweep(tiny_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("onetask")
    cfg = sweep_config_dict(tiny_dir, _data(root), root / "sweep")
    cfg["tasks"] = cfg["tasks"][:1]
    run_sweep(parse_config(cfg))
    return root / "sweep"


@pytest.mark.parametrize("args, msg", [
    (["--model", "{other}"], "tokenizer differs from the sweep's"),
    (["--adapter", "{adapter}"], "was trained on"),
    (["--model", "{ft}", "--probe", "0"], "probe size must be positive"),
    (["--model", "{ft}", "--probe", "13"], "larger than the 12"),
    (["--model", "{ft}", "--kind", "poems"], "unknown example kind"),
    (["--model", "{ft}", "--predictor", "logistic"], "probabilities"),
    (["--model", "{ft}", "--predictor", "magic"], "unknown predictor"),
    (["--model", "{ft}", "--predictor", "semantic"], "needs the new task's text"),
    (["--model", "{ft}", "--probe-method", "smart"], "unknown probe method"),
    (["--model", "{ft}", "--coverage", "1.5"], "between 0 and 1"),
    (["--model", "{ft}", "--interval", "mondrian"], "unknown interval"),
    (["--model", "{ft}", "--task", "{ft}/x.jsonl"], "leave out --model"),
    ([], "name what to forecast"),
    (["--model", "{ft}", "--sweep1"], "known row(s)"),
])
def test_bad_input_is_one_line(sweep, one_task_sweep, finetuned_dir, other_tokenizer_dir, foreign_adapter, capsys,
                               args, msg):
    target = one_task_sweep if "--sweep1" in args else sweep
    argv = ["forecast", str(target)] + [a.format(other=other_tokenizer_dir, adapter=foreign_adapter, ft=finetuned_dir)
                                        for a in args if a != "--sweep1"]
    if "--probe" not in args:
        argv += ["--probe", "4"]
    assert run_app(argv) == 2
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_imported_matrix_cannot_be_forecast(tmp_path, finetuned_dir):
    from forgetscope.store import ForgettingMatrix, write_matrix_sweep

    write_matrix_sweep(ForgettingMatrix(np.zeros((3, 4)), list("abc"), list("wxyz")), tmp_path / "imp")
    with pytest.raises(Exception, match="records no sweep config"):
        forecast(tmp_path / "imp", finetuned_dir)


def test_forecast_after_finetuning_evaluates_only_the_probe(sweep, tmp_path, monkeypatch):
    """``--task``: trains with the sweep's config, then evaluates the probe examples and nothing else upstream."""
    import forgetscope.measure.evaluator as measure  # the one evaluator every upstream measurement goes through
    from forgetscope.experiments.forecast import forecast_task

    task = write_jsonl(tmp_path / "poems.jsonl", [{"text": f"Roses are red, violets are {c}."}
                                                  for c in "blue green white pink gold grey black teal".split()])
    evaluated: list[str] = []
    real = measure.evaluate_examples

    def spy(model, tok, examples, **kw):
        evaluated.extend(e.example_id for e in examples)
        return real(model, tok, examples, **kw)

    monkeypatch.setattr(measure, "evaluate_examples", spy)
    result = forecast_task(sweep, task, probe=4, predictor="knn", out=tmp_path / "out")
    upstream = {f"u{i}" for i in range(12)} | {"q1"}
    assert sorted(e for e in evaluated if e in upstream) == sorted(result.settings["probe_ids"])
    assert len(evaluated) == 4
    assert result.settings["task_name"] == "poems" and result.settings["train"]["steps"] == 3
    assert result.cost["train_wall_s"] > 0 and (tmp_path / "out" / "forecast.parquet").is_file()
    assert result.table["observed"].sum() == 4
    evaluated.clear()
    verified = forecast_task(sweep, task, probe=4, predictor="knn", verify=True, out=tmp_path / "v")
    assert sorted(evaluated) == sorted(upstream - {"q1"}) and verified.verify is not None  # each example once


def test_forecast_task_cli(sweep, tmp_path):
    task = write_jsonl(tmp_path / "poems.jsonl", [{"text": f"Roses are red, violets are {c}."}
                                                  for c in "blue green white pink gold grey black teal".split()])
    assert run_app(["forecast", str(sweep), "--task", str(task), "--probe", "4", "--verify",
                    "--output", str(tmp_path / "o")]) == 0
    summary = json.loads((tmp_path / "o" / "forecast.json").read_text())
    assert summary["settings"]["task"] == str(task) and summary["verify"]


def test_load_sweep_kinds(sweep):
    lm, ins = load_sweep(sweep, "lm"), load_sweep(sweep, "instruction")
    assert lm.n == 12 and ins.n == 1 and ins.examples[0].example_id == "q1"
    recorded = SweepStore(sweep).read_manifest()["eval"]["max_length"]  # eval.max_length, resolved at sweep time
    assert lm.max_length == recorded == 128 and lm.matrix.shape == (3, 12)  # auto: capped at the tiny context
    with pytest.raises(DataError, match="unknown example kind"):
        load_sweep(sweep, "code")


def test_changed_tokenizer_is_refused_in_the_library(sweep, other_tokenizer_dir):
    with pytest.raises(ModelError, match="tokenise to another length"):
        forecast(sweep, other_tokenizer_dir, probe=3)


def test_forecast_copies_nothing_into_the_sweep_but_its_folder(sweep, finetuned_dir, tmp_path):
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy)
    before = {p.relative_to(copy) for p in copy.rglob("*")}
    forecast(copy, finetuned_dir, probe=3, predictor="knn", name="mine")
    after = {p.relative_to(copy) for p in copy.rglob("*")}
    new = {str(p) for p in after - before} - {"forecast"}  # other tests may have made forecast/ already
    assert new == {"forecast/mine", "forecast/mine/forecast.parquet", "forecast/mine/forecast.json"}


def test_forecast_evaluates_in_the_dtype_the_sweep_recorded(sweep, finetuned_dir, tmp_path, monkeypatch):
    """loss_before was measured in the manifest's eval dtype, so the probe is too; float32 where none is recorded."""
    import forgetscope.measure.evaluator as measure  # the one evaluator every upstream measurement goes through
    from forgetscope.experiments.forecast import forecast_task

    calls: list[tuple[torch.dtype | None, torch.dtype]] = []
    real = measure.evaluate_examples

    def spy(model, tok, examples, **kw):
        calls.append((kw.get("dtype"), next(model.parameters()).dtype))
        return real(model, tok, examples, **kw)

    monkeypatch.setattr(measure, "evaluate_examples", spy)
    assert load_sweep(sweep).eval_dtype == "float32"
    for recorded, expected in (("bfloat16", torch.bfloat16), (None, torch.float32)):
        copy = tmp_path / f"sweep_{recorded}"
        shutil.copytree(sweep, copy)
        path = copy / "manifest.json"
        manifest = json.loads(path.read_text())
        if recorded is None:  # a sweep from before eval.dtype
            del manifest["eval"]["dtype"], manifest["eval"]["device"]
        else:
            manifest["eval"]["dtype"] = recorded
        path.write_text(json.dumps(manifest))
        calls.clear()
        result = forecast(copy, finetuned_dir, probe=3, predictor="knn", out=tmp_path / f"f_{recorded}")
        assert calls == [(expected, torch.float32)]  # float32 weights, cast for the evaluation only
        assert result.settings["eval_dtype"] == str(expected).removeprefix("torch.")
        calls.clear()
        task = write_jsonl(tmp_path / "poems.jsonl", [{"text": f"Roses are red, violets are {c}."}
                                                      for c in "blue green white pink gold grey".split()])
        forecast_task(copy, task, probe=3, predictor="knn", out=tmp_path / f"t_{recorded}")
        assert calls == [(expected, torch.float32)]


def test_intervals_on_too_few_known_tasks_are_refused_before_any_model_is_loaded():
    from types import SimpleNamespace

    from forgetscope.errors import DataError
    from forgetscope.predict.forecast import check_interval_request

    two_tasks = SimpleNamespace(groups=np.array(["code", "code", "qa"]))
    with pytest.raises(DataError, match="at least 3 known tasks"):
        check_interval_request(two_tasks, 0.9)
    check_interval_request(two_tasks, None)  # no interval asked for: nothing to refuse


def test_verify_reports_the_interval_coverage(sweep, tiny_dir, tmp_path):
    model, tok = _finetuned(tiny_dir)
    result = forecast(sweep, model, tokenizer=tok, probe=5, predictor="additive", verify=True, coverage=0.8,
                      out=tmp_path)
    first = result.verify.iloc[0]
    assert first["nominal_coverage"] == 0.8 and 0 <= first["interval_coverage"] <= 1
    assert first["interval_width"] > 0 and result.settings["interval"]["coverage"] == 0.8
    observed = result.table["observed"]
    assert (result.table.loc[observed, "lower"] == result.table.loc[observed, "forgetting"]).all()
    assert (result.table["lower"] <= result.table["upper"]).all()


@pytest.fixture()
def null_sweep(sweep, tmp_path):
    """The sweep, its config asking for the null control (a forecast must not inherit it)."""
    copy = tmp_path / "null_sweep"
    shutil.copytree(sweep, copy)
    path = copy / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["config"]["null_control"] = True
    path.write_text(json.dumps(manifest))
    return copy


def test_forecast_of_a_null_control_sweep_evaluates_each_example_once(null_sweep, tmp_path, monkeypatch, capsys):
    import forgetscope.measure.evaluator as measure
    from forgetscope.experiments.forecast import forecast_task

    task = write_jsonl(tmp_path / "poems.jsonl", [{"text": f"Roses are red, violets are {c}."}
                                                  for c in "blue green white pink gold grey".split()])
    evaluated: list[str] = []
    real = measure.evaluate_examples

    def spy(model, tok, examples, **kw):
        evaluated.extend(e.example_id for e in examples)
        return real(model, tok, examples, **kw)

    monkeypatch.setattr(measure, "evaluate_examples", spy)
    lm_ids = sorted(f"u{i}" for i in range(12))
    plain = forecast_task(null_sweep, task, probe=4, predictor="knn", out=tmp_path / "plain")
    assert sorted(evaluated) == sorted(plain.settings["probe_ids"])  # no null evaluation of the upstream set
    assert plain.settings["null_control"] is False and "null_forgetting" not in plain.table
    evaluated.clear()
    verified = forecast_task(null_sweep, task, probe=4, predictor="knn", verify=True, out=tmp_path / "verified")
    assert sorted(evaluated) == lm_ids and verified.cost["verify_evaluations"] == 8
    np.testing.assert_allclose(verified.table.loc[verified.table["observed"], "measured"],
                               verified.table.loc[verified.table["observed"], "forgetting"], rtol=0, atol=0)
    evaluated.clear()
    nulled = forecast_task(null_sweep, task, probe=4, predictor="knn", verify=True, null_control=True,
                           out=tmp_path / "nulled")
    assert sorted(evaluated) == sorted(lm_ids * 2)  # the run and its null, each on every example once
    assert np.isfinite(nulled.table["null_forgetting"]).all() and nulled.settings["null_control"] is True
    evaluated.clear()
    probe_null = forecast_task(null_sweep, task, probe=4, predictor="knn", null_control=True, out=tmp_path / "pn")
    assert sorted(evaluated) == sorted(probe_null.settings["probe_ids"] * 2)
    assert np.isfinite(probe_null.table["null_forgetting"]).to_numpy().tolist() == \
        probe_null.table["observed"].tolist()
    assert run_app(["forecast", str(null_sweep), "--model", str(null_sweep), "--null-control"]) == 2
    assert "use it with --task" in capsys.readouterr().err


def test_forecast_cli_output_spellings(sweep, finetuned_dir, tmp_path, capsys):
    """``-o`` names the output folder; the old ``--out`` still works and says once that it is deprecated."""
    base = ["forecast", str(sweep), "--model", str(finetuned_dir), "--probe", "3", "--predictor", "knn"]
    assert run_app([*base, "-o", str(tmp_path / "new")]) == 0
    assert "deprecated" not in capsys.readouterr().err and (tmp_path / "new" / "forecast.json").is_file()
    assert run_app([*base, "--out", str(tmp_path / "old")]) == 0
    assert capsys.readouterr().err.count("--out is deprecated") == 1
    assert (tmp_path / "old" / "forecast.json").is_file()


@pytest.mark.parametrize("kind", ["absolute", "normalized"])
def test_forecast_interval_kinds_and_the_known_tasks_per_task_coverage(sweep, tiny_dir, tmp_path, kind):
    model, tok = _finetuned(tiny_dir)
    result = forecast(sweep, model, tokenizer=tok, probe=5, predictor="additive", verify=True, out=tmp_path,
                      interval=kind)
    info = result.settings["interval"]
    assert info["interval"] == kind and result.verify.iloc[0]["interval"] == kind
    assert info["halfwidth"] == pytest.approx(info["quantile"] * info["scale"])
    assert info["scale"] == 1.0 if kind == "absolute" else info["scale"] >= info["scale_floor"] > 0
    unprobed = ~result.table["observed"]
    width = (result.table["upper"] - result.table["lower"])[unprobed]
    assert np.allclose(width, 2 * info["halfwidth"])
    held = info["held_out_tasks"]  # the 3 known tasks, each against a band from the other two
    assert 0 <= held["coverage_task_min"] <= held["coverage_task_p10"] <= 1 and 0 <= held["coverage"] <= 1
    assert json.loads((tmp_path / "forecast.json").read_text())["settings"]["interval"]["held_out_tasks"] == held


@pytest.mark.slow
def test_forecast_on_the_real_model_against_a_sweep_with_null_rows(tmp_path, monkeypatch):
    """SmolLM2-135M: a 3-task sweep with null rows, then ``forecast --task`` with and without ``--verify``."""
    import forgetscope.measure.evaluator as measure
    from forgetscope.experiments.demo import demo_config

    sweep = tmp_path / "sweep"
    run_sweep(demo_config(output=sweep, n_upstream=40, n_instruct=0, n_tasks=3, n_train=16, steps=2, batch_size=4,
                          lr=2e-3, max_length=64, eval_max_length=128))
    assert np.isfinite(np.load(sweep / "F_null.npy")).all()  # the sweep has its null rows
    words = "river stone cloud apple tiger lemon paper glass candle button mirror pencil".split()
    task = write_jsonl(tmp_path / "reverse.jsonl", [{"prompt": f"Spell '{w}' backwards.", "response": w[::-1]}
                                                    for w in words])
    evaluated: list[str] = []
    real = measure.evaluate_examples

    def spy(model, tok, examples, **kw):
        evaluated.extend(e.example_id for e in examples)
        return real(model, tok, examples, **kw)

    monkeypatch.setattr(measure, "evaluate_examples", spy)
    upstream = set(pd.read_parquet(sweep / "upstream.parquet")["example_id"])
    base = ["forecast", str(sweep), "--task", str(task), "--probe", "10", "--predictor", "knn", "--top", "3"]
    assert run_app([*base, "-o", str(tmp_path / "probe")]) == 0
    summary = json.loads((tmp_path / "probe" / "forecast.json").read_text())
    assert sorted(e for e in evaluated if e in upstream) == sorted(summary["settings"]["probe_ids"])
    assert summary["settings"]["null_control"] is False and summary["cost"]["inference_skipped"] == 0.75
    evaluated.clear()
    assert run_app([*base, "--verify", "-o", str(tmp_path / "verify")]) == 0
    assert sorted(e for e in evaluated if e in upstream) == sorted(upstream)  # every example, once
    table = pd.read_parquet(tmp_path / "verify" / "forecast.parquet")
    assert len(table) == 40 and np.isfinite(table["measured"]).all() and "null_forgetting" not in table


def test_one_completion_rule_keeps_the_finite_measured_values_on_the_probe():
    """Forecasts, the Trainer callback and predicted replay complete a row with ``complete_from_probe``:
    the predictor's row everywhere, except where a probe value was measured (NaN measurements do not win)."""
    from forgetscope.predict.completion import complete_from_probe, complete_row

    class Smooth:  # a predictor that ignores the probe's values on the probe itself
        def predict(self, idx, observed):
            return np.linspace(0.0, 1.0, 6)

    idx, observed = np.array([1, 4]), np.array([5.0, np.nan])
    row = complete_from_probe(Smooth(), idx, observed)
    assert row[1] == 5.0  # the measured value wins over the predictor's 0.2
    assert row[4] == 0.8 and np.allclose(np.delete(row, 1), np.delete(np.linspace(0.0, 1.0, 6), 1))

    class Spent:  # a forecast passes the prediction it already made: no second predict
        def predict(self, idx, observed):
            raise AssertionError("predicted twice")

    again = complete_from_probe(Spent(), idx, observed, predicted=np.linspace(0.0, 1.0, 6))
    np.testing.assert_array_equal(again, row)
    known = np.tile(np.linspace(0.0, 1.0, 6), (3, 1)) + np.array([[0.0], [0.1], [0.2]])
    pred = get_predictor("additive").fit(known)
    by_id = complete_row(pred, [f"u{j}" for j in range(6)], {"u1": 5.0}, ["u1", "u2", "zz"])
    assert by_id[0] == 5.0 and by_id[1] == pytest.approx(pred.predict(idx[:1], observed[:1])[2])
    assert np.isnan(by_id[2])  # not a column of the known rows
