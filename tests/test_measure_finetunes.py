"""`measure`: existing fine-tunes (a saved checkpoint, a LoRA adapter) against their base, on a tiny Llama."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TEXTS, write_jsonl

from forgetscope.cli import run_app
from forgetscope.errors import ModelError
from forgetscope.experiments.measure import measure_finetunes
from forgetscope.models import ModelSource
from forgetscope.store import SweepStore


def _nudged(path, seed=1, scale=0.02):
    """The model at ``path`` with every weight nudged: a stand-in for a fine-tuned checkpoint."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path)
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p))
    return model.eval()


def _lora(base_dir, out, target_modules=("q_proj", "v_proj"), seed=0):
    """A LoRA adapter on ``base_dir`` with non-zero B matrices (so it changes the losses), saved to ``out``."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir),
                           LoraConfig(r=2, target_modules=list(target_modules), task_type="CAUSAL_LM"))
    torch.manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.add_(0.5 * torch.randn_like(p))
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def files(tiny_dir, tmp_path_factory):
    """The tiny base, a full fine-tune of it (saved with its tokenizer), a LoRA adapter, an upstream file."""
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("measure")
    full = root / "full"
    _nudged(tiny_dir).save_pretrained(full)
    AutoTokenizer.from_pretrained(tiny_dir).save_pretrained(full)
    up = write_jsonl(root / "upstream.jsonl", [{"id": f"u{i}", "text": t} for i, t in enumerate(TEXTS)])
    return {"base": tiny_dir, "full": full, "lora": _lora(tiny_dir, root / "lora"), "upstream": up, "root": root}


@pytest.fixture(scope="module")
def measured(files):
    out = files["root"] / "sweep"
    result = measure_finetunes(models=[files["full"]], adapters=[files["lora"]], base=str(files["base"]),
                               upstream=str(files["upstream"]), output=out)
    return result, out


def _direct_losses(model, tok, path_of_upstream):
    """Mean token NLL of every upstream text under ``model``, computed without forgetscope's sweep code."""
    from forgetscope.data.loading import load_examples
    from forgetscope.measure import evaluate_examples

    examples = load_examples(str(path_of_upstream), name="upstream")
    return evaluate_examples(model, tok, examples, max_length=128, exact=False,
                             chat=bool(tok.chat_template))["loss"].to_numpy()


def test_rows_are_loss_after_minus_loss_before(files, measured):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result, out = measured
    matrix = SweepStore(out).load_matrix()
    assert matrix.row_names == ["full", "lora"] and matrix.shape == (2, len(TEXTS))
    tok = AutoTokenizer.from_pretrained(files["base"])
    before = _direct_losses(AutoModelForCausalLM.from_pretrained(files["base"]).eval(), tok, files["upstream"])
    full = _direct_losses(AutoModelForCausalLM.from_pretrained(files["full"]).eval(), tok, files["upstream"])
    lora_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(files["base"]), str(files["lora"]))
    lora = _direct_losses(lora_model.merge_and_unload().eval(), tok, files["upstream"])
    np.testing.assert_allclose(matrix.upstream["loss_before"].to_numpy(), before, rtol=0, atol=1e-5)
    np.testing.assert_allclose(matrix.values[0], full - before, rtol=0, atol=1e-5)
    np.testing.assert_allclose(matrix.values[1], lora - before, rtol=0, atol=1e-5)
    assert np.abs(matrix.values).min() > 0  # both fine-tunes moved every loss
    runs = matrix.runs.set_index("run_id")
    assert runs.loc["full", "task"] == "full" and (runs["method"] == "measured").all()
    assert (runs["strategy"] == "external").all()
    # provenance: where each fine-tune lies and the content hash of its weight files
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"] == "measure" and manifest["status"] == "complete"
    assert manifest["config"]["model"] == str(files["base"]) and manifest["model"]["location"] == str(files["base"])
    assert manifest["inputs"]["upstream"]["sha256"] and manifest["eval"]["dtype"] == "float32"
    fts = manifest["finetunes"]
    assert fts["lora"]["kind"] == "adapter" and fts["lora"]["files"] == ["adapter_config.json",
                                                                          "adapter_model.safetensors"]
    assert fts["full"]["kind"] == "model" and len(fts["full"]["sha256"]) == 64
    assert json.loads(runs.loc["lora", "finetune"])["sha256"] == fts["lora"]["sha256"]


