"""ReplayCallback: forgetscope's replay (offline and online predicted) inside transformers.Trainer and TRL's
SFTTrainer, checked against forgetscope's own loop on the tiny model."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import TrainerCallback

from forgetscope.config import TrainConfig
from forgetscope.data.encoding import encode_examples
from forgetscope.data.types import Example, Task
from forgetscope.errors import ConfigError, DataError
from forgetscope.integrations import ReplayCallback
from forgetscope.mitigate.replay_sampling import replay_schedule
from forgetscope.store.matrix import ForgettingMatrix
from forgetscope.train import make_strategy, train_on_task

pytest.importorskip("trl")

CODE = [f"def f{i}(x): return x * {i}" for i in range(8)]
TASK = Task("t", [Example(f"t{i}", text=t) for i, t in enumerate(CODE)], [Example("h", text="def g(y): return y")])
KINDS = ["trainer", "sft"]


def _pool(n: int) -> list[Example]:
    return [Example(f"u{i}", text=f"Upstream sentence {i} about the fox.") for i in range(n)]


def _known(ids: list[str]) -> ForgettingMatrix:
    """Three plain rows of other tasks with distinct column effects (what predicted replay completes from)."""
    j = np.arange(len(ids))
    values = np.stack([np.sin(j) * 0.3 + 0.1 * r for r in range(3)])
    runs = pd.DataFrame({"task": ["a", "b", "c"], "strategy": "plain"})
    return ForgettingMatrix(values, ["a", "b", "c"], ids, runs=runs)


class _Inputs:
    """Records what the model receives in training forwards, and the step of every example it evaluates
    (forgetscope's evaluator may call the decoder alone, so that is where evaluations are counted)."""

    def __init__(self, model, trainer_state):
        self.train: list[dict[str, torch.Tensor]] = []
        self.eval_steps: list[int] = []
        self.state = trainer_state
        self.paused = False
        model.register_forward_pre_hook(self._train_hook, with_kwargs=True)
        model.get_decoder().register_forward_pre_hook(self._eval_hook, with_kwargs=True)

    def _train_hook(self, module, args, kwargs):
        if module.training:
            self.train.append({k: kwargs[k].detach().clone() for k in ("input_ids", "attention_mask", "labels")})

    def _eval_hook(self, module, args, kwargs):
        if not module.training and not self.paused:
            ids = kwargs["input_ids"] if kwargs.get("input_ids") is not None else args[0]
            self.eval_steps.extend([self.state().global_step] * ids.shape[0])

    def task_rows(self, b: int) -> list[list[int]]:
        """The task rows (the first b of each step), padding stripped."""
        return [ids[m.bool()].tolist() for x in self.train for ids, m in zip(x["input_ids"][:b], x["attention_mask"][:b])]


def _hf(kind: str, tiny, tmp_path, *, steps: int, lr: float, seed: int, batch: int = 4):
    """A transformers.Trainer (own collator over text rows) or an SFTTrainer over the task CODE texts."""
    from datasets import Dataset

    model, tok = (copy.deepcopy(x) for x in tiny)
    common = dict(output_dir=str(tmp_path / f"out-{kind}"), use_cpu=True, max_steps=steps,
                  per_device_train_batch_size=batch, learning_rate=lr, report_to="none", save_strategy="no",
                  seed=seed, disable_tqdm=True, dataloader_num_workers=0, logging_strategy="no")
    if kind == "sft":
        from trl import SFTConfig, SFTTrainer

        args = SFTConfig(**common, max_length=64, bf16=False)
        trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_dict({"text": CODE}),
                             processing_class=tok)
    else:
        from transformers import Trainer, TrainingArguments

        def collate(rows):
            enc = tok([r["text"] for r in rows], return_tensors="pt", padding=True, truncation=True, max_length=32)
            enc["labels"] = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
            return enc

        args = TrainingArguments(**common, remove_unused_columns=False)
        trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_dict({"text": CODE}),
                          data_collator=collate, processing_class=tok)
    return trainer, _Inputs(trainer.model, lambda: trainer.state)


def _own_loop(tiny, strategy, *, steps: int, lr: float, seed: int, pool: list[Example]):
    model, tok = tiny
    cfg = TrainConfig(method="full", steps=steps, batch_size=4, lr=lr, max_length=32, seed=seed)
    train_on_task(copy.deepcopy(model), tok, TASK, cfg, strategy=strategy, upstream=pool, progress=False)
    return strategy


