"""Per-example evaluation: mean token NLL (nats) and the answer check of greedy answers (whole-word
containment of the gold answer in the first output line; the ``em`` columns).

This is the hot path of every sweep (N upstream examples x (M + 1) models), so it

* sorts examples by length and packs them into buckets under a token budget, so each batch is padded
  only to its own longest member (no global max length, almost no wasted padding);
* runs under ``torch.inference_mode()``;
* applies the output layer only at scored positions: the decoder's hidden states are gathered at the
  positions whose next token is scored, so prompt tokens and padding never pay for the vocabulary
  projection (for a 135M model with a 49k vocabulary that projection is a fifth of the FLOPs);
* can run the model in bf16 (``dtype``) while the output layer at the scored positions, the
  log-softmax and the sums stay float32 (:mod:`forgetscope.precision`); ``head_dtype`` runs the output
  layer in bf16 too, with the log-sum-exp still float32;
* can form the logits ``chunk_rows`` scored positions at a time (logsumexp minus the target logit per
  chunk), so the scored-positions × vocabulary logits of a batch (800 MB float32 for 4 096 tokens and a
  49k vocabulary) never exist at once;
* keeps per-batch sums on the device and reads them back once, and computes the scored positions
  from the labels on the host, so a GPU is never made to wait for the host inside the loop.

``benchmarks/eval_throughput.py`` measures it against one-at-a-time and fixed padded batches, and times the
chunked and bf16-head variants against the default.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from forgetscope.data.encoding import IGNORE_INDEX, Encoded, collate, encode_examples, prompt_ids, to_device
from forgetscope.data.types import Example
from forgetscope.measure.forgetting import token_weighted_mean
from forgetscope.progress import progress_iter

if TYPE_CHECKING:
    from forgetscope.precision import EvalState

CHUNK_ROWS = 1024  # scored positions per chunk of logits when chunking is asked for (``chunk_rows``)


def bucket_batches(lengths: Sequence[int], max_batch_tokens: int = 4096, max_batch_size: int = 64) -> list[list[int]]:
    """Group indices, sorted by length, into batches whose padded size stays under the token budget."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        width = lengths[i]  # sorted ascending, so the newest member is the longest
        if current and (width * (len(current) + 1) > max_batch_tokens or len(current) >= max_batch_size):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def _fast_head(model):
    """(decoder, lm_head) when logits can be formed from gathered hidden states exactly, else None."""
    if getattr(model.config, "final_logit_softcapping", None):
        return None
    get_decoder = getattr(model, "get_decoder", None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if get_decoder is None or head is None:
        return None
    try:
        decoder = get_decoder()
    except (AttributeError, NotImplementedError):
        return None
    if decoder is None or decoder is model:
        return None
    scale = getattr(model.config, "logit_scale", None)
    if scale not in (None, 1, 1.0):
        return None
    return decoder, head


@dataclass
class ScoredIndex:
    """Where a collated batch is scored, computed from its labels on the host before the batch moves to
    the device, so the evaluator never waits for the device to learn how many positions it scores."""

    positions: torch.Tensor  # b * width + t for each scored (row b, position t): the token t + 1 is predicted
    targets: torch.Tensor
    rows: torch.Tensor
    counts: torch.Tensor  # scored tokens per row

    @classmethod
    def of(cls, labels: torch.Tensor) -> ScoredIndex:
        scored = labels[:, 1:] != IGNORE_INDEX
        b, t = scored.nonzero(as_tuple=True)
        return cls(b * labels.shape[1] + t, labels[b, t + 1], b, scored.sum(dim=1))

    def to(self, device: torch.device) -> ScoredIndex:
        return ScoredIndex(*(to_device(x, device) for x in (self.positions, self.targets, self.rows, self.counts)))


def _project(head, hidden: torch.Tensor, head_weight: torch.Tensor | None) -> torch.Tensor:
    """Float32 logits: with ``head_weight`` (the float32 output layer kept while the model runs in bf16,
    or a bf16 one asked for by ``head_dtype``) the product runs in that weight's dtype; otherwise the head
    runs in the model's dtype. Either way the logits are upcast to float32 before any reduction."""
    if head_weight is None:
        return head(hidden).float()
    bias = getattr(head, "bias", None)
    dtype = head_weight.dtype
    return F.linear(hidden.to(dtype), head_weight, None if bias is None else bias.to(dtype)).float()


def _gathered_hidden(decoder, batch: dict[str, torch.Tensor], index: ScoredIndex) -> torch.Tensor:
    """The decoder's last hidden states at the scored positions, one row per scored token."""
    hidden = decoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    return hidden.reshape(-1, hidden.shape[-1]).index_select(0, index.positions)


def scored_logits(model, batch: dict[str, torch.Tensor], *, head_weight: torch.Tensor | None = None,
                  index: ScoredIndex | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Float32 logits at the scored positions of a collated batch, their targets, and each one's row.

    The output layer is applied only at scored positions when the model allows it (see the module
    docstring); otherwise the full logits are sliced. ``index`` (from :meth:`ScoredIndex.of` on the host
    labels) saves a device-to-host synchronisation; ``head_weight`` is the float32 output layer of
    :class:`~forgetscope.precision.EvalState`.
    """
    if index is None:
        index = ScoredIndex.of(batch["labels"])
    fast = _fast_head(model)
    if fast is not None:
        decoder, head = fast
        logits = _project(head, _gathered_hidden(decoder, batch, index), head_weight)
    else:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        logits = logits.reshape(-1, logits.shape[-1]).index_select(0, index.positions).float()
    return logits, index.targets, index.rows


def scored_logprobs(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Log-probabilities over the vocabulary at the scored positions (for cross-entropy forgetting)."""
    logits, targets, rows = scored_logits(model, batch)
    return F.log_softmax(logits, dim=-1), targets, rows


def chunked_nll(head, hidden: torch.Tensor, targets: torch.Tensor, *, head_weight: torch.Tensor | None = None,
                chunk_rows: int = CHUNK_ROWS) -> torch.Tensor:
    """Token NLL (float32) of gathered hidden states, projected ``chunk_rows`` rows at a time: per chunk,
    logsumexp of the float32 logits minus the target's logit, so no more than ``chunk_rows`` × vocabulary
    logits exist at once. Equal to the cross-entropy of the full logits up to float32 rounding."""
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
    out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
    for start in range(0, hidden.shape[0], chunk_rows):
        logits = _project(head, hidden[start:start + chunk_rows], head_weight)
        target = targets[start:start + chunk_rows].unsqueeze(1)
        out[start:start + chunk_rows] = torch.logsumexp(logits, dim=-1) - logits.gather(1, target).squeeze(1)
    return out


def batch_nll(model, batch: dict[str, torch.Tensor], *, gather: bool = True, head_weight: torch.Tensor | None = None,
              index: ScoredIndex | None = None, chunk_rows: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of token NLL (float32) and number of scored tokens, per row of one collated batch.

    ``chunk_rows`` forms the logits at the scored positions that many rows at a time
    (:func:`chunked_nll`); None forms them all at once. A model without a separable output layer (see
    :func:`scored_logits`) computes its full logits either way."""
    if gather:
        index = index if index is not None else ScoredIndex.of(batch["labels"])
        fast = _fast_head(model) if chunk_rows is not None else None
        if fast is not None:
            decoder, head = fast
            nll = chunked_nll(head, _gathered_hidden(decoder, batch, index), index.targets, head_weight=head_weight,
                              chunk_rows=chunk_rows)
        else:
            logits, targets, _ = scored_logits(model, batch, head_weight=head_weight, index=index)
            nll = F.cross_entropy(logits, targets, reduction="none")
        total = torch.zeros(index.counts.shape[0], dtype=torch.float32, device=nll.device)
        return total.index_add_(0, index.rows, nll), index.counts
    targets = batch["labels"][:, 1:]
    scored = targets != IGNORE_INDEX
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
    nll = F.cross_entropy(logits.transpose(1, 2), targets.clamp(min=0), reduction="none") * scored
    return nll.sum(dim=1), scored.sum(dim=1)


def _head_weight(model, state: EvalState, head_dtype: torch.dtype | None) -> torch.Tensor | None:
    """The output-layer weight the scored positions are projected with: ``state.head_weight`` (float32
    while the model runs in bf16; None when the layer's own weight is used) unless ``head_dtype`` asks for
    another dtype, then the layer's weight in that dtype (a copy only when it is stored otherwise)."""
    if head_dtype is None or (state.head_weight is not None and state.head_weight.dtype == head_dtype):
        return state.head_weight
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    weight = getattr(head, "weight", None)
    if weight is None:
        return state.head_weight
    return weight if weight.dtype == head_dtype else weight.to(head_dtype)


def per_example_nll(model, encoded: Sequence[Encoded], *, pad_id: int, max_batch_tokens: int = 4096,
                    max_batch_size: int = 64, progress: bool = False, desc: str = "evaluating",
                    dtype: torch.dtype | None = None, head_dtype: torch.dtype | None = None,
                    chunk_rows: int | None = None) -> np.ndarray:
    """Mean token NLL of each encoded example (same order as given), bucketed by length.

    ``dtype`` runs the model in that precision for this call (:func:`~forgetscope.precision.evaluation_precision`;
    None: as stored). ``head_dtype`` is the output layer's precision at the scored positions; None keeps
    it float32 for a model stored in float32, also when ``dtype`` is bf16 (what sweeps measure and
    record); ``torch.bfloat16`` runs it in bf16. Logits are upcast to float32 before the
    log-sum-exp, and the sums are float32, either way. ``chunk_rows`` forms the logits that many scored
    positions at a time (:data:`CHUNK_ROWS` is the size benchmarked); None, the default, forms a batch's
    logits at once. Which of the two is the default is set by the timings of
    ``benchmarks/eval_throughput.py`` (its ``*_chunked`` methods against the others); both give the same
    losses to float32 rounding. Per-batch sums stay on the device and come back in one transfer at the end.
    """
    from forgetscope.precision import evaluation_precision

    device = next(model.parameters()).device
    out = np.full(len(encoded), np.nan)
    batches = bucket_batches([len(e) for e in encoded], max_batch_tokens, max_batch_size)
    totals: list[torch.Tensor] = []
    counts: list[torch.Tensor] = []
    was_training = model.training
    model.eval()
    try:
        with evaluation_precision(model, dtype) as state, torch.inference_mode():
            head_weight = _head_weight(model, state, head_dtype)
            for idx in progress_iter(batches, desc=desc, enabled=progress,
                                     total_units=sum(len(encoded[i]) for b in batches for i in b),
                                     units=lambda b: sum(len(encoded[i]) for i in b)):
                host = collate([encoded[i] for i in idx], pad_id)
                index = ScoredIndex.of(host["labels"])
                batch = {k: to_device(host[k], device) for k in ("input_ids", "attention_mask")}
                total, _ = batch_nll(model, batch, head_weight=head_weight, index=index.to(device),
                                     chunk_rows=chunk_rows)
                totals.append(total)
                counts.append(index.counts)
    finally:
        model.train(was_training)
    if batches:
        order = np.concatenate([np.asarray(b) for b in batches])
        sums = torch.cat(totals).double().cpu().numpy()
        n = torch.cat(counts).clamp(min=1).double().numpy()
        out[order] = sums / n
    return out


def _normalise_answer(text: str) -> str:
    text = text.strip().split("\n")[0].lower()
    return " ".join("".join(c if c.isalnum() else " " for c in text).split())


def answer_matches(generated: str, gold: str) -> bool:
    """Whole-word containment (what the ``em_*`` columns record; not exact string equality): the
    normalised gold answer equals the normalised first line of the greedy output or appears in it as
    whole words ("The capital of France is Paris." matches "Paris"). Normalised: lower-cased, every
    non-alphanumeric character a space, whitespace collapsed."""
    g, a = _normalise_answer(generated), _normalise_answer(gold)
    return bool(a) and (g == a or f" {a} " in f" {g} ")


def greedy_answers(model, tokenizer, examples: Sequence[Example], *, max_new_tokens: int = 16,
                   batch_size: int = 16, chat: bool = False, dtype: torch.dtype | None = None) -> list[str | None]:
    """The greedy continuation of each pair's prompt that has a gold ``answer`` (None for the others): what
    :func:`exact_match` scores, kept as text so a model's answers can be read. ``dtype`` generates in that
    precision (as :func:`per_example_nll`)."""
    from forgetscope.precision import evaluation_precision

    out: list[str | None] = [None] * len(examples)
    todo = [i for i, ex in enumerate(examples) if ex.is_pair and ex.answer]
    if not todo:
        return out
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id
    prompts = {i: prompt_ids(tokenizer, examples[i], chat) for i in todo}
    todo.sort(key=lambda i: len(prompts[i]))
    was_training = model.training
    model.eval()
    try:
        with evaluation_precision(model, dtype), torch.inference_mode():
            for start in range(0, len(todo), batch_size):
                idx = todo[start:start + batch_size]
                width = max(len(prompts[i]) for i in idx)
                ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
                mask = torch.zeros((len(idx), width), dtype=torch.long)
                for r, i in enumerate(idx):  # left padding so every row continues from its last token
                    p = prompts[i]
                    ids[r, width - len(p):] = torch.tensor(p)
                    mask[r, width - len(p):] = 1
                gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                     max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_id)
                texts = tokenizer.batch_decode(gen[:, width:], skip_special_tokens=True)
                for r, i in enumerate(idx):
                    out[i] = texts[r]
    finally:
        model.train(was_training)
    return out


def exact_match(model, tokenizer, examples: Sequence[Example], *, max_new_tokens: int = 16,
                batch_size: int = 16, chat: bool = False, dtype: torch.dtype | None = None) -> np.ndarray:
    """1.0/0.0 per pair whose greedy answer (:func:`greedy_answers`) contains its gold ``answer``
    (:func:`answer_matches`); NaN without one. Stored as ``em_before``/``em_after``."""
    texts = greedy_answers(model, tokenizer, examples, max_new_tokens=max_new_tokens, batch_size=batch_size,
                           chat=chat, dtype=dtype)
    return np.array([np.nan if t is None else float(answer_matches(t, ex.answer or ""))
                     for t, ex in zip(texts, examples, strict=True)])


def evaluate_examples(model, tokenizer, examples: Sequence[Example], *, max_length: int = 128,
                      max_batch_tokens: int = 4096, max_batch_size: int = 64, exact: bool = True,
                      encoded: Sequence[Encoded] | None = None, progress: bool = False,
                      desc: str = "evaluating", chat: bool = False,
                      dtype: torch.dtype | None = None) -> pd.DataFrame:
    """Evaluate examples with ``model``: a table of example_id, n_tokens, loss, em (NaN without answer).

    ``dtype`` is the evaluation precision (None: the model's own); see :mod:`forgetscope.precision`.
    """
    from forgetscope.models import context_length

    if encoded is None:
        encoded = encode_examples(tokenizer, examples, max_length, model_max_length=context_length(model),
                                  chat=chat)
    loss = per_example_nll(model, encoded, pad_id=tokenizer.pad_token_id, max_batch_tokens=max_batch_tokens,
                           max_batch_size=max_batch_size, progress=progress, desc=desc, dtype=dtype)
    em = (exact_match(model, tokenizer, examples, chat=chat, dtype=dtype) if exact
          else np.full(len(examples), np.nan))
    return pd.DataFrame({
        "example_id": [e.example_id for e in encoded],
        "n_tokens": [e.n_scored for e in encoded],
        "loss": loss,
        "em": em,
    })


def heldout_loss(model, encoded: Sequence[Encoded], pad_id: int) -> float:
    """Token-weighted mean NLL of encoded examples (a task's held-out loss, the fine-tuning loss)."""
    losses = per_example_nll(model, encoded, pad_id=pad_id)
    return token_weighted_mean(losses, [e.n_scored for e in encoded])
