"""A sweep's upstream set read back through the store: the examples it measured, rebuilt from its upstream
table, and their base losses, in the order a reader asks for (the forecast and the Trainer callback)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from forgetscope.errors import DataError
from forgetscope.store import SweepStore


def _store(tmp_path, table: pd.DataFrame) -> SweepStore:
    store = SweepStore(tmp_path / "sweep")
    store.path.mkdir(parents=True)
    store.write_upstream(table)
    return store


TABLE = pd.DataFrame({
    "example_id": ["a", "b", "c"],
    "text": ["plain text one", None, "plain text three"],
    "prompt": [None, "What is 2+2?", None],
    "response": [None, "4", None],
    "loss_before": [2.5, 1.0, np.nan],
    "n_tokens": [3, 1, 4],
})


def test_upstream_examples_come_back_in_the_order_asked(tmp_path):
    store = _store(tmp_path, TABLE)
    assert [e.example_id for e in store.upstream_examples()] == ["a", "b", "c"]
    examples = store.upstream_examples(["c", "b"])
    assert [e.example_id for e in examples] == ["c", "b"]
    assert examples[0].text == "plain text three"
    assert (examples[1].prompt, examples[1].response) == ("What is 2+2?", "4")


def test_base_losses_are_aligned_with_the_ids_and_missing_columns_are_none(tmp_path):
    store = _store(tmp_path, TABLE)
    before, n_tokens = store.base_losses(["b", "c", "a"])
    np.testing.assert_array_equal(before, [1.0, np.nan, 2.5])
    np.testing.assert_array_equal(n_tokens, [1.0, 4.0, 3.0])
    bare = _store(tmp_path / "x", TABLE.drop(columns=["n_tokens"]).assign(loss_before=np.nan))
    assert bare.base_losses() == (None, None)


def test_an_id_the_table_lacks_and_a_table_without_texts_are_one_line_errors(tmp_path):
    store = _store(tmp_path, TABLE)
    with pytest.raises(DataError, match="lacks 1 example"):
        store.upstream_examples(["a", "zzz"])
    ids_only = _store(tmp_path / "y", TABLE[["example_id", "loss_before"]])
    with pytest.raises(DataError, match="stores no upstream texts"):
        ids_only.upstream_examples()


def test_an_upstream_table_with_a_repeated_id_is_refused(tmp_path):
    store = _store(tmp_path, pd.concat([TABLE, TABLE.iloc[[0]]], ignore_index=True))
    with pytest.raises(DataError, match="one row per example_id"):
        store.base_losses(["a"])
