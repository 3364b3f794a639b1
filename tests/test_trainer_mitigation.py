"""SAM and EWC in a transformers Trainer (and TRL's SFTTrainer) give the update of forgetscope's own loop.

How the two loops are made to see the same thing: both start from the same base weights (LoRA adapters
drawn after the same ``seed_everything(0)``); both encode the task with forgetscope's ``encode_examples``
(the Trainer collates with forgetscope's ``collate``; SFTTrainer gets the same token ids, pre-tokenised,
and pads them with its own collator the same way); every step is one batch holding the whole task, so the
order in which either loop draws examples cannot matter (the token-mean loss does not depend on it);
the learning rate is constant (no warm-up, ``lr_scheduler_type="constant"``), both clip at norm 1.0, and
the optimizer is the same: SGD for SAM (built by the strategy's ``base`` or by ``optim="sgd"``), AdamW
without weight decay for EWC. SGD is exact to float rounding; AdamW divides by √v, so parameters with
almost no gradient magnify rounding, which is why SAM, whose two passes double the rounding, is compared
under SGD. Each comparison also checks that the strategy moved the weights far (> 1e-3) from plain
fine-tuning's, so agreement within 1e-5 is the strategy's and not plain training's.
"""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import TEXTS

from forgetscope.config import TrainConfig
from forgetscope.data.encoding import collate, encode_examples
from forgetscope.data.types import Example, Task
from forgetscope.errors import ConfigError
from forgetscope.integrations import estimate_ewc_fisher, ewc_trainer, sam_trainer
from forgetscope.models import prepare_for_training
from forgetscope.train import make_strategy
from forgetscope.train.trainer import seed_everything, train_on_task

STEPS, LR, MAX_LENGTH, RANK = 2, 1e-2, 64, 4
TRAIN = [Example(f"t{i}", text=f"def f{i}(x):\n    return x * {i} + {i % 3}") for i in range(6)]
TASK = Task("code", TRAIN, [Example("h0", text="def g(x): return x")])
UPSTREAM = [Example(f"u{i}", text=t) for i, t in enumerate(TEXTS[:6])]
EWC = {"lam": 100.0, "n_fisher": 4}  # 4 of the 6 upstream examples: the draw itself must match


def loop_run(tiny, method: str, strategy: str, **options):
    """forgetscope's own loop: one whole-task batch per step, constant lr, clip 1.0."""
    model, tok = tiny
    cfg = TrainConfig(method=method, steps=STEPS, lr=LR, batch_size=len(TRAIN), max_length=MAX_LENGTH,
                      warmup_steps=0, grad_clip=1.0, weight_decay=0.0, seed=0, dtype="float32", lora_rank=RANK)
    return train_on_task(copy.deepcopy(model), tok, TASK, cfg, strategy=make_strategy(strategy, **options),
                         upstream=UPSTREAM, progress=False)


def loop_weights(tiny, method: str, strategy: str, **options) -> dict[str, torch.Tensor]:
    return weights(loop_run(tiny, method, strategy, **options).model)


@pytest.fixture(scope="module")
def plain(tiny):
    """Plain fine-tuning's weights by method, trained once for the module."""
    cache: dict[str, dict[str, torch.Tensor]] = {}

    def get(method: str) -> dict[str, torch.Tensor]:
        if method not in cache:
            cache[method] = loop_weights(tiny, method, "plain")
        return cache[method]

    return get


def weights(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[n] - b[n]).abs().max()) for n in a)


def start_model(tiny, method: str):
    """The model as train_on_task prepares it: LoRA adapters drawn right after seed_everything(seed)."""
    seed_everything(0)
    return prepare_for_training(copy.deepcopy(tiny[0]), method, lora_rank=RANK)


class EncodedDataset(torch.utils.data.Dataset):
    def __init__(self, encoded):
        self.encoded = encoded

    def __len__(self) -> int:
        return len(self.encoded)

    def __getitem__(self, i: int):
        return self.encoded[i]


def args_for(cls, tmp_path, **extra):
    return cls(output_dir=str(tmp_path / "out"), use_cpu=True, max_steps=STEPS,
               per_device_train_batch_size=len(TRAIN), learning_rate=LR, lr_scheduler_type="constant",
               warmup_steps=0, max_grad_norm=1.0, weight_decay=0.0, report_to=[], save_strategy="no", seed=0,
               disable_tqdm=True, logging_steps=1, bf16=False, dataloader_num_workers=0, **extra)


def hf_trainer(trainer_cls, tiny, method: str, tmp_path, optim: str = "adamw_torch", **kwargs):
    """A transformers Trainer on the task encoded and collated by forgetscope's own functions."""
    from transformers import TrainingArguments

    tok = tiny[1]
    encoded = encode_examples(tok, TRAIN, MAX_LENGTH)
    return trainer_cls(model=start_model(tiny, method), args=args_for(TrainingArguments, tmp_path, optim=optim,
                                                                       remove_unused_columns=False),
                       train_dataset=EncodedDataset(encoded), processing_class=tok,
                       data_collator=lambda batch: collate(batch, tok.pad_token_id), **kwargs)


