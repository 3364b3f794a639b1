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
from forgetscope.errors import ConfigError, DataError, ForgetscopeError, ModelError
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


def test_refuses_to_run_without_a_tokenizer_or_with_another_tokenisation(tiny, tmp_path):
    model, tok = tiny
    from transformers import Trainer

    trainer = make_trainer(copy.deepcopy(model), tok, tmp_path / "out")
    trainer = Trainer(model=trainer.model, args=trainer.args, train_dataset=trainer.train_dataset,
                      callbacks=[ForgettingCallback(UPSTREAM)])  # no processing_class, no tokenizer=
    with pytest.raises(ConfigError, match=r"callbacks=\[ForgettingCallback") as info:
        trainer.train()
    assert "\n" not in str(info.value)

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
    with pytest.raises(ModelError, match="tokenise to another length"):  # the evaluator's one check
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
    assert callback._evaluator.record.dtype is None  # the model's own precision outside a sweep
    with pytest.raises(DataError, match="max_length=200 is longer than the model's context of 128"):
        ForgettingCallback(UPSTREAM, max_length=200)._prepare(model, tok)


def test_the_callback_measures_with_the_sweeps_record_and_its_own_batching(tiny, tmp_path):
    """The sweep's recorded length, chat format and dtype decide what a loss means and are followed; how
    many tokens go in one batch is the callback's (it measures beside the optimizer's state)."""
    model, tok = tiny
    matrix = ForgettingMatrix(np.zeros((2, len(UPSTREAM))), ["r0", "r1"], IDS, upstream=pd.DataFrame({
        "example_id": IDS, "text": [e.text for e in UPSTREAM], "prompt": [e.prompt for e in UPSTREAM],
        "response": [e.response for e in UPSTREAM]}))
    write_matrix_sweep(matrix, tmp_path / "s", manifest={
        "config": {"train": {"max_length": 32}, "eval": {"max_length": 96, "max_batch_tokens": 65536,
                                                          "max_batch_size": 512}},
        "eval": {"max_length": 96, "chat": False, "dtype": "bfloat16"}})
    callback = ForgettingCallback(tmp_path / "s", max_batch_tokens=256)
    callback._prepare(model, tok)
    record = callback._evaluator.record
    assert (record.max_length, record.chat, record.dtype) == (96, False, "bfloat16")
    assert (record.max_batch_tokens, record.max_batch_size) == (256, 64)
    assert ForgettingCallback(tmp_path / "s", max_length=np.int64(96)).max_length == 96
    with pytest.raises(ConfigError, match="max_batch_tokens must be at least 16"):
        ForgettingCallback(tmp_path / "s", max_batch_tokens=8)


def trainer_with(model, tok, out: Path, callbacks: list, **overrides):
    """A Trainer built with ``callbacks=[...]`` (no attach), evaluating on two training texts."""
    from transformers import Trainer, TrainingArguments

    settings = dict(output_dir=str(out), use_cpu=True, max_steps=4, logging_steps=2, per_device_train_batch_size=4,
                    learning_rate=1e-2, report_to=[], save_strategy="no", seed=0, disable_tqdm=True)
    args = TrainingArguments(**{**settings, **overrides})
    return Trainer(model=model, args=args, train_dataset=TextDataset(tok, TRAIN_TEXTS),
                   eval_dataset=TextDataset(tok, TRAIN_TEXTS[:2]), processing_class=tok, callbacks=callbacks)


def test_callbacks_list_form_works_without_attach_and_ends_with_a_top_table(tiny, tmp_path):
    model, tok = tiny
    base = losses(model, tok, UPSTREAM)
    callback = ForgettingCallback(UPSTREAM, top_k=3)
    trainer = trainer_with(copy.deepcopy(model), tok, tmp_path / "out", [callback])
    trainer.train()

    logged = forgetting_logs(trainer)
    assert [e["step"] for e in logged] == [2, 4]
    np.testing.assert_allclose(callback.base_losses.to_numpy(), base, atol=1e-5)
    F = losses(trainer.model, tok, UPSTREAM) - base
    assert logged[-1]["forgetting/mean"] == pytest.approx(F.mean(), abs=1e-5)

    tables = [e for e in trainer.state.log_history if "forgetting/top" in e]
    assert len(tables) == 1 and tables[0]["step"] == 4
    top = tables[0]["forgetting/top"]
    order = np.argsort(-F, kind="stable")[:3]
    assert [row["example_id"] for row in top] == [IDS[i] for i in order]
    assert [row["forgetting"] for row in top] == pytest.approx(F[order], abs=1e-5)
    assert top[0]["text"] and callback.most_forgotten()["example_id"].tolist() == [IDS[i] for i in order]


