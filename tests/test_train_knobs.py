"""Training knobs of the one loop: gradient accumulation, gradient checkpointing, LoRA's default targets."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from forgetscope.config import TrainConfig
from forgetscope.data.types import Example, Task
from forgetscope.errors import ConfigError, ModelError
from forgetscope.models import count_trainable, prepare_for_training
from forgetscope.train import Strategy, make_strategy, train_on_task

# lengths differ from one example to the next, so micro-batches hold different numbers of scored tokens
TEXTS = [f"def f{i}(x):\n    return x * {i} + {i % 3}" + " # pad" * (i % 5) for i in range(16)]
TASK = Task("code", [Example(f"t{i}", text=t) for i, t in enumerate(TEXTS[:12])],
            [Example(f"h{i}", text=t) for i, t in enumerate(TEXTS[12:])])


def _params(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _train(tiny, strategy: Strategy | None = None, **cfg):
    model, tok = tiny
    config = TrainConfig(**{"method": "full", "steps": 4, "lr": 1e-2, "max_length": 48, **cfg})
    return train_on_task(copy.deepcopy(model), tok, TASK, config, strategy=strategy, progress=False)


class Recording(Strategy):
    """The plain strategy, recording the scored tokens of each micro-batch it steps on."""

    def __init__(self):
        super().__init__()
        self.micro: list[list[int]] = []

    def backward(self, ctx, batch):
        from forgetscope.train.hooks import scored_tokens

        self.micro.append([scored_tokens(b) for b in (batch if isinstance(batch, list) else [batch])])
        return super().backward(ctx, batch)


def test_accumulating_two_micro_batches_equals_one_batch_of_both(tiny):
    rec = Recording()
    accumulated = _train(tiny, rec, batch_size=2, grad_accum_steps=2)
    whole = _train(tiny, batch_size=4)
    assert all(len(m) == 2 for m in rec.micro) and any(m[0] != m[1] for m in rec.micro)  # unequal shares
    a, b = _params(accumulated.model), _params(whole.model)
    assert max(float((a[n] - b[n]).abs().max()) for n in a) < 1e-5
    before = _params(tiny[0])
    assert max(float((a[n] - before[n]).abs().max()) for n in a) > 1e-3  # training moved the weights
    assert accumulated.record["train_loss_first"] == pytest.approx(whole.record["train_loss_first"], abs=1e-5)


def test_sam_accumulates_over_both_passes(tiny):
    a = _params(_train(tiny, make_strategy("sam"), batch_size=2, grad_accum_steps=2).model)
    b = _params(_train(tiny, make_strategy("sam"), batch_size=4).model)
    assert max(float((a[n] - b[n]).abs().max()) for n in a) < 1e-5


def _reference_run(tiny, cfg: TrainConfig) -> dict[str, torch.Tensor]:
    """The plain full fine-tune written out: seeded permutation batches, AdamW, clipping, one step a batch."""
    from forgetscope.data.encoding import collate, encode_examples
    from forgetscope.train.trainer import seed_everything

    model, tok = copy.deepcopy(tiny[0]), tiny[1]
    seed_everything(cfg.seed)
    enc = encode_examples(tok, TASK.train, cfg.max_length)
    params = [p for p in model.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(cfg.seed)
    order, cursor = rng.permutation(len(enc)), 0
    model.train()
    for _ in range(cfg.steps):
        if cursor + cfg.batch_size > len(order):
            order, cursor = rng.permutation(len(enc)), 0
        batch = collate([enc[i] for i in order[cursor:cursor + cfg.batch_size]], tok.pad_token_id)
        cursor += cfg.batch_size
        model(**batch).loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return _params(model)


def test_one_accumulation_step_is_exactly_the_single_batch_step(tiny):
    cfg = TrainConfig(method="full", steps=5, lr=1e-2, max_length=48, batch_size=5)  # epochs wrap at step 3
    trained = _params(_train(tiny, batch_size=5, steps=5, grad_accum_steps=1).model)
    reference = _reference_run(tiny, cfg)
    assert all(torch.equal(trained[n], reference[n]) for n in reference)


def test_gradient_checkpointing_gives_the_same_run_and_is_switched_off_after(tiny):
    seen: list[bool] = []

    class Probe(Strategy):
        def before_step(self, ctx):
            seen.append(any(getattr(m, "gradient_checkpointing", False) is True for m in ctx.model.modules()))

    for method in ("full", "lora"):
        seen.clear()
        on = _train(tiny, Probe(), method=method, gradient_checkpointing=True, lr=1e-2)
        off = _train(tiny, method=method, lr=1e-2)
        assert seen and all(seen)
        assert not any(getattr(m, "gradient_checkpointing", False) is True for m in on.model.modules())
        a, b = _params(on.model), _params(off.model)
        assert max(float((a[n] - b[n]).abs().max()) for n in a) < 1e-6


def test_replay_refuses_micro_batches(tiny):
    with pytest.raises(ConfigError, match="train.grad_accum_steps"):
        _train(tiny, make_strategy("replay"), batch_size=2, grad_accum_steps=2)


def test_replay_with_accumulation_is_refused_by_the_sweep_checks(tiny_dir, tiny_data, tmp_path):
    from conftest import sweep_config_dict

    from forgetscope.config import parse_config
    from forgetscope.experiments.validate import validate_sweep

    raw = sweep_config_dict(tiny_dir, tiny_data, tmp_path / "s", grad_accum_steps=2)
    raw["strategy"] = "replay"
    with pytest.raises(ConfigError, match="train.grad_accum_steps"):
        validate_sweep(parse_config(raw))


# ---- LoRA targets ------------------------------------------------------------------------------------

def tiny_gpt2(tok, seed: int = 0):
    """A tiny GPT-2 (fused c_attn, Conv1D layers: no q_proj or v_proj), built in memory."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=4, n_positions=128,
                                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)).eval()


