"""ForgettingCallback under TRL's SFTTrainer: a real run on the tiny model, checked against a direct measurement."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import TEXTS

pytest.importorskip("trl")

from datasets import Dataset  # noqa: E402
from trl import SFTConfig, SFTTrainer  # noqa: E402

from forgetscope.data.types import Example  # noqa: E402
from forgetscope.integrations import ForgettingCallback  # noqa: E402
from forgetscope.measure import evaluate_examples  # noqa: E402

UPSTREAM = [Example(f"u{i}", text=t) for i, t in enumerate(TEXTS[:6])] + [
    Example("q1", prompt="What is two plus two?", response="Four.", answer="four")
]
IDS = [e.example_id for e in UPSTREAM]
CODE = [f"def f{i}(x):\n    return x * {i} + {i % 3}" for i in range(8)]
DATASETS = {
    "text": {"text": CODE},
    "prompt_completion": {"prompt": [f"What is {i} plus {i}?" for i in range(8)],
                          "completion": [f" {2 * i}." for i in range(8)]},
}


def losses(model, tok, examples) -> np.ndarray:
    # what the callback's defaults resolve to on the tiny model: 512 capped at its 128-token context, and
    # chat="auto" -> True because the tiny tokenizer has a chat template
    return evaluate_examples(model, tok, examples, max_length=128, exact=False, chat=True)["loss"].to_numpy()


def weights(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten().float().clone() for p in model.parameters()])


# plain text with a model object and its tokenizer; prompt/completion with a model path, which SFTTrainer
# loads itself (and its tokenizer, which the callback then takes from trainer.processing_class)
@pytest.mark.parametrize(("kind", "by_path"), [("text", False), ("prompt_completion", True)])
def test_sft_trainer_logs_the_forgetting_a_direct_measurement_finds(tiny, tiny_dir, tmp_path, kind, by_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if by_path:
        model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)  # what SFTTrainer loads
        tok = AutoTokenizer.from_pretrained(tiny_dir)
    else:
        model, tok = (copy.deepcopy(x) for x in tiny)  # SFTTrainer may set tokenizer/config attributes
    base = losses(model, tok, UPSTREAM)
    start = weights(model)

    args = SFTConfig(output_dir=str(tmp_path / "out"), use_cpu=True, max_steps=4, logging_steps=2,
                     per_device_train_batch_size=4, learning_rate=1e-2, max_length=64, report_to="none",
                     save_strategy="no", seed=0, disable_tqdm=True, bf16=False, dataloader_num_workers=0)
    trainer = SFTTrainer(model=str(tiny_dir) if by_path else model, args=args,
                         train_dataset=Dataset.from_dict(DATASETS[kind]), processing_class=None if by_path else tok)
    callback = ForgettingCallback(UPSTREAM).attach(trainer)
    trainer.train()

    assert callback.max_length == 128 and callback._chat is True  # the settings `losses` uses
    assert not torch.equal(weights(trainer.model), start)  # SFT really trained the model

    logged = [e for e in trainer.state.log_history if "forgetting/mean" in e]
    assert [e["step"] for e in logged] == [2, 4]
    assert all(e["forgetting/evaluated"] == len(UPSTREAM) for e in logged)
    # TRL's own training logs at those steps survive, with the metrics its `log` override folds in, and
    # those metrics are not moved onto the forgetting entries
    train_logs = [e for e in trainer.state.log_history if "loss" in e]
    assert [e["step"] for e in train_logs] == [2, 4]
    assert all("mean_token_accuracy" in e for e in train_logs)
    assert not any("mean_token_accuracy" in e or "loss" in e for e in logged)

    np.testing.assert_allclose(callback.base_losses.loc[IDS].to_numpy(), base, atol=1e-5)
    F = losses(trainer.model, tok, UPSTREAM) - base
    assert np.abs(F).max() > 1e-3  # training moved the upstream losses, so the comparison means something
    np.testing.assert_allclose(callback.last_row.loc[IDS].to_numpy(), F, atol=1e-5)
    assert callback.last_row.name == 4
    final = logged[-1]
    assert final["forgetting/mean"] == pytest.approx(F.mean(), abs=1e-5)
    assert final["forgetting/max"] == pytest.approx(F.max(), abs=1e-5)
    assert final["forgetting/share_forgotten"] == pytest.approx((F > 0).mean())
    assert logged[0]["forgetting/mean"] != pytest.approx(final["forgetting/mean"], abs=1e-6)  # measured anew


def test_sft_trainer_callbacks_list_form_adds_eval_forgetting_to_its_metrics(tiny, tmp_path):
    model, tok = (copy.deepcopy(x) for x in tiny)
    callback = ForgettingCallback(UPSTREAM)
    args = SFTConfig(output_dir=str(tmp_path / "out"), use_cpu=True, max_steps=2, logging_steps=2,
                     eval_strategy="steps", eval_steps=2, per_device_train_batch_size=4, learning_rate=1e-2,
                     max_length=64, report_to="none", save_strategy="no", seed=0, disable_tqdm=True, bf16=False,
                     dataloader_num_workers=0)
    data = Dataset.from_dict(DATASETS["text"])
    trainer = SFTTrainer(model=model, args=args, train_dataset=data, eval_dataset=data.select(range(2)),
                         processing_class=tok, callbacks=[callback])  # no attach
    trainer.train()

    evals = [e for e in trainer.state.log_history if "eval_loss" in e]
    assert [e["step"] for e in evals] == [2]
    assert "eval_mean_token_accuracy" in evals[0]  # TRL's own eval metrics stay
    assert evals[0]["eval_forgetting/mean"] == pytest.approx(callback.history[-1]["metrics"]["forgetting/mean"])
    metrics = trainer.evaluate()  # a later evaluation at the same step reuses that measurement
    assert metrics["eval_forgetting/mean"] == pytest.approx(evals[0]["eval_forgetting/mean"])
    assert len(callback.history) == 1