def test_early_stopping_and_best_model_follow_eval_forgetting(tiny, tmp_path):
    from transformers import EarlyStoppingCallback

    model, tok = tiny
    # EarlyStoppingCallback listed first: the values are in the metrics before any on_evaluate runs
    callbacks = [EarlyStoppingCallback(early_stopping_patience=1, early_stopping_threshold=1e-4),
                 ForgettingCallback(UPSTREAM)]
    trainer = trainer_with(copy.deepcopy(model), tok, tmp_path / "out", callbacks, max_steps=8, eval_strategy="steps",
                           eval_steps=1, save_strategy="steps", save_steps=1, load_best_model_at_end=True,
                           metric_for_best_model="eval_forgetting/mean", greater_is_better=False)
    trainer.train()

    evals = [e for e in trainer.state.log_history if "eval_loss" in e]
    assert all("eval_forgetting/mean" in e and "eval_forgetting/share_forgotten" in e for e in evals)
    assert trainer.state.global_step < 8  # stopped early
    assert [e["step"] for e in evals] == list(range(1, trainer.state.global_step + 1))
    values = [e["eval_forgetting/mean"] for e in evals]
    assert values[-1] > values[0]  # forgetting rose, which is what stopped the run
    assert trainer.state.best_metric == pytest.approx(min(values))
    assert trainer.state.best_global_step == evals[int(np.argmin(values))]["step"]


def test_resume_from_checkpoint_reuses_the_base_losses(tiny, tmp_path, monkeypatch):
    model, tok = tiny
    calls = []
    measure_base = ForgettingCallback._measure_base
    monkeypatch.setattr(ForgettingCallback, "_measure_base", lambda self, m: (calls.append(1), measure_base(self, m)))
    first = ForgettingCallback(UPSTREAM)
    trainer_with(copy.deepcopy(model), tok, tmp_path / "out", [first], save_strategy="steps", save_steps=2).train()
    assert len(calls) == 1

    second = ForgettingCallback(UPSTREAM)
    resumed = trainer_with(copy.deepcopy(model), tok, tmp_path / "out", [second], save_strategy="no")
    resumed.train(resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-2"))
    assert len(calls) == 1  # not measured again on the half-trained weights
    np.testing.assert_allclose(second.base_losses.to_numpy(), first.base_losses.to_numpy())
    assert [h["step"] for h in second.history] == [2, 4]  # the checkpoint's history, then the resumed run's
    assert second.history[-1]["metrics"]["forgetting/mean"] == pytest.approx(
        first.history[-1]["metrics"]["forgetting/mean"], abs=1e-4)

    other = ForgettingCallback(UPSTREAM[:4])  # another upstream set: the checkpoint's base does not apply
    trainer = trainer_with(copy.deepcopy(model), tok, tmp_path / "out", [other], save_strategy="no")
    trainer.train(resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-2"))
    assert len(calls) == 2


@pytest.mark.parametrize("world", [2, 3])
def test_distributed_ranks_measure_disjoint_shards_that_gather_into_the_row(tiny, monkeypatch, world):
    from forgetscope.integrations import hf_trainer

    model, tok = tiny
    full = losses(model, tok, UPSTREAM)
    idx = np.arange(len(UPSTREAM))
    callback = ForgettingCallback(UPSTREAM)
    callback._prepare(model, tok)
    shards = {}
    for rank in range(world):
        monkeypatch.setattr(hf_trainer, "_rank_world", lambda rank=rank: (rank, world))

        def gather(values, rank=rank):
            shards[rank] = values  # what this rank measured; the other ranks' shards come from `full`
            return [values if r == rank else full[idx[r::world]] for r in range(world)]

        monkeypatch.setattr(hf_trainer, "_all_gather", gather)
        np.testing.assert_allclose(callback._losses(model, idx), full, atol=1e-5)
    sizes = [len(shards[r]) for r in range(world)]
    assert sum(sizes) == len(UPSTREAM) and max(sizes) - min(sizes) <= 1  # disjoint, balanced
    for rank in range(world):
        np.testing.assert_allclose(shards[rank], full[rank::world], atol=1e-5)


def test_state_round_trips_through_the_transformers_protocol(tiny):
    model, tok = tiny
    callback = ForgettingCallback(UPSTREAM, top_k=4, eval_steps=3)
    callback._prepare(model, tok)
    callback._measure_base(model)
    import json

    saved = json.loads(json.dumps(callback.state()))  # what trainer_state.json holds
    rebuilt = ForgettingCallback.from_state(saved)
    assert rebuilt.upstream.ids == IDS and rebuilt.top_k == 4 and rebuilt.eval_steps == 3
    assert rebuilt.upstream.examples == UPSTREAM
    rebuilt._prepare(model, tok)
    rebuilt._restore(None)
    np.testing.assert_allclose(rebuilt.base_losses.to_numpy(), callback.base_losses.to_numpy())
