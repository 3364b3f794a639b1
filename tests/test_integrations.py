"""ForgettingCallback driving a real transformers.Trainer on the tiny in-memory model."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TEXTS

from forgetscope.data.types import Example
from forgetscope.errors import ConfigError, DataError, ForgetscopeError
from forgetscope.integrations import ForgettingCallback
from forgetscope.measure import evaluate_examples
from forgetscope.models import prepare_for_training
from forgetscope.predict import get_predictor
from forgetscope.store import ForgettingMatrix, write_matrix_sweep

UPSTREAM = [Example(f"u{i}", text=t) for i, t in enumerate(TEXTS)] + [
    Example("q1", prompt="What is two plus two?", response="Four.", answer="four")
]
IDS = [e.example_id for e in UPSTREAM]
TRAIN_TEXTS = [f"def f{i}(x):\n    return x * {i} + {i % 3}" for i in range(8)]


class TextDataset(torch.utils.data.Dataset):
    """Tokenised texts padded to one width, labels -100 on padding: the minimal causal-LM dataset."""

    def __init__(self, tokenizer, texts: list[str], width: int = 32):
        self.rows = []
        for text in texts:
            ids = tokenizer(text)["input_ids"][:width]
            pad = width - len(ids)
            self.rows.append({
                "input_ids": torch.tensor(ids + [tokenizer.pad_token_id] * pad),
                "attention_mask": torch.tensor([1] * len(ids) + [0] * pad),
                "labels": torch.tensor(ids + [-100] * pad),
            })

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.rows[i]


def make_trainer(model, tok, out: Path, report_to: tuple[str, ...] = ()):
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(output_dir=str(out), use_cpu=True, max_steps=4, logging_steps=2,
                             per_device_train_batch_size=4, learning_rate=1e-2, report_to=list(report_to),
                             save_strategy="no", seed=0, disable_tqdm=True)
    return Trainer(model=model, args=args, train_dataset=TextDataset(tok, TRAIN_TEXTS), processing_class=tok)


def losses(model, tok, examples, max_length: int = 128) -> np.ndarray:
    # chat=True: the tiny tokenizer has a chat template, which the callback's chat="auto" picks up
    return evaluate_examples(model, tok, examples, max_length=max_length, exact=False, chat=True)["loss"].to_numpy()


def forgetting_logs(trainer) -> list[dict]:
    return [e for e in trainer.state.log_history if "forgetting/mean" in e]


def write_sweep(path: Path, tiny, *, n_rows: int = 3, texts: bool = True) -> tuple[Path, np.ndarray]:
    """A hand-made sweep: random known rows, the upstream texts, and base losses measured on ``tiny``."""
    model, tok = tiny
    known = np.random.default_rng(0).normal(size=(n_rows, len(UPSTREAM)))
    upstream = None
    if texts:
        before = evaluate_examples(model, tok, UPSTREAM, max_length=64, exact=False, chat=True)
        upstream = pd.DataFrame({
            "example_id": IDS,
            "text": [e.text for e in UPSTREAM],
            "prompt": [e.prompt for e in UPSTREAM],
            "response": [e.response for e in UPSTREAM],
            "answer": [e.answer for e in UPSTREAM],
            "n_tokens": before["n_tokens"].to_numpy(),
            "loss_before": before["loss"].to_numpy(),
        })
    matrix = ForgettingMatrix(known, [f"run{i}" for i in range(n_rows)], IDS, upstream=upstream)
    write_matrix_sweep(matrix, path, manifest={"config": {"train": {"max_length": 64}, "eval": {"chat": "auto"}}})
    return path, known


@pytest.mark.parametrize("method", ["full", "lora"])
def test_logged_forgetting_equals_a_direct_measurement(tiny, tmp_path, method):
    model, tok = tiny
    model = copy.deepcopy(model)
    base = losses(model, tok, UPSTREAM)
    if method == "lora":
        model = prepare_for_training(model, "lora", lora_rank=4)
    trainer = make_trainer(model, tok, tmp_path / "out")
    callback = ForgettingCallback(UPSTREAM).attach(trainer)
    trainer.train()

    logged = forgetting_logs(trainer)
    assert [e["step"] for e in logged] == [2, 4]
    assert all(e["forgetting/evaluated"] == len(UPSTREAM) for e in logged)
    # the trainer's own loss log at the same steps is not swallowed
    assert [e["step"] for e in trainer.state.log_history if "loss" in e] == [2, 4]

    np.testing.assert_allclose(callback.base_losses.to_numpy(), base, atol=1e-5)
    F = losses(trainer.model, tok, UPSTREAM) - base
    final = logged[-1]
    assert final["forgetting/mean"] == pytest.approx(F.mean(), abs=1e-5)
    assert final["forgetting/share_forgotten"] == pytest.approx((F > 0).mean())
    assert final["forgetting/max"] == pytest.approx(F.max(), abs=1e-5)
    np.testing.assert_allclose(callback.last_row.loc[IDS].to_numpy(), F, atol=1e-5)
    assert callback.last_row.name == 4 and [h["step"] for h in callback.history] == [2, 4]
    assert callback.history[-1]["top_ids"] == callback.last_row.sort_values(ascending=False).index[:10].tolist()
    if method == "full":
        assert abs(F).max() > 1e-3  # training really moved the upstream losses


def test_probe_mode_evaluates_only_the_probe_and_predicts_the_rest(tiny, tmp_path):
    sweep, known = write_sweep(tmp_path / "sweep", tiny)
    model, tok = tiny
    trainer = make_trainer(copy.deepcopy(model), tok, tmp_path / "out")
    callback = ForgettingCallback(sweep, probe=4, seed=1, eval_steps=3).attach(trainer)
    assert callback.max_length == 64  # the sweep's setting, so its loss_before applies
    trainer.train()

    logged = forgetting_logs(trainer)
    assert [e["step"] for e in logged] == [3, 4]  # the schedule, then the last step
    assert all(e["forgetting/evaluated"] == 4 for e in logged)
    probe = callback.probe_ids
    assert len(probe) == 4
    idx = np.array([IDS.index(i) for i in probe])
    probe_examples = [UPSTREAM[i] for i in idx]
    before = callback.base_losses.loc[probe].to_numpy()
    np.testing.assert_allclose(before, losses(model, tok, probe_examples, max_length=64), atol=1e-5)
    measured = losses(trainer.model, tok, probe_examples, max_length=64) - before

    row = callback.last_row.loc[IDS].to_numpy()
    assert np.isfinite(row).all()
    np.testing.assert_allclose(row[idx], measured, atol=1e-5)
    rest = np.setdiff1d(np.arange(len(IDS)), idx)
    expected = get_predictor("knn").fit(known).predict(idx, measured)
    np.testing.assert_allclose(row[rest], expected[rest], atol=1e-5)
    assert logged[-1]["forgetting/mean"] == pytest.approx(row.mean(), abs=1e-9)


def test_values_reach_tensorboard(tiny, tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model, tok = tiny
    trainer = make_trainer(copy.deepcopy(model), tok, tmp_path / "out", report_to=("tensorboard",))
    ForgettingCallback(UPSTREAM[:4]).attach(trainer)
    trainer.train()
    events = sorted((tmp_path / "out").rglob("events.out.tfevents.*"))
    assert len(events) == 1
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    logged = {e["step"]: e["forgetting/mean"] for e in forgetting_logs(trainer)}
    tb = {e.step: e.value for e in acc.Scalars("train/forgetting/mean")}
    assert tb.keys() == logged.keys() == {2, 4}
    assert all(tb[s] == pytest.approx(logged[s], abs=1e-6) for s in tb)
    assert [e.step for e in acc.Scalars("train/loss")] == [2, 4]


def test_bad_input_raises_one_line_user_errors(tiny, tmp_path):
    sweep, _ = write_sweep(tmp_path / "sweep", tiny)
    bare, _ = write_sweep(tmp_path / "bare", tiny, texts=False)
    single, _ = write_sweep(tmp_path / "single", tiny, n_rows=1)
    cases = {
        "probe larger than N": (lambda: ForgettingCallback(sweep, probe=len(UPSTREAM) + 1), DataError),
        "probe 0": (lambda: ForgettingCallback(sweep, probe=0), DataError),
        "empty upstream": (lambda: ForgettingCallback([]), DataError),
        "sweep without texts": (lambda: ForgettingCallback(bare), DataError),
        "probe without a sweep": (lambda: ForgettingCallback(UPSTREAM, probe=3), ConfigError),
        "probe with one known row": (lambda: ForgettingCallback(single, probe=3), DataError),
        "max_length against the sweep": (lambda: ForgettingCallback(sweep, max_length=128), ConfigError),
        "missing data file": (lambda: ForgettingCallback(tmp_path / "nope.jsonl"), DataError),
        "eval_steps 0": (lambda: ForgettingCallback(UPSTREAM, eval_steps=0), ConfigError),
        "not examples": (lambda: ForgettingCallback(["some text"]), DataError),
    }
    for what, (make, error) in cases.items():
        with pytest.raises(error) as info:
            make()
        assert isinstance(info.value, ForgetscopeError), what
        assert "\n" not in str(info.value) and str(info.value), what
    assert "no upstream texts" in str(pytest.raises(DataError, ForgettingCallback, bare).value)


def test_refuses_to_run_unattached_or_with_another_tokenisation(tiny, tmp_path):
    model, tok = tiny
    from transformers import Trainer

    trainer = make_trainer(copy.deepcopy(model), tok, tmp_path / "out")
    trainer = Trainer(model=trainer.model, args=trainer.args, train_dataset=trainer.train_dataset,
                      processing_class=tok, callbacks=[ForgettingCallback(UPSTREAM)])
    with pytest.raises(ConfigError, match="attach"):
        trainer.train()

    sweep, _ = write_sweep(tmp_path / "sweep", tiny)
    trainer = make_trainer(copy.deepcopy(model), tok, tmp_path / "out1")
    ForgettingCallback(sweep, chat=False).attach(trainer)  # the sweep's "auto" means True for this tokenizer
    with pytest.raises(ConfigError, match="formats prompts differently"):
        trainer.train()

    table = pd.read_parquet(sweep / "upstream.parquet")
    table["n_tokens"] = table["n_tokens"] + 1  # as if another tokenizer had produced the sweep
    table.to_parquet(sweep / "upstream.parquet", index=False)
    trainer = make_trainer(copy.deepcopy(model), tok, tmp_path / "out2")
    ForgettingCallback(sweep).attach(trainer)
    with pytest.raises(DataError, match="tokenise to another length"):
        trainer.train()


def test_measure_restores_the_mode(tiny):
    model, tok = tiny
    model = copy.deepcopy(model)
    callback = ForgettingCallback(UPSTREAM[:3], tokenizer=tok)
    callback._prepare(model, tok)
    callback._loss_before = losses(model, tok, UPSTREAM[:3])
    for training in (True, False):
        model.train(training)
        metrics = callback.measure(model, step=0)
        assert model.training is training
        assert metrics["forgetting/mean"] == pytest.approx(0.0, abs=1e-6)
        assert metrics["forgetting/share_forgotten"] <= 1 and metrics["forgetting/evaluated"] == 3


def test_max_length_is_the_sweeps_evaluation_length_not_its_training_length(tiny, tmp_path):
    model, tok = tiny
    matrix = ForgettingMatrix(np.zeros((2, len(UPSTREAM))), ["r0", "r1"], IDS, upstream=pd.DataFrame({
        "example_id": IDS, "text": [e.text for e in UPSTREAM], "prompt": [e.prompt for e in UPSTREAM],
        "response": [e.response for e in UPSTREAM], "loss_before": 1.0}))
    write_matrix_sweep(matrix, tmp_path / "s", manifest={
        "config": {"train": {"max_length": 32}, "eval": {"max_length": 512, "chat": "auto"}},
        "eval": {"max_length": 96, "chat": True}})
    assert ForgettingCallback(tmp_path / "s").max_length == 96  # what the sweep measured with
    with pytest.raises(ConfigError, match="differs from the sweep's max_length=96"):
        ForgettingCallback(tmp_path / "s", max_length=32)
    # without a sweep: the default evaluation length, capped at the model's context (128 here)
    callback = ForgettingCallback(UPSTREAM)
    callback._prepare(model, tok)
    assert callback.max_length == 128
