"""The semantic (text-similarity) baseline: fast tests with a toy embedder, one slow test with MiniLM."""

import numpy as np
import pandas as pd
import pytest

from forgetscope.errors import DataError
from forgetscope.predict import evaluate, get_predictor
from forgetscope.predict.semantic import minilm_embed, texts_from_matrix
from forgetscope.store import ForgettingMatrix

WORDS = ["code", "bible", "chemistry", "poetry"]


def toy_embed(texts):
    """Bag of four topic words: texts about the same topic get cosine 1."""
    return np.array([[t.lower().count(w) + 1e-3 for w in WORDS] for t in texts], dtype=float)


def topic_matrix(n_per=6, seed=0):
    """Tasks forget the examples of their own topic: the case text similarity can explain."""
    rng = np.random.default_rng(seed)
    tasks = [f"fine-tune on {w} {i}" for w in WORDS for i in range(3)]
    examples = [f"an example about {w} number {j}" for w in WORDS for j in range(n_per)]
    F = np.array([[1.0 if t.split()[2] in e else 0.1 for e in examples] for t in tasks])
    F += 0.05 * rng.normal(size=F.shape)
    runs = pd.DataFrame({"run_id": [f"r{i}" for i in range(len(tasks))], "task_description": tasks})
    upstream = pd.DataFrame({"example_id": [f"e{j}" for j in range(len(examples))], "text": examples})
    return ForgettingMatrix(F, runs["run_id"].tolist(), upstream["example_id"].tolist(), runs=runs,
                            upstream=upstream)


def test_semantic_uses_texts_from_the_matrix():
    mat = topic_matrix()
    tasks, examples = texts_from_matrix(mat)
    assert tasks[0].startswith("fine-tune") and examples[0].startswith("an example")
    for name in ("semantic", "semantic-knn"):
        table = evaluate(mat, {name: get_predictor(name, embedder=toy_embed)}, probe=[4], n_folds=3).table
        rmse = table.groupby("predictor")["rmse"].mean()
        assert rmse[name] < rmse["additive"]


def test_semantic_prompt_response_and_missing_texts():
    mat = topic_matrix()
    mat.upstream = pd.DataFrame({"example_id": mat.col_names, "prompt": ["Q: "] * len(mat.col_names),
                                 "response": [f"{w} answer" for w in WORDS for _ in range(6)]})
    assert texts_from_matrix(mat)[1][0] == "Q:\ncode answer"
    p = get_predictor("semantic", embedder=toy_embed)
    with pytest.raises(DataError, match="needs task texts"):
        p.fit(mat.values)
    p.fit(mat.values[:-1], task_texts=texts_from_matrix(mat)[0][:-1], example_texts=texts_from_matrix(mat)[1])
    with pytest.raises(DataError, match="new task's text"):
        p.predict([0, 1, 2], mat.values[-1, :3])
    row = p.predict([0, 1, 2], mat.values[-1, :3], task_text="fine-tune on poetry")
    assert row.shape == (mat.shape[1],)


def test_semantic_texts_on_mixed_upstream_are_never_empty():
    """Plain texts and pairs in one upstream table: each example gets its own text, none empty."""
    upstream = pd.DataFrame({"example_id": ["t0", "p0", "p1", "t1"],
                             "text": ["plain text about code", None, None, ""],
                             "prompt": [None, "What is 2+2?", "", None],
                             "response": [None, "Four.", "Only a response.", None]})
    runs = pd.DataFrame({"run_id": ["a", "b", "c"], "task": ["code", "bible", "poetry"],
                         "task_description": ["", "the bible", None],
                         "task_text": ["Python code\ndef f(): pass", None, None]})
    mat = ForgettingMatrix(np.zeros((3, 4)), runs["run_id"].tolist(), upstream["example_id"].tolist(),
                           runs=runs, upstream=upstream)
    tasks, examples = texts_from_matrix(mat)
    assert examples == ["plain text about code", "What is 2+2?\nFour.", "Only a response.", "t1"]
    assert tasks == ["Python code\ndef f(): pass", "the bible", "poetry"]
    assert all(t.strip() for t in tasks + examples)


def test_semantic_is_called_by_what_it_is():
    from forgetscope.predict import PREDICTORS

    assert PREDICTORS.get("semantic").display_name() == "frozen-embedding text prior (MiniLM)"
    assert PREDICTORS.get("semantic-knn").display_name() == "text-weighted neighbour rows (MiniLM)"
    table = evaluate(topic_matrix(), {"semantic": get_predictor("semantic", embedder=toy_embed)}, probe=[4],
                     n_folds=3, draws=2).table
    assert set(table.loc[table.predictor == "semantic", "method"]) == {"frozen-embedding text prior (MiniLM)"}


def test_the_text_prior_uses_no_known_row_and_the_hybrid_does():
    mat = topic_matrix()
    tasks, examples = texts_from_matrix(mat)
    idx = np.array([0, 7, 13, 20])
    other = mat.values[:-1] + np.random.default_rng(1).normal(size=mat.values[:-1].shape)
    rows = {}
    for name in ("semantic", "semantic-knn"):
        preds = [get_predictor(name, embedder=toy_embed).fit(known, task_texts=tasks[:-1], example_texts=examples)
                 .predict(idx, mat.values[-1, idx], task_text=tasks[-1]) for known in (mat.values[:-1], other)]
        rows[name] = preds
    np.testing.assert_array_equal(*rows["semantic"])  # changing the known rows changes nothing
    assert not np.allclose(*rows["semantic-knn"])  # the hybrid averages known rows


@pytest.mark.slow
def test_minilm_embeddings_are_normalised_and_meaningful():
    E = minilm_embed(["The cat sat on the mat.", "A cat is sitting on a rug.", "def add(a, b): return a + b"])
    assert E.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(E, axis=1), 1.0, atol=1e-5)
    assert E[0] @ E[1] > E[0] @ E[2]