def test_top_lists_the_most_forgotten_texts(measured):
    result, _ = measured
    top = result.top(3)
    assert list(top["finetune"]) == ["full"] * 3 + ["lora"] * 3
    for name, rows in top.groupby("finetune"):
        row = result.matrix.values[result.matrix.row_names.index(name)]
        np.testing.assert_allclose(rows["forgetting"].to_numpy(), np.sort(row)[::-1][:3])
        assert set(rows["text"]) <= set(TEXTS)
        np.testing.assert_allclose(rows["loss_after"] - rows["loss_before"], rows["forgetting"])


def test_analyze_and_report_read_the_sweep(measured, capsys):
    _, out = measured
    assert run_app(["analyze", str(out), "--no-figures"]) == 0
    assert (out / "analysis" / "lm").is_dir()
    assert run_app(["report", str(out)]) == 0
    assert "full" in (out / "report.html").read_text()


def test_rerun_measures_only_new_finetunes(files, measured, tmp_path, monkeypatch):
    _, out = measured
    copy = tmp_path / "sweep"
    shutil.copytree(out, copy)
    rows_before = pd.read_parquet(copy / "runs" / "lora.parquet")
    loaded = []
    import forgetscope.experiments.measure as measure_module

    real = measure_module.load_finetune
    monkeypatch.setattr(measure_module, "load_finetune", lambda ft, *a, **k: loaded.append(ft.name) or real(ft, *a, **k))
    second = files["root"] / "second"
    if not second.exists():
        _nudged(files["base"], seed=2).save_pretrained(second)
    again = measure_finetunes(models=[files["full"], second], adapters=[files["lora"]], base=str(files["base"]),
                              upstream=str(files["upstream"]), output=copy)
    assert loaded == ["second"]  # the two measured before are not loaded again
    assert again.measured == ["second"] and again.resumed == ["full", "lora"]
    assert again.matrix.row_names == ["full", "lora", "second"]
    pd.testing.assert_frame_equal(pd.read_parquet(copy / "runs" / "lora.parquet"), rows_before)
    loaded.clear()
    assert measure_finetunes(adapters=[files["lora"]], base=str(files["base"]), upstream=str(files["upstream"]),
                             output=copy).measured == []
    assert loaded == [] and SweepStore(copy).load_matrix().shape[0] == 3  # earlier rows are kept


def test_a_hub_id_is_loaded_and_checked_after_loading(files, tmp_path):
    """The hub-id path (no local files to hash: the revision is recorded once loaded), on a local directory."""
    hub = ModelSource("hub", str(files["full"]))
    result = measure_finetunes(models=[hub, files["full"]], base=str(files["base"]), upstream=str(files["upstream"]),
                               output=tmp_path / "sweep")
    local_name, hub_name = result.names  # entries by path first, then resolved sources
    assert local_name == "full" and hub_name != "full"
    record = SweepStore(tmp_path / "sweep").read_run_record(hub_name)["finetune"]
    assert record["source"]["kind"] == "hub" and record["sha256"] is None
    np.testing.assert_allclose(result.matrix.values[0], result.matrix.values[1], rtol=0, atol=1e-6)


def test_an_adapter_recorded_for_another_base_that_fits_is_measured_with_a_note(files, tmp_path):
    from forgetscope.testing import tiny_model_dir

    other = tiny_model_dir(tmp_path / "other-base", seed=5)  # same architecture and shapes
    adapter = _lora(other, tmp_path / "foreign")
    result = measure_finetunes(adapters=[adapter], base=str(files["base"]), upstream=str(files["upstream"]),
                               output=tmp_path / "sweep")
    assert result.measured == ["foreign"] and np.isfinite(result.matrix.values).all()
    assert len(result.notes) == 1 and "its weights fit" in result.notes[0]


