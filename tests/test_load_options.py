"""The `load:` section (weight dtype, device_map, attention kernel, 4-bit) on every path that loads a model,
its refusals, and the fingerprints of sweeps recorded before it existed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import TEXTS, sweep_config_dict, write_jsonl

import forgetscope.models
from forgetscope.config import LoadConfig, load_config, parse_config
from forgetscope.errors import ConfigError, ModelError
from forgetscope.experiments.session import config_fingerprint
from forgetscope.models import check_loading, load_model, loading_kwargs

ROOT = Path(__file__).resolve().parents[1]
NO_BNB = "load.load_in_4bit needs the package bitsandbytes, which is not installed"
needs_no_bnb = pytest.mark.skipif(__import__("importlib").util.find_spec("bitsandbytes") is not None,
                                  reason="bitsandbytes is installed here")


def _config(tiny_dir, data, out, **top):
    return parse_config({**sweep_config_dict(tiny_dir, data, out), **top})


# ---- fingerprints ----------------------------------------------------------------------------------

def test_committed_replication_sweep_keeps_its_fingerprint():
    recorded = ROOT / "benchmarks" / "results" / "replication" / "replication_smollm2" / "manifest.json"
    cfg = load_config(ROOT / "configs" / "replication_smollm2.yaml")
    assert config_fingerprint(cfg) == json.loads(recorded.read_text())["fingerprint"]


def test_new_fields_at_their_defaults_leave_the_fingerprint_alone(tiny_dir, tiny_data, tmp_path):
    plain = _config(tiny_dir, tiny_data, tmp_path / "s")
    spelled = _config(tiny_dir, tiny_data, tmp_path / "s", load={"dtype": "float32", "device_map": None,
                                                                 "attn_implementation": None, "load_in_4bit": False})
    assert config_fingerprint(spelled) == config_fingerprint(plain)
    raw = sweep_config_dict(tiny_dir, tiny_data, tmp_path / "s")
    raw["train"].update(grad_accum_steps=1, gradient_checkpointing=True)  # checkpointing: same gradients
    assert config_fingerprint(parse_config(raw)) == config_fingerprint(plain)
    # the dump of a sweep recorded before these fields existed has the same fingerprint
    old = plain.model_dump(mode="json")
    del old["load"], old["train"]["grad_accum_steps"], old["train"]["gradient_checkpointing"]
    old["train"]["target_modules"] = None  # a full fine-tune recorded null
    assert config_fingerprint(old) == config_fingerprint(plain)
    # what changes results changes the fingerprint
    for top in ({"load": {"dtype": "bfloat16"}}, {"load": {"attn_implementation": "eager"}}):
        assert config_fingerprint(_config(tiny_dir, tiny_data, tmp_path / "s", **top)) != config_fingerprint(plain)
    raw["train"]["grad_accum_steps"] = 2
    assert config_fingerprint(parse_config(raw)) != config_fingerprint(plain)


def test_lora_default_targets_are_all_linear_and_null_keeps_its_recorded_meaning(tiny_dir, tiny_data, tmp_path):
    raw = sweep_config_dict(tiny_dir, tiny_data, tmp_path / "s", method="lora")
    new = parse_config(raw)
    assert new.train.target_modules == "all-linear"
    recorded = parse_config({**raw, "train": {**raw["train"], "target_modules": None}})  # a manifest's null
    assert recorded.train.target_modules is None  # peft's default of the architecture: q_proj, v_proj on Llama
    assert config_fingerprint(new) != config_fingerprint(recorded)  # so an old LoRA sweep is not resumed


# ---- validation and refusals -----------------------------------------------------------------------

@pytest.mark.parametrize("top, field", [
    ({"load": {"device_map": "auto"}, "train": {"device": "cpu"}}, "train.device"),
    ({"load": {"load_in_4bit": True}, "train": {"method": "full"}}, "load.load_in_4bit"),
    ({"load": {"load_in_4bit": True}, "train": {"method": "lora"}, "null_control": True}, "load.load_in_4bit"),
    ({"load": {"attn_implementation": "flash_attention_2"}}, "flash_attention_2"),
    ({"load": {"dtype": "float8"}}, "load.dtype"),
])
def test_impossible_loading_settings_name_the_field(tiny_dir, tiny_data, tmp_path, top, field):
    raw = sweep_config_dict(tiny_dir, tiny_data, tmp_path / "s")
    for key, value in top.items():
        raw[key] = {**raw[key], **value} if isinstance(raw.get(key), dict) else value
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        parse_config(raw)


def _never(*a, **k):
    raise AssertionError("a model was loaded before the loading options were checked")


@needs_no_bnb
def test_4bit_without_bitsandbytes_is_refused_before_any_model_loads(tiny_dir, tiny_data, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    from forgetscope.experiments import run_sweep
    from forgetscope.experiments.measure import measure_finetunes

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", _never)
    monkeypatch.setattr(forgetscope.models, "load_weights", _never)
    with pytest.raises(ModelError, match=NO_BNB):
        load_model(str(tiny_dir), load_in_4bit=True)
    cfg = _config(tiny_dir, tiny_data, tmp_path / "sweep", load={"load_in_4bit": True},
                  train={**sweep_config_dict(tiny_dir, tiny_data, tmp_path)["train"], "method": "lora"})
    with pytest.raises(ModelError, match=NO_BNB):
        run_sweep(cfg)
    assert not (tmp_path / "sweep").exists()
    with pytest.raises(ModelError, match=NO_BNB):
        measure_finetunes(models=[str(tiny_dir)], base=str(tiny_dir), upstream=str(tiny_data["upstream"]),
                          output=tmp_path / "measured", load={"load_in_4bit": True})
    assert not (tmp_path / "measured").exists()


@needs_no_bnb
def test_4bit_refusal_in_the_cli_is_one_line(tiny_dir, tiny_data, tmp_path, capsys):
    import yaml

    from forgetscope.cli import run_app

    raw = sweep_config_dict(tiny_dir, tiny_data, tmp_path / "sweep", method="lora")
    raw["load"] = {"load_in_4bit": True}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert run_app(["run", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert NO_BNB in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "sweep").exists()


def test_forecast_refuses_the_sweeps_4bit_loading_before_loading(tiny_dir, monkeypatch):
    from types import SimpleNamespace

    from forgetscope.experiments.forecast import load_forecast_model

    monkeypatch.setattr(forgetscope.models, "load_weights", _never)
    monkeypatch.setitem(forgetscope.models.LOADING_PACKAGES, "load_in_4bit", ("no_such_module_x", "bitsandbytes"))
    data = SimpleNamespace(config={"model": str(tiny_dir), "load": {"load_in_4bit": True}}, manifest={})
    with pytest.raises(ModelError, match=NO_BNB):
        load_forecast_model(data, str(tiny_dir))


def test_check_loading_names_each_missing_package(monkeypatch):
    check_loading(device_map="auto")  # accelerate is a dependency
    monkeypatch.setitem(forgetscope.models.LOADING_PACKAGES, "device_map", ("no_such_module_x", "accelerate"))
    with pytest.raises(ModelError, match="load.device_map needs the package accelerate"):
        check_loading(device_map="auto")
    monkeypatch.setitem(forgetscope.models.LOADING_PACKAGES, "flash_attention_2", ("no_such_module_x", "flash-attn"))
    with pytest.raises(ModelError, match="attn_implementation: flash_attention_2 needs the package flash-attn"):
        check_loading(attn_implementation="flash_attention_2")
    check_loading(attn_implementation="sdpa")


def test_4bit_loading_asks_transformers_for_nf4_placed_on_the_device():
    kwargs = loading_kwargs(torch.device("cuda", 0), torch.bfloat16, load_in_4bit=True)
    q = kwargs["quantization_config"]
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant
    assert q.bnb_4bit_compute_dtype == torch.bfloat16 and kwargs["dtype"] == torch.bfloat16
    assert kwargs["device_map"] == {"": "cuda:0"}  # a quantized model is placed while it loads
    assert loading_kwargs(torch.device("cpu"), torch.float32) == {"dtype": torch.float32}  # today's call


def test_a_quantized_model_is_not_fully_fine_tuned(tiny):
    import copy

    from forgetscope.models import prepare_for_training

    model = copy.deepcopy(tiny[0])
    model.is_loaded_in_4bit = True  # what transformers sets on a bitsandbytes model
    with pytest.raises(ModelError, match="cannot be fully fine-tuned"):
        prepare_for_training(model, "full")


# ---- loading on this machine -----------------------------------------------------------------------

def test_device_map_attention_and_dtype_reach_the_loaded_model(tiny_dir, monkeypatch):
    from transformers import AutoModelForCausalLM

    from forgetscope.data.types import Example
    from forgetscope.measure import evaluate_examples

    examples = [Example(f"u{i}", text=t) for i, t in enumerate(TEXTS[:4])]
    plain, tok = load_model(str(tiny_dir), device="cpu", dtype="float32")
    seen: list[dict] = []
    real = AutoModelForCausalLM.from_pretrained.__func__

    def spy(cls, where, **kwargs):
        seen.append(kwargs)
        return real(cls, where, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(spy))
    placed, _ = load_model(str(tiny_dir), **LoadConfig(device_map="auto", attn_implementation="eager").model_kwargs())
    assert seen[-1]["device_map"] == "auto" and seen[-1]["dtype"] == torch.float32  # float32 by default
    assert placed.config._attn_implementation == "eager" and next(placed.parameters()).device.type == "cpu"
    a = evaluate_examples(plain, tok, examples, exact=False)["loss"].to_numpy()
    b = evaluate_examples(placed, tok, examples, exact=False)["loss"].to_numpy()
    assert abs(a - b).max() < 1e-5
    half, _ = load_model(str(tiny_dir), device="cpu", dtype="bfloat16")  # allowed on a CPU, opt-in
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}


def _spy(monkeypatch) -> list[dict]:
    calls: list[dict] = []
    real = forgetscope.models.load_weights

    def spy(source, **kwargs):
        calls.append(kwargs)
        return real(source, **kwargs)

    monkeypatch.setattr(forgetscope.models, "load_weights", spy)
    return calls


MESSAGES_UPSTREAM = [{"id": f"u{i}", "text": t} for i, t in enumerate(TEXTS)] + [
    {"id": "m1", "messages": [{"role": "system", "content": "Answer in one word."},
                              {"role": "user", "content": "What is two plus two?"},
                              {"role": "assistant", "content": "Four."}]},
    {"id": "m2", "messages": [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Red."}]}]


def test_sweep_forecast_and_measure_load_as_the_config_says(tiny_dir, tiny_data, tmp_path, monkeypatch):
    """One tiny sweep with every new knob (device_map, eager attention, accumulation, checkpointing) and TRL
    data (a messages task, a system-prompt upstream pair); a forecast and a measurement load as it did."""
    from forgetscope.experiments import run_sweep
    from forgetscope.experiments.forecast import forecast
    from forgetscope.experiments.measure import measure_finetunes
    from forgetscope.store import SweepStore

    up = write_jsonl(tmp_path / "up.jsonl", MESSAGES_UPSTREAM)
    chat = write_jsonl(tmp_path / "chat.jsonl", [{"messages": [{"role": "user", "content": f"Double {i}?"},
                                                               {"role": "assistant", "content": f"{2 * i}."}]}
                                                 for i in range(10)])
    raw = sweep_config_dict(tiny_dir, {**tiny_data, "upstream": up}, tmp_path / "sweep", batch_size=2,
                            grad_accum_steps=2, gradient_checkpointing=True)
    raw["tasks"][1] = {"name": "chat", "source": str(chat), "heldout": 3}
    raw["load"] = {"device_map": "cpu", "attn_implementation": "eager"}
    calls = _spy(monkeypatch)
    matrix = run_sweep(parse_config(raw))
    assert matrix.values.shape == (2, len(MESSAGES_UPSTREAM))
    assert calls and all(c["device_map"] == "cpu" and c["attn_implementation"] == "eager" for c in calls)
    store = SweepStore(tmp_path / "sweep")
    assert store.read_manifest()["config"]["load"]["device_map"] == "cpu"
    assert json.loads(store.read_upstream().set_index("example_id").loc["m1", "prompt_messages"])[0] == \
        ["system", "Answer in one word."]

    calls.clear()  # the forecast reads the recorded load section and the conversation back
    result = forecast(tmp_path / "sweep", str(tiny_dir), probe=2, predictor="additive", kind="instruction",
                      out=tmp_path / "fc")
    assert calls[-1]["device_map"] == "cpu" and calls[-1]["attn_implementation"] == "eager"
    assert abs(result.table["forgetting"]).max() < 1e-5  # the base itself: nothing forgotten

    calls.clear()
    measured = measure_finetunes(models=[str(tiny_dir)], base=str(tiny_dir), upstream=str(up),
                                 output=tmp_path / "measured", load={"attn_implementation": "eager"})
    assert len(calls) == 2 and all(c["attn_implementation"] == "eager" for c in calls)  # the base and the fine-tune
    assert abs(measured.matrix.values).max() < 1e-5