# ---- offline --------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_offline_replays_the_ids_forgetscopes_own_loop_replays_at_its_schedule(tiny, tmp_path, kind):
    pool = _pool(12)
    ids = [e.example_id for e in pool]
    row = pd.Series(np.linspace(-0.2, 0.6, len(ids))[::-1], index=ids)  # u0 most forgotten
    own = _own_loop(tiny, make_strategy("replay", policy="oracle", forgetting=row.to_dict(), ratio=1 / 8, seed=5),
                    steps=10, lr=1e-2, seed=3, pool=pool)

    trainer, seen = _hf(kind, tiny, tmp_path, steps=10, lr=1e-2, seed=3)
    callback = ReplayCallback(pool, values=row, ratio=1 / 8, seed=5).attach(trainer)
    trainer.train()

    assert len(own.replayed) == 6 and callback.replayed == own.replayed  # same examples, same order
    schedule = replay_schedule(10, 4, 1 / 8)
    assert [d["step"] for d in callback.draws for _ in d["ids"]] == np.repeat(np.arange(10), schedule).tolist()
    # the replay rows reached the model: 4 task rows plus the step's replay rows, in forgetscope's encoding
    assert [x["input_ids"].shape[0] for x in seen.train] == (4 + schedule).tolist()
    tok = tiny[1]
    encoded = {e.example_id: e for e in encode_examples(tok, pool, 64, chat=True)}
    for d in callback.draws:
        got = seen.train[d["step"]]
        for r, i in enumerate(d["ids"]):
            mask = got["attention_mask"][4 + r].bool()
            assert got["input_ids"][4 + r][mask].tolist() == list(encoded[i].input_ids)
            assert got["labels"][4 + r][mask].tolist() == list(encoded[i].labels)
    assert callback.summary()["n_unique_replayed"] == 6


@pytest.mark.parametrize("kind", KINDS)
def test_the_task_batches_are_those_of_a_plain_run(tiny, tmp_path, kind):
    """Replay adds rows: the task examples, their order over several epochs and the data loader are the plain run's."""
    plain, seen_plain = _hf(kind, tiny, tmp_path / "plain", steps=6, lr=1e-2, seed=1)
    plain.train()
    mixed, seen_mixed = _hf(kind, tiny, tmp_path / "mixed", steps=6, lr=1e-2, seed=1)
    callback = ReplayCallback(_pool(12), ratio=1 / 2, seed=0).attach(mixed)
    mixed.train()
    assert callback.mode == "random" and len(callback.replayed) == 13
    assert [x["input_ids"].shape[0] for x in seen_plain.train] == [4] * 6  # 3 epochs of 8 examples
    assert [x["input_ids"].shape[0] for x in seen_mixed.train] == (4 + replay_schedule(6, 4, 1 / 2)).tolist()
    assert seen_mixed.task_rows(4) == seen_plain.task_rows(4)
    assert len({tuple(r) for r in seen_plain.task_rows(4)[:8]}) == 8  # the first epoch covers the task once