def test_config_file_names_finetunes(files, tmp_path, capsys):
    cfg = tmp_path / "measure.yaml"
    cfg.write_text(f"base: {files['base']}\nfinetunes:\n  - {{name: mine, adapter: {files['lora']}}}\n"
                   f"upstream: {{source: {files['upstream']}, n: 6}}\noutput: {tmp_path / 'sweep'}\n")
    assert run_app(["measure", str(cfg), "--top", "2", "--n", "5"]) == 0  # options override the config's
    out = capsys.readouterr().out
    assert "mine: the 2 most forgotten lm examples" in out and any(t[:20] in out for t in TEXTS)
    assert SweepStore(tmp_path / "sweep").load_matrix().shape == (1, 5)


# ---- refusals: one line, exit 2, nothing written, the base never loaded --------------------------

@pytest.fixture(scope="module")
def bad(files):
    """Fine-tunes that must be refused."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from forgetscope.models import tiny_llama
    from forgetscope.testing import tiny_model_dir, tiny_tokenizer

    root = files["root"] / "bad"
    no_config = root / "no-config"
    no_config.mkdir(parents=True)
    (no_config / "adapter_model.safetensors").write_bytes(b"")
    wide = tiny_model_dir(root / "wide-base")  # another base, with 48-wide layers
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(wide)
    model = tiny_llama(vocab_size=len(tok), hidden=48)
    shutil.rmtree(wide)
    model.save_pretrained(wide)
    tok.save_pretrained(wide)
    wide_adapter = _lora(wide, root / "wide-adapter")
    gpt2 = root / "gpt2-base"
    GPT2LMHeadModel(GPT2Config(vocab_size=300, n_embd=32, n_layer=1, n_head=4, n_positions=64)).save_pretrained(gpt2)
    gpt2_adapter = _lora(gpt2, root / "gpt2-adapter", target_modules=("c_attn",))
    corrupt = root / "corrupt"
    shutil.copytree(files["full"], corrupt)
    data = (corrupt / "model.safetensors").read_bytes()
    (corrupt / "model.safetensors").write_bytes(data[: len(data) // 2])
    vocab = root / "vocab"
    small = tiny_tokenizer(vocab_size=270)
    tiny_llama(vocab_size=len(small)).save_pretrained(vocab)
    small.save_pretrained(vocab)
    no_text = write_jsonl(root / "no_text.jsonl", [{"id": "a", "title": "x"}, {"id": "b", "title": "y"}])
    return {"no_config": no_config, "wide": wide_adapter, "gpt2": gpt2_adapter, "corrupt": corrupt,
            "vocab": vocab, "vocab_size": len(small), "no_text": no_text}


@pytest.mark.parametrize("args, msgs", [
    ([], ["name at least one fine-tune"]),
    (["--adapter", "{no_config}"], ["no adapter_config.json"]),
    (["--adapter", "{wide}"], ["was trained on", "weights do not fit it", "input size 32"]),
    (["--adapter", "{gpt2}"], ["was trained on", "target modules ['c_attn'] are absent from the base"]),
    (["--model", "{corrupt}"], ["cannot read the weights", "does not load"]),
    (["--model", "{vocab}"], ["vocabulary of {vocab_size} tokens", "has 300"]),
    (["--model", "{full}", "--upstream", "{no_text}"], ["no 'text' column"]),
    (["--model", "{full}", "--adapter", "{full}"], ["no adapter_config.json"]),
])
def test_bad_input_is_one_line_and_writes_nothing(files, bad, tmp_path, monkeypatch, capsys, args, msgs):
    import forgetscope.models

    def never(*a, **k):
        raise AssertionError("the base model was loaded before the input was checked")

    monkeypatch.setattr(forgetscope.models, "load_weights", never)
    out = tmp_path / "sweep"
    values = {**{k: str(v) for k, v in files.items()}, **{k: str(v) for k, v in bad.items()}}
    argv = ["measure", "--base", str(files["base"]), "-o", str(out)] + [a.format(**values) for a in args]
    if "--upstream" not in args:
        argv += ["--upstream", str(files["upstream"])]
    assert run_app(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for msg in msgs:
        assert msg.format(**values) in " ".join(err.split()), err
    assert not out.exists()


def test_a_config_entry_with_model_and_adapter_names_the_field(files, tmp_path, capsys):
    cfg = tmp_path / "measure.yaml"
    cfg.write_text(f"finetunes:\n  - {{model: {files['full']}, adapter: {files['lora']}}}\n")
    assert run_app(["measure", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "finetunes.0" in err and "exactly one of model or adapter" in err


def test_another_base_or_a_changed_finetune_is_refused_on_resume(files, measured, tmp_path, capsys):
    from forgetscope.testing import tiny_model_dir

    _, out = measured
    copy = tmp_path / "sweep"
    shutil.copytree(out, copy)
    manifest = (copy / "manifest.json").read_text()
    other = tiny_model_dir(tmp_path / "other-base", seed=3)
    argv = ["measure", "--adapter", str(files["lora"]), "--upstream", str(files["upstream"]), "-o", str(copy)]
    assert run_app(argv + ["--base", str(other)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "cannot be resumed" in err and f"model: '{files['base']}' → '{other}'" in err
    changed = tmp_path / "full"
    shutil.copytree(files["full"], changed)
    _nudged(files["full"], seed=7).save_pretrained(changed)
    assert run_app(["measure", "--model", str(changed), "--base", str(files["base"]), "--upstream",
                    str(files["upstream"]), "-o", str(copy)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "the fine-tune 'full'" in err and "changed since it was measured" in err
    assert (copy / "manifest.json").read_text() == manifest  # nothing rewritten


def test_adapter_shape_check_reads_no_weights(files):
    """The fit check works on the base's module tree built on the meta device (no memory, no loading)."""
    from forgetscope.experiments.finetunes import BaseReference, adapter_mismatch
    from forgetscope.models import resolve_model

    ref = BaseReference.read(str(files["base"]), resolve_model(str(files["base"])))
    tree = ref.module_tree()
    assert next(tree.parameters()).device.type == "meta"
    assert adapter_mismatch(files["lora"], tree) is None
    with pytest.raises(ModelError, match="no adapter_config.json"):
        from forgetscope.experiments.finetunes import resolve_finetune

        resolve_finetune(adapter=files["full"])