def test_lora_trains_a_gpt2_with_the_default_targets(tiny):
    tok = tiny[1]
    with pytest.raises(ModelError, match="cannot apply LoRA"):
        prepare_for_training(tiny_gpt2(tok), "lora", target_modules=["q_proj", "v_proj"])
    assert TrainConfig().target_modules == "all-linear"
    base = tiny_gpt2(tok)
    head = base.lm_head.weight.detach().clone()
    result = train_on_task(copy.deepcopy(base), tok, TASK, TrainConfig(method="lora", steps=6, lr=5e-3, max_length=48),
                           progress=False)
    adapted = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n, _ in result.model.named_parameters() if "lora_" in n}
    assert adapted == {"c_attn", "c_proj", "c_fc"}  # every linear layer of the blocks, not the output head
    assert result.record["task_loss_after"] < result.record["task_loss_before"]
    assert torch.equal(result.model.get_output_embeddings().weight, head)
    # null: peft's default of the architecture (c_attn on GPT-2)
    legacy = prepare_for_training(tiny_gpt2(tok), "lora", lora_rank=2, target_modules=None)
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n, _ in legacy.named_parameters() if "lora_" in n} == {"c_attn"}


def test_null_targets_keep_the_q_v_pair_sweeps_recorded_on_llama(tiny):
    model = tiny[0]
    legacy = count_trainable(prepare_for_training(copy.deepcopy(model), "lora", lora_rank=2, target_modules=None))
    spelled = count_trainable(prepare_for_training(copy.deepcopy(model), "lora", lora_rank=2,
                                                   target_modules=["q_proj", "v_proj"]))
    default = count_trainable(prepare_for_training(copy.deepcopy(model), "lora", lora_rank=2))
    seven = count_trainable(prepare_for_training(copy.deepcopy(model), "lora", lora_rank=2, target_modules=[
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
    assert legacy == spelled and default == seven > spelled