@pytest.mark.parametrize(("method", "optimizer"), [("full", "strategy"), ("lora", "trainer")])
def test_sam_trainer_matches_the_sam_strategy(tiny, plain, tmp_path, method, optimizer):
    """``base`` given: the mixin builds SGD as the strategy does; left out: it wraps the Trainer's SGD."""
    from transformers import Trainer

    sam = {"rho": 0.05, "base": "sgd"} if optimizer == "strategy" else {"rho": 0.05}
    trainer = hf_trainer(sam_trainer(Trainer), tiny, method, tmp_path, optim="sgd", sam=sam)
    trainer.train()

    expected = loop_weights(tiny, method, "sam", rho=0.05, base="sgd")
    assert max_diff(weights(trainer.model), expected) < 1e-5
    assert max_diff(expected, plain(method)) > 1e-3  # SAM's update, not plain's
    assert trainer.sam.summary()["sam_steps"] == STEPS
    assert isinstance(trainer.optimizer.optimizer, torch.optim.SGD)


@pytest.mark.parametrize(("method", "source"), [("lora", "upstream"), ("full", "fisher")])
def test_ewc_trainer_matches_the_ewc_strategy(tiny, plain, tmp_path, method, source):
    """The Fisher estimated from the same upstream draw (LoRA: anchored through ΔW), or given."""
    from transformers import Trainer

    if source == "upstream":
        inputs = {"ewc_upstream": UPSTREAM, "ewc_max_length": MAX_LENGTH, "ewc_chat": False}
    else:
        fisher = estimate_ewc_fisher(start_model(tiny, method), tiny[1], UPSTREAM, ewc=EWC, seed=0,
                                     max_length=MAX_LENGTH, chat=False)
        inputs = {"ewc_fisher": fisher}
    trainer = hf_trainer(ewc_trainer(Trainer), tiny, method, tmp_path, ewc=EWC, **inputs)
    trainer.train()

    run = loop_run(tiny, method, "ewc", **EWC)
    expected = weights(run.model)
    assert max_diff(weights(trainer.model), expected) < 1e-5
    assert max_diff(expected, plain(method)) > 1e-3  # the penalty changed the update
    summary = trainer.ewc.summary()
    assert summary["space"] == ("lora_delta" if method == "lora" else "parameters")
    penalties = [e["ewc_penalty"] for e in trainer.state.log_history if "loss" in e]
    assert len(penalties) == STEPS and penalties[0] == 0.0 and penalties[-1] > 0  # 0 at the anchor
    assert summary["final_penalty"] == pytest.approx(run.record["strategy_info"]["final_penalty"], rel=1e-4)


def test_sam_sft_trainer_matches_the_sam_strategy_and_logs_each_step_once(tiny, tmp_path):
    pytest.importorskip("trl")
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    tok = copy.deepcopy(tiny[1])  # SFTTrainer may set tokenizer attributes
    encoded = encode_examples(tok, TRAIN, MAX_LENGTH)
    dataset = Dataset.from_dict({"input_ids": [list(e.input_ids) for e in encoded]})  # pre-tokenised: no EOS added
    trainer = sam_trainer(SFTTrainer)(model=start_model(tiny, "full"), args=args_for(SFTConfig, tmp_path,
                                                                                       max_length=MAX_LENGTH),
                                      train_dataset=dataset, processing_class=tok, sam={"rho": 0.05, "base": "sgd"})
    trainer.train()

    assert max_diff(weights(trainer.model), loop_weights(tiny, "full", "sam", rho=0.05, base="sgd")) < 1e-5
    logs = [e for e in trainer.state.log_history if "loss" in e]
    tokens = sum(len(e) for e in encoded)
    # the pass at the perturbed point is not counted: TRL's running token count grows by one batch per step
    assert [e["num_tokens"] for e in logs] == [tokens * (i + 1) for i in range(STEPS)]


def test_bad_settings_are_one_line_config_errors(tiny, tmp_path):
    from transformers import Trainer

    fisher = {"not.a.parameter": torch.zeros(3)}
    cases = {
        "rho": lambda: hf_trainer(sam_trainer(Trainer), tiny, "full", tmp_path, sam={"rho": -1}),
        "unknown field": lambda: hf_trainer(sam_trainer(Trainer), tiny, "full", tmp_path, sam={"radius": 1}),
        "lam": lambda: hf_trainer(ewc_trainer(Trainer), tiny, "full", tmp_path, ewc={"lam": -1},
                                  ewc_upstream=UPSTREAM),
        "gradient_accumulation_steps": lambda: sam_trainer(Trainer)(
            model=start_model(tiny, "full"), args=args_for(__import__("transformers").TrainingArguments, tmp_path,
                                                           gradient_accumulation_steps=2)),
        "exactly one": lambda: hf_trainer(ewc_trainer(Trainer), tiny, "full", tmp_path),
        "does not fit": lambda: hf_trainer(ewc_trainer(Trainer), tiny, "full", tmp_path, ewc_fisher=fisher),
        "Trainer subclass": lambda: sam_trainer(torch.nn.Module),
    }
    for needle, make in cases.items():
        with pytest.raises(ConfigError) as info:
            make()
        message = str(info.value)
        assert needle in message and "\n" not in message, (needle, message)
