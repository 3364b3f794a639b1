"""Evaluation and training precision: bf16 against float32, the LoRA merge rule, the before/after check."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from conftest import TEXTS, sweep_config_dict

from forgetscope.config import TrainConfig, parse_config
from forgetscope.data.encoding import encode_examples
from forgetscope.data.types import Example, Task
from forgetscope.errors import ConfigError, PrecisionError
from forgetscope.experiments.run import execute_run, merge_for_evaluation
from forgetscope.experiments.session import SweepSession
from forgetscope.experiments.spec import RunSpec
from forgetscope.experiments.sweep import run_sweep
from forgetscope.measure import evaluate_examples, per_example_nll
from forgetscope.precision import (
    Precision,
    cpu_has_native_bf16,
    evaluation_precision,
    resolve_eval_dtype,
    resolve_train_dtype,
)
from forgetscope.testing import tiny_model_and_tokenizer
from forgetscope.train import train_on_task

CPU = torch.device("cpu")
# bf16 keeps 8 significant bits; on the tiny model (NLL about 5.7 nats) every example's mean NLL
# stays within this of float32. The real model's error is measured by benchmarks/eval_throughput.py.
BF16_NLL_TOLERANCE = 0.01


def _examples() -> list[Example]:
    return [Example(example_id=f"u{i}", text=t) for i, t in enumerate(TEXTS)]


def test_bf16_evaluation_agrees_with_float32_and_leaves_the_model_unchanged(tiny):
    model, tok = copy.deepcopy(tiny[0]), tiny[1]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    enc = encode_examples(tok, _examples(), 64)
    fp32 = per_example_nll(model, enc, pad_id=tok.pad_token_id)
    bf16 = per_example_nll(model, enc, pad_id=tok.pad_token_id, dtype=torch.bfloat16)
    assert np.all(np.isfinite(bf16))
    assert np.abs(bf16 - fp32).max() <= BF16_NLL_TOLERANCE
    assert not np.array_equal(bf16, fp32)  # it really ran in bf16
    for n, p in model.named_parameters():  # the float32 weights come back bit for bit
        assert p.dtype == torch.float32 and torch.equal(p, before[n]), n


def test_evaluation_precision_casts_parameters_only_and_keeps_a_float32_head(tiny):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(copy.deepcopy(tiny[0]), LoraConfig(r=2, target_modules=["q_proj"]))
    head_before = model.get_output_embeddings().weight.detach().clone()
    with evaluation_precision(model, torch.bfloat16) as state:
        dtypes = {n: p.dtype for n, p in model.named_parameters()}
        buffers = {n: b.dtype for n, b in model.named_buffers() if b.is_floating_point()}
        assert state.head_weight.dtype == torch.float32 and torch.equal(state.head_weight, head_before)
        assert model.get_output_embeddings().weight.dtype == torch.bfloat16
    assert all(d == torch.float32 for n, d in dtypes.items() if "lora_" in n)
    assert all(d == torch.bfloat16 for n, d in dtypes.items() if "lora_" not in n)
    assert buffers and all(d == torch.float32 for d in buffers.values())  # rotary frequencies stay exact
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_auto_dtype_follows_the_hardware(monkeypatch):
    import forgetscope.precision as precision

    assert cpu_has_native_bf16(frozenset({"avx2", "avx512_bf16"}))
    assert cpu_has_native_bf16(frozenset({"amx_bf16"}))
    assert not cpu_has_native_bf16(frozenset({"avx2", "avx512f"}))
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda flags=None: True)
    assert resolve_eval_dtype("auto", CPU) == torch.bfloat16
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda flags=None: False)
    assert resolve_eval_dtype("auto", CPU) == torch.float32
    assert resolve_eval_dtype("bfloat16", CPU) == torch.bfloat16
    assert resolve_train_dtype("auto", CPU) == torch.float32  # bf16 training on a CPU only when asked
    assert resolve_train_dtype("bfloat16", CPU) == torch.bfloat16
    with pytest.raises(ConfigError, match="float16"):
        resolve_eval_dtype("float16", CPU)


def test_config_dtype_fields_default_and_reject_unknown(tiny_dir, tiny_data, tmp_path):
    cfg = parse_config(sweep_config_dict(tiny_dir, tiny_data, tmp_path / "s"))
    assert cfg.eval.dtype == "float32" and cfg.train.dtype == "auto"
    bad = sweep_config_dict(tiny_dir, tiny_data, tmp_path / "s")
    bad["eval"]["dtype"] = "fp8"
    with pytest.raises(ConfigError, match="eval.dtype"):
        parse_config(bad)


@pytest.mark.parametrize("dtype,expected", [("bfloat16", torch.bfloat16), ("auto", torch.float32),
                                            ("float32", torch.float32)])
def test_training_autocasts_the_forward_pass_and_keeps_float32_weights(tiny, dtype, expected):
    model, tok = copy.deepcopy(tiny[0]), tiny[1]
    seen: list[torch.dtype] = []
    hook = model.get_output_embeddings().register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    task = Task("t", train=[Example(f"t{i}", text=t) for i, t in enumerate(TEXTS)],
                heldout=[Example("h0", text=TEXTS[0])])
    cfg = TrainConfig(method="full", steps=2, batch_size=4, lr=1e-2, max_length=32, dtype=dtype)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    result = train_on_task(model, tok, task, cfg, progress=False)
    hook.remove()
    assert result.record["train_dtype"] == str(expected).removeprefix("torch.")
    assert expected in seen  # the training forward passes ran in that dtype
    assert all(p.dtype == torch.float32 for p in result.model.parameters())
    assert all(not torch.equal(p, start[n]) for n, p in result.model.named_parameters())  # updated in fp32


def _sub_spacing_lora_models(hidden: int = 256):
    """A tiny model whose attention weights all lie in [2^-4, 2^-3) (bf16 spacing 2^-11) and a rank-1
    LoRA on them whose update is 0.45 of that spacing everywhere: below bf16 resolution of W."""
    from peft import LoraConfig, get_peft_model

    model, tok = tiny_model_and_tokenizer(seed=0, hidden=hidden)
    spacing = 2.0 ** -11
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("q_proj.weight", "v_proj.weight")):
                mag = (2.0 ** -4 * (1 + torch.rand(p.shape, generator=gen))).to(torch.bfloat16).float()
                mag = mag.clamp(min=2.0 ** -4 + 2 * spacing, max=2.0 ** -3 - 2 * spacing)
                p.copy_(mag * torch.where(torch.rand(p.shape, generator=gen) < 0.5, -1.0, 1.0))

    def with_lora(base):
        peft = get_peft_model(copy.deepcopy(base), LoraConfig(r=1, lora_alpha=1, lora_dropout=0.0,
                                                                target_modules=["q_proj", "v_proj"]))
        with torch.no_grad():
            for name, p in peft.named_parameters():
                if "lora_A" in name:
                    p.fill_(1.0)
                elif "lora_B" in name:
                    p.fill_(0.45 * spacing)
        return peft

    return model, tok, with_lora


def test_small_lora_delta_survives_bf16_evaluation_where_a_naive_merge_loses_it():
    model, tok, with_lora = _sub_spacing_lora_models()
    examples = _examples()
    base16 = copy.deepcopy(model).to(torch.bfloat16)  # the model itself stored in bf16

    def loss(m, dtype):
        return evaluate_examples(m, tok, examples, max_length=64, exact=False, dtype=dtype)["loss"].to_numpy()

    true_f = loss(merge_for_evaluation(with_lora(model), torch.float32), torch.float32) - loss(model, torch.float32)
    kept = merge_for_evaluation(with_lora(base16), torch.bfloat16)
    assert hasattr(kept, "merge_and_unload")  # bf16: evaluated unmerged
    f_bf16 = loss(kept, torch.bfloat16) - loss(base16, torch.bfloat16)
    naive_f = loss(with_lora(base16).merge_and_unload(), torch.bfloat16) - loss(base16, torch.bfloat16)

    assert np.all(naive_f == 0.0)  # merged into bf16 weights, the update rounds away completely
    assert np.abs(true_f).mean() > 0
    assert np.abs(f_bf16).mean() > 0.3 * np.abs(true_f).mean()  # unmerged, it is measured ...
    assert np.corrcoef(f_bf16, true_f)[0, 1] > 0.5  # ... and follows the float32 forgetting


def test_float32_lora_is_merged_for_speed(tiny):
    from peft import LoraConfig, get_peft_model

    peft = get_peft_model(copy.deepcopy(tiny[0]), LoraConfig(r=2, target_modules=["q_proj"]))
    assert not hasattr(merge_for_evaluation(peft, torch.float32), "peft_config")
    peft = get_peft_model(copy.deepcopy(tiny[0]), LoraConfig(r=2, target_modules=["q_proj"]))
    assert hasattr(merge_for_evaluation(peft, torch.bfloat16), "peft_config")


def test_sweep_records_eval_precision_in_manifest_and_runs(tiny_dir, tiny_data, tmp_path):
    raw = sweep_config_dict(tiny_dir, tiny_data, tmp_path / "s", method="lora", steps=2)
    raw["eval"]["dtype"] = "bfloat16"
    cfg = parse_config(raw)
    matrix = run_sweep(cfg)
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert (manifest["eval"]["device"], manifest["eval"]["dtype"]) == ("cpu", "bfloat16")  # beside max_length
    assert "eval_dtype" not in manifest and manifest["eval"]["max_length"] > 0
    runs = __import__("pandas").read_parquet(tmp_path / "s" / "runs.parquet")
    assert set(runs["eval_dtype"]) == {"bfloat16"} and set(runs["eval_device"]) == {"cpu"}
    assert np.isfinite(matrix.values).all()
    from forgetscope.integrations.hf_trainer import _from_sweep
    from forgetscope.store import SweepStore

    assert _from_sweep(SweepStore(tmp_path / "s")).record.dtype == "bfloat16"  # the callback follows it


def test_resume_with_another_precision_is_refused(tiny_dir, tiny_data, tmp_path):
    cfg = parse_config(sweep_config_dict(tiny_dir, tiny_data, tmp_path / "s", steps=1))
    run_sweep(cfg)
    path = tmp_path / "s" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["eval"]["device"], manifest["eval"]["dtype"] = "cuda", "bfloat16"  # as if measured on a GPU
    path.write_text(json.dumps(manifest))
    with pytest.raises(PrecisionError, match="cuda/bfloat16.*cpu/float32"):
        run_sweep(cfg)


def test_a_run_evaluating_unlike_the_base_row_is_refused_before_training(tiny_dir, tiny_data, tmp_path):
    cfg = parse_config(sweep_config_dict(tiny_dir, tiny_data, tmp_path / "s", steps=1))
    session = SweepSession.prepare(cfg)
    session.extras["eval_precision"] = Precision("cpu", "bfloat16")  # the driver's base row
    with pytest.raises(PrecisionError, match="^loss_before was measured on cpu/bfloat16 but this process "
                                             "evaluates on cpu/float32"):
        execute_run(session, RunSpec("code", 0, "plain"))
    assert session._base is None  # refused before a model was even loaded


def test_the_evaluation_record_knows_every_evaluation_dtype():
    from forgetscope.measure.record import EVAL_DTYPES
    from forgetscope.precision import DTYPES

    assert set(EVAL_DTYPES) == set(DTYPES)
