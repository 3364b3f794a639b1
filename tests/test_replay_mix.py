"""replay-mix: the examples forgetscope's own replay would draw, exported for someone else's Trainer."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest

from forgetscope.errors import ConfigError, DataError
from forgetscope.experiments.replay_mix import replay_budget, replay_examples
from forgetscope.mitigate.replay_sampling import draw_replay, replay_count

N_UP = 12


def _sweep(path, n=N_UP):
    """A sweep directory with upstream texts, base losses and two known rows."""
    from forgetscope.store import SweepStore

    ids = [f"u{i}" for i in range(n)]
    store = SweepStore(path)
    store.write_manifest({"source": "test"})
    store.write_upstream(pd.DataFrame({"example_id": ids, "kind": "lm",
                                       "text": [f"Upstream sentence {i} about the fox." for i in range(n)],
                                       "loss_before": np.full(n, 2.0)}))
    for j, task in enumerate(["a", "b"]):
        store.write_run({"run_id": f"{task}__plain__s0", "task": task, "strategy": "plain"},
                        pd.DataFrame({"example_id": ids, "loss_after": 2.0 + np.linspace(0, 1, n) * (j + 1)}))
    store.consolidate()
    return ids


def _row(ids):
    return pd.Series(np.linspace(-0.2, 0.6, len(ids))[::-1], index=ids)  # u0 most forgotten


def test_the_mix_holds_the_ids_forgetscopes_own_loop_replays_for_the_same_values_and_seeds(tiny, tmp_path):
    from forgetscope.config import TrainConfig
    from forgetscope.data.types import Example, Task
    from forgetscope.train import make_strategy, train_on_task

    ids = _sweep(tmp_path / "sweep")
    row = _row(ids)
    model, tok = tiny
    upstream = [Example(i, text=f"Upstream sentence {k} about the fox.") for k, i in enumerate(ids)]
    task = Task("t", [Example(f"t{i}", text=f"def f{i}(x): return x * {i}") for i in range(8)],
                [Example("h", text="def g(y): return y")])
    cfg = TrainConfig(method="full", steps=10, batch_size=4, lr=1e-2, max_length=32, seed=3)
    strategy = make_strategy("replay", policy="oracle", forgetting=row.to_dict(), ratio=1 / 8, seed=5)
    train_on_task(copy.deepcopy(model), tok, task, cfg, strategy=strategy, upstream=upstream, progress=False)
    n = replay_count(cfg.steps, cfg.batch_size, 1 / 8)
    assert len(strategy.replayed) == n == 6
    mix = replay_examples(tmp_path / "sweep", values=row, task_examples=cfg.steps * cfg.batch_size, ratio=1 / 8,
                          train_seed=cfg.seed, seed=5)
    assert mix.ids == strategy.replayed  # same examples, same order
    assert mix.table["predicted_forgetting"].tolist() == [row[i] for i in mix.ids]
    # softmax(F/0.1) without replacement: the draws are distinct and lean to the most forgotten
    assert len(set(mix.ids)) == n and np.mean([int(i[1:]) for i in mix.ids]) < (N_UP - 1) / 2


def test_written_files_are_trl_formats_and_a_dataset(tmp_path):
    ids = _sweep(tmp_path / "sweep")
    mix = replay_examples(tmp_path / "sweep", values=_row(ids), n=4, out=tmp_path / "mix")
    lines = [json.loads(x) for x in mix.paths["jsonl"].read_text().splitlines()]
    assert [x["example_id"] for x in lines] == mix.ids and all(x["text"].startswith("Upstream") for x in lines)
    meta = json.loads(mix.paths["json"].read_text())
    assert meta["ids"] == mix.ids and meta["n"] == 4
    assert meta["interleave_probabilities"] == pytest.approx([32 / 33, 1 / 33])
    ds = mix.dataset()
    assert ds.num_rows == 4 and set(ds.column_names) == {"text", "example_id"}


def test_a_forecast_folder_is_a_source(tmp_path):
    from forgetscope.store.io import write_parquet
    from forgetscope.store.layout import SweepLayout

    ids = _sweep(tmp_path / "sweep")
    table, _ = SweepLayout.forecast_files(tmp_path / "fc")
    write_parquet(table, pd.DataFrame({"example_id": ids, "forgetting": _row(ids).to_numpy()}))
    a = replay_examples(tmp_path / "sweep", forecast_dir=tmp_path / "fc", n=5)
    b = replay_examples(tmp_path / "sweep", values=_row(ids), n=5)
    assert a.ids == b.ids and a.settings["forecast"] == str(tmp_path / "fc")


def test_a_transformers_trainer_trains_on_the_task_mixed_with_the_replay_examples(tiny, tmp_path):
    """The exported mix goes through a plain ``transformers.Trainer``: every replay id reaches a batch."""
    from datasets import Dataset, concatenate_datasets
    from transformers import Trainer, TrainingArguments

    ids = _sweep(tmp_path / "sweep")
    mix = replay_examples(tmp_path / "sweep", values=_row(ids), n=3)
    model, tok = tiny
    task = Dataset.from_list([{"text": f"def f{i}(x): return x * {i}", "example_id": f"t{i}"} for i in range(9)])
    data = concatenate_datasets([task, mix.dataset()]).shuffle(seed=0)
    seen: list[str] = []

    def collate(rows):
        seen.extend(r["example_id"] for r in rows)
        enc = tok([r["text"] for r in rows], return_tensors="pt", padding=True, truncation=True, max_length=32)
        enc["labels"] = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        return enc

    args = TrainingArguments(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, num_train_epochs=1,
                             report_to=[], remove_unused_columns=False, use_cpu=True, save_strategy="no",
                             logging_strategy="no", seed=0)
    Trainer(model=copy.deepcopy(model), args=args, train_dataset=data, data_collator=collate).train()
    assert set(mix.ids) <= set(seen) and len(seen) == 12


def test_budget_rule_and_bad_input(tmp_path):
    assert replay_budget(None, 320, 1 / 32) == 11 and replay_budget(7, None, 1 / 32) == 7
    with pytest.raises(ConfigError, match="task_examples"):
        replay_budget(None, None, 1 / 32)
    ids = _sweep(tmp_path / "sweep")
    with pytest.raises(ConfigError, match="exactly one source"):
        replay_examples(tmp_path / "sweep", n=3)
    with pytest.raises(ConfigError, match="exactly one source"):
        replay_examples(tmp_path / "sweep", values=_row(ids), forecast_dir=tmp_path, n=3)
    with pytest.raises(ConfigError, match="more than the 12"):
        replay_examples(tmp_path / "sweep", values=_row(ids), n=13)
    with pytest.raises(DataError, match="not in the sweep"):
        replay_examples(tmp_path / "sweep", values={"nope": 1.0}, n=1)
    with pytest.raises(DataError, match="forecast.parquet is missing"):
        replay_examples(tmp_path / "sweep", forecast_dir=tmp_path / "none", n=1)
    with pytest.raises(ConfigError, match="temperature"):
        draw_replay(np.zeros(3), 1, temperature=0)


def test_cli_refuses_without_a_source_in_one_line_and_writes_nothing(tmp_path, capsys):
    from forgetscope.cli import run_app

    _sweep(tmp_path / "sweep")
    before = sorted(p.name for p in (tmp_path / "sweep").iterdir())
    assert run_app(["replay-mix", str(tmp_path / "sweep"), "--n", "3"]) == 2
    err = capsys.readouterr().err
    assert "--probe-from" in err and "Traceback" not in err
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir()) == before


def test_cli_writes_the_mix_from_a_forecast_folder(tmp_path, capsys):
    from forgetscope.cli import run_app
    from forgetscope.store.io import write_parquet
    from forgetscope.store.layout import SweepLayout

    ids = _sweep(tmp_path / "sweep")
    table, _ = SweepLayout.forecast_files(tmp_path / "fc")
    write_parquet(table, pd.DataFrame({"example_id": ids, "forgetting": _row(ids).to_numpy()}))
    assert run_app(["replay-mix", str(tmp_path / "sweep"), "--forecast", str(tmp_path / "fc"),
                    "--task-examples", "64", "-o", str(tmp_path / "mix")]) == 0
    lines = (tmp_path / "mix" / "replay.jsonl").read_text().splitlines()
    assert len(lines) == replay_count(64, 1, 1 / 32) == 3
    assert "interleave_datasets" in capsys.readouterr().out