@pytest.mark.slow
def test_real_model_lora_adapter_measured_on_40_texts(tmp_path):
    """A LoRA adapter trained for two steps on the default model, measured on 40 demo upstream texts."""
    from forgetscope.config import TrainConfig
    from forgetscope.data.demo import demo_task
    from forgetscope.models import load_model
    from forgetscope.train import train_on_task

    model, tok = load_model(None, device="cpu", dtype="float32")
    task = demo_task("capital_cities", n_train=16, seed=0)
    trained = train_on_task(model, tok, task, TrainConfig(method="lora", steps=2, batch_size=4, lr=2e-3,
                                                          max_length=48, device="cpu"), progress=False, chat=True)
    trained.model.save_pretrained(tmp_path / "adapter")
    result = measure_finetunes(adapters=[tmp_path / "adapter"], upstream={"source": "demo", "n": 40},
                               output=tmp_path / "sweep", device="cpu")
    matrix = SweepStore(tmp_path / "sweep").load_matrix()
    assert matrix.shape == (1, 40) and np.isfinite(matrix.values).all()
    assert np.abs(matrix.values).max() > 0 and result.notes == []  # the adapter names the de-quantized base
    manifest = json.loads((tmp_path / "sweep" / "manifest.json").read_text())
    assert manifest["model"]["kind"] == "gguf" and manifest["model"]["sha256"]
    top = result.top(5)
    assert len(top) == 5 and top["text"].str.len().gt(0).all()
