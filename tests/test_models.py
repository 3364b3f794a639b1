import numpy as np
import pytest

from forgetscope.errors import ModelError
from forgetscope.models import (
    count_trainable,
    load_model,
    pick_device,
    pick_dtype,
    prepare_for_training,
    resolve_model,
)


def test_unknown_model_name_is_a_clear_error():
    with pytest.raises(ModelError, match="unknown model 'no-such-model'"):
        resolve_model("no-such-model")


def test_missing_gguf_file(tmp_path):
    with pytest.raises(ModelError, match="GGUF file not found"):
        resolve_model(str(tmp_path / "missing.gguf"))


def test_directory_without_config(tmp_path):
    with pytest.raises(ModelError, match="no config.json"):
        resolve_model(str(tmp_path))


def test_hub_ids_resolve_without_network():
    src = resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert src.kind == "hub" and src.location == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_local_directory_loads(tiny_dir):
    model, tok = load_model(str(tiny_dir))
    assert model.config.num_hidden_layers == 2
    assert tok.pad_token_id is not None
    assert resolve_model(str(tiny_dir)).sha256 == resolve_model(str(tiny_dir)).sha256


def test_cpu_defaults_to_float32():
    dev = pick_device("cpu")
    assert pick_dtype(dev) is __import__("torch").float32
    with pytest.raises(ModelError, match="unknown dtype"):
        pick_dtype(dev, "float8")


def test_lora_trains_far_fewer_parameters(tiny_dir):
    full, _ = load_model(str(tiny_dir))
    n_full = count_trainable(prepare_for_training(full, "full"))
    lora, _ = load_model(str(tiny_dir))
    n_lora = count_trainable(prepare_for_training(lora, "lora", lora_rank=2, target_modules=["q_proj"]))
    # rank 2 on q_proj (32x32) in 2 layers: 2 * (32*2 + 2*32) = 256
    assert n_lora == 256
    assert n_lora < n_full


def test_bad_method_and_target_modules(tiny_dir):
    model, _ = load_model(str(tiny_dir))
    with pytest.raises(ModelError, match="unknown fine-tuning method"):
        prepare_for_training(model, "qlora")
    with pytest.raises(ModelError, match="cannot apply LoRA"):
        prepare_for_training(model, "lora", target_modules=["no_such_module"])


@pytest.mark.slow
def test_default_model_loads_and_knows_english():
    from forgetscope.data.types import Example
    from forgetscope.measure import evaluate_examples

    model, tok = load_model(None)
    assert type(model).__name__ == "LlamaForCausalLM"
    df = evaluate_examples(model, tok, [Example("a", text="The capital of France is Paris, a city on the Seine.")],
                           exact=False)
    assert df["loss"].iloc[0] < 0.5 * np.log(len(tok))  # far below uniform

    from forgetscope.data.demo import demo_upstream, demo_upstream_instruct
    from forgetscope.data.encoding import encode_examples
    from forgetscope.measure import per_example_nll

    enc = encode_examples(tok, demo_upstream(n=12) + demo_upstream_instruct(n=4), 96, chat=True)
    batched = per_example_nll(model, enc, pad_id=tok.pad_token_id)
    single = np.array([per_example_nll(model, [e], pad_id=tok.pad_token_id)[0] for e in enc])
    np.testing.assert_allclose(batched, single, atol=1e-4)  # batching changes nothing on the real model