# ---- online ---------------------------------------------------------------------------------------
class _ProbeCheck(TrainerCallback):
    """Measures the probe examples itself, on the model as it is at the end of step ``at``."""

    def __init__(self, callback: ReplayCallback, seen: _Inputs, at: int):
        self.callback, self.seen, self.at = callback, seen, at
        self.base = self.after = None

    def _losses(self, model):
        from forgetscope.measure import evaluate_examples

        examples = [e for e in self.callback.pool if e.example_id in set(self.callback.probe_ids)]
        self.seen.paused = True
        try:
            table = evaluate_examples(model, self.callback.tokenizer, examples, max_length=128, exact=False, chat=True)
        finally:
            self.seen.paused = False
            model.train()
        return dict(zip(table["example_id"], table["loss"]))

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.base = self._losses(model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == self.at:
            self.after = self._losses(model)


@pytest.mark.parametrize("kind", KINDS)
def test_online_probes_once_at_the_warmup_boundary_on_the_current_model(tiny, tmp_path, kind):
    pool = _pool(40)
    trainer, seen = _hf(kind, tiny, tmp_path, steps=10, lr=1e-2, seed=0)
    callback = ReplayCallback(pool, known=_known([e.example_id for e in pool]), predictor="additive", probe=30,
                              ratio=1 / 2, warmup_fraction=0.3, seed=2).attach(trainer)
    check = _ProbeCheck(callback, seen, at=3)
    trainer.add_callback(check)
    trainer.train()

    # one probe, after 3 of 10 steps: base losses before step 0, the probe after step 3, nothing else
    assert [c["step"] for c in callback.probe_calls] == [3] and callback.boundary == 3
    assert len(seen.eval_steps) == 2 * 30 and set(seen.eval_steps) == {0, 3}
    observed = callback.probe_calls[0]["values"]
    assert sorted(observed) == sorted(callback.probe_ids)
    expected = {i: check.after[i] - check.base[i] for i in observed}
    np.testing.assert_allclose([observed[i] for i in observed], [expected[i] for i in observed], atol=1e-5)
    assert np.abs(list(observed.values())).max() > 1e-3  # the model moved: "current" is not "base"
    # warm-up draws (steps 0-2) avoid the 30 probe examples; nothing is drawn twice
    probe = set(callback.probe_ids)
    warmup = [i for d in callback.draws if d["step"] < 3 for i in d["ids"]]
    assert len(warmup) == 6 and not probe & set(warmup)
    assert len(callback.replayed) == 21 and len(set(callback.replayed)) == 21
    # after the probe the pool is weighed by the completed row (observed values on the probe)
    assert callback.row is not None and callback.row[list(observed)].tolist() == list(observed.values())
    s = callback.summary()
    assert s["upstream_evaluations"] == 60 and s["replayed_in_warmup"] == 6 and s["known_rows"] == 3


@pytest.mark.parametrize("kind", KINDS)
def test_online_replays_the_ids_forgetscopes_own_online_loop_replays(tiny, tmp_path, kind):
    """With the weights frozen (lr 1e-30: both probes observe F = 0 exactly), the two loops see the same probe
    values, so the same known rows, probe and seeds must give the same ids, warm-up and predicted phase alike."""
    pool = _pool(40)
    known = _known([e.example_id for e in pool])
    opts = dict(predictor="additive", probe=10, ratio=1 / 2, warmup_fraction=0.3, seed=2)
    own = _own_loop(tiny, make_strategy("replay", policy="predicted", mode="online", known=known, **opts),
                    steps=10, lr=1e-30, seed=4, pool=pool)
    trainer, _ = _hf(kind, tiny, tmp_path, steps=10, lr=1e-30, seed=4)
    callback = ReplayCallback(pool, known=known, **opts).attach(trainer)
    trainer.train()

    assert callback.probe_ids == own.probe_calls[0]["ids"]
    assert set(callback.probe_calls[0]["values"].values()) == {0.0}
    assert callback.row.std() > 0.05  # the completed row is not flat: the predicted phase has its own weights
    assert len(own.replayed) == 21 and callback.replayed == own.replayed


# ---- bad input ------------------------------------------------------------------------------------
def test_bad_options_name_the_field():
    pool = _pool(4)
    with pytest.raises(ConfigError, match="ratio"):
        ReplayCallback(pool, ratio=0)
    with pytest.raises(ConfigError, match="unknown predictor 'nope'"):
        ReplayCallback(pool, known=_known(["u0"]), predictor="nope")
    with pytest.raises(ConfigError, match="not both"):
        ReplayCallback(pool, values={"u0": 1.0}, known=_known(["u0"]))
    with pytest.raises(DataError, match="no value for any pool example"):
        ReplayCallback(pool, values={"x": 1.0})
    with pytest.raises(DataError, match="no pool example is a column"):
        ReplayCallback(pool, known=_known(["x", "y"]))


def test_a_batch_it_cannot_extend_is_refused_in_one_line(tiny, tmp_path):
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    model, tok = (copy.deepcopy(x) for x in tiny)

    def collate(rows):  # a packed-style batch with position ids
        enc = tok([r["text"] for r in rows], return_tensors="pt", padding=True)
        enc["labels"] = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        enc["position_ids"] = torch.arange(enc["input_ids"].shape[1]).expand_as(enc["input_ids"])
        return enc

    args = TrainingArguments(output_dir=str(tmp_path / "o"), use_cpu=True, max_steps=2, per_device_train_batch_size=4,
                             report_to="none", save_strategy="no", remove_unused_columns=False, disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_dict({"text": CODE}), data_collator=collate,
                      processing_class=tok)
    ReplayCallback(_pool(4)).attach(trainer)
    with pytest.raises(ConfigError, match="'position_ids'") as exc:
        trainer.train()
    assert "\n" not in str(exc.value)
